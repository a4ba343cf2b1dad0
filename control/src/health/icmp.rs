//! ICMP check: an echo request must be answered within the timeout.
//!
//! An unprivileged ICMP datagram socket (`SOCK_DGRAM`, `IPPROTO_ICMP`; Linux "ping
//! sockets") is tried first: it needs no capability, only that the process's group is in
//! `net.ipv4.ping_group_range`, and the kernel sets the echo id and filters replies. When
//! that is refused, a raw socket is used, which needs CAP_NET_RAW (root). When neither is
//! permitted the error says how to allow one. Neither needs unsafe code: `socket2` opens
//! them and the packet is built and parsed here.

use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use super::{bind_source, ProbeError};

/// Echo sequence numbers, shared by all probes of the process.
static SEQ: AtomicU16 = AtomicU16::new(1);

const PAYLOAD: &[u8] = b"spray-health-chk";

/// Opens an ICMP socket for `to`'s family: datagram (unprivileged) first, then raw.
/// Returns the socket and whether it is raw.
///
/// # Errors
/// Neither kind of socket is permitted; the message says what would allow one.
pub fn open(to: IpAddr) -> Result<(Socket, bool), ProbeError> {
    let (domain, proto, knob) = match to {
        IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4, "net.ipv4.ping_group_range"),
        IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6, "net.ipv4.ping_group_range"),
    };
    match Socket::new(domain, Type::DGRAM, Some(proto)) {
        Ok(s) => Ok((s, false)),
        Err(dgram) => {
            match Socket::new(domain, Type::RAW, Some(proto)) {
                Ok(s) => Ok((s, true)),
                Err(raw) => {
                    Err(ProbeError(format!(
                "icmp checks are not permitted: an unprivileged icmp socket was refused ({}; \
                 add this process's group to sysctl {knob}) and a raw socket was refused \
                 ({}; needs CAP_NET_RAW)",
                ProbeError::io("socket", &dgram).0.trim_start_matches("socket: "),
                ProbeError::io("socket", &raw).0.trim_start_matches("socket: "),
            )))
                }
            }
        }
    }
}

/// Internet checksum (RFC 1071) of `data`.
fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends one echo request to `to` (from `source`) and waits up to `timeout` for the reply.
///
/// # Errors
/// No ICMP socket permitted, a send error, or no reply in time.
pub fn probe(to: IpAddr, source: Option<IpAddr>, timeout: Duration) -> Result<(), ProbeError> {
    let deadline = Instant::now() + timeout;
    Echo::send(to, source)?.wait(deadline, timeout)
}

/// One echo request in flight; its reply queues on the socket until [`Echo::wait`] reads it,
/// so a caller can wait for something else first (the UDP check does).
#[derive(Debug)]
pub struct Echo {
    sock: Socket,
    raw: bool,
    to: IpAddr,
    id: u16,
    seq: u16,
}

impl Echo {
    /// Sends an echo request to `to`, from `source` when given.
    ///
    /// # Errors
    /// No ICMP socket permitted, or the request cannot be sent.
    pub fn send(to: IpAddr, source: Option<IpAddr>) -> Result<Self, ProbeError> {
        let (sock, raw) = open(to)?;
        bind_source(&sock, source)?;
        let dst = SocketAddr::new(to, 0);
        // Connecting makes the kernel deliver only this peer's packets to the socket.
        sock.connect(&dst.into())
            .map_err(|e| ProbeError::io(format_args!("cannot connect to {to}"), &e))?;
        let req_type = if to.is_ipv4() { 8u8 } else { 128 };
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        // Ping sockets replace the id with their own; raw ones keep ours.
        let id = (std::process::id() as u16) ^ 0x5350;
        let mut pkt = Vec::with_capacity(8 + PAYLOAD.len());
        pkt.extend_from_slice(&[req_type, 0, 0, 0]);
        pkt.extend_from_slice(&id.to_be_bytes());
        pkt.extend_from_slice(&seq.to_be_bytes());
        pkt.extend_from_slice(PAYLOAD);
        if to.is_ipv4() {
            // The kernel computes ICMPv6 checksums itself (it needs the pseudo-header).
            let c = checksum(&pkt);
            pkt[2..4].copy_from_slice(&c.to_be_bytes());
        }
        sock.send(&pkt)
            .map_err(|e| ProbeError::io(format_args!("icmp echo to {to}"), &e))?;
        Ok(Self {
            sock,
            raw,
            to,
            id,
            seq,
        })
    }

    /// Waits until `deadline` for the reply (a reply already queued is taken at once, even
    /// past the deadline); `timeout` only names the wait in the error.
    ///
    /// # Errors
    /// No reply by the deadline, or a receive error.
    pub fn wait(&self, deadline: Instant, timeout: Duration) -> Result<(), ProbeError> {
        let reply_type = if self.to.is_ipv4() { 0u8 } else { 129 };
        let mut buf = [0u8; 1500];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            // Past the deadline, one last look at what is queued without blocking.
            let last = left.is_zero();
            let set = if last {
                self.sock.set_nonblocking(true)
            } else {
                self.sock.set_read_timeout(Some(left))
            };
            set.map_err(|e| ProbeError::io("cannot set the receive timeout", &e))?;
            let n = match (&self.sock).read(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut
                        || e.kind() == std::io::ErrorKind::Interrupted =>
                {
                    if last {
                        return Err(ProbeError(format!(
                            "no icmp echo reply from {} within {} ms",
                            self.to,
                            timeout.as_millis()
                        )));
                    }
                    continue;
                }
                Err(e) => return Err(ProbeError::io(format_args!("icmp echo to {}", self.to), &e)),
            };
            let mut icmp = &buf[..n];
            if self.raw && self.to.is_ipv4() {
                // IPv4 raw sockets deliver the IP header too (RFC 791: IHL in 32-bit words).
                let ihl = usize::from(icmp.first().copied().unwrap_or(0) & 0x0f) * 4;
                icmp = icmp.get(ihl..).unwrap_or(&[]);
            }
            if icmp.len() < 8 || icmp[0] != reply_type {
                continue;
            }
            let got_id = u16::from_be_bytes([icmp[4], icmp[5]]);
            let got_seq = u16::from_be_bytes([icmp[6], icmp[7]]);
            if got_seq == self.seq && (!self.raw || got_id == self.id) {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_echo_request() {
        // type 8, code 0, id 1, seq 1, no payload: checksum 0xf7fd.
        assert_eq!(checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
    }

    #[test]
    fn echo_to_loopback_or_a_clear_error() {
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        match open(lo) {
            Ok(_) => probe(lo, None, Duration::from_millis(500)).unwrap(),
            Err(e) => {
                assert!(e.0.starts_with("icmp checks are not permitted"), "{e}");
                assert_eq!(probe(lo, None, Duration::from_millis(100)), Err(e));
            }
        }
    }
}
