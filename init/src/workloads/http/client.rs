//! An `ab`-like load generator: `concurrency` connections issue `requests` GETs in all and the
//! figures come out as ab computes them.
//!
//! Requests are HTTP/1.0 with `Host`, `User-Agent` and `Accept` like ab's (plus `Connection:
//! Keep-Alive` with keep-alive). A response counts as failed as ab counts it: connect errors,
//! receive errors (reset, early close, malformed head), and length errors (a body length other
//! than the first response's). Non-2xx responses are counted apart, as ab does.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Largest response head accepted.
const MAX_HEAD: usize = 16 << 10;
/// Largest response body accepted.
const MAX_BODY: u64 = 64 << 20;
/// Per-request I/O timeout (ab's default `-s` is 30 s).
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// What a load run measured, in ab's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadResult {
    /// Requests completed (`Complete requests`).
    pub complete: u64,
    /// Failed requests and the breakdown.
    pub failed: Failures,
    /// Non-2xx responses.
    pub non_2xx: u64,
    /// Wall time of the whole run, seconds.
    pub seconds: f64,
    /// Bytes received (heads and bodies).
    pub bytes: u64,
    /// Body bytes of one response (the first).
    pub document_length: Option<u64>,
    /// Per-request times (connect to last byte), milliseconds, sorted.
    pub latencies_ms: Vec<f64>,
}

/// ab's failure breakdown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Failures {
    /// Connect errors.
    pub connect: u64,
    /// Receive errors.
    pub receive: u64,
    /// Length mismatches.
    pub length: u64,
    /// Other errors.
    pub exceptions: u64,
}

impl Failures {
    /// All failures.
    pub fn total(&self) -> u64 {
        self.connect + self.receive + self.length + self.exceptions
    }
}

impl LoadResult {
    /// `Requests per second` = complete / time.
    pub fn requests_per_s(&self) -> f64 {
        self.complete as f64 / self.seconds
    }
    /// `Time per request (mean)` = concurrency * time * 1000 / complete, ms.
    pub fn time_per_request_ms(&self, concurrency: u32) -> f64 {
        f64::from(concurrency) * self.seconds * 1000.0 / self.complete as f64
    }
    /// `Time per request (mean, across all concurrent requests)`, ms.
    pub fn time_per_request_all_ms(&self) -> f64 {
        self.seconds * 1000.0 / self.complete as f64
    }
    /// `Transfer rate`, KiB/s received.
    pub fn transfer_kib_per_s(&self) -> f64 {
        self.bytes as f64 / 1024.0 / self.seconds
    }
    /// The `pct` percentile of the request times, ab's way: the element at `complete * pct / 100`.
    pub fn percentile_ms(&self, pct: u32) -> f64 {
        let n = self.latencies_ms.len();
        if n == 0 {
            return 0.0;
        }
        let i = (n as u64 * u64::from(pct) / 100).min(n as u64 - 1) as usize;
        self.latencies_ms[i]
    }
}

enum Outcome {
    Ok { bytes: u64, body: u64, status: u16 },
    Connect,
    Receive,
}

struct Conn {
    reader: BufReader<TcpStream>,
}

fn request_text(host: &str, path: &str, keep_alive: bool) -> Vec<u8> {
    let mut r = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: imgbuild-init\r\nAccept: */*\r\n"
    );
    if keep_alive {
        r.push_str("Connection: Keep-Alive\r\n");
    }
    r.push_str("\r\n");
    r.into_bytes()
}

/// Reads one response; returns (bytes read, body length, status, server keeps it open).
fn read_response(reader: &mut BufReader<TcpStream>) -> Option<(u64, u64, u16, bool)> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = reader
            .by_ref()
            .take((MAX_HEAD - head.len()) as u64 + 1)
            .read_until(b'\n', &mut head)
            .ok()?;
        if n == 0 || head.len() > MAX_HEAD {
            return None;
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let text = std::str::from_utf8(&head).ok()?;
    let mut lines = text.lines();
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = None;
    let mut keep = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<u64>().ok()?);
            }
            // ab reuses a connection only when the head says Keep-Alive and has a length.
            if value.contains("Keep-Alive") || value.contains("keep-alive") {
                keep = true;
            }
        }
    }
    let body = match length {
        Some(n) if n <= MAX_BODY => {
            std::io::copy(&mut reader.by_ref().take(n), &mut std::io::sink()).ok()?;
            n
        }
        Some(_) => return None,
        None => {
            keep = false;
            std::io::copy(reader, &mut std::io::sink()).ok()?
        }
    };
    if length.is_some_and(|n| body != n) {
        return None;
    }
    Some((
        head.len() as u64 + body,
        body,
        status,
        keep && length.is_some(),
    ))
}

fn one_request(conn: &mut Option<Conn>, addr: SocketAddr, request: &[u8]) -> Outcome {
    if conn.is_none() {
        let Ok(stream) = TcpStream::connect_timeout(&addr, IO_TIMEOUT) else {
            return Outcome::Connect;
        };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        *conn = Some(Conn {
            reader: BufReader::with_capacity(65536, stream),
        });
    }
    let Some(c) = conn.as_mut() else {
        return Outcome::Connect;
    };
    if c.reader.get_mut().write_all(request).is_err() {
        *conn = None;
        return Outcome::Receive;
    }
    match read_response(&mut c.reader) {
        Some((bytes, body, status, keep)) => {
            if !keep {
                *conn = None;
            }
            Outcome::Ok {
                bytes,
                body,
                status,
            }
        }
        None => {
            *conn = None;
            Outcome::Receive
        }
    }
}

/// Drives `addr` with `concurrency` connections for `requests` GETs of `path`.
pub fn load(
    addr: SocketAddr,
    path: &str,
    requests: u64,
    concurrency: u32,
    keep_alive: bool,
) -> Result<LoadResult, String> {
    if requests == 0 || concurrency == 0 {
        return Err("requests and concurrency must be positive".into());
    }
    let request = request_text(&addr.to_string(), path, keep_alive);
    let next = AtomicU64::new(0);
    let shared = Mutex::new(Shared::default());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..concurrency.min(requests.min(u32::MAX as u64) as u32) {
            s.spawn(|| {
                let mut conn = None;
                let mut local = Shared::default();
                while next.fetch_add(1, Ordering::Relaxed) < requests {
                    let t = Instant::now();
                    let outcome = one_request(&mut conn, addr, &request);
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    local.record(outcome, ms);
                }
                if let Ok(mut g) = shared.lock() {
                    g.merge(local);
                }
            });
        }
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut g = shared
        .into_inner()
        .map_err(|_| "a load thread panicked".to_string())?;
    g.latencies.sort_by(f64::total_cmp);
    // Length failures: bodies that differ from the first response's, as ab judges them.
    let first_len = g.lengths.first().copied();
    let length_failures = g.lengths.iter().filter(|&&l| Some(l) != first_len).count() as u64;
    g.failures.length += length_failures;
    Ok(LoadResult {
        complete: g.ok,
        failed: g.failures,
        non_2xx: g.non_2xx,
        seconds,
        bytes: g.bytes,
        document_length: first_len,
        latencies_ms: g.latencies,
    })
}

#[derive(Default)]
struct Shared {
    ok: u64,
    failures: Failures,
    non_2xx: u64,
    bytes: u64,
    lengths: Vec<u64>,
    latencies: Vec<f64>,
}

impl Shared {
    fn record(&mut self, outcome: Outcome, ms: f64) {
        match outcome {
            Outcome::Ok {
                bytes,
                body,
                status,
            } => {
                self.ok += 1;
                self.bytes += bytes;
                self.lengths.push(body);
                self.latencies.push(ms);
                if !(200..300).contains(&status) {
                    self.non_2xx += 1;
                }
            }
            Outcome::Connect => self.failures.connect += 1,
            Outcome::Receive => self.failures.receive += 1,
        }
    }

    fn merge(&mut self, other: Shared) {
        self.ok += other.ok;
        self.failures.connect += other.failures.connect;
        self.failures.receive += other.failures.receive;
        self.non_2xx += other.non_2xx;
        self.bytes += other.bytes;
        self.lengths.extend(other.lengths);
        self.latencies.extend(other.latencies);
    }
}

#[cfg(test)]
mod tests {
    use super::super::server::{default_files, Server};
    use super::*;

    #[test]
    fn loopback_load_has_no_failures_and_exact_byte_counts() {
        let server = Server::start("127.0.0.1:0", default_files()).unwrap();
        for (keep, c) in [(false, 1), (false, 4), (true, 3)] {
            let r = load(server.addr(), "/4k", 200, c, keep).unwrap();
            assert_eq!(r.complete, 200);
            assert_eq!(r.failed.total(), 0, "{:?}", r.failed);
            assert_eq!(r.non_2xx, 0);
            assert_eq!(r.document_length, Some(4096));
            // Every response is the same head plus 4096 bytes.
            assert_eq!(r.bytes % 200, 0);
            assert!(
                r.bytes / 200 > 4096 && r.bytes / 200 < 4096 + 400,
                "{}",
                r.bytes
            );
            assert_eq!(r.latencies_ms.len(), 200);
            assert!(r.percentile_ms(50) <= r.percentile_ms(99));
            assert!(r.requests_per_s() > 0.0);
        }
        let r = load(server.addr(), "/64k", 20, 2, false).unwrap();
        assert_eq!(r.document_length, Some(65536));
        let r = load(server.addr(), "/missing", 5, 1, false).unwrap();
        assert_eq!(r.non_2xx, 5);
    }

    #[test]
    fn a_closed_port_gives_connect_failures() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let r = load(addr, "/4k", 3, 1, false).unwrap();
        assert_eq!(r.failed.connect, 3);
        assert_eq!(r.complete, 0);
    }

    #[test]
    fn ab_formulas() {
        let r = LoadResult {
            complete: 1000,
            failed: Failures::default(),
            non_2xx: 0,
            seconds: 2.0,
            bytes: 2048 * 1000,
            document_length: Some(2000),
            latencies_ms: (0..1000).map(f64::from).collect(),
        };
        assert_eq!(r.requests_per_s(), 500.0);
        assert_eq!(r.time_per_request_ms(4), 8.0);
        assert_eq!(r.time_per_request_all_ms(), 2.0);
        assert_eq!(r.transfer_kib_per_s(), 1000.0);
        assert_eq!(r.percentile_ms(50), 500.0);
        assert_eq!(r.percentile_ms(100), 999.0);
    }
}
