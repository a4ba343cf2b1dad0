//! What a tunnelled backend needs: how it decapsulates, the outer source address and the
//! largest outer packet its path carries.
//!
//! A tunnel is direct server return over a routed network: the datagram travels unchanged
//! inside an outer IP header addressed to the backend, and the backend, holding the VIP on a
//! local device, replies straight to the client.

use std::net::IpAddr;

/// The outer header a backend decapsulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encap {
    /// IP in IP: IPv4 in IPv4 (RFC 2003), IPv6 in IPv6 and IPv4 in IPv6 (RFC 2473), IPv6 in
    /// IPv4 (RFC 4213); Linux's `ipip`, `ip6tnl` and `sit` devices.
    Ipip,
    /// Generic UDP Encapsulation, variant 0 (draft-ietf-intarea-gue) to UDP port `port`:
    /// what Linux's `fou` in `gue` mode and Katran decapsulate. The source port varies with
    /// the inner flow so that the backend's RSS spreads the load.
    Gue {
        /// Destination UDP port of the outer header.
        port: u16,
    },
}

/// How datagrams reach one tunnelled backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tunnel {
    /// The encapsulation.
    pub encap: Encap,
    /// Source of the outer header, of the backend address's family.
    pub source: IpAddr,
    /// Largest outer IP packet the path to the backend carries; a datagram that would not
    /// fit after encapsulation is answered with ICMP "fragmentation needed" / "packet too
    /// big" instead.
    pub mtu: u16,
}

impl Tunnel {
    /// Bytes the encapsulation adds in front of the datagram toward a backend of family
    /// `outer_v6`: the outer IP header, and for GUE its UDP and GUE headers.
    pub fn overhead(&self, outer_v6: bool) -> usize {
        let ip = if outer_v6 { 40 } else { 20 };
        match self.encap {
            Encap::Ipip => ip,
            Encap::Gue { .. } => ip + 8 + 4,
        }
    }
}

/// Default [`Tunnel::mtu`]: an Ethernet path.
pub const DEFAULT_TUNNEL_MTU: u16 = 1500;

/// Default GUE port, the one `ipvsadm --tun-port` examples and keepalived use.
pub const DEFAULT_GUE_PORT: u16 = 6080;
