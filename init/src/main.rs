//! `imgbuild-init`: PID 1 of imgbuild images, and a host benchmark runner (`--host`).

fn main() {
    std::process::exit(imgbuild_init::boot::main());
}
