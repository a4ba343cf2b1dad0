//! Health checks: what a check is ([`Check`]), the probes that run one (one file per type),
//! the sans-I/O rise/fall state machine per backend ([`machine`]), the ring of state
//! changes ([`events`]), and the checker threads ([`checker`]) that run probes for the
//! controller ([`crate::state`]).
//!
//! Contract: a probe is a blocking function of a [`Target`] that returns within about the
//! check's `timeout` (plus process start-up for `exec`) with `Ok` or an error naming what
//! failed; it never panics. Probes run on the checker threads, never on a worker.

pub mod checker;
pub mod config;
pub mod coverage;
pub mod events;
pub mod exec;
pub mod http;
pub mod icmp;
pub mod machine;
pub mod tcp;
pub mod udp;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Default time between two checks of one backend.
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(1000);
/// Default time a probe may take, at most: half the interval when that is shorter, so that
/// a failure can be confirmed within the interval (see `State::handle_outcome`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);
/// Default consecutive successes that bring a down backend up.
pub const DEFAULT_RISE: u32 = 2;
/// Default consecutive failures that take an up backend down.
pub const DEFAULT_FALL: u32 = 3;

/// What a check does; the type-specific part of [`Check`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Probe {
    /// Send `payload` from a connected UDP socket; an ICMP port (or host) unreachable is a
    /// failure, and so is silence when `require_reply` (a reply must contain `expect` when
    /// given). Without `require_reply`, silence for `timeout` is success (keepalived's
    /// UDP_CHECK, right for syslog, which never answers) if the host answers an echo sent
    /// with the datagram (`echo`).
    Udp {
        /// Port to probe instead of the backend's.
        port: Option<u16>,
        /// Datagram to send (may be empty).
        payload: Vec<u8>,
        /// Bytes the reply must contain.
        expect: Option<Vec<u8>>,
        /// Whether a reply is needed for success.
        require_reply: bool,
        /// Without `require_reply`: send an ICMP echo with each check, and count silence as
        /// health only when the host answers it.
        echo: bool,
    },
    /// A TCP connection must be accepted.
    Tcp {
        /// Port to connect to instead of the backend's.
        port: Option<u16>,
    },
    /// An HTTP/1.0 `GET` must be answered with `expect_status`.
    Http {
        /// Port to connect to instead of the backend's.
        port: Option<u16>,
        /// Request path, starting with `/`.
        path: String,
        /// `Host` header; the backend's address when `None`.
        host: Option<String>,
        /// Expected status code.
        expect_status: u16,
    },
    /// An ICMP (or ICMPv6) echo must be answered.
    Icmp,
    /// A command must exit with status 0 within the timeout (keepalived's MISC_CHECK);
    /// it gets `SPRAY_BACKEND_ADDR` and `SPRAY_BACKEND_PORT` in its environment.
    Exec {
        /// Program and arguments, run without a shell.
        command: Vec<String>,
    },
}

impl Probe {
    /// The config name of the type.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Udp { .. } => "udp",
            Self::Tcp { .. } => "tcp",
            Self::Http { .. } => "http",
            Self::Icmp => "icmp",
            Self::Exec { .. } => "exec",
        }
    }
}

/// One validated health check of one backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Check {
    /// What to do.
    pub probe: Probe,
    /// Time between two checks (start to start; each is jittered by up to ±10 %).
    pub interval: Duration,
    /// Longest a probe may take; a slower one is a failure. Never above `interval`.
    pub timeout: Duration,
    /// Consecutive successes that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
    /// Local address to check from.
    pub source: Option<IpAddr>,
}

/// What a probe checks: the backend's address and the check.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The backend's address:port.
    pub addr: SocketAddr,
    /// The check.
    pub check: Check,
}

/// Why a probe failed. The text goes into events and logs: lowercase, naming what failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeError(pub String);

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProbeError {}

impl ProbeError {
    /// An error `what: cause` with the OS error text as `strerror` says it.
    pub fn io(what: impl fmt::Display, cause: &std::io::Error) -> Self {
        let text = cause.to_string();
        let text = match cause.raw_os_error() {
            Some(code) => text
                .strip_suffix(&format!(" (os error {code})"))
                .unwrap_or(&text)
                .to_owned(),
            None => text,
        };
        Self(format!("{what}: {}", text.to_lowercase()))
    }
}

/// What a passing probe saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// A positive answer: a reply, a connection, a status, an exit code 0.
    Answer,
    /// Nothing: a UDP check that does not require a reply heard neither a reply nor an ICMP
    /// error. Right after an ICMP error this says little, because Linux sends at most one
    /// ICMP error per second to a peer after a burst of six (`net.ipv4.icmp_ratelimit`):
    /// the state machine counts silence as success only once errors have stopped.
    Silence,
}

/// Runs the check of `target` once, blocking for at most about its timeout.
///
/// # Errors
/// What failed, when the backend is not healthy by this check.
pub fn probe(target: &Target) -> Result<Evidence, ProbeError> {
    let c = &target.check;
    let port = |p: &Option<u16>| SocketAddr::new(target.addr.ip(), p.unwrap_or(target.addr.port()));
    match &c.probe {
        Probe::Udp {
            port: p,
            payload,
            expect,
            require_reply,
            echo,
        } => udp::probe(
            port(p),
            c.source,
            payload,
            expect.as_deref(),
            *require_reply,
            *echo,
            c.timeout,
        ),
        Probe::Tcp { port: p } => {
            tcp::probe(port(p), c.source, c.timeout).map(|()| Evidence::Answer)
        }
        Probe::Http {
            port: p,
            path,
            host,
            expect_status,
        } => http::probe(
            port(p),
            c.source,
            path,
            host.as_deref(),
            *expect_status,
            c.timeout,
        )
        .map(|()| Evidence::Answer),
        Probe::Icmp => {
            icmp::probe(target.addr.ip(), c.source, c.timeout).map(|()| Evidence::Answer)
        }
        Probe::Exec { command } => {
            exec::probe(command, target.addr, c.timeout).map(|()| Evidence::Answer)
        }
    }
}

/// A socket of `to`'s family bound to `source` (port 0) when given: checks from a chosen
/// address.
pub(crate) fn bind_source(
    sock: &socket2::Socket,
    source: Option<IpAddr>,
) -> Result<(), ProbeError> {
    if let Some(ip) = source {
        let a = SocketAddr::new(ip, 0);
        sock.bind(&a.into())
            .map_err(|e| ProbeError::io(format_args!("cannot bind the source address {ip}"), &e))?;
    }
    Ok(())
}
