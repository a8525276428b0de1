//! Booting packages on real engines and collecting their results.
//!
//! [`qemu`] builds and supervises QEMU for each platform's device set.

pub mod qemu;
