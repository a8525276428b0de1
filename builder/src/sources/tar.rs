//! Placeholder: see the module list in sources/mod.rs.
