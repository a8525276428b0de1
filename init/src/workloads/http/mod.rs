//! `http`: an `ab`-like benchmark of a small built-in static HTTP server.
//!
//! `mode: "bench"` (default) starts the server on loopback (or drives `target`, an external
//! server) and runs the load generator at each concurrency for `requests` requests per path,
//! reporting ab's figures. `mode: "serve"` only serves, on `listen` (default `0.0.0.0:80`), for
//! `serve_seconds` or until `serve_requests` were answered, so that a real `ab` on the host can
//! drive the guest (through QEMU port forwarding); it reports what it served.

pub mod client;
pub mod server;

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};

use serde::Deserialize;

use super::{parse_params, Context, Repetition, Sample, Workload};

/// The http workload.
pub struct Http;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Bench,
    Serve,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "bench")]
    mode: Mode,
    #[serde(default = "default_requests")]
    requests: u64,
    #[serde(default = "default_concurrency")]
    concurrency: Vec<u32>,
    #[serde(default = "default_paths")]
    paths: Vec<String>,
    #[serde(default)]
    keep_alive: bool,
    #[serde(default)]
    target: Option<String>,
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default)]
    serve_seconds: Option<f64>,
    #[serde(default)]
    serve_requests: Option<u64>,
}

fn bench() -> Mode {
    Mode::Bench
}
fn default_requests() -> u64 {
    10000
}
fn default_concurrency() -> Vec<u32> {
    vec![1, 2, 4, 8]
}
fn default_paths() -> Vec<String> {
    vec!["/4k".into(), "/64k".into()]
}
fn default_listen() -> String {
    "0.0.0.0:80".into()
}

fn parse(params: &serde_json::Value) -> Result<Params, String> {
    let p: Params = parse_params(params)?;
    if !(1..=10_000_000).contains(&p.requests) {
        return Err(format!("requests {} outside 1..=10000000", p.requests));
    }
    if p.concurrency.is_empty() || p.concurrency.iter().any(|&c| !(1..=1024).contains(&c)) {
        return Err("concurrency must list values in 1..=1024".into());
    }
    if p.paths.is_empty()
        || p.paths
            .iter()
            .any(|x| !x.starts_with('/') || x.contains(' '))
    {
        return Err("paths must be absolute URL paths without spaces".into());
    }
    if p.mode == Mode::Serve {
        if p.serve_seconds.is_none() && p.serve_requests.is_none() {
            return Err("serve mode needs serve_seconds or serve_requests".into());
        }
        if let Some(s) = p.serve_seconds {
            if !(s.is_finite() && s > 0.0 && s <= 86400.0) {
                return Err(format!("serve_seconds {s} outside (0, 86400]"));
            }
        }
    }
    Ok(p)
}

fn resolve(target: &str) -> Result<SocketAddr, String> {
    target
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {target}: {e}"))?
        .next()
        .ok_or_else(|| format!("{target} resolves to nothing"))
}

fn sample(
    metric: String,
    unit: &str,
    higher: bool,
    value: f64,
    params: &[(&str, serde_json::Value)],
) -> Sample {
    Sample::new(metric, unit, higher, value).with_parameters(params)
}

impl Workload for Http {
    fn name(&self) -> &'static str {
        "http"
    }

    fn summary(&self) -> &'static str {
        "ab-like requests/s, time per request, transfer rate and latency percentiles of a \
         built-in static HTTP server at 1, 2, 4, 8 connections (or serve for a real ab)"
    }

    fn check(&self, params: &serde_json::Value) -> Result<(), String> {
        parse(params).map(|_| ())
    }

    fn run(&self, params: &serde_json::Value, _ctx: &Context) -> Result<Repetition, String> {
        let p = parse(params)?;
        let mut info = BTreeMap::new();
        if p.mode == Mode::Serve {
            let srv = server::Server::start(&p.listen, server::default_files())?;
            info.insert("listen".into(), srv.addr().to_string().into());
            srv.serve_until(p.serve_seconds, p.serve_requests);
            let c = srv.counters();
            let get = |a: &std::sync::atomic::AtomicU64| {
                a.load(std::sync::atomic::Ordering::Relaxed) as f64
            };
            return Ok(Repetition {
                samples: vec![
                    sample(
                        "served_requests".into(),
                        "requests",
                        true,
                        get(&c.served),
                        &[],
                    ),
                    sample(
                        "connections".into(),
                        "connections",
                        true,
                        get(&c.connections),
                        &[],
                    ),
                    sample(
                        "error_responses".into(),
                        "responses",
                        false,
                        get(&c.errors),
                        &[],
                    ),
                ],
                tool: None,
                info,
            });
        }
        let server;
        let addr = match &p.target {
            Some(t) => resolve(t)?,
            None => {
                server = server::Server::start("127.0.0.1:0", server::default_files())?;
                server.addr()
            }
        };
        info.insert("server".into(), addr.to_string().into());
        info.insert(
            "request".into(),
            "GET PATH HTTP/1.0 with Host, User-Agent, Accept (as ab)".into(),
        );
        info.insert("keep_alive".into(), p.keep_alive.into());
        let mut samples = Vec::new();
        for path in &p.paths {
            let label = path.trim_start_matches('/');
            for &c in &p.concurrency {
                let r = client::load(addr, path, p.requests, c, p.keep_alive)?;
                if r.complete == 0 {
                    return Err(format!(
                        "no request to {addr}{path} completed at concurrency {c} ({:?})",
                        r.failed
                    ));
                }
                let params = [
                    ("path", path.as_str().into()),
                    ("concurrency", c.into()),
                    ("requests", p.requests.into()),
                ];
                let m = |name: &str| format!("{label}/c{c}/{name}");
                samples.extend([
                    sample(
                        m("requests_per_s"),
                        "requests/s",
                        true,
                        r.requests_per_s(),
                        &params,
                    ),
                    sample(
                        m("time_per_request_ms"),
                        "ms",
                        false,
                        r.time_per_request_ms(c),
                        &params,
                    ),
                    sample(
                        m("time_per_request_all_ms"),
                        "ms",
                        false,
                        r.time_per_request_all_ms(),
                        &params,
                    ),
                    sample(
                        m("transfer_kib_per_s"),
                        "KiB/s",
                        true,
                        r.transfer_kib_per_s(),
                        &params,
                    ),
                    sample(
                        m("failed"),
                        "requests",
                        false,
                        r.failed.total() as f64,
                        &params,
                    ),
                    sample(m("non_2xx"), "responses", false, r.non_2xx as f64, &params),
                    sample(m("p50_ms"), "ms", false, r.percentile_ms(50), &params),
                    sample(m("p90_ms"), "ms", false, r.percentile_ms(90), &params),
                    sample(m("p99_ms"), "ms", false, r.percentile_ms(99), &params),
                ]);
                info.insert(
                    format!("{label}/c{c}/failures"),
                    serde_json::json!({"connect": r.failed.connect, "receive": r.failed.receive,
                        "length": r.failed.length, "exceptions": r.failed.exceptions}),
                );
            }
        }
        Ok(Repetition {
            samples,
            tool: None,
            info,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_mode_reports_every_figure() {
        let ctx = Context {
            workdir: std::env::temp_dir(),
            online_cpus: 2,
            repetition: 0,
            repetitions: 1,
        };
        let rep = Http
            .run(
                &serde_json::json!({"requests": 50, "concurrency": [1, 2], "paths": ["/4k"]}),
                &ctx,
            )
            .unwrap();
        assert_eq!(rep.samples.len(), 2 * 9);
        let failed: Vec<_> = rep
            .samples
            .iter()
            .filter(|s| s.metric.ends_with("/failed"))
            .collect();
        assert!(failed.iter().all(|s| s.value == 0.0));
        assert!(rep.samples[0].metric == "4k/c1/requests_per_s" && rep.samples[0].value > 0.0);
    }

    #[test]
    fn params_are_checked() {
        for bad in [
            serde_json::json!({"requests": 0}),
            serde_json::json!({"concurrency": []}),
            serde_json::json!({"concurrency": [0]}),
            serde_json::json!({"paths": ["4k"]}),
            serde_json::json!({"mode": "serve"}),
            serde_json::json!({"mode": "serve", "serve_seconds": -1}),
        ] {
            assert!(Http.check(&bad).is_err(), "{bad}");
        }
        assert!(Http
            .check(&serde_json::json!({"mode": "serve", "serve_requests": 10}))
            .is_ok());
    }
}
