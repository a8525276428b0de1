//! An `ab`-like load generator: `concurrency` connections issue `requests` GETs in all and the
//! figures come out as ab computes them.
//!
//! Requests are HTTP/1.0 with `Host`, `User-Agent` and `Accept` like ab's (plus `Connection:
//! Keep-Alive` with keep-alive). A response counts as failed as ab counts it: connect errors,
//! receive errors (reset, early close, malformed head), and length errors (a body length other
//! than the first response's). Non-2xx responses are counted apart, as ab does.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
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

/// Parsed head of a response: (status, content length, keep-alive).
fn parse_head(head: &[u8]) -> Option<(u16, Option<u64>, bool)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.lines();
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut length = None;
    let mut keep = false;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<u64>().ok()?);
            }
            // ab reuses a connection only when the head says Keep-Alive and has a length.
            if value.contains("Keep-Alive") || value.contains("keep-alive") {
                keep = true;
            }
        }
    }
    if length.is_some_and(|n| n > MAX_BODY) {
        return None;
    }
    Some((status, length, keep && length.is_some()))
}

/// Where one connection slot is.
enum Phase {
    /// Nothing to do (all requests started).
    Idle,
    /// Non-blocking connect in progress.
    Connecting,
    /// Sending the request; bytes sent so far.
    Writing(usize),
    /// Reading the head; bytes so far are in `Slot::head`.
    Head,
    /// Reading the body: bytes left (None: until end of file).
    Body(Option<u64>),
}

struct Slot {
    stream: Option<TcpStream>,
    phase: Phase,
    head: Vec<u8>,
    started: Instant,
    bytes: u64,
    body: u64,
    status: u16,
    keep: bool,
}

/// A non-blocking connect, as ab does it.
fn connect_nonblocking(addr: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let family = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket call.
    let fd = unsafe {
        libc::socket(
            family,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a new socket nobody else owns; the TcpStream closes it.
    let stream = unsafe { TcpStream::from_raw_fd(fd) };
    let rc = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sin is a valid sockaddr_in of the size given.
            unsafe {
                libc::connect(
                    fd,
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of_val(&sin) as u32,
                )
            }
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sin6 is a valid sockaddr_in6 of the size given.
            unsafe {
                libc::connect(
                    fd,
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of_val(&sin6) as u32,
                )
            }
        }
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e);
        }
    }
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

fn socket_error(stream: &TcpStream) -> Option<std::io::Error> {
    stream.take_error().ok().flatten()
}

/// Drives `addr` with `concurrency` connections for `requests` GETs of `path`, from one thread
/// with `poll`, as ab does (so that the client's share of a busy CPU is ab's, not one per
/// connection).
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
    let n = u64::from(concurrency).min(requests) as usize;
    let mut slots: Vec<Slot> = (0..n)
        .map(|_| Slot {
            stream: None,
            phase: Phase::Idle,
            head: Vec::new(),
            started: Instant::now(),
            bytes: 0,
            body: 0,
            status: 0,
            keep: false,
        })
        .collect();
    let mut r = LoadResult {
        complete: 0,
        failed: Failures::default(),
        non_2xx: 0,
        seconds: 0.0,
        bytes: 0,
        document_length: None,
        latencies_ms: Vec::with_capacity(requests.min(1 << 24) as usize),
    };
    let mut started = 0u64;
    let mut finished = 0u64;
    let start = Instant::now();
    let mut buf = vec![0u8; 65536];

    // Starts a request on a slot: a new connection unless it has a reusable one.
    let begin = |slot: &mut Slot, started: &mut u64, failed: &mut Failures, finished: &mut u64| {
        *started += 1;
        slot.started = Instant::now();
        slot.head.clear();
        slot.bytes = 0;
        slot.body = 0;
        if slot.stream.is_some() {
            slot.phase = Phase::Writing(0);
            return;
        }
        match connect_nonblocking(addr) {
            Ok(s) => {
                slot.stream = Some(s);
                slot.phase = Phase::Connecting;
            }
            Err(_) => {
                failed.connect += 1;
                *finished += 1;
                slot.phase = Phase::Idle;
            }
        }
    };
    for slot in &mut slots {
        begin(slot, &mut started, &mut r.failed, &mut finished);
    }
    while finished < requests {
        let mut fds: Vec<libc::pollfd> = Vec::with_capacity(slots.len());
        let mut which = Vec::with_capacity(slots.len());
        for (i, slot) in slots.iter().enumerate() {
            let events = match slot.phase {
                Phase::Connecting | Phase::Writing(_) => libc::POLLOUT,
                Phase::Head | Phase::Body(_) => libc::POLLIN,
                Phase::Idle => continue,
            };
            if let Some(s) = &slot.stream {
                use std::os::fd::AsRawFd;
                fds.push(libc::pollfd {
                    fd: s.as_raw_fd(),
                    events,
                    revents: 0,
                });
                which.push(i);
            }
        }
        if fds.is_empty() {
            // Every slot is idle, yet requests remain: start them.
            if started < requests {
                for slot in &mut slots {
                    if started < requests && matches!(slot.phase, Phase::Idle) {
                        begin(slot, &mut started, &mut r.failed, &mut finished);
                    }
                }
                continue;
            }
            break;
        }
        // SAFETY: fds is a valid array of pollfd of the length given.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll: {e}"));
        }
        for (pfd, &i) in fds.iter().zip(&which) {
            let slot = &mut slots[i];
            let timed_out = slot.started.elapsed() > IO_TIMEOUT;
            if pfd.revents == 0 && !timed_out {
                continue;
            }
            // The outcome of this step: None to keep going, Some(Ok) done, Some(Err) failed.
            let mut outcome: Option<Result<(), bool>> = None;
            if timed_out {
                outcome = Some(Err(false));
            } else if let Some(stream) = slot.stream.as_mut() {
                match slot.phase {
                    Phase::Connecting => {
                        if socket_error(stream).is_some()
                            || pfd.revents & (libc::POLLERR | libc::POLLHUP) != 0
                        {
                            outcome = Some(Err(true));
                        } else {
                            slot.phase = Phase::Writing(0);
                        }
                    }
                    Phase::Writing(done) => match stream.write(&request[done..]) {
                        Ok(k) if done + k == request.len() => slot.phase = Phase::Head,
                        Ok(k) => slot.phase = Phase::Writing(done + k),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => outcome = Some(Err(false)),
                    },
                    Phase::Head | Phase::Body(_) => match stream.read(&mut buf) {
                        Ok(0) => {
                            outcome = Some(if matches!(slot.phase, Phase::Body(None)) {
                                slot.keep = false;
                                Ok(())
                            } else {
                                Err(false)
                            });
                        }
                        Ok(k) => {
                            slot.bytes += k as u64;
                            if matches!(slot.phase, Phase::Head) {
                                slot.head.extend_from_slice(&buf[..k]);
                                match slot.head.windows(4).position(|w| w == b"\r\n\r\n") {
                                    Some(pos) => match parse_head(&slot.head[..pos + 4]) {
                                        Some((status, length, keep)) => {
                                            slot.status = status;
                                            slot.keep = keep;
                                            let rest = slot.head.len() - (pos + 4);
                                            slot.phase = Phase::Body(length);
                                            slot.body = 0;
                                            slot.body += rest as u64;
                                        }
                                        None => outcome = Some(Err(false)),
                                    },
                                    None if slot.head.len() > MAX_HEAD => {
                                        outcome = Some(Err(false))
                                    }
                                    None => {}
                                }
                            } else {
                                slot.body += k as u64;
                            }
                            if let Phase::Body(Some(len)) = slot.phase {
                                if slot.body == len {
                                    outcome = Some(Ok(()));
                                } else if slot.body > len {
                                    outcome = Some(Err(false));
                                }
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => outcome = Some(Err(false)),
                    },
                    Phase::Idle => {}
                }
            }
            let Some(outcome) = outcome else {
                continue;
            };
            finished += 1;
            match outcome {
                Ok(()) => {
                    r.complete += 1;
                    r.bytes += slot.bytes;
                    let first = *r.document_length.get_or_insert(slot.body);
                    if slot.body != first {
                        r.failed.length += 1;
                    }
                    if !(200..300).contains(&slot.status) {
                        r.non_2xx += 1;
                    }
                    r.latencies_ms
                        .push(slot.started.elapsed().as_secs_f64() * 1000.0);
                    if !slot.keep {
                        slot.stream = None;
                    }
                }
                Err(connect) => {
                    if connect {
                        r.failed.connect += 1;
                    } else {
                        r.failed.receive += 1;
                    }
                    slot.stream = None;
                }
            }
            slot.phase = Phase::Idle;
            if started < requests {
                begin(slot, &mut started, &mut r.failed, &mut finished);
            } else {
                slot.stream = None;
            }
        }
    }
    r.seconds = start.elapsed().as_secs_f64();
    r.latencies_ms.sort_by(f64::total_cmp);
    Ok(r)
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
