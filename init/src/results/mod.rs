//! The results disk: where the guest writes what it measured, and how `imgbuild collect` reads it.
//!
//! A small raw disk attached to the guest as its second disk (or, in containers and on hosts, a
//! file) holds a header written by the builder ([`create_results_image`]) followed by an
//! append-only stream of checksummed records ([`format`]), each a JSON [`schema::Record`]. The
//! guest flushes every record as soon as its workload ends ([`ResultsWriter`]), so a crash loses
//! at most the workload that was running; the reader ([`read_results`]) treats the disk as
//! hostile and reports damage instead of failing.

pub mod format;
mod reader;
pub mod schema;
mod writer;

use std::io;

pub use format::{format_header, FormatError, ResultsHeader};
pub use reader::{read_results, read_results_bytes, read_results_file, CollectedRun};
pub use writer::{create_results_image, new_run_id, ResultsWriter, END_RESERVE};

/// Errors of reading or writing a results disk.
#[derive(Debug, thiserror::Error)]
pub enum ResultsError {
    /// An I/O call failed.
    #[error("cannot {action} results {path}: {source}")]
    Io {
        /// What was being done (`read`, `write record at offset 8192 of`…).
        action: String,
        /// The disk or file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The header is missing or invalid.
    #[error("{path} is not a usable results disk: {source}")]
    Header {
        /// The disk or file.
        path: String,
        /// What is wrong.
        #[source]
        source: FormatError,
    },
    /// Shorter than a header.
    #[error("{path} holds {len} bytes, less than a results header")]
    Truncated {
        /// The disk or file.
        path: String,
        /// Its length.
        len: u64,
    },
    /// No room left for a record.
    #[error(
        "results disk {path} is full: a record of {need} bytes at offset {offset} does not fit \
         in {capacity} bytes"
    )]
    Full {
        /// The disk.
        path: String,
        /// Bytes the record needs (with the space kept for the final record).
        need: u64,
        /// Where it would go.
        offset: u64,
        /// Usable size.
        capacity: u64,
    },
    /// A record could not be encoded.
    #[error("cannot encode a results record: {0}")]
    Encode(String),
}
