//! Compares the built-in workloads with the real tools on this host (a benchmark, not a test):
//! crypto sha256/8192 vs `openssl speed`, the http load generator vs `ab` against the same
//! built-in server, the UnixBench CV over repetitions, and the disk block figures vs
//! `bonnie++`. Run through `benches/workloads_vs_tools.sh`.
//!
//! The built-in side always runs as the release `imgbuild-init --host` with a generated
//! profile, exactly as in a guest; results are read back from its results file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use imgbuild_init::results::read_results_file;
use imgbuild_init::results::schema::{Metric, Status, WorkloadResult};
use imgbuild_init::workloads::stats::{cv, median};
use imgbuild_init::workloads::tools::{ab, bonnie, openssl};

struct Opts {
    init: PathBuf,
    dir: PathBuf,
    reps: u32,
    only: Vec<String>,
    disk_mib: u64,
    disk_2xram: bool,
    disk_buffered_mib: Option<u64>,
    ub_long_s: f64,
    ub_short_s: f64,
    ub_settle_s: f64,
}

fn parse_args() -> Result<Opts> {
    let mut o = Opts {
        init: PathBuf::from("target/x86_64-unknown-linux-gnu/release/imgbuild-init"),
        dir: std::env::temp_dir(),
        reps: 5,
        only: Vec::new(),
        disk_mib: 512,
        disk_2xram: false,
        disk_buffered_mib: None,
        ub_long_s: 1.0,
        ub_short_s: 3.0,
        ub_settle_s: 0.3,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().context("missing value");
        match a.as_str() {
            "--init" => o.init = val()?.into(),
            "--dir" => o.dir = val()?.into(),
            "--reps" => o.reps = val()?.parse()?,
            "--only" => o.only = val()?.split(',').map(str::to_owned).collect(),
            "--disk-mib" => o.disk_mib = val()?.parse()?,
            "--disk-2xram" => o.disk_2xram = true,
            "--disk-buffered-mib" => o.disk_buffered_mib = Some(val()?.parse()?),
            "--unixbench-long-s" => o.ub_long_s = val()?.parse()?,
            "--unixbench-short-s" => o.ub_short_s = val()?.parse()?,
            "--unixbench-settle-s" => o.ub_settle_s = val()?.parse()?,
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(o)
}

/// Runs the init in host mode with `profile`; returns its workload records.
fn host_run(o: &Opts, profile: serde_json::Value) -> Result<Vec<WorkloadResult>> {
    let work = tempfile::tempdir_in(&o.dir)?;
    let path = work.path().join("profile.json");
    std::fs::write(&path, serde_json::to_vec(&profile)?)?;
    let results = work.path().join("results.bin");
    let out = Command::new(&o.init)
        .args(["--host", "--profile"])
        .arg(&path)
        .arg("--results")
        .arg(&results)
        .arg("--workdir")
        .arg(work.path().join("w"))
        .stderr(Stdio::piped())
        .output()?;
    let run = read_results_file(&results)
        .with_context(|| String::from_utf8_lossy(&out.stderr).into_owned())?;
    let ws: Vec<WorkloadResult> = run.workloads().cloned().collect();
    for w in &ws {
        if w.status != Status::Ok {
            bail!("{} {:?}: {:?}", w.name, w.status, w.reason);
        }
    }
    Ok(ws)
}

fn metric<'a>(w: &'a WorkloadResult, name: &str) -> Result<&'a Metric> {
    w.metrics
        .iter()
        .find(|m| m.name == name)
        .with_context(|| format!("no metric {name} in {}", w.name))
}

fn line(label: &str, ours: &[f64], theirs: &[f64], unit: &str) {
    let (a, b) = (median(ours), median(theirs));
    println!(
        "  {label:<44} ours {a:>14.1}  tool {b:>14.1} {unit:<10} ratio {:.3}  (CV ours {:.1}%, tool {:.1}%)",
        a / b,
        cv(ours) * 100.0,
        cv(theirs) * 100.0
    );
}

fn run_out(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn crypto(o: &Opts) -> Result<()> {
    println!("crypto: sha256, 8192-byte blocks, one thread, 3 s per measurement");
    let prof = |timing: &str| {
        serde_json::json!({"name": "c", "verify_digest": false, "repetitions": o.reps,
            "workloads": [{"workload": "crypto", "params": {"seconds": 3.0,
              "algorithms": ["sha256"], "block_sizes": [8192], "threads": ["single"],
              "timing": timing}}]})
    };
    let cpu = host_run(o, prof("cpu"))?;
    let wall = host_run(o, prof("wall"))?;
    let ours_cpu = metric(&cpu[0], "sha256/8192/single")?.values.clone();
    let ours_wall = metric(&wall[0], "sha256/8192/single")?.values.clone();
    let (mut user, mut elapsed) = (Vec::new(), Vec::new());
    for _ in 0..o.reps {
        for (elapsed_flag, out) in [(false, &mut user), (true, &mut elapsed)] {
            let mut c = Command::new("openssl");
            c.args([
                "speed", "-mr", "-evp", "sha256", "-bytes", "8192", "-seconds", "3",
            ]);
            if elapsed_flag {
                c.arg("-elapsed");
            }
            let s = openssl::parse_mr(&run_out(&mut c)?).map_err(anyhow::Error::msg)?;
            out.push(s.rate("sha256", 8192).context("no sha256 rate")?);
        }
    }
    let mib = |v: &[f64]| v.iter().map(|x| x / 1048576.0).collect::<Vec<_>>();
    line(
        "CPU-timed vs openssl (user time)",
        &mib(&ours_cpu),
        &mib(&user),
        "MiB/s",
    );
    line(
        "wall-timed vs openssl -elapsed",
        &mib(&ours_wall),
        &mib(&elapsed),
        "MiB/s",
    );
    Ok(())
}

fn spawn_server(o: &Opts, port: u16, seconds: f64) -> Result<(Child, tempfile::TempDir)> {
    let work = tempfile::tempdir_in(&o.dir)?;
    let prof = serde_json::json!({"name": "s", "verify_digest": false, "repetitions": 1,
        "timeout_s": seconds + 60.0, "workloads": [{"workload": "http", "params": {
          "mode": "serve", "listen": format!("127.0.0.1:{port}"), "serve_seconds": seconds}}]});
    let path = work.path().join("p.json");
    std::fs::write(&path, serde_json::to_vec(&prof)?)?;
    let child = Command::new(&o.init)
        .args(["--host", "--profile"])
        .arg(&path)
        .arg("--results")
        .arg(work.path().join("r.bin"))
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("server on {port} never listened");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((child, work))
}

fn http(o: &Opts) -> Result<()> {
    println!("http: 20000 requests of /4k, HTTP/1.0 without keep-alive, against one built-in server process");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let (mut server, _keep) = spawn_server(o, port, 3600.0)?;
    let result = (|| -> Result<()> {
        for c in [1u32, 8] {
            let (mut ours, mut theirs) = (Vec::new(), Vec::new());
            let mut failed = 0;
            for _ in 0..o.reps {
                let text = run_out(
                    Command::new("ab")
                        .args(["-n", "20000", "-c", &c.to_string()])
                        .arg(format!("http://127.0.0.1:{port}/4k")),
                )?;
                let r = ab::parse_report(&text).map_err(anyhow::Error::msg)?;
                failed += r.failed;
                theirs.push(r.requests_per_s);
                let ws = host_run(
                    o,
                    serde_json::json!({"name": "h", "verify_digest": false, "repetitions": 1,
                      "workloads": [{"workload": "http", "params": {"requests": 20000,
                        "concurrency": [c], "paths": ["/4k"],
                        "target": format!("127.0.0.1:{port}")}}]}),
                )?;
                ours.push(metric(&ws[0], &format!("4k/c{c}/requests_per_s"))?.median);
                let f = metric(&ws[0], &format!("4k/c{c}/failed"))?.median;
                if f != 0.0 {
                    bail!("our load generator saw {f} failed requests");
                }
            }
            line(
                &format!("requests/s at -c {c} (ab failed: {failed})"),
                &ours,
                &theirs,
                "req/s",
            );
        }
        Ok(())
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
}

fn unixbench(o: &Opts) -> Result<()> {
    println!(
        "unixbench: single copy, {} repetitions, long tests {} s x 10 passes, short {} s x 3, \
         settle {} s (shortened from 10/30/60 s)",
        o.reps, o.ub_long_s, o.ub_short_s, o.ub_settle_s
    );
    let ws = host_run(
        o,
        serde_json::json!({"name": "u", "verify_digest": false, "repetitions": o.reps,
          "timeout_s": 36000, "workloads": [{"workload": "unixbench", "params": {
            "copies": ["single"], "long_seconds": o.ub_long_s, "short_seconds": o.ub_short_s,
            "shell_seconds": o.ub_short_s, "settle_s": o.ub_settle_s,
            "fstime_settle_s": o.ub_settle_s * 3.0, "pin": true}}]}),
    )?;
    let w = &ws[0];
    for key in imgbuild_init::workloads::unixbench::Test::ALL.map(|t| t.key()) {
        let score = metric(w, &format!("single/{key}"))?;
        let idx = metric(w, &format!("single/{key}/index"))?;
        let target = match key {
            "context1" | "fstime" | "fsbuffer" | "fsdisk" => 10.0,
            "shell1" | "shell8" => f64::NAN,
            _ => 5.0,
        };
        println!(
            "  {key:<18} score {:>14.1} {:<6} index {:>8.1}  CV {:>5.2}%  {}",
            score.median,
            score.unit,
            idx.median,
            score.cv * 100.0,
            if target.is_nan() {
                "(no target)".to_owned()
            } else if score.cv * 100.0 <= target {
                format!("<= {target}% ok")
            } else {
                format!("> {target}% MISSED")
            }
        );
    }
    let sys = metric(w, "single/index")?;
    println!(
        "  system index (single copy): median {:.1}, CV {:.2}%, values {:?}",
        sys.median,
        sys.cv * 100.0,
        sys.values
            .iter()
            .map(|v| (v * 10.0).round() / 10.0)
            .collect::<Vec<_>>()
    );
    Ok(())
}

/// One bonnie++ block run; (write, rewrite, read) K/s, `None` for `+++++`.
fn bonnie_block(dir: &Path, mib: u64, direct: bool) -> Result<[Option<f64>; 3]> {
    let work = tempfile::tempdir_in(dir)?;
    let mut c = Command::new("bonnie++");
    c.arg("-d").arg(work.path());
    c.args([
        "-s",
        &format!("{mib}:8192"),
        "-n",
        "0",
        "-f",
        "-q",
        "-u",
        "root",
    ]);
    // The file is twice the memory bonnie++ must assume (the RAM, or a cgroup's limit).
    c.args(["-r", &(mib / 2).to_string()]);
    if direct {
        c.arg("-D");
    }
    let csv = bonnie::parse_csv(&run_out(&mut c)?).map_err(anyhow::Error::msg)?;
    let mut out = [None; 3];
    for (i, field) in [11usize, 13, 17].iter().enumerate() {
        out[i] = match csv.fields[*field] {
            bonnie::Field::Number(v) => Some(v),
            bonnie::Field::TooFast => None,
            ref other => bail!("bonnie++ field {field} is {other:?}"),
        };
    }
    Ok(out)
}

fn disk_compare(o: &Opts, reps: u32, mib: u64, direct: bool) -> Result<()> {
    let ws = host_run(
        o,
        serde_json::json!({"name": "d", "verify_digest": false, "repetitions": reps,
          "timeout_s": 36000, "workloads": [{"workload": "disk", "params": {
            "size_mib": mib, "chunk_kib": 8, "direct": if direct { "always" } else { "never" },
            "tests": ["block"]}}]}),
    )?;
    let w = &ws[0];
    let mut theirs: [Vec<f64>; 3] = Default::default();
    let mut too_fast = [0u32; 3];
    for _ in 0..reps {
        for (i, v) in bonnie_block(&o.dir, mib, direct)?.iter().enumerate() {
            match v {
                Some(v) => theirs[i].push(*v),
                None => too_fast[i] += 1,
            }
        }
    }
    for (i, name) in ["block_write", "rewrite", "block_read"].iter().enumerate() {
        let ours = &metric(w, &format!("{name}_kib_per_s"))?.values;
        if theirs[i].is_empty() {
            println!(
                "  {name:<44} ours {:>14.1}  tool          +++++ KiB/s      (bonnie++ too fast to measure: page cache)",
                median(ours)
            );
        } else {
            line(name, ours, &theirs[i], "KiB/s");
        }
    }
    Ok(())
}

fn disk(o: &Opts) -> Result<()> {
    let reps = o.reps.min(3);
    println!(
        "disk: {} MiB file, 8 KiB chunks, O_DIRECT on both sides (bonnie++ -D), in {} \
         (bonnie++ 2.00a's -D does not keep its read phases out of the page cache)",
        o.disk_mib,
        o.dir.display()
    );
    disk_compare(o, reps, o.disk_mib, true)?;
    if o.disk_2xram {
        let ram = std::fs::read_to_string("/proc/meminfo")?
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .context("MemTotal")?;
        let mib = 2 * ram.div_ceil(1024);
        println!("disk: buffered, file of twice the RAM ({mib} MiB) on both sides, one run");
        disk_compare(o, 1, mib, false)?;
    }
    if let Some(mib) = o.disk_buffered_mib {
        // Run by the script inside a memory-limited cgroup (BENCH_MEMORY_MIB): the page cache
        // is charged to it, so a file of twice the limit cannot be served from memory.
        println!(
            "disk: buffered, {mib} MiB file on both sides (memory-limited cgroup), {reps} runs"
        );
        disk_compare(o, reps, mib, false)?;
    }
    Ok(())
}

fn main() -> Result<()> {
    // `--dump RESULTS` prints the medians of a results file and exits.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--dump") {
        let run = read_results_file(Path::new(argv.get(2).context("--dump FILE")?))?;
        for w in run.workloads() {
            println!("{} {:?} {:?}", w.name, w.status, w.reason);
            for m in &w.metrics {
                println!(
                    "  {:<40} {:>16.2} {:<10} cv {:.2}%",
                    m.name,
                    m.median,
                    m.unit,
                    m.cv * 100.0
                );
            }
        }
        return Ok(());
    }
    let o = parse_args()?;
    if !Path::new(&o.init).is_file() {
        bail!("no init binary at {}", o.init.display());
    }
    let want = |s: &str| o.only.is_empty() || o.only.iter().any(|x| x == s);
    let t = Instant::now();
    if want("crypto") {
        crypto(&o)?;
    }
    if want("http") {
        http(&o)?;
    }
    if want("unixbench") {
        unixbench(&o)?;
    }
    if want("disk") {
        disk(&o)?;
    }
    println!("done in {:.0} s", t.elapsed().as_secs_f64());
    Ok(())
}
