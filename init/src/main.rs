//! `imgbuild-init`: PID 1 of imgbuild images, and a host benchmark runner (`--host`).

fn main() {
    // The execl workload re-executes this binary; that must not start an init.
    if let Some(code) = imgbuild_init::workloads::helper_entry() {
        std::process::exit(code);
    }
    std::process::exit(imgbuild_init::boot::main());
}
