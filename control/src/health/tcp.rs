//! TCP check: a connection to the backend must be accepted within the timeout.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use super::{bind_source, ProbeError};

/// Connects to `to` (from `source` when given) within `timeout`.
///
/// # Errors
/// Refused, unreachable or timed out.
pub fn probe(to: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> Result<(), ProbeError> {
    connect(to, source, timeout).map(drop)
}

/// A TCP connection to `to` from `source`, within `timeout`.
pub(crate) fn connect(
    to: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> Result<TcpStream, ProbeError> {
    let sock = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| ProbeError::io("cannot open a tcp socket", &e))?;
    bind_source(&sock, source)?;
    sock.connect_timeout(&to.into(), timeout)
        .map_err(|e| ProbeError::io(format_args!("tcp connect to {to}"), &e))?;
    Ok(sock.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn listening_port_is_success_closed_port_is_refused() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        probe(a, None, Duration::from_millis(300)).unwrap();
        drop(l);
        let e = probe(a, None, Duration::from_millis(300)).unwrap_err();
        assert_eq!(e.0, format!("tcp connect to {a}: connection refused"));
    }
}
