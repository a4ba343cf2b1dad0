//! HTTP check: a minimal HTTP/1.0 `GET` over a TCP connection; the status code must match.
//!
//! Hand-rolled on purpose: only the status line is read, no body, no redirects, no TLS, so
//! no HTTP crate is needed. HTTP/1.0 with `Connection: close` makes the server end the
//! exchange.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::{tcp, ProbeError};

/// Sends `GET path` to `to` and expects status `expect_status`, all within `timeout`.
///
/// # Errors
/// A connection failure, a timeout, a response that is not HTTP, or another status.
pub fn probe(
    to: SocketAddr,
    source: Option<IpAddr>,
    path: &str,
    host: Option<&str>,
    expect_status: u16,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let deadline = Instant::now() + timeout;
    let mut s = tcp::connect(to, source, timeout)?;
    let left = |what| {
        let d = deadline.saturating_duration_since(Instant::now());
        if d.is_zero() {
            Err(ProbeError(format!("http {what} timed out")))
        } else {
            Ok(d)
        }
    };
    let host = host.map_or_else(|| to.ip().to_string(), str::to_owned);
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: spray-health\r\nConnection: close\r\n\r\n"
    );
    s.set_write_timeout(Some(left("request")?))
        .map_err(|e| ProbeError::io("cannot set the send timeout", &e))?;
    s.write_all(req.as_bytes())
        .map_err(|e| ProbeError::io("http request", &e))?;
    // The status line fits in the first few bytes: "HTTP/1.1 200 OK".
    let mut buf = [0u8; 64];
    let mut n = 0;
    while n < 12 {
        s.set_read_timeout(Some(left("response")?))
            .map_err(|e| ProbeError::io("cannot set the receive timeout", &e))?;
        match s.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Err(ProbeError("http response timed out".into()))
            }
            Err(e) => return Err(ProbeError::io("http response", &e)),
        }
    }
    let line = String::from_utf8_lossy(&buf[..n]);
    let status = line
        .strip_prefix("HTTP/")
        .and_then(|r| r.split(' ').nth(1))
        .and_then(|c| c.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| {
            ProbeError(format!(
                "not an http response: {:?}",
                line.lines().next().unwrap_or("")
            ))
        })?;
    if status == expect_status {
        Ok(())
    } else {
        Err(ProbeError(format!(
            "http status {status}, expected {expect_status}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server answering one request with `status`, returning the request it saw.
    fn server(status: &'static str) -> (SocketAddr, std::thread::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut b = [0u8; 256];
            while !req.ends_with(b"\r\n\r\n") {
                let n = c.read(&mut b).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&b[..n]);
            }
            let _ = write!(c, "HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
            String::from_utf8(req).unwrap()
        });
        (a, h)
    }

    const T: Duration = Duration::from_millis(500);

    #[test]
    fn status_200_is_success() {
        let (a, h) = server("200 OK");
        probe(a, None, "/health", Some("lb.example"), 200, T).unwrap();
        let req = h.join().unwrap();
        assert!(
            req.starts_with("GET /health HTTP/1.0\r\nHost: lb.example\r\n"),
            "{req}"
        );
    }

    #[test]
    fn status_500_fails() {
        let (a, h) = server("500 Internal Server Error");
        let e = probe(a, None, "/", None, 200, T).unwrap_err();
        assert_eq!(e.0, "http status 500, expected 200");
        h.join().unwrap();
    }

    #[test]
    fn silent_server_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = probe(
            l.local_addr().unwrap(),
            None,
            "/",
            None,
            200,
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(e.0.contains("timed out"), "{e}");
    }
}
