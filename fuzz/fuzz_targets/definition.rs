//! The TOML definition loader: syntax, schema, `extends`, path resolution, validation and
//! `--set`. The input is written to `image.toml` in a private tmpfs directory that also holds
//! `base.toml`, which inputs may extend; its lines starting with `#set ` (TOML comments) are
//! also applied as `--set` arguments.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use imgbuild::definition::{load, SetArg};
use libfuzzer_sys::fuzz_target;

const BASE: &str =
    "name = \"base\"\n[vm]\nmemory = 256\n[[layers]]\nname = \"root\"\nbuiltin = true\n";

fn workdir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("imgbuild-fuzz-definition-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the fuzz directory");
        std::fs::write(dir.join("base.toml"), BASE).expect("write base.toml");
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let path = workdir().join("image.toml");
    std::fs::write(&path, data).expect("write the input");
    let text = String::from_utf8_lossy(data);
    let sets: Vec<SetArg> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#set "))
        .filter_map(|s| s.parse().ok())
        .take(8)
        .collect();
    let _ = load(Some(&path), &sets);
    let _ = load(None, &sets);
});
