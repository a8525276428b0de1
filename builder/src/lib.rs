//! imgbuild: builds one root filesystem from real sources and packages it, byte for byte the same,
//! for Xen, OpenVZ, VMware and QEMU.
//!
//! Data flows one way, one module per stage:
//! [`definition`] → [`sources`] (layers) → [`tree`] → [`ext4`] → disks and packages → manifest.
#![deny(missing_docs)]

pub mod definition;
pub mod ext4;
pub mod image_io;
pub mod sources;
pub mod tree;
