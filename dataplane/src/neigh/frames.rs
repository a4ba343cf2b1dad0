//! Writing and reading ARP and IPv6 neighbour discovery frames.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::model::MacAddr;
use crate::wire::checksum;
use crate::wire::{classify, vlan, Packet, ETHERTYPE_IPV6};

#[cfg(doc)]
use super::MAX_FRAME;
use super::{ETHERTYPE_ARP, ICMPV6, NA};

#[inline]
pub(super) fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The ICMPv6 checksum of `msg` (checksum field included as it is) between `src` and `dst`:
/// 0 when a received message verifies (RFC 4443 section 2.3).
pub(crate) fn icmpv6_sum(src: &[u8; 16], dst: &[u8; 16], msg: &[u8]) -> u16 {
    let mut pseudo = [0u8; 40];
    pseudo[..16].copy_from_slice(src);
    pseudo[16..32].copy_from_slice(dst);
    pseudo[32..36].copy_from_slice(&(msg.len() as u32).to_be_bytes());
    pseudo[39] = ICMPV6;
    let s = u32::from(checksum::sum(&pseudo)) + u32::from(checksum::sum(msg));
    let s = (s & 0xffff) + (s >> 16);
    !(((s & 0xffff) + (s >> 16)) as u16)
}

/// The sender (address, MAC) of an ARP frame (request or reply) or a neighbour
/// advertisement, if `frame` is one.
pub fn sender_of(frame: &[u8]) -> Option<(IpAddr, MacAddr)> {
    match classify(frame).ok()? {
        Packet::Arp { l3, .. } => {
            let a = frame.get(l3..l3 + 28)?;
            if rd16(a, 0) != 1 || rd16(a, 2) != 0x0800 || a[4] != 6 || a[5] != 4 {
                return None;
            }
            let mut m = [0u8; 6];
            m.copy_from_slice(&a[8..14]);
            let ip = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
            (!ip.is_unspecified()).then_some((IpAddr::V4(ip), MacAddr(m)))
        }
        Packet::Icmp(ipf) if ipf.is_ipv6() => {
            let m = frame.get(ipf.l4..ipf.end)?;
            if m.len() < 24 || m[0] != NA {
                return None;
            }
            let mut t = [0u8; 16];
            t.copy_from_slice(&m[8..24]);
            // The target link-layer option if present, else the Ethernet source.
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&frame[6..12]);
            let mut opts = &m[24..];
            while opts.len() >= 8 && opts[1] != 0 {
                let len = usize::from(opts[1]) * 8;
                if opts[0] == 2 {
                    mac.copy_from_slice(&opts[2..8]);
                }
                opts = opts.get(len..).unwrap_or(&[]);
            }
            Some((IpAddr::V6(Ipv6Addr::from(t)), MacAddr(mac)))
        }
        _ => None,
    }
}

/// The solicited-node multicast address of `a` (RFC 4291 2.7.1).
pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet address of IPv6 multicast group `a` (RFC 2464 7).
pub fn multicast_mac(a: Ipv6Addr) -> [u8; 6] {
    let o = a.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

fn eth_header(buf: &mut [u8], vlan: Option<u16>, dst: [u8; 6], src: MacAddr, ty: u16) -> usize {
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src.0);
    match vlan {
        Some(tci) => {
            buf[12..14].copy_from_slice(&vlan::TPID_8021Q.to_be_bytes());
            buf[14..16].copy_from_slice(&tci.to_be_bytes());
            buf[16..18].copy_from_slice(&ty.to_be_bytes());
            18
        }
        None => {
            buf[12..14].copy_from_slice(&ty.to_be_bytes());
            14
        }
    }
}

/// Writes an Ethernet/ARP frame (padded with zeros to the 60-byte Ethernet minimum) into
/// `buf` (at least [`MAX_FRAME`] bytes) and returns its length.
#[allow(clippy::too_many_arguments)]
pub fn arp_frame(
    buf: &mut [u8],
    vlan: Option<u16>,
    eth_dst: [u8; 6],
    op: u16,
    sha: MacAddr,
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> usize {
    let l3 = eth_header(buf, vlan, eth_dst, sha, ETHERTYPE_ARP);
    let a = &mut buf[l3..l3 + 28];
    a[0..8].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 0]);
    a[6..8].copy_from_slice(&op.to_be_bytes());
    a[8..14].copy_from_slice(&sha.0);
    a[14..18].copy_from_slice(&spa.octets());
    a[18..24].copy_from_slice(&tha);
    a[24..28].copy_from_slice(&tpa.octets());
    let end = l3 + 28;
    let n = end.max(60);
    buf[end..n].fill(0);
    n
}

/// Writes an Ethernet/IPv6/ICMPv6 neighbour solicitation or advertisement with one
/// link-layer address option (`opt` 1 = source, 2 = target) into `buf` and returns its
/// length.
#[allow(clippy::too_many_arguments)]
pub fn ndp_frame(
    buf: &mut [u8],
    vlan: Option<u16>,
    src_mac: MacAddr,
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    icmp_type: u8,
    flags: u8,
    target: Ipv6Addr,
    opt: u8,
) -> usize {
    let l3 = eth_header(buf, vlan, dst_mac, src_mac, ETHERTYPE_IPV6);
    let ip = &mut buf[l3..l3 + 40];
    ip[0..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 32, ICMPV6, 255]);
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    let m = &mut buf[l3 + 40..l3 + 72];
    m[0..8].copy_from_slice(&[icmp_type, 0, 0, 0, flags, 0, 0, 0]);
    m[8..24].copy_from_slice(&target.octets());
    m[24] = opt;
    m[25] = 1;
    m[26..32].copy_from_slice(&src_mac.0);
    let c = icmpv6_sum(&src.octets(), &dst.octets(), m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    l3 + 72
}
