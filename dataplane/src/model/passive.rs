//! Passive failure detection's reports: an ICMP error about a datagram a worker forwarded
//! is evidence that nothing listens at the backend. Both dataplanes produce them (socket
//! mode from its sockets' error queues, the packet core from ICMP it receives), and the
//! control thread consumes them, so they live below both.

use std::net::SocketAddr;
use std::time::Instant;

use crossbeam_channel::Sender;

use super::ids::VipId;

/// An ICMP error about a datagram sent to a backend of a passive VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PassiveReport {
    /// The VIP whose session sent the datagram.
    pub vip: VipId,
    /// The datagram's destination: the backend address:port.
    pub backend: SocketAddr,
    /// The errno the ICMP error maps to (`ECONNREFUSED` for port unreachable).
    pub errno: i32,
    /// ICMP type and code (IPv4 3/3 or ICMPv6 1/4: port unreachable).
    pub icmp: (u8, u8),
    /// When the worker read it.
    pub at: Instant,
}

/// The sending end of the passive-report channel; compared by channel identity.
#[derive(Debug, Clone)]
pub struct PassiveSink(pub Sender<PassiveReport>);

impl PartialEq for PassiveSink {
    fn eq(&self, other: &Self) -> bool {
        self.0.same_channel(&other.0)
    }
}

impl Eq for PassiveSink {}
