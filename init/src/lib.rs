//! The guest side of imgbuild, as a library shared with the builder.
//!
//! The builder and the guest init must agree on two things byte for byte: how a root tree is
//! digested ([`digest`]) and how results are written to and read from the results disk. Both live
//! here, defined once.
#![deny(missing_docs)]

pub mod digest;
pub mod xattr;
