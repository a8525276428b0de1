//! imgbuild: builds one root filesystem from real sources and packages it, byte for byte the same,
//! for Xen, OpenVZ, VMware and QEMU.
//!
//! Data flows one way, one module per stage: [`definition`] → [`assemble`] ([`sources`], one per
//! layer) → [`tree`] → [`finish`] (init, identity, digest) → filesystem → disks and packages
//! ([`target`]) → [`manifest`]. [`kernel`] provides the kernel and the initramfs, [`run`] boots
//! the packages, [`report`] compares their results.
#![deny(missing_docs)]

pub mod artefacts;
pub mod assemble;
pub mod build;
pub mod collect;
pub mod definition;
pub mod disk;
pub mod el;
pub mod ext4;
pub mod finish;
pub mod image_io;
pub mod kernel;
pub mod manifest;
pub mod output;
pub mod progress;
pub mod report;
pub mod run;
pub mod sources;
pub mod target;
pub mod tree;
pub mod verify;
pub mod vmdk;
