//! Times our ext4 writer against `mke2fs -t ext4 -d` on a debootstrap minbase tree (same tree,
//! same size, interleaved runs, medians), and measures the writer's peak RSS on a tree with
//! 1 GiB of file data (in a child process, from VmHWM).
//!
//! `cargo bench -p imgbuild --bench ext4_vs_mke2fs`. The tree is built once with debootstrap
//! under `${IMGBUILD_CACHE:-$HOME/.cache/imgbuild}/debootstrap-minbase` (see
//! `benches/ext4_vs_mke2fs.sh`). `EXT4_BENCH_RUNS` changes the number of runs (default 5).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use imgbuild::definition::{FreeSpace, FsType, SizeSpec};
use imgbuild::ext4::{self, Ext4Params};
use imgbuild::tree::{Meta, Tree};

fn params() -> Ext4Params {
    Ext4Params {
        fs_type: FsType::Ext4,
        size: SizeSpec::Auto,
        free: FreeSpace::Percent(25.0),
        inode_ratio: 16384,
        label: "bench".into(),
        uuid: [7; 16],
        hash_seed: [9; 16],
        reserved_percent: 0.0,
        journal_size: None,
        timestamp: 1_700_000_000,
    }
}

fn cache_dir() -> PathBuf {
    match std::env::var_os("IMGBUILD_CACHE") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
            .join(".cache/imgbuild"),
    }
}

fn load_tree(root: &Path) -> Tree {
    let mut tree = Tree::new(Meta::root(0o755, 0));
    imgbuild::sources::dir::apply(&mut tree, root, None).unwrap();
    tree
}

/// Durations of one run of ours.
struct Ours {
    /// Directory scan + plan + write.
    total: Duration,
    /// Plan + write only.
    write: Duration,
    /// Everything plus fsync of the image (mke2fs fsyncs before it exits).
    synced: Duration,
    size: u64,
}

/// Starts every timed run from the same state: nothing dirty, and the deletion of the previous
/// image (with online discard on this host) finished.
fn settle(img: &Path) {
    let _ = std::fs::remove_file(img);
    // SAFETY: sync(2) has no arguments and no memory effects.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_millis(300));
}

fn ours(root: &Path, img: &Path, p: &Ext4Params) -> Ours {
    settle(img);
    let t0 = Instant::now();
    let mut tree = load_tree(root);
    // The build hashes every file for the rootfs digest before the filesystem is planned.
    imgbuild::tree::hash_contents(&mut tree, &|_| {}).unwrap();
    imgbuild::tree::tree_digest(&tree).unwrap();
    let t1 = Instant::now();
    let plan = ext4::plan(&tree, p).unwrap();
    let file = std::fs::File::create(img).unwrap();
    ext4::write(&tree, &plan, &file, 0, true, &|_| {}).unwrap();
    let t2 = Instant::now();
    file.sync_all().unwrap();
    let t3 = Instant::now();
    Ours {
        total: t2 - t0,
        write: t2 - t1,
        synced: t3 - t0,
        size: plan.size_bytes,
    }
}

fn mke2fs(root: &Path, img: &Path, size: u64) -> Duration {
    settle(img);
    let t0 = Instant::now();
    let st = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
        .arg(root)
        .arg(img)
        .arg(format!("{}k", size / 1024))
        .status()
        .unwrap();
    assert!(st.success(), "mke2fs failed");
    t0.elapsed()
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Child mode: write the image of `root` and print the peak RSS before and after.
fn rss_child(root: &Path, img: &Path) {
    let tree = load_tree(root);
    let before = vm_hwm_kib();
    let plan = ext4::plan(&tree, &params()).unwrap();
    let file = std::fs::File::create(img).unwrap();
    ext4::write(&tree, &plan, &file, 0, true, &|_| {}).unwrap();
    println!("RSS {before} {}", vm_hwm_kib());
}

/// Peak RSS (KiB) of a child process that loads `root`, plans and writes its image.
fn child_rss(root: &Path, img: &Path) -> Option<(u64, u64)> {
    let out = Command::new(std::env::current_exe().ok()?)
        .arg("--rss-child")
        .arg(root)
        .arg(img)
        .output()
        .ok()?;
    let _ = std::fs::remove_file(img);
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.lines().find_map(|l| l.strip_prefix("RSS "))?;
    let mut it = v.split(' ').map(|n| n.parse::<u64>().unwrap_or(0));
    Some((it.next()?, it.next()?))
}

fn report_rss(what: &str, rss: Option<(u64, u64)>) {
    match rss {
        Some((before, after)) => println!(
            "peak RSS, {what}: {:.1} MiB (after loading the tree: {:.1} MiB)",
            after as f64 / 1024.0,
            before as f64 / 1024.0
        ),
        None => println!("peak RSS, {what}: child failed"),
    }
}

fn rss_of_big_tree(work: &Path) {
    let root = work.join("big-tree");
    std::fs::create_dir_all(&root).unwrap();
    let f = root.join("one-gib");
    if std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0) != 1 << 30 {
        let mut block = vec![0u8; 1 << 20];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&f).unwrap());
        for _ in 0..1024 {
            for b in block.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8 | 1;
            }
            std::io::Write::write_all(&mut out, &block).unwrap();
        }
    }
    report_rss(
        "tree with 1 GiB of file data",
        child_rss(&root, &work.join("big.img")),
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--rss-child") {
        rss_child(Path::new(&args[i + 1]), Path::new(&args[i + 2]));
        return;
    }
    let root = cache_dir().join("debootstrap-minbase");
    if !root.is_dir() {
        println!(
            "no tree at {}: run benches/ext4_vs_mke2fs.sh (debootstrap --variant=minbase bookworm)",
            root.display()
        );
        return;
    }
    let runs: usize = std::env::var("EXT4_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let work = tempfile::Builder::new()
        .prefix("ext4-bench")
        .tempdir_in(cache_dir())
        .unwrap();
    let img = work.path().join("img");
    let p = params();
    // Warm the page cache and learn the size.
    let size = ours(&root, &img, &p).size;
    mke2fs(&root, &img, size);
    let (mut total, mut write, mut synced, mut theirs) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let o = ours(&root, &img, &p);
        total.push(o.total);
        write.push(o.write);
        synced.push(o.synced);
        theirs.push(mke2fs(&root, &img, size));
    }
    let (t, w, s, m) = (
        median(&mut total),
        median(&mut write),
        median(&mut synced),
        median(&mut theirs),
    );
    println!(
        "tree {} ({} MiB filesystem), {runs} interleaved runs, medians:",
        root.display(),
        size >> 20
    );
    println!(
        "  imgbuild scan+hash+plan+write:   {:8.3} s",
        t.as_secs_f64()
    );
    println!(
        "  imgbuild plan+write:             {:8.3} s",
        w.as_secs_f64()
    );
    println!(
        "  imgbuild scan+hash+plan+write+fsync: {:8.3} s",
        s.as_secs_f64()
    );
    println!(
        "  mke2fs -t ext4 -d (fsyncs):      {:8.3} s",
        m.as_secs_f64()
    );
    println!(
        "  ratio imgbuild/mke2fs: {:.2} (scan+hash+plan+write), {:.2} (with fsync, like for like)",
        t.as_secs_f64() / m.as_secs_f64(),
        s.as_secs_f64() / m.as_secs_f64()
    );
    report_rss(
        "debootstrap tree",
        child_rss(&root, &work.path().join("rss.img")),
    );
    rss_of_big_tree(work.path());
}
