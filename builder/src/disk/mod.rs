//! Whole-disk images around one filesystem: the MBR partition table ([`mbr`]), GRUB 2 for BIOS
//! embedded without loop devices ([`grub`]), and the safety checks for writing a filesystem
//! straight onto a real block device ([`device`]).
//!
//! The disk is laid out by [`mbr::layout`]: a 1 MiB gap (MBR + GRUB's core.img), then one Linux
//! partition to the end of the disk, into which the ext4 writer writes at offset 1 MiB.

pub mod device;
pub mod grub;
pub mod mbr;

pub use mbr::{layout, read_partitions, write_mbr, DiskLayout, MbrError, Partition};
