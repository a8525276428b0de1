//! A postal-like SMTP client: `connections` threads each open a connection, deliver
//! `per_connection` messages on it (postal's `-c`), `QUIT`, and start over, until the duration
//! is over or the message budget is spent.
//!
//! Messages are as postal makes them: a random size in `[min_kib, max_kib)` KiB, printable
//! characters without `.`, lines of at most 79 bytes ending in CRLF; sender and recipient are
//! drawn from a small generated user list. Any reply whose first digit is not 2 or 3 is an
//! error, and so is a failed connection or a dropped one; `NNN-` continuation lines are
//! followed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Longest reply line accepted.
const MAX_REPLY_LINE: usize = 4096;
/// Per-operation I/O timeout.
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// What to send.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Parallel connections.
    pub connections: u32,
    /// Messages per connection before QUIT.
    pub per_connection: u32,
    /// Smallest body, KiB.
    pub min_kib: u32,
    /// Body size bound (exclusive), KiB; equal to `min_kib` for a fixed size.
    pub max_kib: u32,
    /// Stop after this long.
    pub duration: Duration,
    /// Stop after this many messages in all.
    pub max_messages: Option<u64>,
}

/// What was delivered.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delivery {
    /// Messages accepted (250 after the data).
    pub messages: u64,
    /// Body and header bytes sent in accepted messages.
    pub bytes: u64,
    /// Errors (bad replies, failed or dropped connections).
    pub errors: u64,
    /// Connections opened.
    pub connections: u64,
    /// Wall time, seconds.
    pub seconds: f64,
}

impl Delivery {
    /// Messages per minute.
    pub fn per_minute(&self) -> f64 {
        self.messages as f64 * 60.0 / self.seconds
    }
}

/// A small xorshift generator: message contents need variety, not quality.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// Printable ASCII without '.', as postal's bodies.
const BODY_CHARS: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 !#$%&()*+,-/:;<=>?@[]^_{|}~";

/// Builds a message of `size` body bytes (at least one line), headers first.
pub fn message(rng: &mut impl FnMut() -> u64, from: &str, to: &str, size: usize) -> Vec<u8> {
    let mut m =
        format!("From: <{from}>\r\nTo: <{to}>\r\nSubject: imgbuild postal-like test\r\n\r\n")
            .into_bytes();
    let mut left = size;
    while left > 0 {
        let line = left.min(77);
        for _ in 0..line {
            m.push(BODY_CHARS[(rng() % BODY_CHARS.len() as u64) as usize]);
        }
        m.extend_from_slice(b"\r\n");
        left -= line;
    }
    m
}

/// Reads one reply (following continuation lines); returns its code.
fn reply(reader: &mut BufReader<TcpStream>) -> Option<u16> {
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .by_ref()
            .take(MAX_REPLY_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .ok()?;
        if n == 0 || line.len() > MAX_REPLY_LINE || line.len() < 3 {
            return None;
        }
        let code: u16 = std::str::from_utf8(&line[..3]).ok()?.parse().ok()?;
        if line.get(3) != Some(&b'-') {
            return Some(code);
        }
    }
}

fn ok(code: Option<u16>) -> bool {
    matches!(code, Some(c) if (200..400).contains(&c))
}

/// One connection's work: returns (messages, bytes, errors).
fn one_connection(
    addr: SocketAddr,
    plan: &Plan,
    rng: &mut Rng,
    budget: &AtomicU64,
) -> (u64, u64, u64) {
    let Ok(stream) = TcpStream::connect_timeout(&addr, IO_TIMEOUT) else {
        return (0, 0, 1);
    };
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
    let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(mut w) = stream.try_clone() else {
        return (0, 0, 1);
    };
    let mut r = BufReader::new(stream);
    let (mut messages, mut bytes) = (0u64, 0u64);
    let send = |w: &mut TcpStream, r: &mut BufReader<TcpStream>, text: &[u8]| {
        w.write_all(text).ok()?;
        reply(r)
    };
    if !ok(reply(&mut r)) || !ok(send(&mut w, &mut r, b"EHLO imgbuild-client\r\n")) {
        return (0, 0, 1);
    }
    for _ in 0..plan.per_connection {
        if budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_err()
        {
            break;
        }
        let from = format!("user{}@example.org", rng.below(100));
        let to = format!("user{}@example.org", rng.below(100));
        let span = u64::from(plan.max_kib.saturating_sub(plan.min_kib));
        let size = (u64::from(plan.min_kib) * 1024 + rng.below(span * 1024)) as usize;
        let mut next = || rng.next();
        let mut msg = message(&mut next, &from, &to, size);
        msg.extend_from_slice(b".\r\n");
        let mail = format!("MAIL FROM: <{from}>\r\n");
        let rcpt = format!("RCPT TO: <{to}>\r\n");
        let steps: [&[u8]; 3] = [mail.as_bytes(), rcpt.as_bytes(), b"DATA\r\n"];
        for step in steps {
            if !ok(send(&mut w, &mut r, step)) {
                return (messages, bytes, 1);
            }
        }
        if !ok(send(&mut w, &mut r, &msg)) {
            return (messages, bytes, 1);
        }
        messages += 1;
        bytes += msg.len() as u64 - 3;
    }
    let _ = send(&mut w, &mut r, b"QUIT\r\n");
    (messages, bytes, 0)
}

/// Delivers to `addr` following `plan`.
pub fn deliver(addr: SocketAddr, plan: &Plan) -> Delivery {
    let budget = AtomicU64::new(plan.max_messages.unwrap_or(u64::MAX));
    let start = Instant::now();
    let totals = std::sync::Mutex::new(Delivery::default());
    std::thread::scope(|s| {
        for t in 0..plan.connections {
            let totals = &totals;
            let budget = &budget;
            s.spawn(move || {
                let mut rng =
                    Rng(0x9E37_79B9_7F4A_7C15
                        ^ (u64::from(t) + 1).wrapping_mul(0x2545_F491_4F6C_DD1D));
                let mut local = Delivery::default();
                while start.elapsed() < plan.duration && budget.load(Ordering::Relaxed) > 0 {
                    let (m, b, e) = one_connection(addr, plan, &mut rng, budget);
                    local.messages += m;
                    local.bytes += b;
                    local.errors += e;
                    local.connections += 1;
                    if e > 0 {
                        // Do not spin on a dead server.
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                if let Ok(mut g) = totals.lock() {
                    g.messages += local.messages;
                    g.bytes += local.bytes;
                    g.errors += local.errors;
                    g.connections += local.connections;
                }
            });
        }
    });
    let mut d = totals.into_inner().unwrap_or_default();
    d.seconds = start.elapsed().as_secs_f64();
    d
}

#[cfg(test)]
mod tests {
    use super::super::sink::Sink;
    use super::*;

    #[test]
    fn messages_are_printable_without_dots_and_short_lines() {
        let mut rng = Rng(7);
        let mut next = || rng.next();
        let m = message(&mut next, "a@b", "c@d", 5000);
        let text = String::from_utf8(m).unwrap();
        let body = text.split_once("\r\n\r\n").unwrap().1;
        assert!(!body.contains('.'));
        assert_eq!(body.replace("\r\n", "").len(), 5000);
        for line in body.split("\r\n") {
            assert!(line.len() <= 79);
            assert!(line.bytes().all(|b| (0x20..0x7f).contains(&b)));
        }
    }

    #[test]
    fn loopback_delivery_has_no_errors_and_the_sink_agrees() {
        let sink = Sink::start("127.0.0.1:0").unwrap();
        let plan = Plan {
            connections: 3,
            per_connection: 4,
            min_kib: 1,
            max_kib: 4,
            duration: Duration::from_secs(30),
            max_messages: Some(30),
        };
        let d = deliver(sink.addr(), &plan);
        assert_eq!(d.errors, 0);
        assert_eq!(d.messages, 30);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(sink.counters().messages.load(Ordering::Relaxed), 30);
        // The sink counts data lines with CRLF; the client counts what it sent before ".".
        assert_eq!(sink.counters().bytes.load(Ordering::Relaxed), d.bytes);
        assert!(d.per_minute() > 0.0);
    }

    #[test]
    fn a_dead_server_counts_errors() {
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let plan = Plan {
            connections: 1,
            per_connection: 1,
            min_kib: 1,
            max_kib: 1,
            duration: Duration::from_millis(50),
            max_messages: None,
        };
        let d = deliver(addr, &plan);
        assert_eq!(d.messages, 0);
        assert!(d.errors >= 1);
    }
}
