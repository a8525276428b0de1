//! A small static HTTP/1.x server: one thread per connection, `GET` of a few in-memory files,
//! HTTP/1.0 as `ab` sends it and HTTP/1.1, keep-alive when the client asks for it.
//!
//! Responses carry `Content-Length` always and `Connection: Keep-Alive` / `Keep-Alive:` headers
//! when the connection stays open, which is what `ab -k` needs to reuse it. Requests are read
//! with a bounded header size; anything malformed gets a 400 and the connection is closed.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Largest request head accepted.
const MAX_HEAD: usize = 16 << 10;
/// Idle time after which a keep-alive connection is closed.
const IDLE: Duration = Duration::from_secs(15);

/// The files served: path → body.
pub type Files = BTreeMap<String, Arc<Vec<u8>>>;

/// The default file set: `/4k` (4 KiB) and `/64k` (64 KiB) of printable bytes.
pub fn default_files() -> Files {
    let body = |n: usize| Arc::new((0..n).map(|i| b'a' + (i % 26) as u8).collect::<Vec<u8>>());
    Files::from([
        ("/4k".to_owned(), body(4096)),
        ("/64k".to_owned(), body(65536)),
    ])
}

/// Counters of a running server.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests answered with 200.
    pub served: AtomicU64,
    /// Requests answered with an error status.
    pub errors: AtomicU64,
    /// Connections accepted.
    pub connections: AtomicU64,
}

/// A running server; dropping it stops it.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds `addr` (port 0 for any) and serves `files` until stopped.
    pub fn start(addr: &str, files: Files) -> Result<Server, String> {
        let listener = TcpListener::bind(addr).map_err(|e| format!("cannot bind {addr}: {e}"))?;
        let local = listener
            .local_addr()
            .map_err(|e| format!("local address of {addr}: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("nonblocking {addr}: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let files = Arc::new(files);
        let acceptor = {
            let stop = stop.clone();
            let counters = counters.clone();
            std::thread::spawn(move || accept_loop(listener, files, stop, counters))
        };
        Ok(Server {
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
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Serves until `seconds` have passed or `requests` requests were answered (whichever
    /// comes first; `None` for no limit).
    pub fn serve_until(&self, seconds: Option<f64>, requests: Option<u64>) {
        let start = Instant::now();
        loop {
            if let Some(s) = seconds {
                if start.elapsed().as_secs_f64() >= s {
                    return;
                }
            }
            if let Some(n) = requests {
                if self.counters.served.load(Ordering::Relaxed) >= n {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    files: Arc<Files>,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                counters.connections.fetch_add(1, Ordering::Relaxed);
                let files = files.clone();
                let counters = counters.clone();
                let stop = stop.clone();
                // Connection threads end with their connection or at the idle timeout; the
                // process (a workload child) ends soon after the run anyway.
                let _ = std::thread::Builder::new()
                    .stack_size(64 << 10)
                    .spawn(move || {
                        let _ = serve_connection(stream, &files, &counters, &stop);
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// A parsed request head.
#[derive(Debug, PartialEq)]
pub struct Request {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: String,
    /// Whether the client wants the connection kept open.
    pub keep_alive: bool,
}

/// Reads one request head; `Ok(None)` at a clean end of the connection.
pub fn read_request(reader: &mut impl BufRead) -> Result<Option<Request>, String> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = reader
            .take((MAX_HEAD - head.len()) as u64 + 1)
            .read_until(b'\n', &mut head)
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return if head.is_empty() {
                Ok(None)
            } else {
                Err("connection closed inside a request head".into())
            };
        }
        if head.len() > MAX_HEAD {
            return Err("request head too large".into());
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            if before == 0 {
                // Tolerate stray blank lines between requests.
                head.clear();
                continue;
            }
            break;
        }
    }
    let text = std::str::from_utf8(&head).map_err(|_| "request head is not UTF-8")?;
    let mut lines = text.lines();
    let first = lines.next().ok_or("empty request")?;
    let mut parts = first.split_whitespace();
    let (Some(method), Some(path), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("bad request line {first:?}"));
    };
    if version != "HTTP/1.0" && version != "HTTP/1.1" {
        return Err(format!("unsupported version {version:?}"));
    }
    let mut connection = None;
    for line in lines {
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("connection") {
                connection = Some(value.trim().to_ascii_lowercase());
            }
        }
    }
    let keep_alive = match (version, connection.as_deref()) {
        (_, Some(c)) if c.contains("close") => false,
        (_, Some(c)) if c.contains("keep-alive") => true,
        ("HTTP/1.1", _) => true,
        _ => false,
    };
    Ok(Some(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        version: version.to_owned(),
        keep_alive,
    }))
}

fn serve_connection(
    stream: TcpStream,
    files: &Files,
    counters: &Counters,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IDLE))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    while !stop.load(Ordering::Relaxed) {
        let req = match read_request(&mut reader) {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(_) => {
                counters.errors.fetch_add(1, Ordering::Relaxed);
                let _ = writer.write_all(
                    b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                return Ok(());
            }
        };
        let (status, body) = match (req.method.as_str(), files.get(&req.path)) {
            ("GET" | "HEAD", Some(body)) => ("200 OK", Some(body.clone())),
            ("GET" | "HEAD", None) => ("404 Not Found", None),
            _ => ("405 Method Not Allowed", None),
        };
        let len = body.as_ref().map_or(0, |b| b.len());
        let mut head = format!(
            "{} {status}\r\nServer: imgbuild-init\r\nContent-Type: text/plain\r\n\
             Content-Length: {len}\r\n",
            req.version
        );
        if req.keep_alive {
            head.push_str("Connection: Keep-Alive\r\nKeep-Alive: timeout=15, max=1000000\r\n");
        } else {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        if let (Some(b), true) = (&body, req.method == "GET") {
            out.extend_from_slice(b);
        }
        writer.write_all(&out)?;
        if body.is_some() {
            counters.served.fetch_add(1, Ordering::Relaxed);
        } else {
            counters.errors.fetch_add(1, Ordering::Relaxed);
        }
        if !req.keep_alive {
            let _ = writer.shutdown(std::net::Shutdown::Write);
            // Drain what the client may still send so the close is not a reset.
            let _ = reader
                .get_mut()
                .set_read_timeout(Some(Duration::from_millis(100)));
            let mut sink = [0u8; 512];
            while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
            return Ok(());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Option<Request>, String> {
        read_request(&mut BufReader::new(text.as_bytes()))
    }

    #[test]
    fn requests_as_ab_sends_them() {
        let r = parse(
            "GET /4k HTTP/1.0\r\nHost: x\r\nUser-Agent: ApacheBench/2.3\r\nAccept: */*\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!((r.path.as_str(), r.keep_alive), ("/4k", false));
        let r = parse("GET /4k HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(r.keep_alive);
        let r = parse("GET / HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert!(r.keep_alive);
        let r = parse("GET / HTTP/1.1\r\nconnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!r.keep_alive);
        assert_eq!(parse("").unwrap(), None);
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "GET\r\n\r\n",
            "GET / HTTP/2\r\n\r\n",
            "GET / HTTP/1.0 extra\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let huge = format!("GET / HTTP/1.0\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert!(parse(&huge).unwrap_err().contains("too large"));
    }
}
