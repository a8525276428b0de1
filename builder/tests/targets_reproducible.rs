//! Reproducibility: the same definition built twice into two directories gives byte-identical
//! files (compared with `cmp`) and identical manifests — also when the second build runs on
//! one CPU, so the parallel compression and packaging do not leak into the bytes. Both builds
//! name the same `--xen-dir`: the xl config holds absolute paths, by default the output's.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod targets_common;

use std::fs;
use std::path::Path;
use std::process::Command;

use imgbuild::manifest::Manifest;
use targets_common::*;

const XEN_DIR: &str = "/srv/xen/repro";

fn same_outputs(a: &Path, b: &Path) {
    let ma = Manifest::read(a).unwrap();
    let mb = Manifest::read(b).unwrap();
    let (fa, fb) = (files_with_sha(&ma), files_with_sha(&mb));
    let differ: Vec<_> = fa.iter().filter(|f| !fb.contains(f)).collect();
    assert!(differ.is_empty(), "differ: {differ:?}");
    assert_eq!(ma, mb);
    assert_eq!(
        fs::read(a.join("manifest.json")).unwrap(),
        fs::read(b.join("manifest.json")).unwrap()
    );
    let (la, lb) = (listing_names(a), listing_names(b));
    assert_eq!(la, lb);
    let listed: Vec<String> = files(&ma).into_iter().map(|(_, _, p)| p).collect();
    for name in &la {
        if !a.join(name).is_file() {
            continue;
        }
        ok(Command::new("cmp").arg(a.join(name)).arg(b.join(name)));
        assert!(
            name == "manifest.json" || listed.contains(name),
            "{name} is not in the manifest"
        );
    }
}

fn files_with_sha(m: &Manifest) -> Vec<(String, String)> {
    m.targets
        .values()
        .flat_map(|t| t.files.iter().map(|f| (f.path.clone(), f.sha256.clone())))
        .collect()
}

fn listing_names(dir: &Path) -> Vec<String> {
    listing(dir).into_iter().map(|(n, _)| n).collect()
}

#[test]
fn default_image_twice() {
    let scratch_dir = scratch("repro-default");
    let work = scratch_dir.path();
    let (a, b) = (work.join("a"), work.join("b"));
    build(&a, &["--target", "all", "--xen-dir", XEN_DIR]);
    build(&b, &["--target", "all", "--xen-dir", XEN_DIR]);
    same_outputs(&a, &b);
}

#[test]
fn custom_image_twice_on_any_number_of_cpus() {
    need("taskset", "util-linux");
    let scratch_dir = scratch("repro-custom");
    let work = scratch_dir.path();
    let def = write_custom(&work.join("fixture"));
    let a = work.join("a");
    let image = def.to_str().unwrap();
    build(
        &a,
        &["--image", image, "--target", "all", "--xen-dir", XEN_DIR],
    );
    let b = work.join("b");
    let one_cpu = Command::new("taskset")
        .args(["-c", "0"])
        .arg(imgbuild())
        .args(["build", "-q", "--target", "all", "--image"])
        .arg(&def)
        .arg("--out")
        .arg(&b)
        .args(["--xen-dir", XEN_DIR])
        .arg("--init")
        .arg(init())
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .unwrap();
    assert!(one_cpu.status.success(), "{}", text(&one_cpu));
    same_outputs(&a, &b);
}
