//! `smtp`: a Postal-like mail delivery benchmark against a built-in SMTP sink.
//!
//! `mode: "bench"` (default) starts the sink on loopback (or drives `target`) and runs the
//! client for `seconds` (or until `messages` were sent), reporting messages per minute, KiB per
//! minute and errors. `mode: "sink"` only accepts mail on `listen` for `seconds`, so that a real
//! `postal` can drive the guest; it reports what the sink accepted.

pub mod client;
pub mod sink;

use std::collections::BTreeMap;
use std::net::ToSocketAddrs;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::{parse_params, Context, Repetition, Sample, Workload};

/// The smtp workload.
pub struct Smtp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    Bench,
    Sink,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "bench")]
    mode: Mode,
    #[serde(default = "default_connections")]
    connections: u32,
    #[serde(default = "default_per_connection")]
    per_connection: u32,
    #[serde(default)]
    min_kib: u32,
    #[serde(default = "default_max_kib")]
    max_kib: u32,
    #[serde(default = "default_seconds")]
    seconds: f64,
    #[serde(default)]
    messages: Option<u64>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default = "default_listen")]
    listen: String,
}

fn bench() -> Mode {
    Mode::Bench
}
fn default_connections() -> u32 {
    2
}
fn default_per_connection() -> u32 {
    1
}
fn default_max_kib() -> u32 {
    10
}
fn default_seconds() -> f64 {
    60.0
}
fn default_listen() -> String {
    "0.0.0.0:25".into()
}

fn parse(params: &serde_json::Value) -> Result<Params, String> {
    let p: Params = parse_params(params)?;
    if !(1..=1024).contains(&p.connections) {
        return Err(format!("connections {} outside 1..=1024", p.connections));
    }
    if !(1..=100_000).contains(&p.per_connection) {
        return Err(format!(
            "per_connection {} outside 1..=100000",
            p.per_connection
        ));
    }
    if p.max_kib < p.min_kib || p.max_kib > 65536 {
        return Err(format!(
            "need min_kib <= max_kib <= 65536 (got {}, {})",
            p.min_kib, p.max_kib
        ));
    }
    if !(p.seconds.is_finite() && p.seconds > 0.0 && p.seconds <= 86400.0) {
        return Err(format!("seconds {} outside (0, 86400]", p.seconds));
    }
    if p.messages == Some(0) {
        return Err("messages must be positive".into());
    }
    Ok(p)
}

impl Workload for Smtp {
    fn name(&self) -> &'static str {
        "smtp"
    }

    fn summary(&self) -> &'static str {
        "postal-like messages per minute into a built-in SMTP sink (random sizes, N connections)"
    }

    fn check(&self, params: &serde_json::Value) -> Result<(), String> {
        parse(params).map(|_| ())
    }

    fn run(&self, params: &serde_json::Value, _ctx: &Context) -> Result<Repetition, String> {
        let p = parse(params)?;
        let mut info = BTreeMap::new();
        if p.mode == Mode::Sink {
            let s = sink::Sink::start(&p.listen)?;
            info.insert("listen".into(), s.addr().to_string().into());
            let start = Instant::now();
            while start.elapsed().as_secs_f64() < p.seconds {
                if p.messages
                    .is_some_and(|m| s.counters().messages.load(Ordering::Relaxed) >= m)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let c = s.counters();
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed) as f64;
            return Ok(Repetition {
                samples: vec![
                    Sample::new("accepted_messages", "messages", true, get(&c.messages)),
                    Sample::new("accepted_kib", "KiB", true, get(&c.bytes) / 1024.0),
                    Sample::new("connections", "connections", true, get(&c.connections)),
                    Sample::new("protocol_errors", "replies", false, get(&c.errors)),
                ],
                tool: None,
                info,
            });
        }
        let sink_server;
        let addr = match &p.target {
            Some(t) => t
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {t}: {e}"))?
                .next()
                .ok_or_else(|| format!("{t} resolves to nothing"))?,
            None => {
                sink_server = sink::Sink::start("127.0.0.1:0")?;
                sink_server.addr()
            }
        };
        info.insert("server".into(), addr.to_string().into());
        let plan = client::Plan {
            connections: p.connections,
            per_connection: p.per_connection,
            min_kib: p.min_kib,
            max_kib: p.max_kib,
            duration: Duration::from_secs_f64(p.seconds),
            max_messages: p.messages,
        };
        let d = client::deliver(addr, &plan);
        if d.messages == 0 {
            return Err(format!(
                "no message was accepted by {addr} ({} errors in {} connections)",
                d.errors, d.connections
            ));
        }
        info.insert("connections_opened".into(), d.connections.into());
        info.insert("seconds".into(), d.seconds.into());
        Ok(Repetition {
            samples: vec![
                Sample::new("messages_per_minute", "messages/min", true, d.per_minute()),
                Sample::new(
                    "kib_per_minute",
                    "KiB/min",
                    true,
                    d.bytes as f64 / 1024.0 * 60.0 / d.seconds,
                ),
                Sample::new("messages", "messages", true, d.messages as f64),
                Sample::new("errors", "errors", false, d.errors as f64),
            ],
            tool: None,
            info,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_mode_delivers_without_errors() {
        let ctx = Context {
            workdir: std::env::temp_dir(),
            online_cpus: 2,
            repetition: 0,
            repetitions: 1,
        };
        let rep = Smtp
            .run(
                &serde_json::json!({"seconds": 0.2, "messages": 20, "connections": 2,
                    "per_connection": 3, "max_kib": 2}),
                &ctx,
            )
            .unwrap();
        let get = |n: &str| rep.samples.iter().find(|s| s.metric == n).unwrap().value;
        assert_eq!(get("messages"), 20.0);
        assert_eq!(get("errors"), 0.0);
        assert!(get("messages_per_minute") > 0.0);
    }

    #[test]
    fn params_are_checked() {
        for bad in [
            serde_json::json!({"connections": 0}),
            serde_json::json!({"min_kib": 5, "max_kib": 4}),
            serde_json::json!({"seconds": 0}),
            serde_json::json!({"messages": 0}),
            serde_json::json!({"mode": "relay"}),
        ] {
            assert!(Smtp.check(&bad).is_err(), "{bad}");
        }
    }
}
