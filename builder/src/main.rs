//! The `imgbuild` command line.

fn main() {
    println!("imgbuild {}", env!("CARGO_PKG_VERSION"));
}
