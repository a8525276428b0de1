//! `imgbuild-init`: PID 1 of imgbuild images.

fn main() {
    println!("imgbuild-init {}", env!("CARGO_PKG_VERSION"));
}
