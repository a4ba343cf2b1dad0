//! Header rewriting in place: DR (MACs only) and NAT (address, port and MACs).
//!
//! Every function here takes a frame that [`crate::wire::parse_udp`] accepted together with
//! the [`UdpFrame`] it returned; the views are then built unchecked and cannot panic. Checksums
//! are patched with `Delta` (RFC 1624), never recomputed: the cost does not depend on the
//! datagram's length, and a checksum that was wrong on arrival stays wrong, so the backend
//! drops the corrupted datagram just as it would have without Spray.

use std::net::{IpAddr, SocketAddr};

use crate::counters::DropReason;
use crate::model::MacAddr;
use crate::wire::checksum::{self, Delta};
use crate::wire::field::{be16, eth, ipv4, ipv4_udp, ipv6, Field};
use crate::wire::{Ipv4Packet, Ipv4Udp, Ipv6Packet, UdpFrame, UdpPacket};

/// Sets the Ethernet source and destination (DR, and the last step of NAT).
#[inline]
pub(crate) fn set_macs(frame: &mut [u8], src: MacAddr, dst: MacAddr) {
    // parse_udp guaranteed at least an Ethernet header.
    frame[eth::DST].copy_from_slice(&dst.0);
    frame[eth::SRC].copy_from_slice(&src.0);
}

/// The source MAC `mac` and the two bytes after it in a frame, `next` (its EtherType, or the
/// 802.1Q TPID), as the word [`set_mac_words`] stores.
#[inline]
pub fn eth_src_word(mac: MacAddr, next: u16) -> u64 {
    let [a, b, c, d, e, f] = mac.0;
    let [g, h] = next.to_be_bytes();
    u64::from_le_bytes([a, b, c, d, e, f, g, h])
}

/// `set_macs` from words: the destination MAC in the first six bytes of `dst`'s
/// little-endian bytes (the other two are overwritten), and [`eth_src_word`] of the source
/// MAC and the two bytes the frame already holds after it. Two 8-byte stores instead of
/// four narrower ones and the shifts that split the addresses for them (see
/// docs/benchmarks.md).
#[inline(always)]
pub fn set_mac_words(frame: &mut [u8], dst: u64, src_next: u64) {
    let src = eth::SRC.start;
    frame[..8].copy_from_slice(&dst.to_le_bytes());
    frame[src..src + 8].copy_from_slice(&src_next.to_le_bytes());
}

/// Which end of the datagram a NAT rewrite changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Src,
    Dst,
}

/// NAT toward a backend: destination address and port become `to`.
///
/// # Errors
/// [`DropReason::FamilyMismatch`] when `to` is not of the datagram's IP family.
#[inline]
pub(crate) fn nat_to_backend(
    frame: &mut [u8],
    f: &UdpFrame,
    to: SocketAddr,
) -> Result<(), DropReason> {
    rewrite(frame, f, End::Dst, f.dst(), to)
}

/// NAT of a backend's reply: source address and port become the VIP's, so the client sees
/// the address it sent to.
///
/// # Errors
/// [`DropReason::FamilyMismatch`] when `vip` is not of the datagram's IP family.
#[inline]
pub(crate) fn nat_from_backend(
    frame: &mut [u8],
    f: &UdpFrame,
    vip: SocketAddr,
) -> Result<(), DropReason> {
    rewrite(frame, f, End::Src, f.src(), vip)
}

/// [`nat_to_backend`] for the packet path's fast case ([`Ipv4Udp`]): the same bytes and the
/// same checksum arithmetic, on integers and a fixed-size view of the 28 header bytes
/// (no `SocketAddr` or `IpAddr` round trip; part of the NAT gain in docs/benchmarks.md).
///
/// # Errors
/// [`DropReason::FamilyMismatch`] when `to` is IPv6; [`DropReason::Truncated`] when the
/// headers `h` describes are not in `frame` (never for the frame `h` was classified from).
#[inline]
pub(crate) fn nat_to_backend_v4(
    frame: &mut [u8],
    h: &Ipv4Udp,
    to: SocketAddr,
) -> Result<(), DropReason> {
    let SocketAddr::V4(to) = to else {
        return Err(DropReason::FamilyMismatch);
    };
    let (ip, port) = (to.ip().to_bits(), to.port());
    let b: &mut [u8; ipv4_udp::LEN] = frame
        .get_mut(h.l3..)
        .and_then(|r| r.first_chunk_mut())
        .ok_or(DropReason::Truncated)?;
    let mut delta = Delta::default();
    delta.replace32(h.dst_ip, ip);
    b[ipv4::DST].copy_from_slice(&ip.to_be_bytes());
    // The IPv4 header checksum covers the addresses, not the ports.
    let c = delta.apply(be16(b, ipv4::CHECKSUM));
    b[ipv4::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    delta.replace16(h.dst_port, port);
    b[ipv4_udp::DST_PORT].copy_from_slice(&port.to_be_bytes());
    // RFC 768: zero means "no checksum" and stays zero; a computed zero goes out as 0xffff.
    let c = delta.apply_udp(be16(b, ipv4_udp::UDP_CHECKSUM));
    b[ipv4_udp::UDP_CHECKSUM].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// [`decrement_ttl`] then [`nat_to_backend_v4`] to `ip`:`port` (host-order integers), with
/// the same resulting bytes (a proptest below checks it) but one IPv4 header checksum update
/// instead of two, for the NAT fast path.
///
/// Merging the two updates is exact. Both are sums in one's-complement arithmetic, which is
/// associative and commutative; folding with end-around carry maps a non-zero integer sum to
/// 1..=0xffff and only an all-zero one to 0, so a merged and a sequential update could differ
/// only if some partial sum were zero. The TTL word's `~old + new` never is: the new word
/// holds the protocol (17).
///
/// # Errors
/// [`DropReason::TtlExceeded`] (frame untouched) as [`decrement_ttl`];
/// [`DropReason::Truncated`] when the headers `h` describes are not in `frame`.
// Always inlined: out of line (the worker's loop has two instances) every NAT packet would
// pay a call and the spills around it.
#[inline(always)]
pub(crate) fn nat_to_backend_v4_ttl(
    frame: &mut [u8],
    h: &Ipv4Udp,
    ip: u32,
    port: u16,
) -> Result<(), DropReason> {
    let b: &mut [u8; ipv4_udp::LEN] = frame
        .get_mut(h.l3..)
        .and_then(|r| r.first_chunk_mut())
        .ok_or(DropReason::Truncated)?;
    let ttl = b[ipv4::TTL];
    if ttl <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    // Every word is taken as the frame holds it (native-endian loads and stores): a
    // one's-complement sum does not depend on byte order (RFC 1071, 2.(B)), so the old and
    // new words need no swaps, and all of RFC 1624's `~m + m'` terms go into one wide sum
    // folded once per checksum. Through `Delta`, on big-endian words, the byte swaps and the
    // spills they cause come back (see docs/benchmarks.md).
    let word = |b: &[u8; ipv4_udp::LEN], f: Field| u16::from_ne_bytes([b[f.start], b[f.start + 1]]);
    // TTL and protocol share one 16-bit word of the checksum.
    let ttl_word: Field = ipv4::TTL..ipv4::PROTOCOL + 1;
    let ttl_old = word(b, ttl_word.clone());
    b[ipv4::TTL] = ttl - 1;
    let ttl_new = word(b, ttl_word);
    let d = ipv4::DST.start;
    let ip_old = u32::from_ne_bytes([b[d], b[d + 1], b[d + 2], b[d + 3]]);
    let ip_new = ip.to_be();
    let port_old = word(b, ipv4_udp::DST_PORT);
    let port_new = port.to_be();
    // The addresses are in the IPv4 header checksum and the UDP pseudo-header; the port only
    // in the UDP checksum; the TTL only in the IPv4 header checksum.
    let addr = u64::from(!ip_old) + u64::from(ip_new);
    let ip_sum =
        u64::from(!word(b, ipv4::CHECKSUM)) + addr + u64::from(!ttl_old) + u64::from(ttl_new);
    b[ipv4::DST].copy_from_slice(&ip_new.to_ne_bytes());
    b[ipv4::CHECKSUM].copy_from_slice(&(!checksum::fold_to_16(ip_sum)).to_ne_bytes());
    b[ipv4_udp::DST_PORT].copy_from_slice(&port_new.to_ne_bytes());
    // RFC 768: zero means "no checksum" and stays zero; a computed zero goes out as 0xffff.
    let udp_old = word(b, ipv4_udp::UDP_CHECKSUM);
    if udp_old != 0 {
        let sum = u64::from(!udp_old) + addr + u64::from(!port_old) + u64::from(port_new);
        let c = match !checksum::fold_to_16(sum) {
            0 => 0xffff,
            c => c,
        };
        b[ipv4_udp::UDP_CHECKSUM].copy_from_slice(&c.to_ne_bytes());
    }
    Ok(())
}

#[inline]
fn rewrite(
    frame: &mut [u8],
    f: &UdpFrame,
    end: End,
    old: SocketAddr,
    new: SocketAddr,
) -> Result<(), DropReason> {
    let mut delta = Delta::default();
    match (old.ip(), new.ip()) {
        (IpAddr::V4(o), IpAddr::V4(n)) => {
            let mut ip = Ipv4Packet::new_unchecked(&mut frame[f.l3..]);
            delta.replace32(o.to_bits(), n.to_bits());
            match end {
                End::Src => ip.set_src_addr(n),
                End::Dst => ip.set_dst_addr(n),
            }
            // The IPv4 header checksum covers the addresses, not the ports.
            let c = delta.apply(ip.checksum());
            ip.set_checksum(c);
        }
        (IpAddr::V6(o), IpAddr::V6(n)) => {
            // IPv6 has no header checksum; the address is still in the UDP pseudo-header.
            let mut ip = Ipv6Packet::new_unchecked(&mut frame[f.l3..]);
            delta.replace128(o.to_bits(), n.to_bits());
            match end {
                End::Src => ip.set_src_addr(n),
                End::Dst => ip.set_dst_addr(n),
            }
        }
        _ => return Err(DropReason::FamilyMismatch),
    }
    let mut udp = UdpPacket::new_unchecked(&mut frame[f.l4..]);
    delta.replace16(old.port(), new.port());
    match end {
        End::Src => udp.set_src_port(new.port()),
        End::Dst => udp.set_dst_port(new.port()),
    }
    // RFC 768: zero means "no checksum" and stays zero; a computed zero goes out as 0xffff.
    let c = delta.apply_udp(udp.checksum());
    udp.set_checksum(c);
    Ok(())
}

/// Decrements the IPv4 TTL (patching the header checksum, RFC 1624) or the IPv6 hop limit of
/// the IP header at `l3`: what a router does, so NAT does it (DR leaves it alone).
///
/// # Errors
/// [`DropReason::TtlExceeded`] when the result would be 0 (the frame is left untouched; no
/// ICMP time-exceeded is sent, see docs/network.md), [`DropReason::Truncated`] when `l3` is
/// not followed by an IP header.
#[inline]
pub(crate) fn decrement_ttl(frame: &mut [u8], l3: usize, ipv6: bool) -> Result<(), DropReason> {
    let ip = frame.get_mut(l3..).ok_or(DropReason::Truncated)?;
    if ipv6 {
        let hop = ip.get_mut(ipv6::HOP_LIMIT).ok_or(DropReason::Truncated)?;
        if *hop <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        *hop -= 1;
    } else {
        if ip.len() < ipv4::HEADER_LEN {
            return Err(DropReason::Truncated);
        }
        let (ttl, proto) = (ip[ipv4::TTL], ip[ipv4::PROTOCOL]);
        if ttl <= 1 {
            return Err(DropReason::TtlExceeded);
        }
        // TTL and protocol share one 16-bit word of the checksum.
        let mut d = Delta::default();
        d.replace16(
            u16::from_be_bytes([ttl, proto]),
            u16::from_be_bytes([ttl - 1, proto]),
        );
        ip[ipv4::TTL] = ttl - 1;
        let c = d.apply(be16(ip, ipv4::CHECKSUM));
        ip[ipv4::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
    Ok(())
}

/// NAT of a non-first fragment: only the IP address changes (the destination toward a
/// backend, the source toward a client). The UDP header and its checksum travel in the first
/// fragment, which [`nat_to_backend`] / [`nat_from_backend`] patched; an IPv4 header checksum
/// is patched here.
///
/// # Errors
/// [`DropReason::FamilyMismatch`] when `new` is not of the packet's family,
/// [`DropReason::Truncated`] when `l3` is not followed by an IP header.
#[inline]
pub(crate) fn nat_fragment(
    frame: &mut [u8],
    l3: usize,
    src: bool,
    new: IpAddr,
) -> Result<(), DropReason> {
    let ip = frame.get_mut(l3..).ok_or(DropReason::Truncated)?;
    match new {
        IpAddr::V4(n) => {
            if ip.len() < ipv4::HEADER_LEN || ip[ipv4::VER_IHL] >> 4 != 4 {
                return Err(DropReason::FamilyMismatch);
            }
            let mut p = Ipv4Packet::new_unchecked(ip);
            let old = if src { p.src_addr() } else { p.dst_addr() };
            let mut d = Delta::default();
            d.replace32(old.to_bits(), n.to_bits());
            let c = d.apply(p.checksum());
            p.set_checksum(c);
            let at = if src { ipv4::SRC } else { ipv4::DST };
            p.into_inner()[at].copy_from_slice(&n.octets());
        }
        IpAddr::V6(n) => {
            if ip.len() < ipv6::HEADER_LEN || ip[0] >> 4 != 6 {
                return Err(DropReason::FamilyMismatch);
            }
            let at = if src { ipv6::SRC } else { ipv6::DST };
            ip[at].copy_from_slice(&n.octets());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::frames::{checksums_valid, udp_frame, FrameSpec};
    use crate::wire::parse_udp;
    use proptest::prelude::*;

    const CLIENT: &str = "198.18.0.1:40000";
    const VIP: &str = "198.18.0.10:514";
    const BACKEND: &str = "198.19.0.2:1514";

    fn spec(src: &str, dst: &str) -> FrameSpec {
        FrameSpec::new(src.parse().unwrap(), dst.parse().unwrap())
    }

    /// Every value of each checksum field in turn, the rare ones included (a UDP result of
    /// zero, sent as 0xffff, comes from one value in 65535): the merged fast-path update gives
    /// the bytes of the TTL decrement followed by the general NAT rewrite.
    #[test]
    fn nat_to_backend_v4_ttl_agrees_for_every_checksum_value() {
        let f = udp_frame(&spec(CLIENT, VIP), b"<13>hello");
        let general = parse_udp(&f).unwrap();
        let fast = crate::wire::classify::classify_ipv4_udp_with(&f, true).unwrap();
        let to: SocketAddr = BACKEND.parse().unwrap();
        let ip = match to.ip() {
            IpAddr::V4(a) => a.to_bits(),
            IpAddr::V6(_) => unreachable!("BACKEND is IPv4"),
        };
        for at in [24, 40] {
            for v in 0..=u16::MAX {
                let mut a = f.clone();
                a[at..at + 2].copy_from_slice(&v.to_be_bytes());
                let mut want = a.clone();
                decrement_ttl(&mut want, 14, false).unwrap();
                nat_to_backend(&mut want, &general, to).unwrap();
                nat_to_backend_v4_ttl(&mut a, &fast, ip, to.port()).unwrap();
                assert_eq!(a, want, "checksum at byte {at} = {v:#06x}");
            }
        }
    }

    #[test]
    fn nat_to_backend_matches_a_frame_built_for_the_backend() {
        let mut f = udp_frame(&spec(CLIENT, VIP), b"<13>hello");
        let p = parse_udp(&f).unwrap();
        nat_to_backend(&mut f, &p, BACKEND.parse().unwrap()).unwrap();
        assert_eq!(f, udp_frame(&spec(CLIENT, BACKEND), b"<13>hello"));
    }

    #[test]
    fn nat_from_backend_gives_the_reply_the_vip_as_source() {
        let mut f = udp_frame(&spec(BACKEND, CLIENT), b"reply");
        let p = parse_udp(&f).unwrap();
        nat_from_backend(&mut f, &p, VIP.parse().unwrap()).unwrap();
        assert_eq!(f, udp_frame(&spec(VIP, CLIENT), b"reply"));
    }

    #[test]
    fn ipv6_nat_keeps_the_mandatory_udp_checksum_valid() {
        let mut f = udp_frame(&spec("[2001:db8::1]:5000", "[2001:db8::10]:53"), b"q");
        let p = parse_udp(&f).unwrap();
        nat_to_backend(&mut f, &p, "[2001:db8:1::7]:5353".parse().unwrap()).unwrap();
        assert_eq!(
            f,
            udp_frame(&spec("[2001:db8::1]:5000", "[2001:db8:1::7]:5353"), b"q")
        );
        assert!(checksums_valid(&f));
    }

    #[test]
    fn zero_udp_checksum_stays_zero() {
        let mut s = spec(CLIENT, VIP);
        s.udp_checksum = false;
        let mut f = udp_frame(&s, b"no checksum");
        let p = parse_udp(&f).unwrap();
        nat_to_backend(&mut f, &p, BACKEND.parse().unwrap()).unwrap();
        assert_eq!(&f[p.l4 + 6..p.l4 + 8], &[0, 0]);
    }

    #[test]
    fn vlan_tag_is_kept() {
        let mut s = spec(CLIENT, VIP);
        s.vlan = Some(7);
        let mut f = udp_frame(&s, b"x");
        let p = parse_udp(&f).unwrap();
        nat_to_backend(&mut f, &p, BACKEND.parse().unwrap()).unwrap();
        let mut want = spec(CLIENT, BACKEND);
        want.vlan = Some(7);
        assert_eq!(f, udp_frame(&want, b"x"));
    }

    #[test]
    fn family_mismatch_is_refused_untouched() {
        let mut f = udp_frame(&spec(CLIENT, VIP), b"x");
        let before = f.clone();
        let p = parse_udp(&f).unwrap();
        let r = nat_to_backend(&mut f, &p, "[2001:db8::1]:514".parse().unwrap());
        assert_eq!(r, Err(DropReason::FamilyMismatch));
        assert_eq!(f, before);
    }

    #[test]
    fn dr_sets_only_the_macs() {
        let mut f = udp_frame(&spec(CLIENT, VIP), b"x");
        let before = f.clone();
        set_macs(
            &mut f,
            MacAddr([2, 0, 0, 0, 0, 0xaa]),
            MacAddr([2, 0, 0, 0, 0, 0xbb]),
        );
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 0, 0xbb]);
        assert_eq!(&f[6..12], &[2, 0, 0, 0, 0, 0xaa]);
        assert_eq!(&f[12..], &before[12..]);
    }

    #[test]
    fn ttl_decrement_patches_the_header_checksum_and_stops_at_one() {
        let mut s = spec(CLIENT, VIP);
        s.ttl = 9;
        let mut f = udp_frame(&s, b"x");
        decrement_ttl(&mut f, 14, false).unwrap();
        s.ttl = 8;
        assert_eq!(f, udp_frame(&s, b"x"));
        s.ttl = 1;
        let mut f = udp_frame(&s, b"x");
        assert_eq!(
            decrement_ttl(&mut f, 14, false),
            Err(DropReason::TtlExceeded)
        );
        assert_eq!(f, udp_frame(&s, b"x"), "untouched");
        let mut s6 = spec("[2001:db8::1]:1", "[2001:db8::2]:2");
        let mut f = udp_frame(&s6, b"x");
        decrement_ttl(&mut f, 14, true).unwrap();
        s6.ttl = 63;
        assert_eq!(f, udp_frame(&s6, b"x"));
        assert_eq!(
            decrement_ttl(&mut f[..20], 14, false),
            Err(DropReason::Truncated)
        );
    }

    #[test]
    fn fragment_nat_changes_only_the_address() {
        let mut f = udp_frame(&spec(CLIENT, VIP), b"x");
        let before = f.clone();
        let b: SocketAddr = BACKEND.parse().unwrap();
        nat_fragment(&mut f, 14, false, b.ip()).unwrap();
        assert!(crate::wire::checksum::ipv4_header_valid(&f[14..34]));
        assert_eq!(&f[30..34], &[198, 19, 0, 2]);
        assert_eq!(&f[34..], &before[34..], "UDP header untouched");
        assert_eq!(
            nat_fragment(&mut f, 14, true, "2001:db8::1".parse().unwrap()),
            Err(DropReason::FamilyMismatch)
        );
    }

    fn v4_addr() -> impl Strategy<Value = SocketAddr> {
        (any::<u32>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::new(IpAddr::V4(a.into()), p))
    }

    fn v6_addr() -> impl Strategy<Value = SocketAddr> {
        (any::<u128>(), any::<u16>()).prop_map(|(a, p)| SocketAddr::new(IpAddr::V6(a.into()), p))
    }

    proptest! {
        // The fast path's NAT rewrite writes exactly what the general one writes, whatever
        // the checksums on arrival (zero, wrong or right) and the TTL.
        #[test]
        fn nat_to_backend_v4_equals_nat_to_backend(
            client in v4_addr(), vip in v4_addr(), backend in v4_addr(),
            payload in proptest::collection::vec(any::<u8>(), 0..40),
            ip_sum in any::<u16>(), udp_sum in prop_oneof![Just(0u16), any::<u16>()],
            vlan in any::<bool>(),
        ) {
            let mut s = FrameSpec::new(client, vip);
            s.vlan = vlan.then_some(7);
            let mut f = udp_frame(&s, &payload);
            let l3 = if vlan { 18 } else { 14 };
            f[l3 + 10..l3 + 12].copy_from_slice(&ip_sum.to_be_bytes());
            f[l3 + 26..l3 + 28].copy_from_slice(&udp_sum.to_be_bytes());
            let general = UdpFrame::new(s.vlan, l3, l3 + 20, client, vip);
            let fast = Ipv4Udp {
                vlan: s.vlan,
                l3,
                src_ip: match client.ip() { IpAddr::V4(a) => a.to_bits(), IpAddr::V6(_) => 0 },
                dst_ip: match vip.ip() { IpAddr::V4(a) => a.to_bits(), IpAddr::V6(_) => 0 },
                src_port: client.port(),
                dst_port: vip.port(),
            };
            prop_assert_eq!(fast.udp_frame(), general);
            let mut want = f.clone();
            nat_to_backend(&mut want, &general, backend).unwrap();
            nat_to_backend_v4(&mut f, &fast, backend).unwrap();
            prop_assert_eq!(&f, &want);
            let v6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
            prop_assert_eq!(nat_to_backend_v4(&mut f, &fast, v6), Err(DropReason::FamilyMismatch));
            prop_assert_eq!(&f, &want);
        }

        // The merged TTL + address update writes exactly what the two sequential updates
        // write, whatever the checksums on arrival (including 0x0000 and 0xffff, where a
        // one's-complement shortcut would show) and the TTL; a TTL of 1 or 0 is refused
        // alike, leaving the frame untouched.
        #[test]
        fn nat_to_backend_v4_ttl_equals_decrement_then_nat(
            client in v4_addr(), vip in v4_addr(), backend in v4_addr(),
            payload in proptest::collection::vec(any::<u8>(), 0..40),
            ip_sum in prop_oneof![Just(0u16), Just(0xffff), any::<u16>()],
            udp_sum in prop_oneof![Just(0u16), Just(0xffff), any::<u16>()],
            ttl in prop_oneof![Just(0u8), Just(1), Just(2), any::<u8>()],
        ) {
            let mut s = FrameSpec::new(client, vip);
            s.ttl = ttl;
            let mut f = udp_frame(&s, &payload);
            f[24..26].copy_from_slice(&ip_sum.to_be_bytes());
            f[40..42].copy_from_slice(&udp_sum.to_be_bytes());
            let general = UdpFrame::new(None, 14, 34, client, vip);
            let fast = Ipv4Udp {
                vlan: None,
                l3: 14,
                src_ip: match client.ip() { IpAddr::V4(a) => a.to_bits(), IpAddr::V6(_) => 0 },
                dst_ip: match vip.ip() { IpAddr::V4(a) => a.to_bits(), IpAddr::V6(_) => 0 },
                src_port: client.port(),
                dst_port: vip.port(),
            };
            let (ip, port) = match backend {
                SocketAddr::V4(a) => (a.ip().to_bits(), a.port()),
                SocketAddr::V6(_) => unreachable!("v4_addr"),
            };
            let mut want = f.clone();
            let sequential = decrement_ttl(&mut want, 14, false)
                .and_then(|()| nat_to_backend(&mut want, &general, backend));
            let before = f.clone();
            let merged = nat_to_backend_v4_ttl(&mut f, &fast, ip, port);
            prop_assert_eq!(merged, sequential);
            if merged.is_ok() {
                prop_assert_eq!(&f, &want);
            } else {
                prop_assert_eq!(&f, &before);
            }
        }

        // Incremental (RFC 1624) equals full recomputation, byte for byte, for random
        // addresses, ports, payloads and TTLs.
        #[test]
        fn incremental_equals_full_recomputation_v4(
            client in v4_addr(), vip in v4_addr(), backend in v4_addr(),
            payload in proptest::collection::vec(any::<u8>(), 0..300), ttl in 1u8..=255,
        ) {
            let mut s = FrameSpec::new(client, vip);
            s.ttl = ttl;
            let mut f = udp_frame(&s, &payload);
            let p = parse_udp(&f).unwrap();
            nat_to_backend(&mut f, &p, backend).unwrap();
            s.dst = backend;
            prop_assert_eq!(&f, &udp_frame(&s, &payload));
            // ... and back, as a reply.
            let mut r = udp_frame(&FrameSpec { src: backend, dst: client, ..s.clone() }, &payload);
            let p = parse_udp(&r).unwrap();
            nat_from_backend(&mut r, &p, vip).unwrap();
            prop_assert_eq!(&r, &udp_frame(&FrameSpec { src: vip, dst: client, ..s }, &payload));
        }

        #[test]
        fn incremental_equals_full_recomputation_v6(
            client in v6_addr(), vip in v6_addr(), backend in v6_addr(),
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut s = FrameSpec::new(client, vip);
            let mut f = udp_frame(&s, &payload);
            let p = parse_udp(&f).unwrap();
            nat_to_backend(&mut f, &p, backend).unwrap();
            s.dst = backend;
            prop_assert_eq!(&f, &udp_frame(&s, &payload));
        }

        #[test]
        fn zero_checksum_stays_zero_v4(client in v4_addr(), vip in v4_addr(), backend in v4_addr()) {
            let mut s = FrameSpec::new(client, vip);
            s.udp_checksum = false;
            let mut f = udp_frame(&s, b"syslog line");
            let p = parse_udp(&f).unwrap();
            nat_to_backend(&mut f, &p, backend).unwrap();
            s.dst = backend;
            prop_assert_eq!(&f, &udp_frame(&s, b"syslog line"));
        }
    }
}
