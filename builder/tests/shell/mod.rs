//! `sh` for the integration tests: run a command line, fail the test with its output when it
//! fails. Included by path from the tests' helper modules (and from qemu-tests through them).
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

/// Runs a shell command line with `sh -c`, panicking with its output when it fails; returns
/// stdout.
pub fn sh(script: &str) -> String {
    run("-c", script)
}

/// [`sh`] with `-e`: the first failing command of the line fails it.
pub fn sh_strict(script: &str) -> String {
    run("-ec", script)
}

fn run(flags: &str, script: &str) -> String {
    let out = Command::new("sh").arg(flags).arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "`{script}` failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A path quoted for `sh`.
pub fn q(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}
