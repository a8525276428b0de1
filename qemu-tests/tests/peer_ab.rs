//! The peer client: the real `ab` (Debian's apache2-utils) on the host drives the init's
//! built-in HTTP server in a QEMU guest, through `imgbuild run --forward-http` (QEMU user
//! networking's port forwarding, the guest's NIC configured by `imgbuild.ip=`). Zero failed
//! requests on ab's side, and the guest's own count of what it served agrees.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use imgbuild::run::{EngineKind, RunOptions};
use qemu_tests::{boot_with, build_with_profile, skip, vm_prerequisites, workloads, SharedBuild};

/// Requests ab sends.
const AB_REQUESTS: u32 = 2000;

/// The guest serves until it answered the readiness probe and ab's requests (or 10 minutes).
fn serve_profile() -> String {
    format!(
        r#"
[workloads.profiles.serve]
repetitions = 1
verify_digest = false
[[workloads.profiles.serve.workloads]]
workload = "http"
timeout_s = 900
params = {{ mode = "serve", serve_requests = {}, serve_seconds = 600 }}
"#,
        AB_REQUESTS + 1
    )
}

fn serve_build() -> &'static Result<SharedBuild, String> {
    static B: OnceLock<Result<SharedBuild, String>> = OnceLock::new();
    B.get_or_init(|| build_with_profile("serve", &serve_profile()))
}

/// A port nobody listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// One GET of /4k; true on a 200 answer. QEMU accepts forwarded connections before the guest
/// listens (and then drops them), so only a real response says the server is up.
fn answers(port: u16) -> bool {
    let attempt = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.write_all(b"GET /4k HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
        let mut reply = Vec::new();
        s.read_to_end(&mut reply)?;
        Ok(reply.starts_with(b"HTTP/1.0 200") || reply.starts_with(b"HTTP/1.1 200"))
    };
    attempt().unwrap_or(false)
}

/// The number after `label` in ab's report.
fn ab_figure(report: &str, label: &str) -> Option<f64> {
    report
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn real_ab_on_the_host_drives_the_guest_server() {
    if let Err(why) = vm_prerequisites() {
        return skip("peer ab", &why);
    }
    if Command::new("ab").arg("-V").output().is_err() {
        return skip(
            "peer ab",
            "ab not installed (apt-get install apache2-utils)",
        );
    }
    let build = serve_build().as_ref().unwrap_or_else(|e| panic!("{e}"));
    let port = free_port();
    let out = build.out.clone();
    let guest = std::thread::spawn(move || {
        boot_with(
            &out,
            RunOptions {
                engine: EngineKind::Qemu,
                timeout: Duration::from_secs(900),
                forward_http: Some(port),
                ..RunOptions::default()
            },
        )
    });

    let started = Instant::now();
    while !answers(port) {
        assert!(
            !guest.is_finished(),
            "the guest ended before its server answered"
        );
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the guest's server did not answer on port {port} in 10 minutes"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!("guest server up after {:?}", started.elapsed());
    let ab = Command::new("ab")
        .args(["-n", &AB_REQUESTS.to_string(), "-c", "4"])
        .arg(format!("http://127.0.0.1:{port}/4k"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&ab.stdout);
    eprintln!("{report}");
    assert!(
        ab.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&ab.stderr)
    );
    assert_eq!(
        ab_figure(&report, "Complete requests:"),
        Some(f64::from(AB_REQUESTS))
    );
    assert_eq!(ab_figure(&report, "Failed requests:"), Some(0.0));
    assert!(!report.contains("Non-2xx responses"), "{report}");
    assert!(ab_figure(&report, "Requests per second:").is_some_and(|r| r > 0.0));

    // The guest stops serving after the probe and ab's requests, and powers off.
    let record = guest.join().unwrap();
    assert!(record.ok(), "{:?}", record.problems());
    assert!(
        record
            .command
            .contains(&format!("hostfwd=tcp:127.0.0.1:{port}-:80")),
        "{}",
        record.command
    );
    let w = workloads(&record);
    assert_eq!(w.len(), 1);
    let figure = |name: &str| {
        w[0].metrics
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.median)
            .unwrap_or_else(|| panic!("no {name} in {:?}", w[0].metrics))
    };
    assert_eq!(figure("served_requests"), f64::from(AB_REQUESTS + 1));
    assert_eq!(figure("error_responses"), 0.0);
}
