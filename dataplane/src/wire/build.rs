//! Building valid frames, for tests, benchmarks and the demo (allocates: never on the
//! packet path).

use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, UdpPacket, UdpRepr,
};

use super::{vlan, ETH_HEADER_LEN};
use crate::service::MacAddr;

/// Headers of a frame to build.
#[derive(Debug, Clone)]
pub struct FrameSpec {
    /// Ethernet source.
    pub src_mac: MacAddr,
    /// Ethernet destination.
    pub dst_mac: MacAddr,
    /// One 802.1Q tag (the TCI), if any.
    pub vlan: Option<u16>,
    /// IP source and UDP source port.
    pub src: SocketAddr,
    /// IP destination and UDP destination port (same family as `src`).
    pub dst: SocketAddr,
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
    /// Whether to fill the UDP checksum (IPv4 only; IPv6 always has one).
    pub udp_checksum: bool,
}

impl FrameSpec {
    /// A spec with documentation MACs, TTL 64 and a UDP checksum.
    pub fn new(src: SocketAddr, dst: SocketAddr) -> Self {
        Self {
            src_mac: MacAddr([0x02, 0, 0, 0, 0, 0x01]),
            dst_mac: MacAddr([0x02, 0, 0, 0, 0, 0xfe]),
            vlan: None,
            src,
            dst,
            ttl: 64,
            udp_checksum: true,
        }
    }
}

/// A complete Ethernet/IP/UDP frame carrying `payload`.
///
/// # Panics
/// When `spec.src` and `spec.dst` are of different families.
pub fn udp_frame(spec: &FrameSpec, payload: &[u8]) -> Vec<u8> {
    let l3 = ETH_HEADER_LEN
        + if spec.vlan.is_some() {
            vlan::TAG_LEN
        } else {
            0
        };
    let udp_len = 8 + payload.len();
    let ip_len = match spec.src.ip() {
        IpAddr::V4(_) => 20,
        IpAddr::V6(_) => 40,
    };
    let mut f = vec![0xa5u8; l3 + ip_len + udp_len];
    let ethertype = match spec.src.ip() {
        IpAddr::V4(_) => EthernetProtocol::Ipv4,
        IpAddr::V6(_) => EthernetProtocol::Ipv6,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(spec.src_mac.0),
        dst_addr: EthernetAddress(spec.dst_mac.0),
        ethertype,
    };
    eth.emit(&mut EthernetFrame::new_unchecked(&mut f[..]));
    if let Some(tci) = spec.vlan {
        f[12..14].copy_from_slice(&vlan::TPID_8021Q.to_be_bytes());
        f[14..16].copy_from_slice(&tci.to_be_bytes());
        f[16..18].copy_from_slice(&u16::from(ethertype).to_be_bytes());
    }
    let mut caps = ChecksumCapabilities::default();
    let udp = UdpRepr {
        src_port: spec.src.port(),
        dst_port: spec.dst.port(),
    };
    match (spec.src.ip(), spec.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let ip = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: spec.ttl,
            };
            ip.emit(&mut Ipv4Packet::new_unchecked(&mut f[l3..]), &caps);
            if !spec.udp_checksum {
                caps.udp = smoltcp::phy::Checksum::None;
            }
            udp.emit(
                &mut UdpPacket::new_unchecked(&mut f[l3 + ip_len..]),
                &IpAddress::Ipv4(s),
                &IpAddress::Ipv4(d),
                payload.len(),
                |p| p.copy_from_slice(payload),
                &caps,
            );
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let ip = Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Udp,
                payload_len: udp_len,
                hop_limit: spec.ttl,
            };
            ip.emit(&mut Ipv6Packet::new_unchecked(&mut f[l3..]));
            udp.emit(
                &mut UdpPacket::new_unchecked(&mut f[l3 + ip_len..]),
                &IpAddress::Ipv6(s),
                &IpAddress::Ipv6(d),
                payload.len(),
                |p| p.copy_from_slice(payload),
                &caps,
            );
        }
        _ => panic!("udp_frame: source and destination families differ"),
    }
    f
}

/// Recomputes the IPv4 header checksum of the header at `l3` (after a test mutates it).
pub fn fix_ipv4_checksum(frame: &mut [u8], l3: usize) {
    Ipv4Packet::new_unchecked(&mut frame[l3..]).fill_checksum();
}

/// Whether every checksum of a parsed frame verifies by full recomputation.
pub fn checksums_valid(frame: &[u8]) -> bool {
    let Ok(f) = super::parse_udp(frame) else {
        return false;
    };
    let udp = UdpPacket::new_unchecked(&frame[f.l4..]);
    let (s, d) = match (f.src.ip(), f.dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddress::Ipv4(s), IpAddress::Ipv4(d)),
        (IpAddr::V6(s), IpAddr::V6(d)) => (IpAddress::Ipv6(s), IpAddress::Ipv6(d)),
        _ => return false,
    };
    udp.verify_checksum(&s, &d)
}
