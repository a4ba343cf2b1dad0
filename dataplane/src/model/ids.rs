//! Names the control plane and the workers share: VIP and backend ids (stable across
//! snapshots: they index the per-worker counters, so statistics survive a reload), the VIP
//! key, and MAC addresses.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// Most VIPs a snapshot may hold; sizes the per-worker counter arrays.
pub const MAX_VIPS: usize = 1024;
/// Most distinct backends (over all VIPs) a snapshot may hold; sizes the counter arrays.
pub const MAX_BACKENDS: usize = 4096;

/// Index of a VIP in the snapshot and in the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct VipId(pub u16);

/// Index of a backend in the counters; stable across snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(pub u16);

/// Transport protocol of a VIP. Spray balances UDP; the enum keeps the key honest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// User Datagram Protocol (RFC 768).
    Udp,
}

/// What identifies a virtual service: destination address, port and protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VipKey {
    /// Address and port clients send to.
    pub addr: SocketAddr,
    /// Transport protocol.
    pub proto: Protocol,
}

impl VipKey {
    /// A UDP VIP.
    pub fn udp(addr: SocketAddr) -> Self {
        Self {
            addr,
            proto: Protocol::Udp,
        }
    }
}

impl fmt::Display for VipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UDP {}", self.addr)
    }
}

/// A MAC address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// Error from parsing a [`MacAddr`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadMac;

impl fmt::Display for BadMac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected six hex bytes separated by ':', like 02:00:5e:00:00:01")
    }
}

impl std::error::Error for BadMac {}

impl FromStr for MacAddr {
    type Err = BadMac;
    fn from_str(s: &str) -> Result<Self, BadMac> {
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in &mut out {
            let p = parts.next().ok_or(BadMac)?;
            if p.len() != 2 {
                return Err(BadMac);
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| BadMac)?;
        }
        if parts.next().is_some() {
            return Err(BadMac);
        }
        Ok(MacAddr(out))
    }
}
