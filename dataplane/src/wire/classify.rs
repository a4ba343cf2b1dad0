//! Classification of every frame a worker receives: UDP datagram, IP fragment, ICMP, ARP.
//!
//! [`classify`] is the one validation step of the wire path. It never panics, whatever the
//! bytes; once it returns `Ok`, the offsets it reports are inside the frame and the rewrite
//! functions may build unchecked views on them:
//!
//! * [`Packet::Udp`]: a whole UDP datagram. `l4 + 8 <= frame.len()`, the UDP length is at
//!   least 8 and at most the IP payload (a shorter UDP length is legal, RFC 768, and is
//!   forwarded untouched: the bytes after it are the sender's business).
//! * [`Packet::FirstFragment`]: offset 0 of a fragmented UDP datagram; the UDP header is
//!   whole (a first fragment carrying fewer than 8 bytes is refused, RFC 1858), its length
//!   field is at least this fragment's payload (it covers the whole datagram).
//! * [`Packet::Fragment`]: a non-first UDP fragment; only the IP header is valid.
//! * [`Packet::Icmp`]: an unfragmented ICMPv4 or ICMPv6 message; `l4 < end <= frame.len()`.
//! * [`Packet::Arp`]: an ARP frame; nothing beyond the Ethernet header is checked.
//!
//! IPv4: the header checksum is verified, options are allowed (the header length is
//! respected), fragment payloads must be multiples of 8 unless last, and no fragment may end
//! beyond 65535 bytes. IPv6: the fragment header is understood when it comes first; other
//! extension headers are refused as [`DropReason::NotUdp`] (documented in docs/network.md).

use std::net::{IpAddr, SocketAddr};

use super::{
    vlan, EthernetFrame, Ipv4Packet, Ipv6Packet, UdpFrame, UdpPacket, ETHERTYPE_IPV4,
    ETHERTYPE_IPV6, ETH_HEADER_LEN, IPV6_HEADER_LEN,
};
use crate::counters::DropReason;
use crate::wire::checksum;
use crate::wire::field::{be16, eth, ipv4, ipv4_udp, udp};

/// EtherType of ARP.
pub(crate) const ETHERTYPE_ARP: u16 = 0x0806;
/// IPv6 next-header value of the fragment extension header.
pub(crate) const IPV6_FRAGMENT: u8 = 44;
/// Length of the IPv6 fragment extension header.
pub(crate) const IPV6_FRAGMENT_LEN: usize = 8;
const PROTO_ICMP: u8 = 1;
const PROTO_UDP: u8 = 17;
const PROTO_ICMPV6: u8 = 58;

/// What identifies the fragments of one datagram (RFC 791: source, destination, protocol
/// and identification; RFC 8200: source, destination and identification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct FragKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Identification (16 bits in IPv4, 32 in IPv6).
    pub id: u32,
    /// Upper-layer protocol.
    pub proto: u8,
}

/// Where a fragment sits in its datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FragInfo {
    /// The datagram it belongs to.
    pub key: FragKey,
    /// Offset of its payload in the datagram, in bytes.
    pub offset: u32,
    /// Bytes of payload it carries.
    pub len: u32,
    /// Whether more fragments follow (the MF flag / M bit).
    pub more: bool,
}

/// An IP packet whose transport header is not (or not yet) parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpFrame {
    /// The 802.1Q TCI, when the frame carries one tag.
    pub vlan: Option<u16>,
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of what follows the IP header(s): ICMP header or fragment payload.
    pub l4: usize,
    /// End of the IP packet in the frame (Ethernet padding excluded).
    pub end: usize,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
}

impl IpFrame {
    /// Whether the IP header is IPv6.
    #[inline]
    pub fn is_ipv6(&self) -> bool {
        self.src.is_ipv6()
    }
}

/// What a frame is; see the module docs for what each variant guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Packet {
    /// A whole UDP datagram.
    Udp(UdpFrame),
    /// The first fragment of a UDP datagram (it carries the UDP header).
    FirstFragment(UdpFrame, FragInfo),
    /// A non-first fragment of a UDP datagram.
    Fragment(IpFrame, FragInfo),
    /// An unfragmented ICMP (v4 or v6) message.
    Icmp(IpFrame),
    /// An ARP frame; `l3` is the offset of the ARP header.
    Arp {
        /// The 802.1Q TCI, when the frame carries one tag.
        vlan: Option<u16>,
        /// Offset of the ARP header.
        l3: usize,
    },
}

/// Classifies and validates a frame.
///
/// # Errors
/// The [`DropReason`] that names what is wrong or unsupported.
#[inline]
pub(crate) fn classify(frame: &[u8]) -> Result<Packet, DropReason> {
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
        ETHERTYPE_IPV4 => ipv4(ip, l3, vlan),
        ETHERTYPE_IPV6 => ipv6(ip, l3, vlan),
        ETHERTYPE_ARP => Ok(Packet::Arp { vlan, l3 }),
        _ => Err(DropReason::NotIp),
    }
}

/// The common case of the packet path, recognised without building a [`Packet`]: an IPv4
/// header without options (untagged or with one 802.1Q tag), not a fragment, whose checksum
/// verifies, carrying a whole UDP datagram.
///
/// [`classify_ipv4_udp`] returns one exactly when [`classify`] would return
/// [`Packet::Udp`] for the same frame with `l4 = l3 + 20` (a property test checks it), so the
/// same guarantees hold: `l3 + 28 <= frame.len()`, and the UDP length is at least 8 and at
/// most the IP payload.
///
/// Addresses stay `u32`s (host order of the big-endian bytes) from the frame to the lookup
/// and the rewrite: no `SocketAddr` is built, stored and reloaded on the way (the
/// store-forwarding stall of docs/benchmarks.md), and the whole result fits in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ipv4Udp {
    /// The 802.1Q TCI, when the frame carries one tag.
    pub vlan: Option<u16>,
    /// Offset of the IPv4 header (14 or 18); the UDP header is at `l3 + 20`.
    pub l3: usize,
    /// Source address.
    pub src_ip: u32,
    /// Destination address.
    pub dst_ip: u32,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl Ipv4Udp {
    /// Offset of the UDP header.
    #[inline]
    pub(crate) fn l4(&self) -> usize {
        self.l3 + 20
    }

    /// Source address and port.
    #[inline]
    pub fn src(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.src_ip.into()), self.src_port)
    }

    /// Destination address and port.
    #[inline]
    pub fn dst(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.dst_ip.into()), self.dst_port)
    }

    /// The same datagram as [`classify`] describes it.
    #[inline]
    pub fn udp_frame(&self) -> UdpFrame {
        UdpFrame::new(self.vlan, self.l3, self.l4(), self.src(), self.dst())
    }
}

/// Recognises the common case described at [`Ipv4Udp`]; `None` means "ask [`classify`]"
/// (which then finds another kind of packet, or the reason to drop it).
///
/// Hand-written, with fixed-size views and integer fields, because it runs for nearly every
/// packet: it keeps [`classify`]'s general enum and `SocketAddr`s off the datagram path (see
/// docs/benchmarks.md).
#[cfg(test)]
#[inline(always)]
pub(crate) fn classify_ipv4_udp(frame: &[u8]) -> Option<Ipv4Udp> {
    classify_ipv4_udp_with(frame, false)
}

/// [`classify_ipv4_udp`], skipping the IPv4 header checksum when `header_verified` (the NIC
/// checked it: its RX checksum offload said good). Everything else is still checked: the
/// NIC's verdict covers the checksum only. With a NIC that checks, the packet path skips
/// the header sum (see docs/benchmarks.md).
#[cfg(test)]
#[inline(always)]
pub(crate) fn classify_ipv4_udp_with(frame: &[u8], header_verified: bool) -> Option<Ipv4Udp> {
    classify_untagged_ipv4_udp(frame, header_verified)
        .or_else(|| classify_tagged_ipv4_udp(frame, header_verified))
}

/// [`classify_ipv4_udp_with`] for a frame without an 802.1Q tag; `None` for every other
/// frame, tagged ones included. Apart from the tagged case so that a caller can keep the
/// two out of one code path: where both merged, the fast path spilled the result to the
/// stack (see docs/benchmarks.md).
#[inline(always)]
pub(crate) fn classify_untagged_ipv4_udp(frame: &[u8], header_verified: bool) -> Option<Ipv4Udp> {
    // Ethernet, IPv4 and UDP headers: one length check for all the fixed-offset reads
    // below (checked at 16 bytes first, a frame paid for two).
    let hdrs: &[u8; ETH_HEADER_LEN + ipv4_udp::LEN] = frame.first_chunk()?;
    let (_, w) = hdrs.split_first_chunk::<{ eth::ETHERTYPE.start }>()?;
    let w: &[u8; 4] = w.first_chunk()?;
    // EtherType IPv4, then version 4 with a 5-word header (the TOS byte is anything), in one
    // load and compare.
    let [t0, t1] = ETHERTYPE_IPV4.to_be_bytes();
    let want = u32::from_le_bytes([t0, t1, ipv4::VER_IHL_NO_OPTIONS, 0]);
    if u32::from_le_bytes(*w) & 0x00ff_ffff != want {
        return None;
    }
    ipv4_udp_at::<ETH_HEADER_LEN>(frame, None, header_verified)
}

/// [`classify_ipv4_udp_with`] for a frame with one 802.1Q tag; `None` for every other frame.
#[inline(never)]
pub(crate) fn classify_tagged_ipv4_udp(frame: &[u8], header_verified: bool) -> Option<Ipv4Udp> {
    let hdr: &[u8; ETH_HEADER_LEN + vlan::TAG_LEN + 1] = frame.first_chunk()?;
    if be16(hdr, eth::ETHERTYPE) != vlan::TPID_8021Q
        || be16(hdr, eth::TAG_ETHERTYPE) != ETHERTYPE_IPV4
        || hdr[ETH_HEADER_LEN + vlan::TAG_LEN + ipv4::VER_IHL] != ipv4::VER_IHL_NO_OPTIONS
    {
        return None;
    }
    let tci = be16(hdr, eth::TAG_TCI);
    ipv4_udp_at::<{ ETH_HEADER_LEN + vlan::TAG_LEN }>(frame, Some(tci), header_verified)
}

/// The rest of [`classify_ipv4_udp_with`] once the frame is known to hold an IPv4 header
/// with version 4 and 5 words at `L3` (a constant, so that every offset below folds).
#[inline(always)]
fn ipv4_udp_at<const L3: usize>(
    frame: &[u8],
    vlan: Option<u16>,
    header_verified: bool,
) -> Option<Ipv4Udp> {
    const LEN: usize = ipv4_udp::LEN;
    let rest = frame.get(L3..)?;
    let h: &[u8; LEN] = rest.first_chunk()?;
    // Neither more fragments nor an offset (DF may be set), and UDP: the flags and offset
    // and the protocol (the TTL between them is anything) in one load and compare.
    let (_, w) = h.split_first_chunk::<{ ipv4::FLAGS_FRAG.start }>()?;
    let w: &[u8; 4] = w.first_chunk()?;
    let want = u32::from_le_bytes([0, 0, 0, PROTO_UDP]);
    if u32::from_le_bytes(*w) & 0xff00_ff3f != want {
        return None;
    }
    let total = usize::from(be16(h, ipv4::TOTAL_LEN));
    let udp_len = usize::from(be16(h, ipv4_udp::UDP_LEN));
    // LEN <= total <= what the frame holds after L3 (which is at least LEN: `h`), and
    // RFC 768's 8 <= UDP length <= IP payload, as two range checks (unsigned wrap-around).
    if total.wrapping_sub(LEN) > rest.len() - LEN
        || udp_len.wrapping_sub(udp::HEADER_LEN) > total - LEN
    {
        return None;
    }
    let header: &[u8; ipv4::HEADER_LEN] = h.first_chunk()?;
    if !header_verified && !checksum::ipv4_header20_valid(header) {
        return None;
    }
    // Whole-word reads of the addresses: built byte by byte, LLVM assembled the source
    // address from three loads once the checksum loop, whose word loads it had reused, was
    // skipped for a NIC-verified header.
    let (_, addrs) = h.split_first_chunk::<{ ipv4::SRC.start }>()?;
    let (src, rest) = addrs.split_first_chunk::<4>()?;
    let dst: &[u8; 4] = rest.first_chunk()?;
    Some(Ipv4Udp {
        vlan,
        l3: L3,
        src_ip: u32::from_be_bytes(*src),
        dst_ip: u32::from_be_bytes(*dst),
        src_port: be16(h, ipv4_udp::SRC_PORT),
        dst_port: be16(h, ipv4_udp::DST_PORT),
    })
}

#[inline]
fn ipv4(ip: &[u8], l3: usize, vlan: Option<u16>) -> Result<Packet, DropReason> {
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
    let total = usize::from(pkt.total_len());
    if !checksum::ipv4_header_valid(&ip[..hl]) {
        return Err(DropReason::BadIpChecksum);
    }
    let src = IpAddr::V4(pkt.src_addr());
    let dst = IpAddr::V4(pkt.dst_addr());
    let proto = u8::from(pkt.next_header());
    let payload = &ip[hl..total];
    let ipf = IpFrame {
        vlan,
        l3,
        l4: l3 + hl,
        end: l3 + total,
        src,
        dst,
    };
    let offset = u32::from(pkt.frag_offset());
    let more = pkt.more_frags();
    if more || offset != 0 {
        if proto != PROTO_UDP {
            return Err(DropReason::NotUdp);
        }
        let info = FragInfo {
            key: FragKey {
                src,
                dst,
                id: u32::from(pkt.ident()),
                proto,
            },
            offset,
            len: payload.len() as u32,
            more,
        };
        return fragment(ipf, info, payload);
    }
    match proto {
        PROTO_UDP => Ok(Packet::Udp(udp(ipf, payload)?)),
        PROTO_ICMP => Ok(Packet::Icmp(ipf)),
        _ => Err(DropReason::NotUdp),
    }
}

#[inline]
fn ipv6(ip: &[u8], l3: usize, vlan: Option<u16>) -> Result<Packet, DropReason> {
    let pkt = Ipv6Packet::new_checked(ip).map_err(|_| DropReason::Truncated)?;
    if pkt.version() != 6 {
        return Err(DropReason::BadIpHeader);
    }
    let end = IPV6_HEADER_LEN + usize::from(pkt.payload_len());
    let src = IpAddr::V6(pkt.src_addr());
    let dst = IpAddr::V6(pkt.dst_addr());
    let mut ipf = IpFrame {
        vlan,
        l3,
        l4: l3 + IPV6_HEADER_LEN,
        end: l3 + end,
        src,
        dst,
    };
    match u8::from(pkt.next_header()) {
        PROTO_UDP => Ok(Packet::Udp(udp(ipf, &ip[IPV6_HEADER_LEN..end])?)),
        PROTO_ICMPV6 => Ok(Packet::Icmp(ipf)),
        IPV6_FRAGMENT => {
            let fh = ip
                .get(IPV6_HEADER_LEN..IPV6_HEADER_LEN + IPV6_FRAGMENT_LEN)
                .filter(|_| end >= IPV6_HEADER_LEN + IPV6_FRAGMENT_LEN)
                .ok_or(DropReason::Truncated)?;
            let inner = fh[0];
            let off_m = u16::from_be_bytes([fh[2], fh[3]]);
            let offset = u32::from(off_m & 0xfff8);
            let more = off_m & 1 == 1;
            let payload = &ip[IPV6_HEADER_LEN + IPV6_FRAGMENT_LEN..end];
            ipf.l4 += IPV6_FRAGMENT_LEN;
            if inner != PROTO_UDP {
                return Err(DropReason::NotUdp);
            }
            if offset == 0 && !more {
                // An atomic fragment (RFC 6946): a whole datagram behind a fragment header.
                return Ok(Packet::Udp(udp(ipf, payload)?));
            }
            let info = FragInfo {
                key: FragKey {
                    src,
                    dst,
                    id: u32::from_be_bytes([fh[4], fh[5], fh[6], fh[7]]),
                    proto: inner,
                },
                offset,
                len: payload.len() as u32,
                more,
            };
            fragment(ipf, info, payload)
        }
        // Hop-by-hop, routing and destination options are not walked.
        _ => Err(DropReason::NotUdp),
    }
}

/// Validates a fragment's geometry; splits first and non-first fragments.
#[inline]
fn fragment(ipf: IpFrame, info: FragInfo, payload: &[u8]) -> Result<Packet, DropReason> {
    // RFC 791 / RFC 8200: every fragment but the last carries a multiple of 8 bytes, and a
    // datagram is at most 65535 bytes (the "ping of death" ends beyond it).
    if (info.more && info.len % 8 != 0) || info.offset + info.len > 65535 {
        return Err(DropReason::BadIpHeader);
    }
    if info.offset != 0 {
        return Ok(Packet::Fragment(ipf, info));
    }
    if payload.len() < 8 {
        return Err(DropReason::Fragment);
    }
    let u = UdpPacket::new_unchecked(payload);
    if usize::from(u.len()) < payload.len() {
        return Err(DropReason::BadUdpLength);
    }
    Ok(Packet::FirstFragment(
        UdpFrame::new(
            ipf.vlan,
            ipf.l3,
            ipf.l4,
            SocketAddr::new(ipf.src, u.src_port()),
            SocketAddr::new(ipf.dst, u.dst_port()),
        ),
        info,
    ))
}

#[inline]
fn udp(ipf: IpFrame, payload: &[u8]) -> Result<UdpFrame, DropReason> {
    let (sport, dport) = super::parse_udp_ports(payload)?;
    Ok(UdpFrame::new(
        ipf.vlan,
        ipf.l3,
        ipf.l4,
        SocketAddr::new(ipf.src, sport),
        SocketAddr::new(ipf.dst, dport),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::frames::{fragment, udp_frame, FrameSpec};

    fn frame(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
        udp_frame(
            &FrameSpec::new(src.parse().unwrap(), dst.parse().unwrap()),
            payload,
        )
    }

    #[test]
    fn ipv6_fragments_are_split_into_first_and_later() {
        let f = frame("[2001:db8::1]:1000", "[2001:db8::10]:514", &[7; 40]);
        let pieces = fragment(&f, 24, 0xdead_beef);
        assert_eq!(pieces.len(), 2);
        let Ok(Packet::FirstFragment(u, info)) = classify(&pieces[0]) else {
            panic!("{:?}", classify(&pieces[0]));
        };
        assert_eq!((u.l3, u.l4), (14, 14 + 48));
        assert_eq!(u.dst(), "[2001:db8::10]:514".parse().unwrap());
        assert_eq!((info.offset, info.len, info.more), (0, 24, true));
        assert_eq!(info.key.id, 0xdead_beef);
        let Ok(Packet::Fragment(ip, later)) = classify(&pieces[1]) else {
            panic!("{:?}", classify(&pieces[1]));
        };
        assert_eq!(ip.l4, 14 + 48);
        assert_eq!((later.offset, later.len, later.more), (24, 24, false));
        assert_eq!(later.key, info.key);
    }

    #[test]
    fn an_ipv6_atomic_fragment_is_a_whole_datagram() {
        let f = frame("[2001:db8::1]:1000", "[2001:db8::10]:514", b"x");
        let pieces = fragment(&f, 64, 1);
        assert_eq!(pieces.len(), 1);
        let Ok(Packet::Udp(u)) = classify(&pieces[0]) else {
            panic!("{:?}", classify(&pieces[0]));
        };
        assert_eq!(u.l4, 14 + 48);
    }

    #[test]
    fn ipv4_first_fragment_keeps_its_ports() {
        let f = frame("198.18.0.1:1000", "198.18.0.10:514", &[1; 30]);
        let pieces = fragment(&f, 16, 42);
        let Ok(Packet::FirstFragment(u, info)) = classify(&pieces[0]) else {
            panic!();
        };
        assert_eq!(u.src(), "198.18.0.1:1000".parse().unwrap());
        assert_eq!((info.key.id, info.key.proto, info.len), (42, 17, 16));
        assert!(matches!(
            classify(&pieces[2]),
            Ok(Packet::Fragment(
                _,
                FragInfo {
                    offset: 32,
                    more: false,
                    ..
                }
            ))
        ));
    }

    #[test]
    fn arp_and_icmp_are_recognised() {
        let mut f = frame("198.18.0.1:1000", "198.18.0.10:514", b"x");
        f[23] = 1; // ICMP
        crate::testkit::frames::fix_ipv4_checksum(&mut f, 14);
        assert!(matches!(
            classify(&f),
            Ok(Packet::Icmp(IpFrame { l4: 34, .. }))
        ));
        f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        assert_eq!(classify(&f), Ok(Packet::Arp { vlan: None, l3: 14 }));
    }

    /// Frames near the fast path's edges: tagged and untagged, options, fragments, odd
    /// lengths, ICMP, IPv6.
    fn edge_frames() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for vlan in [None, Some(42)] {
            for payload in [&b""[..], b"x", b"<13>hello, world"] {
                let mut spec = FrameSpec::new(
                    "198.18.0.1:40000".parse().unwrap(),
                    "198.18.0.10:514".parse().unwrap(),
                );
                spec.vlan = vlan;
                out.push(udp_frame(&spec, payload));
                spec.src = "[2001:db8::1]:1".parse().unwrap();
                spec.dst = "[2001:db8::2]:2".parse().unwrap();
                out.push(udp_frame(&spec, payload));
            }
        }
        let f = frame("198.18.0.1:1000", "198.18.0.10:514", &[1; 30]);
        out.extend(fragment(&f, 16, 42));
        out
    }

    fn agrees(f: &[u8]) -> Result<(), TestCaseError> {
        match classify_ipv4_udp(f) {
            Some(h) => {
                prop_assert_eq!(classify(f), Ok(Packet::Udp(h.udp_frame())));
                prop_assert_eq!(h.udp_frame().l4, h.l4());
            }
            // The fast path may only pass on what it does not recognise, never on the
            // common case itself.
            None => {
                if let Ok(Packet::Udp(u)) = classify(f) {
                    let plain = !u.is_ipv6() && u.l4 == u.l3 + 20;
                    prop_assert!(!plain, "missed a plain IPv4 UDP frame");
                }
            }
        }
        Ok(())
    }

    #[test]
    fn the_fast_path_recognises_plain_ipv4_udp_and_nothing_else() {
        let f = frame("198.18.0.1:1000", "198.18.0.10:514", b"x");
        let h = classify_ipv4_udp(&f).unwrap();
        assert_eq!(h.src(), "198.18.0.1:1000".parse().unwrap());
        assert_eq!(h.dst(), "198.18.0.10:514".parse().unwrap());
        assert_eq!((h.l3, h.l4(), h.vlan), (14, 34, None));
        for f in edge_frames() {
            agrees(&f).unwrap();
        }
    }

    use proptest::prelude::*;
    use proptest::test_runner::TestCaseError;

    proptest! {
        #[test]
        fn the_fast_path_agrees_with_classify_on_damaged_frames(
            which in 0usize..64, edits in proptest::collection::vec((0usize..80, any::<u8>()), 0..3),
            cut in 0usize..100, fix in any::<bool>(),
        ) {
            let frames = edge_frames();
            let mut f = frames[which % frames.len()].clone();
            for (i, v) in edits {
                let n = f.len();
                f[i % n] = v;
            }
            f.truncate(cut.max(1));
            if fix && f.len() >= 34 {
                let l3 = if f[12..14] == [0x81, 0] { 18 } else { 14 };
                if f.len() >= l3 + 20 && f.len() >= l3 + usize::from(f[l3] & 0x0f) * 4 {
                    crate::testkit::frames::fix_ipv4_checksum(&mut f, l3);
                }
            }
            agrees(&f)?;
        }
    }
}
