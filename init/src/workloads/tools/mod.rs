//! Placeholder.
pub mod ab;
pub mod bonnie;
pub mod openssl;
pub mod postal;
pub mod unixbench_run;
