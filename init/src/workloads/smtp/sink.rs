//! An SMTP sink that accepts what postal sends and throws the mail away.
//!
//! Dialogue (postal's smtp.cpp, one command at a time): `220` greeting; `EHLO`/`HELO` → `250`
//! (EHLO gets a multi-line `250-` reply); `MAIL FROM:` → `250`; `RCPT TO:` → `250`; `DATA` →
//! `354`, then data lines until `.` alone → `250`; `RSET`/`NOOP` → `250`; `QUIT` → `221` and
//! close. Commands out of order get `503`, unknown ones `500`. Lines are bounded; a connection
//! that sends an over-long line or stalls is dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest command or data line accepted (RFC 5321 allows 1000 with CRLF).
const MAX_LINE: usize = 4096;
/// Largest message accepted.
const MAX_MESSAGE: u64 = 64 << 20;
/// Idle time after which a connection is dropped.
const IDLE: Duration = Duration::from_secs(60);

/// Counters of a running sink.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Messages accepted (250 after DATA).
    pub messages: AtomicU64,
    /// Message bytes accepted (data lines with their CRLF, before unstuffing).
    pub bytes: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Protocol errors answered with 5xx.
    pub errors: AtomicU64,
}

/// A running sink; dropping it stops accepting.
pub struct Sink {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<SinkCounters>,
    acceptor: Option<JoinHandle<()>>,
}

impl Sink {
    /// Binds `addr` (port 0 for any) and accepts until dropped.
    pub fn start(addr: &str) -> Result<Sink, String> {
        let listener = TcpListener::bind(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("local address of {addr}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("nonblocking {addr}: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(SinkCounters::default());
        let acceptor = {
            let stop = stop.clone();
            let counters = counters.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            counters.connections.fetch_add(1, Ordering::Relaxed);
                            let counters = counters.clone();
                            let _ =
                                std::thread::Builder::new()
                                    .stack_size(64 << 10)
                                    .spawn(move || {
                                        let _ = session(stream, &counters);
                                    });
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            })
        };
        Ok(Sink {
            addr: local,
            stop,
            counters,
            acceptor: Some(acceptor),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The counters.
    pub fn counters(&self) -> &SinkCounters {
        &self.counters
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

/// Reads one line (with its terminator) of at most `MAX_LINE` bytes; `None` at end of stream.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<Option<()>> {
    line.clear();
    let n = reader
        .by_ref()
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.len() > MAX_LINE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "line too long",
        ));
    }
    Ok(Some(()))
}

#[derive(PartialEq)]
enum State {
    Greeted,
    Hello,
    Mail,
    Rcpt,
}

fn session(stream: TcpStream, counters: &SinkCounters) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IDLE))?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    out.write_all(b"220 imgbuild-init ESMTP sink\r\n")?;
    let mut state = State::Greeted;
    let mut line = Vec::new();
    while read_line(&mut reader, &mut line)?.is_some() {
        let text = String::from_utf8_lossy(&line);
        let cmd = text.trim_end();
        let verb = cmd
            .split([' ', ':'])
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => {
                state = State::Hello;
                b"250-imgbuild-init\r\n250-8BITMIME\r\n250 SIZE 67108864\r\n"
            }
            "HELO" => {
                state = State::Hello;
                b"250 imgbuild-init\r\n"
            }
            "MAIL" if state == State::Hello => {
                state = State::Mail;
                b"250 2.1.0 Ok\r\n"
            }
            "RCPT" if state == State::Mail || state == State::Rcpt => {
                state = State::Rcpt;
                b"250 2.1.5 Ok\r\n"
            }
            "DATA" if state == State::Rcpt => {
                out.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")?;
                let mut size = 0u64;
                loop {
                    if read_line(&mut reader, &mut line)?.is_none() {
                        return Ok(());
                    }
                    if line == b".\r\n" || line == b".\n" {
                        break;
                    }
                    size += line.len() as u64;
                    if size > MAX_MESSAGE {
                        return Ok(());
                    }
                }
                counters.messages.fetch_add(1, Ordering::Relaxed);
                counters.bytes.fetch_add(size, Ordering::Relaxed);
                state = State::Hello;
                b"250 2.0.0 Ok: queued\r\n"
            }
            "RSET" => {
                if state != State::Greeted {
                    state = State::Hello;
                }
                b"250 2.0.0 Ok\r\n"
            }
            "NOOP" => b"250 2.0.0 Ok\r\n",
            "QUIT" => {
                out.write_all(b"221 2.0.0 Bye\r\n")?;
                return Ok(());
            }
            "MAIL" | "RCPT" | "DATA" => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                b"503 5.5.1 Bad sequence of commands\r\n"
            }
            _ => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                b"500 5.5.2 Command not recognized\r\n"
            }
        };
        out.write_all(reply)?;
    }
    // Drain nothing more: the peer closed.
    let _ = reader.read(&mut [0u8; 1]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(reader: &mut BufReader<TcpStream>) -> String {
        // Follows NNN- continuation lines, as postal does.
        let mut all = String::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            all.push_str(&line);
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                return all;
            }
        }
    }

    #[test]
    fn postal_dialogue_and_errors() {
        let sink = Sink::start("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(sink.addr()).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        assert!(reply(&mut r).starts_with("220"));
        w.write_all(b"DATA\r\n").unwrap();
        assert!(reply(&mut r).starts_with("503"));
        w.write_all(b"EHLO me\r\n").unwrap();
        let ehlo = reply(&mut r);
        assert!(
            ehlo.starts_with("250-") && ehlo.lines().count() == 3,
            "{ehlo}"
        );
        for _ in 0..2 {
            w.write_all(b"MAIL FROM: <a@b>\r\n").unwrap();
            assert!(reply(&mut r).starts_with("250"));
            w.write_all(b"RCPT TO: <c@d>\r\n").unwrap();
            assert!(reply(&mut r).starts_with("250"));
            w.write_all(b"DATA\r\n").unwrap();
            assert!(reply(&mut r).starts_with("354"));
            w.write_all(b"Subject: x\r\n\r\nhello\r\n..dot\r\n.\r\n")
                .unwrap();
            assert!(reply(&mut r).starts_with("250"));
        }
        w.write_all(b"BOGUS\r\n").unwrap();
        assert!(reply(&mut r).starts_with("500"));
        w.write_all(b"QUIT\r\n").unwrap();
        assert!(reply(&mut r).starts_with("221"));
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(sink.counters().messages.load(Ordering::Relaxed), 2);
        assert_eq!(sink.counters().errors.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn an_over_long_line_drops_the_connection() {
        let sink = Sink::start("127.0.0.1:0").unwrap();
        let s = TcpStream::connect(sink.addr()).unwrap();
        let mut w = s.try_clone().unwrap();
        let mut r = BufReader::new(s);
        assert!(reply(&mut r).starts_with("220"));
        let _ = w.write_all(&vec![b'x'; MAX_LINE * 2]);
        let mut rest = String::new();
        let _ = r.read_to_string(&mut rest);
        assert!(rest.is_empty(), "{rest}");
    }
}
