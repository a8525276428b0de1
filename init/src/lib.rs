//! The guest side of imgbuild, as a library shared with the builder.
//!
//! The builder and the guest init must agree on two things byte for byte: how a root tree is
//! digested ([`digest`]) and how results are written to and read from the results disk
//! ([`results`]). Both live here, defined once, with the module index format ([`modules`]) and
//! the profile format ([`profile`]) the builder writes into images. The rest is the init itself:
//! the boot stages ([`boot`]), the workload runner ([`runner`], [`workloads`]) and what it
//! records about the machine ([`platform`]).
#![deny(missing_docs)]

pub mod blockdev;
pub mod boot;
pub mod build_info;
pub mod clock;
pub mod cmdline;
pub mod console;
pub mod digest;
pub mod guest_digest;
pub mod largest_first;
pub mod modules;
pub mod mounts;
pub mod net;
pub mod platform;
pub mod profile;
pub mod results;
pub mod runner;
pub mod workloads;
pub mod xattr;
