//! UDP check: send a payload from a connected socket and wait for a reply or an ICMP error.
//!
//! The socket is connected so that the kernel reports an ICMP port (or host) unreachable
//! for it as `ECONNREFUSED` (`EHOSTUNREACH`, ...) on the next receive: that is how a UDP
//! backend whose process died is told apart from one that is merely silent.
//!
//! Silence alone cannot tell a live receiver (syslog never answers) from a dead host (which
//! answers nothing either), so a check that needs no reply also sends an ICMP echo with
//! each datagram (`echo`, on by default): silence is health only when the host answered
//! the echo within the same timeout.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::icmp::Echo;
use super::{bind_source, Evidence, ProbeError};

/// Whether the "cannot send echo" warning was logged (once per process is enough).
static ECHO_WARNED: AtomicBool = AtomicBool::new(false);

/// Sends `payload` to `to` and waits up to `timeout`: a reply (containing `expect` when
/// given) is [`Evidence::Answer`]; an ICMP error is failure; silence is
/// [`Evidence::Silence`] when the host answered an echo sent alongside (or `echo` is off),
/// and a failure otherwise or with `require_reply`.
///
/// # Errors
/// The ICMP error, a missing or wrong reply, a host that does not answer the echo, or a
/// socket that cannot be set up.
pub fn probe(
    to: SocketAddr,
    source: Option<IpAddr>,
    payload: &[u8],
    expect: Option<&[u8]>,
    require_reply: bool,
    echo: bool,
    timeout: Duration,
) -> Result<Evidence, ProbeError> {
    let sock = Socket::new(Domain::for_address(to), Type::DGRAM, Some(Protocol::UDP))
        .map_err(|e| ProbeError::io("cannot open a udp socket", &e))?;
    bind_source(&sock, source)?;
    sock.connect(&to.into())
        .map_err(|e| ProbeError::io(format_args!("cannot connect to {to}"), &e))?;
    let sock: std::net::UdpSocket = sock.into();
    let deadline = Instant::now() + timeout;
    sock.send(payload).map_err(|e| icmp_or(&e, "send"))?;
    let echo = if echo && !require_reply {
        match Echo::send(to.ip(), source) {
            Ok(e) => Some(e),
            Err(e) => {
                if !ECHO_WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "udp checks cannot verify that silent hosts \
                        are alive (no icmp echo): a dead host will look healthy to them");
                }
                None
            }
        }
    } else {
        None
    };
    let mut buf = [0u8; 2048];
    // A reply without `expect` in it may be a late answer to an earlier probe: keep
    // waiting for the right one, and say so if none comes.
    let mut mismatch = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return match (mismatch, expect) {
                (true, Some(e)) => Err(ProbeError(format!(
                    "reply does not contain {:?}",
                    String::from_utf8_lossy(e)
                ))),
                _ if require_reply => Err(ProbeError(format!(
                    "no reply within {} ms",
                    timeout.as_millis()
                ))),
                _ => match &echo {
                    None => Ok(Evidence::Silence),
                    Some(e) => e
                        .wait(deadline, timeout)
                        .map(|()| Evidence::Silence)
                        .map_err(|e| {
                            ProbeError(format!("no reply, and the host is silent too: {e}"))
                        }),
                },
            };
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| ProbeError::io("cannot set the receive timeout", &e))?;
        match sock.recv(&mut buf) {
            Ok(n) => match expect {
                Some(e) if !contains(&buf[..n], e) => mismatch = true,
                _ => return Ok(Evidence::Answer),
            },
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.kind() == io::ErrorKind::TimedOut
                    || e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(icmp_or(&e, "receive")),
        }
    }
}

/// Names the ICMP error behind an errno of a connected UDP socket.
fn icmp_or(e: &io::Error, what: &str) -> ProbeError {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => ProbeError("icmp port unreachable (connection refused)".into()),
        Some(libc::EHOSTUNREACH) => ProbeError("icmp host unreachable".into()),
        Some(libc::ENETUNREACH) => ProbeError("icmp network unreachable".into()),
        _ => ProbeError::io(format_args!("cannot {what}"), e),
    }
}

/// Whether `needle` occurs in `hay` (an empty needle always does).
pub(crate) fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    const T: Duration = Duration::from_millis(300);

    fn echo(reply: &'static [u8]) -> (SocketAddr, std::thread::JoinHandle<()>) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = s.local_addr().unwrap();
        let h = std::thread::spawn(move || {
            let mut b = [0u8; 64];
            if let Ok((_, from)) = s.recv_from(&mut b) {
                let _ = s.send_to(reply, from);
            }
        });
        (a, h)
    }

    fn closed_port() -> SocketAddr {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[test]
    fn echo_reply_is_success() {
        let (a, h) = echo(b"pong ok");
        assert_eq!(
            probe(a, None, b"ping", Some(b"ok"), true, false, T).unwrap(),
            Evidence::Answer
        );
        h.join().unwrap();
    }

    #[test]
    fn wrong_reply_fails() {
        let (a, h) = echo(b"pong");
        let e = probe(
            a,
            None,
            b"ping",
            Some(b"ok"),
            true,
            false,
            Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(e.0.contains("does not contain"), "{e}");
        h.join().unwrap();
    }

    #[test]
    fn closed_port_is_icmp_refused() {
        let e = probe(closed_port(), None, b"", None, false, true, T).unwrap_err();
        assert_eq!(e.0, "icmp port unreachable (connection refused)");
    }

    #[test]
    fn silence_is_success_unless_a_reply_is_required() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = s.local_addr().unwrap();
        assert_eq!(
            probe(a, None, b"x", None, false, false, Duration::from_millis(50)).unwrap(),
            Evidence::Silence
        );
        let e = probe(a, None, b"x", None, true, false, Duration::from_millis(50)).unwrap_err();
        assert_eq!(e.0, "no reply within 50 ms");
    }

    #[test]
    fn source_address_is_used() {
        let (a, h) = echo(b"pong");
        probe(
            a,
            Some("127.0.0.1".parse().unwrap()),
            b"",
            None,
            true,
            false,
            T,
        )
        .unwrap();
        h.join().unwrap();
        let e = probe(
            a,
            Some("192.0.2.77".parse().unwrap()),
            b"",
            None,
            true,
            false,
            T,
        )
        .unwrap_err();
        assert!(
            e.0.starts_with("cannot bind the source address 192.0.2.77"),
            "{e}"
        );
    }

    #[test]
    fn silence_of_a_host_that_answers_echo_is_silence() {
        // A silent receiver on a live host (loopback answers echo). Where this process may
        // not send echo at all, the check says silence too, and warns once.
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = s.local_addr().unwrap();
        let got = probe(a, None, b"x", None, false, true, Duration::from_millis(50));
        assert_eq!(got.unwrap(), Evidence::Silence);
        if super::super::icmp::open(a.ip()).is_ok() {
            assert!(!ECHO_WARNED.load(Ordering::Relaxed));
        }
    }
}
