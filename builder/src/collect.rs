//! `imgbuild collect`: reads a results disk — raw, or a VMDK as VMware writes to it — and
//! returns what the guest recorded. The disk was written by a guest and is treated as hostile:
//! the reader in `imgbuild_init::results` bounds every length and reports corruption.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use imgbuild_init::digest::RootfsDigest;
use imgbuild_init::results::schema::Record;
use imgbuild_init::results::{read_results, CollectedRun, ResultsError};
use serde::{Deserialize, Serialize};

use crate::image_io::Cursor;
use crate::vmdk::{VmdkError, VmdkReader};

/// A results disk that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// The file cannot be opened.
    #[error("cannot open results disk {path}: {source}")]
    Open {
        /// The disk.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is a VMDK that cannot be read.
    #[error(transparent)]
    Vmdk(#[from] VmdkError),
    /// No results header, or I/O failed.
    #[error(transparent)]
    Results(#[from] ResultsError),
}

/// What a results disk holds, as `collect` prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Collected {
    /// The disk read.
    pub disk: String,
    /// Image name from the header (written by the builder).
    pub image: String,
    /// Rootfs digest from the header.
    pub rootfs_digest: Option<RootfsDigest>,
    /// Run identifier chosen by the guest.
    pub run_id: Option<u64>,
    /// True when the guest wrote its final record.
    pub complete: bool,
    /// Corrupted or truncated records and other findings.
    pub problems: Vec<String>,
    /// The records, in order.
    pub records: Vec<Record>,
}

impl Collected {
    fn new(disk: &Path, run: CollectedRun) -> Collected {
        Collected {
            disk: disk.display().to_string(),
            image: run.header.image,
            rootfs_digest: run.header.rootfs_digest,
            run_id: run.run_id,
            complete: run.complete,
            problems: run.problems,
            records: run.records,
        }
    }
}

/// Reads the results disk at `path` (raw image, VMDK, or a container's results file).
pub fn collect(path: &Path) -> Result<Collected, CollectError> {
    let open_err = |source| CollectError::Open {
        path: path.display().to_string(),
        source,
    };
    let mut file = File::open(path).map_err(open_err)?;
    let mut magic = [0u8; 21];
    let n = file.read(&mut magic).map_err(open_err)?;
    let magic = &magic[..n];
    let run = if magic.starts_with(b"KDMV") || magic.starts_with(b"# Disk DescriptorFile") {
        let reader = VmdkReader::open(path)?;
        read_results(&mut Cursor::new(reader))?
    } else {
        drop(file);
        imgbuild_init::results::read_results_file(path)?
    };
    Ok(Collected::new(path, run))
}
