//! Wire formats: zero-copy views over the headers Spray reads and rewrites.
//!
//! The views are smoltcp's (`smoltcp::wire`, re-exported here): generic over any byte
//! container, getters on readable buffers and setters on writable ones, built with
//! `new_checked` for input. smoltcp has no 802.1Q view, so [`vlan`] adds one in the same
//! style. [`checksum`] adds the incremental update (RFC 1624) smoltcp lacks.
//!
//! [`parse_udp`] is the one validation step of the packet path: once it returns
//! `Ok(UdpFrame)`, the offsets and lengths it reports are inside the frame, and the rewrite
//! functions in [`crate::rewrite`] use unchecked views that cannot panic on that frame. It
//! never panics itself, whatever the bytes (a property test feeds it random input).

use std::net::{IpAddr, SocketAddr};

pub use smoltcp::wire::{
    ArpPacket, EthernetAddress, EthernetFrame, EthernetProtocol, Icmpv4Packet, Icmpv6Packet,
    IpProtocol, Ipv4Packet, Ipv6Packet, UdpPacket,
};

use crate::counters::DropReason;

pub mod build;
pub mod checksum;
pub mod vlan;

/// Length of an Ethernet header without a tag.
pub const ETH_HEADER_LEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPV6_HEADER_LEN: usize = 40;

/// What [`parse_udp`] learnt about a valid Ethernet/IP/UDP frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFrame {
    /// The 802.1Q TCI, when the frame carries one tag.
    pub vlan: Option<u16>,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the UDP header.
    pub l4: usize,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
}

impl UdpFrame {
    /// Whether the IP header is IPv6.
    #[inline]
    pub fn is_ipv6(&self) -> bool {
        self.src.is_ipv6()
    }
}

/// Validates an Ethernet (optionally 802.1Q-tagged) IPv4/IPv6 UDP frame.
///
/// # Errors
/// The [`DropReason`] that names what is wrong. Fragments are refused for now (fragment
/// steering comes with the network-correctness work).
#[inline]
pub fn parse_udp(frame: &[u8]) -> Result<UdpFrame, DropReason> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Truncated)?;
    let mut ethertype = u16::from(eth.ethertype());
    let mut l3 = ETH_HEADER_LEN;
    let mut vlan = None;
    if ethertype == vlan::TPID_8021Q {
        let tag = vlan::VlanTag::new_checked(&frame[l3..]).ok_or(DropReason::Truncated)?;
        vlan = Some(tag.tci());
        ethertype = tag.inner_type();
        l3 += vlan::TAG_LEN;
    }
    let ip = &frame[l3..];
    match ethertype {
        ETHERTYPE_IPV4 => parse_ipv4(ip, l3, vlan),
        ETHERTYPE_IPV6 => parse_ipv6(ip, l3, vlan),
        _ => Err(DropReason::NotIp),
    }
}

#[inline]
fn parse_ipv4(ip: &[u8], l3: usize, vlan: Option<u16>) -> Result<UdpFrame, DropReason> {
    if ip.len() < 20 {
        return Err(DropReason::Truncated);
    }
    let pkt = Ipv4Packet::new_unchecked(ip);
    if pkt.version() != 4 || pkt.header_len() < 20 {
        return Err(DropReason::BadIpHeader);
    }
    if pkt.check_len().is_err() {
        // Either the header claims more than the buffer has, or total_len < header_len.
        return Err(if usize::from(pkt.total_len()) > ip.len() {
            DropReason::Truncated
        } else {
            DropReason::BadIpHeader
        });
    }
    let hl = usize::from(pkt.header_len());
    if !checksum::ipv4_header_valid(&ip[..hl]) {
        return Err(DropReason::BadIpChecksum);
    }
    if pkt.next_header() != IpProtocol::Udp {
        return Err(DropReason::NotUdp);
    }
    if pkt.more_frags() || pkt.frag_offset() != 0 {
        return Err(DropReason::Fragment);
    }
    let udp = &ip[hl..usize::from(pkt.total_len())];
    let (sport, dport) = parse_udp_ports(udp)?;
    Ok(UdpFrame {
        vlan,
        l3,
        l4: l3 + hl,
        src: SocketAddr::new(IpAddr::V4(pkt.src_addr()), sport),
        dst: SocketAddr::new(IpAddr::V4(pkt.dst_addr()), dport),
    })
}

#[inline]
fn parse_ipv6(ip: &[u8], l3: usize, vlan: Option<u16>) -> Result<UdpFrame, DropReason> {
    let pkt = Ipv6Packet::new_checked(ip).map_err(|_| DropReason::Truncated)?;
    if pkt.version() != 6 {
        return Err(DropReason::BadIpHeader);
    }
    // Extension headers (fragment header included) are not walked yet.
    if pkt.next_header() != IpProtocol::Udp {
        return Err(DropReason::NotUdp);
    }
    let udp = &ip[IPV6_HEADER_LEN..IPV6_HEADER_LEN + usize::from(pkt.payload_len())];
    let (sport, dport) = parse_udp_ports(udp)?;
    Ok(UdpFrame {
        vlan,
        l3,
        l4: l3 + IPV6_HEADER_LEN,
        src: SocketAddr::new(IpAddr::V6(pkt.src_addr()), sport),
        dst: SocketAddr::new(IpAddr::V6(pkt.dst_addr()), dport),
    })
}

/// Checks the UDP header against the IP payload it sits in and returns (src, dst) ports.
#[inline]
fn parse_udp_ports(udp: &[u8]) -> Result<(u16, u16), DropReason> {
    if udp.len() < 8 {
        return Err(DropReason::Truncated);
    }
    let pkt = UdpPacket::new_unchecked(udp);
    let len = usize::from(pkt.len());
    // RFC 768: the length covers header and data; it may not exceed what IP carried.
    if len < 8 || len > udp.len() {
        return Err(DropReason::BadUdpLength);
    }
    Ok((pkt.src_port(), pkt.dst_port()))
}

#[cfg(test)]
mod tests {
    use super::build::{udp_frame, FrameSpec};
    use super::*;
    use proptest::prelude::*;

    fn v4() -> FrameSpec {
        FrameSpec::new(
            "198.18.0.1:40000".parse().unwrap(),
            "198.18.0.10:514".parse().unwrap(),
        )
    }

    #[test]
    fn parses_ipv4_udp() {
        let f = udp_frame(&v4(), b"<13>hello");
        let p = parse_udp(&f).unwrap();
        assert_eq!(p.l3, 14);
        assert_eq!(p.l4, 34);
        assert_eq!(p.src, "198.18.0.1:40000".parse().unwrap());
        assert_eq!(p.dst, "198.18.0.10:514".parse().unwrap());
        assert_eq!(p.vlan, None);
    }

    #[test]
    fn parses_vlan_tagged_ipv6_udp() {
        let mut spec = FrameSpec::new(
            "[2001:db8::1]:40000".parse().unwrap(),
            "[2001:db8::10]:514".parse().unwrap(),
        );
        spec.vlan = Some(42);
        let f = udp_frame(&spec, b"x");
        let p = parse_udp(&f).unwrap();
        assert_eq!(p.vlan, Some(42));
        assert_eq!(p.l3, 18);
        assert_eq!(p.l4, 58);
        assert!(p.is_ipv6());
    }

    #[test]
    fn ethernet_padding_after_a_short_datagram_is_accepted() {
        let mut f = udp_frame(&v4(), b"");
        f.resize(60, 0); // minimum Ethernet frame
        assert!(parse_udp(&f).is_ok());
    }

    #[test]
    fn each_defect_has_its_reason() {
        let good = udp_frame(&v4(), b"payload");
        type Mutation = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: [(&str, Mutation, DropReason); 8] = [
            ("short", Box::new(|f| f.truncate(10)), DropReason::Truncated),
            (
                "arp",
                Box::new(|f| f[12..14].copy_from_slice(&[8, 6])),
                DropReason::NotIp,
            ),
            (
                "version",
                Box::new(|f| f[14] = 0x55),
                DropReason::BadIpHeader,
            ),
            ("ihl", Box::new(|f| f[14] = 0x44), DropReason::BadIpHeader),
            (
                "checksum",
                Box::new(|f| f[24] ^= 1),
                DropReason::BadIpChecksum,
            ),
            ("cut", Box::new(|f| f.truncate(40)), DropReason::Truncated),
            (
                "tcp",
                Box::new(|f| {
                    f[23] = 6;
                    super::build::fix_ipv4_checksum(f, 14);
                }),
                DropReason::NotUdp,
            ),
            (
                "udp len",
                Box::new(|f| f[38..40].copy_from_slice(&[0xff, 0xff])),
                DropReason::BadUdpLength,
            ),
        ];
        for (name, mutate, want) in cases {
            let mut f = good.clone();
            mutate(&mut f);
            assert_eq!(parse_udp(&f), Err(want), "{name}");
        }
    }

    #[test]
    fn fragments_are_refused_and_named() {
        let mut f = udp_frame(&v4(), b"payload");
        f[20] = 0x20; // more fragments
        super::build::fix_ipv4_checksum(&mut f, 14);
        assert_eq!(parse_udp(&f), Err(DropReason::Fragment));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_udp(&bytes);
        }

        #[test]
        fn parse_never_panics_on_damaged_valid_frames(
            idx in 0usize..80, val in any::<u8>(), cut in 0usize..90, v6 in any::<bool>()
        ) {
            let spec = if v6 {
                FrameSpec::new("[2001:db8::1]:1".parse().unwrap(), "[2001:db8::2]:2".parse().unwrap())
            } else {
                v4()
            };
            let mut f = udp_frame(&spec, b"0123456789");
            let i = idx % f.len();
            f[i] = val;
            f.truncate(cut.min(f.len()));
            let _ = parse_udp(&f);
        }
    }
}
