//! Building valid frames, for tests, benchmarks and the traffic generators (allocates and
//! panics on bad arguments: never on the packet path).

use std::net::{IpAddr, SocketAddr};

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpAddress, IpProtocol,
    Ipv4Packet, Ipv4Repr, Ipv6Packet, Ipv6Repr, UdpPacket, UdpRepr,
};

use crate::model::MacAddr;
use crate::wire::{vlan, ETH_HEADER_LEN};

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

/// Recomputes the UDP checksum of a frame as [`udp_frame`] builds it, after its payload
/// changed (a computed zero is sent as `0xffff`, RFC 768).
///
/// # Panics
/// When `frame` is not such a frame.
pub fn fix_udp_checksum(frame: &mut [u8]) {
    let l3 = l3_of(frame);
    let (src, dst, l4) = if frame[l3] >> 4 == 6 {
        let ip = Ipv6Packet::new_unchecked(&frame[l3..]);
        (
            IpAddress::Ipv6(ip.src_addr()),
            IpAddress::Ipv6(ip.dst_addr()),
            l3 + 40,
        )
    } else {
        let ip = Ipv4Packet::new_unchecked(&frame[l3..]);
        let hl = usize::from(ip.header_len());
        (
            IpAddress::Ipv4(ip.src_addr()),
            IpAddress::Ipv4(ip.dst_addr()),
            l3 + hl,
        )
    };
    UdpPacket::new_unchecked(&mut frame[l4..]).fill_checksum(&src, &dst);
}

/// Whether every checksum of a parsed frame verifies by full recomputation.
pub fn checksums_valid(frame: &[u8]) -> bool {
    let Ok(f) = crate::wire::parse_udp(frame) else {
        return false;
    };
    let udp = UdpPacket::new_unchecked(&frame[f.l4..]);
    let (s, d) = match (f.src().ip(), f.dst().ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (IpAddress::Ipv4(s), IpAddress::Ipv4(d)),
        (IpAddr::V6(s), IpAddr::V6(d)) => (IpAddress::Ipv6(s), IpAddress::Ipv6(d)),
        _ => return false,
    };
    udp.verify_checksum(&s, &d)
}

/// Offset of the IP header of a frame (after one optional 802.1Q tag).
fn l3_of(frame: &[u8]) -> usize {
    if frame[12..14] == vlan::TPID_8021Q.to_be_bytes() {
        ETH_HEADER_LEN + vlan::TAG_LEN
    } else {
        ETH_HEADER_LEN
    }
}

/// Splits the IP datagram of `frame` (an unfragmented IPv4 or IPv6 frame, as
/// [`udp_frame`] builds) into fragments of at most `chunk` bytes of payload each (`chunk` a
/// multiple of 8), identification `id`: IPv4 sets MF and the offset, IPv6 inserts a fragment
/// header. The Ethernet header (and tag) is repeated on each.
///
/// # Panics
/// When `frame` is not such a frame.
pub fn fragment(frame: &[u8], chunk: usize, id: u32) -> Vec<Vec<u8>> {
    assert!(chunk % 8 == 0 && chunk > 0);
    let l3 = l3_of(frame);
    let v6 = frame[l3] >> 4 == 6;
    let (hl, total) = if v6 {
        (
            40,
            40 + usize::from(u16::from_be_bytes([frame[l3 + 4], frame[l3 + 5]])),
        )
    } else {
        (
            usize::from(frame[l3] & 0xf) * 4,
            usize::from(u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]])),
        )
    };
    let payload = &frame[l3 + hl..l3 + total];
    let mut out = Vec::new();
    for (i, piece) in payload.chunks(chunk).enumerate() {
        let offset = i * chunk;
        let more = offset + piece.len() < payload.len();
        let mut f = frame[..l3 + hl].to_vec();
        if v6 {
            let next = f[l3 + 6];
            f[l3 + 6] = crate::wire::classify::IPV6_FRAGMENT;
            let plen = (8 + piece.len()) as u16;
            f[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
            let off_m = (offset as u16) | u16::from(more);
            f.extend_from_slice(&[next, 0]);
            f.extend_from_slice(&off_m.to_be_bytes());
            f.extend_from_slice(&id.to_be_bytes());
        } else {
            let tl = (hl + piece.len()) as u16;
            f[l3 + 2..l3 + 4].copy_from_slice(&tl.to_be_bytes());
            f[l3 + 4..l3 + 6].copy_from_slice(&(id as u16).to_be_bytes());
            let flags = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
            f[l3 + 6..l3 + 8].copy_from_slice(&flags.to_be_bytes());
            fix_ipv4_checksum(&mut f, l3);
        }
        f.extend_from_slice(piece);
        out.push(f);
    }
    out
}

/// Inserts IPv4 options `opts` (a multiple of 4 bytes) after the header of `frame`'s IPv4
/// packet, fixing header length, total length and header checksum.
///
/// # Panics
/// When `opts` is not a multiple of 4 bytes or makes the header longer than 60 bytes.
pub fn add_ipv4_options(frame: &[u8], opts: &[u8]) -> Vec<u8> {
    assert!(opts.len() % 4 == 0 && opts.len() <= 40);
    let l3 = l3_of(frame);
    let hl = usize::from(frame[l3] & 0xf) * 4;
    let mut f = frame[..l3 + hl].to_vec();
    f.extend_from_slice(opts);
    f.extend_from_slice(&frame[l3 + hl..]);
    f[l3] = 0x40 | ((hl + opts.len()) / 4) as u8;
    let tl = u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]) + opts.len() as u16;
    f[l3 + 2..l3 + 4].copy_from_slice(&tl.to_be_bytes());
    fix_ipv4_checksum(&mut f, l3);
    f
}

/// An ICMP (v4 or v6, after the family of `src`) error frame from `src` to `dst` with
/// `icmp_type`, `code` and the 4-byte `rest` field (MTU for "fragmentation needed" / "packet
/// too big"), quoting `quoted` (an IP packet, header first). Checksums are computed in full.
///
/// # Panics
/// When `src` and `dst` are of different families.
#[allow(clippy::too_many_arguments)]
pub fn icmp_error(
    src_mac: MacAddr,
    dst_mac: MacAddr,
    src: IpAddr,
    dst: IpAddr,
    ttl: u8,
    icmp_type: u8,
    code: u8,
    rest: [u8; 4],
    quoted: &[u8],
) -> Vec<u8> {
    let mut msg = vec![icmp_type, code, 0, 0];
    msg.extend_from_slice(&rest);
    msg.extend_from_slice(quoted);
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&src_mac.0);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let c = !crate::wire::checksum::sum(&msg);
            msg[2..4].copy_from_slice(&c.to_be_bytes());
            let mut ip = vec![0u8; 20];
            let ip_repr = Ipv4Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Icmp,
                payload_len: msg.len(),
                hop_limit: ttl,
            };
            ip_repr.emit(
                &mut Ipv4Packet::new_unchecked(&mut ip[..]),
                &ChecksumCapabilities::default(),
            );
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            let c = crate::neigh::icmpv6_sum(&s.octets(), &d.octets(), &msg);
            msg[2..4].copy_from_slice(&c.to_be_bytes());
            let mut ip = vec![0u8; 40];
            Ipv6Repr {
                src_addr: s,
                dst_addr: d,
                next_header: IpProtocol::Icmpv6,
                payload_len: msg.len(),
                hop_limit: ttl,
            }
            .emit(&mut Ipv6Packet::new_unchecked(&mut ip[..]));
            f.extend_from_slice(&ip);
        }
        _ => panic!("icmp_error: source and destination families differ"),
    }
    f.extend_from_slice(&msg);
    f
}

/// The IP packet of `frame` (from the IP header to the end of the frame).
pub fn ip_part(frame: &[u8]) -> &[u8] {
    &frame[l3_of(frame)..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::parse_udp;

    #[test]
    fn fix_udp_checksum_makes_a_changed_payload_verify_again() {
        for (src, dst, vlan) in [
            ("198.18.0.1:40000", "198.18.0.10:514", Some(42)),
            ("[2001:db8::1]:40000", "[2001:db8::10]:514", None),
        ] {
            let mut spec = FrameSpec::new(src.parse().unwrap(), dst.parse().unwrap());
            spec.vlan = vlan;
            let mut f = udp_frame(&spec, b"<13>hello");
            let last = f.len() - 1;
            f[last] ^= 0x5a;
            assert!(!checksums_valid(&f), "{src}");
            fix_udp_checksum(&mut f);
            assert!(checksums_valid(&f), "{src}");
        }
    }

    /// 198.18.0.1:40000 -> 198.18.0.10:514, VLAN 42, payload "<13>hi"; checksums computed
    /// independently (Python, RFC 1071).
    #[rustfmt::skip]
    static VLAN_IPV4_UDP: [u8; 52] = [
        // Ethernet: dst 02:00:00:00:00:fe, src 02:00:00:00:00:01, TPID 0x8100
        0x02, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x81, 0x00,
        // 802.1Q: TCI 42, inner type IPv4
        0x00, 0x2a, 0x08, 0x00,
        // IPv4: ver/ihl, tos, len 34, id, flags/frag, ttl 64, proto 17, checksum
        0x45, 0x00, 0x00, 0x22, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xae, 0x9b,
        // src 198.18.0.1, dst 198.18.0.10
        0xc6, 0x12, 0x00, 0x01, 0xc6, 0x12, 0x00, 0x0a,
        // UDP: sport 40000, dport 514, len 14, checksum
        0x9c, 0x40, 0x02, 0x02, 0x00, 0x0e, 0xfd, 0x86,
        // payload
        b'<', b'1', b'3', b'>', b'h', b'i',
    ];

    fn fixture_spec() -> FrameSpec {
        let mut s = FrameSpec::new(
            "198.18.0.1:40000".parse().unwrap(),
            "198.18.0.10:514".parse().unwrap(),
        );
        s.vlan = Some(42);
        s
    }

    #[test]
    fn fixture_parses_to_its_fields() {
        let p = parse_udp(&VLAN_IPV4_UDP).unwrap();
        assert_eq!(p.vlan, Some(42));
        assert_eq!((p.l3, p.l4), (18, 38));
        assert_eq!(p.src(), "198.18.0.1:40000".parse().unwrap());
        assert_eq!(p.dst(), "198.18.0.10:514".parse().unwrap());
        assert!(checksums_valid(&VLAN_IPV4_UDP));
    }

    #[test]
    fn emitting_the_fixture_writes_every_byte() {
        // `udp_frame` starts from a 0xa5-filled buffer: a field it forgot would show up.
        assert_eq!(udp_frame(&fixture_spec(), b"<13>hi"), VLAN_IPV4_UDP);
    }
}
