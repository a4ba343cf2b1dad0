//! Wire formats: zero-copy views over the headers Spray reads and rewrites.
//!
//! The views are smoltcp's (`smoltcp::wire`, re-exported here): generic over any byte
//! container, getters on readable buffers and setters on writable ones, built with
//! `new_checked` for input. smoltcp has no 802.1Q view, so `vlan` adds one in the same
//! style. [`checksum`] adds the incremental update (RFC 1624) smoltcp lacks.
//!
//! `classify` is the one validation step of the packet path ([`parse_udp`] is its
//! whole-datagram form): once it returns `Ok`, the offsets and lengths it reports are inside
//! the frame, and the rewrite
//! functions in [`crate::rewrite`] use unchecked views that cannot panic on that frame. It
//! never panics itself, whatever the bytes (a property test feeds it random input).
//!
//! A classified frame is described by one of three records: [`UdpFrame`] (a whole UDP
//! datagram, either family, any tag), `Ipv4Udp` (the common case the fast classifier
//! recognises: IPv4 without options, not a fragment; integers only, so that it stays in
//! registers from the frame to the rewrite) and `IpFrame` (an IP packet whose transport
//! header is not parsed: a fragment, or ICMP). `Packet` says which one a frame is. Fields
//! read at fixed offsets are named in `field`.

use std::net::{IpAddr, SocketAddr};

pub(crate) use smoltcp::wire::{EthernetFrame, Ipv4Packet, Ipv6Packet, UdpPacket};

use crate::counters::DropReason;

pub mod checksum;
pub(crate) mod classify;
pub(crate) mod field;
pub(crate) mod vlan;

pub(crate) use classify::{
    classify, classify_tagged_ipv4_udp, classify_untagged_ipv4_udp, FragInfo, FragKey, IpFrame,
    Ipv4Udp, Packet,
};

/// Length of an Ethernet header without a tag.
pub(crate) const ETH_HEADER_LEN: usize = 14;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of IPv6.
pub(crate) const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Length of the fixed IPv6 header.
pub(crate) const IPV6_HEADER_LEN: usize = 40;

/// What [`parse_udp`] learnt about a valid Ethernet/IP/UDP frame.
///
/// Addresses are kept as integers and handed out as `SocketAddr` by [`UdpFrame::src`] and
/// [`UdpFrame::dst`]: a `SocketAddr` field built in place and moved through `Result<Packet>`
/// made the compiler reload it with wider loads than it stored, a store-forwarding stall
/// on every packet (see docs/benchmarks.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFrame {
    /// The 802.1Q TCI, when the frame carries one tag.
    pub vlan: Option<u16>,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the UDP header.
    pub l4: usize,
    src_ip: u128,
    dst_ip: u128,
    src_port: u16,
    dst_port: u16,
    v6: bool,
}

#[inline]
fn ip_bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(a.to_bits()),
        IpAddr::V6(a) => a.to_bits(),
    }
}

#[inline]
fn ip_of(bits: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(bits.into())
    } else {
        IpAddr::V4((bits as u32).into())
    }
}

impl UdpFrame {
    /// A frame description; `src` and `dst` must be of one family.
    #[inline]
    pub fn new(vlan: Option<u16>, l3: usize, l4: usize, src: SocketAddr, dst: SocketAddr) -> Self {
        Self {
            vlan,
            l3,
            l4,
            src_ip: ip_bits(src.ip()),
            dst_ip: ip_bits(dst.ip()),
            src_port: src.port(),
            dst_port: dst.port(),
            v6: src.is_ipv6(),
        }
    }

    /// Source address and port.
    #[inline]
    pub fn src(&self) -> SocketAddr {
        SocketAddr::new(ip_of(self.src_ip, self.v6), self.src_port)
    }

    /// Destination address and port.
    #[inline]
    pub fn dst(&self) -> SocketAddr {
        SocketAddr::new(ip_of(self.dst_ip, self.v6), self.dst_port)
    }

    /// Whether the IP header is IPv6.
    #[inline]
    pub fn is_ipv6(&self) -> bool {
        self.v6
    }
}

/// Validates an Ethernet (optionally 802.1Q-tagged) IPv4/IPv6 UDP frame carrying a whole
/// datagram; `classify` is the general form the worker uses.
///
/// # Errors
/// The [`DropReason`] that names what is wrong: fragments are [`DropReason::Fragment`], ICMP
/// is [`DropReason::NotUdp`] and ARP is [`DropReason::NotIp`] here.
#[inline]
pub fn parse_udp(frame: &[u8]) -> Result<UdpFrame, DropReason> {
    match classify(frame)? {
        Packet::Udp(f) => Ok(f),
        Packet::FirstFragment(..) | Packet::Fragment(..) => Err(DropReason::Fragment),
        Packet::Icmp(_) => Err(DropReason::NotUdp),
        Packet::Arp { .. } => Err(DropReason::NotIp),
    }
}

/// Checks the UDP header against the IP payload it sits in and returns (src, dst) ports.
#[inline]
pub(crate) fn parse_udp_ports(udp: &[u8]) -> Result<(u16, u16), DropReason> {
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
    use super::*;
    use crate::testkit::frames::{udp_frame, FrameSpec};
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
        assert_eq!(p.src(), "198.18.0.1:40000".parse().unwrap());
        assert_eq!(p.dst(), "198.18.0.10:514".parse().unwrap());
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
                    crate::testkit::frames::fix_ipv4_checksum(f, 14);
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
        // 16 bytes of IP payload: a multiple of 8, as a fragment with MF set must carry.
        let mut f = udp_frame(&v4(), b"payload!");
        f[20] = 0x20; // more fragments
        crate::testkit::frames::fix_ipv4_checksum(&mut f, 14);
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
