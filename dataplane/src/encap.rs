//! Tunnel encapsulation (IPIP and GUE) and the ICMP "too big" answer, as headers grown in
//! front of a received frame.
//!
//! Both are a [`Grow`]: the policy (`crate::decide`) describes the headers, the worker asks
//! its buffer for room in front of the frame ([`PacketBuf::prepend`], the mbuf headroom on
//! DPDK: the datagram itself is never copied) and [`Grow::apply`] writes them. The Ethernet
//! header (and its 802.1Q tag) moves to the new front with the next hop's MAC already in
//! it; what follows is the new IP header and, for GUE, a UDP and a GUE header, then the
//! original IP packet untouched.
//!
//! Outer headers follow RFC 6040's normal mode: DSCP and ECN are copied from the inner
//! header, and so is the TTL / hop limit (the datagram's remaining reach, as Linux's `ttl
//! inherit`). The outer IPv4 header has DF set and is never fragmented: a datagram that would
//! not fit the tunnel's MTU is answered instead ([`Grow::TooBig`]).

use std::cell::Cell;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::counters::DropReason;
use crate::model::{Encap, Tunnel};
use crate::port::PacketBuf;
use crate::wire::checksum;
use crate::wire::field::{be16, eth, ipv4, ipv6, udp};

const IPV4_LEN: usize = ipv4::HEADER_LEN;
const IPV6_LEN: usize = ipv6::HEADER_LEN;
const UDP_LEN: usize = 8;
const GUE_LEN: usize = 4;
const ICMP_LEN: usize = 8;
/// IP protocol numbers (IANA).
const PROTO_IPV4: u8 = 4;
const PROTO_UDP: u8 = 17;
const PROTO_IPV6: u8 = 41;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
/// Outer IPv4 flags and fragment offset: DF.
const DONT_FRAGMENT: u16 = 0x4000;
/// The GUE source ports: the dynamic range (RFC 6335), as the Linux `encap-sport auto` picks.
const GUE_SPORT_BASE: u16 = 0xc000;
/// Hop limit of the ICMP errors Spray originates.
const ICMP_TTL: u8 = 64;
/// How much of the datagram an ICMPv4 error quotes: the whole error within 576 bytes (RFC
/// 1812, 4.3.2.3); ICMPv6 within the IPv6 minimum MTU (RFC 4443, 2.4 (c)).
const ICMPV4_MAX: usize = 576;
const ICMPV6_MAX: usize = 1280;

/// ICMP "too big" answers a worker sends per second at most (RFC 1812 4.3.2.8 and RFC 4443
/// 2.4 (f) ask for a limit, so that a flood of big datagrams is not answered in kind).
pub const TOO_BIG_PER_SEC: u32 = 100;

/// A worker's budget of ICMP answers: [`TOO_BIG_PER_SEC`] per one-second window.
#[derive(Debug, Default)]
pub(crate) struct RateLimit {
    window: Cell<Option<Instant>>,
    sent: Cell<u32>,
}

impl RateLimit {
    /// Whether one more answer may be sent at `now` (and counts it).
    pub(crate) fn allow(&self, now: Instant) -> bool {
        let fresh = self.window.get().map_or(true, |start| {
            now.duration_since(start) >= Duration::from_secs(1)
        });
        if fresh {
            self.window.set(Some(now));
            self.sent.set(0);
        }
        let sent = self.sent.get();
        if sent >= TOO_BIG_PER_SEC {
            return false;
        }
        self.sent.set(sent + 1);
        true
    }
}

/// What the inner IP header says that the outer one needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inner {
    /// Offset of the inner IP header (the end of the Ethernet header and its tag).
    pub l3: usize,
    /// Whether it is IPv6.
    pub v6: bool,
    /// Length of the inner IP packet, headers included (Ethernet padding excluded).
    pub len: usize,
    /// DSCP and ECN: the IPv4 TOS byte or the IPv6 traffic class.
    pub tos: u8,
    /// TTL or hop limit.
    pub ttl: u8,
    /// The flow hash: the GUE source port and the IPv6 flow label come from it.
    pub hash: u64,
}

impl Inner {
    /// Reads the inner header at `l3` of `frame`, which the classifier validated.
    pub(crate) fn read(frame: &[u8], l3: usize, hash: u64) -> Result<Self, DropReason> {
        let ip = frame.get(l3..).ok_or(DropReason::Truncated)?;
        let v6 = ip.first().is_some_and(|b| b >> 4 == 6);
        let need = if v6 { IPV6_LEN } else { IPV4_LEN };
        if ip.len() < need {
            return Err(DropReason::Truncated);
        }
        let (len, tos, ttl) = if v6 {
            let payload = usize::from(be16(ip, ipv6::PAYLOAD_LEN));
            // The traffic class straddles the first two bytes.
            let tc = (ip[0] << 4) | (ip[1] >> 4);
            (IPV6_LEN + payload, tc, ip[ipv6::HOP_LIMIT])
        } else {
            let total = usize::from(be16(ip, ipv4::TOTAL_LEN));
            (total, ip[ipv4::TOS], ip[ipv4::TTL])
        };
        if len > ip.len() {
            return Err(DropReason::Truncated);
        }
        Ok(Self {
            l3,
            v6,
            len,
            tos,
            ttl,
            hash,
        })
    }
}

/// Bytes of outer headers `t` puts in front of an IP packet sent to `dst`.
#[inline]
pub(crate) fn overhead(t: &Tunnel, dst: IpAddr) -> usize {
    t.overhead(dst.is_ipv6())
}

/// Headers to grow in front of a frame, and what to write in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grow {
    /// Encapsulate the datagram toward tunnelled backend `dst`.
    Tunnel {
        /// The backend's tunnel.
        tunnel: Tunnel,
        /// The backend's address: the outer destination.
        dst: IpAddr,
        /// The datagram's IP header.
        inner: Inner,
    },
    /// Turn the datagram into the ICMP error that tells its sender the tunnel's path MTU:
    /// IPv4 "fragmentation needed" (type 3, code 4, RFC 1191) or ICMPv6 "packet too big"
    /// (type 2, RFC 4443), from the address the datagram was sent to, quoting it.
    TooBig {
        /// The datagram's IP header.
        inner: Inner,
        /// The MTU to report (the tunnel's, less its headers).
        mtu: u16,
    },
}

impl Grow {
    /// Bytes grown in front of the frame.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Tunnel { tunnel, dst, .. } => overhead(tunnel, *dst),
            Self::TooBig { inner, .. } => {
                if inner.v6 {
                    IPV6_LEN + ICMP_LEN
                } else {
                    IPV4_LEN + ICMP_LEN
                }
            }
        }
    }

    /// Grows `buf` and writes the headers; the MACs of the frame must already be those of
    /// the next hop. Returns the length of the frame to transmit.
    ///
    /// # Errors
    /// [`DropReason::NoHeadroom`] when the buffer has no room in front of the frame (it is
    /// then unchanged).
    pub(crate) fn apply<B: PacketBuf>(&self, buf: &mut B) -> Result<usize, DropReason> {
        let n = self.len();
        if !buf.prepend(n) {
            return Err(DropReason::NoHeadroom);
        }
        let frame = buf.data_mut();
        match *self {
            Self::Tunnel { tunnel, dst, inner } => {
                write_tunnel(frame, n, &tunnel, dst, &inner);
                Ok(frame.len())
            }
            Self::TooBig { inner, mtu } => {
                let len = write_too_big(frame, n, &inner, mtu);
                buf.truncate(len);
                Ok(len)
            }
        }
    }
}

/// Moves the Ethernet header (the first `l2` bytes after the `n` grown ones) to the front and
/// sets its EtherType; returns the offset of the new IP header.
fn move_l2(frame: &mut [u8], n: usize, l2: usize, v6: bool) -> usize {
    frame.copy_within(n..n + l2, 0);
    let ethertype = if v6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 };
    frame[l2 - 2..l2].copy_from_slice(&ethertype.to_be_bytes());
    l2
}

/// Writes an IPv4 header of a packet of `total` bytes at the start of `h`.
fn ipv4_header(
    h: &mut [u8],
    tos: u8,
    total: usize,
    ttl: u8,
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
) {
    h[ipv4::VER_IHL] = ipv4::VER_IHL_NO_OPTIONS;
    h[ipv4::TOS] = tos;
    h[ipv4::TOTAL_LEN].copy_from_slice(&(total as u16).to_be_bytes());
    h[ipv4::IDENT].fill(0); // unused with DF (RFC 6864)
    h[ipv4::FLAGS_FRAG].copy_from_slice(&DONT_FRAGMENT.to_be_bytes());
    h[ipv4::TTL] = ttl;
    h[ipv4::PROTOCOL] = proto;
    h[ipv4::CHECKSUM].fill(0);
    h[ipv4::SRC].copy_from_slice(&src);
    h[ipv4::DST].copy_from_slice(&dst);
    let c = !checksum::sum(&h[..IPV4_LEN]);
    h[ipv4::CHECKSUM].copy_from_slice(&c.to_be_bytes());
}

/// Writes an IPv6 header with `payload` bytes after it at the start of `h`.
#[allow(clippy::too_many_arguments)]
fn ipv6_header(
    h: &mut [u8],
    tc: u8,
    flow: u32,
    payload: usize,
    next: u8,
    hop: u8,
    src: [u8; 16],
    dst: [u8; 16],
) {
    let word = (6u32 << 28) | (u32::from(tc) << 20) | (flow & 0x000f_ffff);
    h[ipv6::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
    h[ipv6::PAYLOAD_LEN].copy_from_slice(&(payload as u16).to_be_bytes());
    h[ipv6::NEXT_HEADER] = next;
    h[ipv6::HOP_LIMIT] = hop;
    h[ipv6::SRC].copy_from_slice(&src);
    h[ipv6::DST].copy_from_slice(&dst);
}

/// Sum of the IPv6 pseudo-header (RFC 8200, 8.1) for an upper-layer packet of `len` bytes.
fn ipv6_pseudo_sum(src: &[u8; 16], dst: &[u8; 16], len: usize, next: u8) -> u64 {
    let mut s = u64::from(checksum::sum(src)) + u64::from(checksum::sum(dst));
    s += len as u64 + u64::from(next);
    s
}

fn write_tunnel(frame: &mut [u8], n: usize, t: &Tunnel, dst: IpAddr, inner: &Inner) {
    let at = move_l2(frame, n, inner.l3, dst.is_ipv6());
    let inner_proto = if inner.v6 { PROTO_IPV6 } else { PROTO_IPV4 };
    let (ip_len, gue) = match t.encap {
        Encap::Ipip => (n, None),
        Encap::Gue { port } => (n - UDP_LEN - GUE_LEN, Some(port)),
    };
    let next = if gue.is_some() {
        PROTO_UDP
    } else {
        inner_proto
    };
    let payload = n - ip_len + inner.len;
    match (t.source, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => ipv4_header(
            &mut frame[at..],
            inner.tos,
            ip_len + payload,
            inner.ttl,
            next,
            s.octets(),
            d.octets(),
        ),
        (s, d) => {
            // The control plane gives a tunnel a source of its backend's family; an IPv4
            // source toward an IPv6 backend is its mapped form.
            let s = match s {
                IpAddr::V6(s) => s,
                IpAddr::V4(s) => s.to_ipv6_mapped(),
            };
            let d = match d {
                IpAddr::V6(d) => d,
                IpAddr::V4(d) => d.to_ipv6_mapped(),
            };
            // RFC 6438: the flow label carries the inner flow, for ECMP and RSS on the way.
            let flow = (inner.hash >> 12) as u32;
            ipv6_header(
                &mut frame[at..],
                inner.tos,
                flow,
                payload,
                next,
                inner.ttl,
                s.octets(),
                d.octets(),
            );
        }
    }
    let Some(port) = gue else { return };
    let u = at + ip_len;
    let sport = GUE_SPORT_BASE | (inner.hash as u16 & !GUE_SPORT_BASE);
    let header = &mut frame[u..];
    header[udp::SRC_PORT].copy_from_slice(&sport.to_be_bytes());
    header[udp::DST_PORT].copy_from_slice(&port.to_be_bytes());
    header[udp::LENGTH].copy_from_slice(&(payload as u16).to_be_bytes());
    header[udp::CHECKSUM].fill(0);
    // GUE variant 0, no extension fields: version 0, C 0, Hlen 0, the inner protocol, no flags.
    frame[u + 8..u + 12].copy_from_slice(&[0, inner_proto, 0, 0]);
    if dst.is_ipv6() {
        // IPv6 forbids a zero UDP checksum for this (RFC 8200, 8.1; RFC 6935 allows it only
        // where the receiver is configured for it): sum the whole datagram.
        let h = &frame[at..];
        let src: [u8; 16] = h[ipv6::SRC].try_into().unwrap_or_default();
        let dst: [u8; 16] = h[ipv6::DST].try_into().unwrap_or_default();
        let s = ipv6_pseudo_sum(&src, &dst, payload, PROTO_UDP)
            + u64::from(checksum::sum(&frame[u..u + payload]));
        let c = match !checksum::fold_to_16(s) {
            0 => 0xffff,
            c => c,
        };
        frame[u..][udp::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
    // IPv4: a zero UDP checksum (RFC 768), which Linux's fou accepts.
}

/// Builds the ICMP error in place over the grown frame; returns its length.
fn write_too_big(frame: &mut [u8], n: usize, inner: &Inner, mtu: u16) -> usize {
    let l2 = inner.l3;
    // The error goes back where the datagram came from: swap the MACs.
    frame.copy_within(n..n + l2, 0);
    let (mut dst_mac, mut src_mac) = ([0u8; 6], [0u8; 6]);
    dst_mac.copy_from_slice(&frame[eth::SRC]);
    src_mac.copy_from_slice(&frame[eth::DST]);
    frame[eth::DST].copy_from_slice(&dst_mac);
    frame[eth::SRC].copy_from_slice(&src_mac);
    let ip = l2;
    let quoted = &frame[ip + n..];
    let max = if inner.v6 { ICMPV6_MAX } else { ICMPV4_MAX };
    let quote = inner.len.min(max - n).min(quoted.len());
    let total = n + quote;
    if inner.v6 {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        // Reversed: from the address the datagram was sent to, to its sender.
        src.copy_from_slice(&quoted[ipv6::DST]);
        dst.copy_from_slice(&quoted[ipv6::SRC]);
        frame[l2 - 2..l2].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        ipv6_header(
            &mut frame[ip..],
            0,
            0,
            total - IPV6_LEN,
            PROTO_ICMPV6,
            ICMP_TTL,
            src,
            dst,
        );
        let m = ip + IPV6_LEN;
        frame[m] = 2; // packet too big
        frame[m + 1] = 0;
        frame[m + 2..m + 4].fill(0);
        frame[m + 4..m + 8].copy_from_slice(&u32::from(mtu).to_be_bytes());
        let len = total - IPV6_LEN;
        let s = ipv6_pseudo_sum(&src, &dst, len, PROTO_ICMPV6)
            + u64::from(checksum::sum(&frame[m..m + len]));
        let c = !checksum::fold_to_16(s);
        frame[m + 2..m + 4].copy_from_slice(&c.to_be_bytes());
    } else {
        let mut src = [0u8; 4];
        let mut dst = [0u8; 4];
        src.copy_from_slice(&quoted[ipv4::DST]);
        dst.copy_from_slice(&quoted[ipv4::SRC]);
        frame[l2 - 2..l2].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        ipv4_header(&mut frame[ip..], 0, total, ICMP_TTL, PROTO_ICMP, src, dst);
        let m = ip + IPV4_LEN;
        frame[m] = 3; // destination unreachable
        frame[m + 1] = 4; // fragmentation needed and DF set
        frame[m + 2..m + 6].fill(0);
        frame[m + 6..m + 8].copy_from_slice(&mtu.to_be_bytes());
        let c = !checksum::sum(&frame[m..ip + total]);
        frame[m + 2..m + 4].copy_from_slice(&c.to_be_bytes());
    }
    l2 + total
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, SocketAddr};

    use etherparse::{Ipv4HeaderSlice, Ipv6HeaderSlice, UdpHeaderSlice};
    use proptest::prelude::*;

    use super::*;
    use crate::port::memory::MemBuf;
    use crate::testkit::frames::{fix_ipv4_checksum, udp_frame, FrameSpec};

    const SRC4: &str = "198.18.0.2";
    const SRC6: &str = "2001:db8::2";

    fn tunnel(encap: Encap, outer_v6: bool) -> Tunnel {
        Tunnel {
            encap,
            source: (if outer_v6 { SRC6 } else { SRC4 }).parse().unwrap(),
            mtu: 1500,
        }
    }

    /// A datagram from a client to a VIP, with TOS/traffic class `tos` and TTL `ttl`.
    fn datagram(v6: bool, vlan: Option<u16>, tos: u8, ttl: u8, payload: &[u8]) -> Vec<u8> {
        let (src, dst): (SocketAddr, SocketAddr) = if v6 {
            (
                "[2001:db8:1::7]:40000".parse().unwrap(),
                "[2001:db8::10]:514".parse().unwrap(),
            )
        } else {
            (
                "198.19.0.7:40000".parse().unwrap(),
                "198.18.0.10:514".parse().unwrap(),
            )
        };
        let mut spec = FrameSpec::new(src, dst);
        spec.vlan = vlan;
        spec.ttl = ttl;
        let mut f = udp_frame(&spec, payload);
        let l3 = if vlan.is_some() { 18 } else { 14 };
        if v6 {
            f[l3] = 0x60 | (tos >> 4);
            f[l3 + 1] = (tos << 4) | (f[l3 + 1] & 0x0f);
        } else {
            f[l3 + 1] = tos;
            fix_ipv4_checksum(&mut f, l3);
        }
        f
    }

    fn encapsulate(frame: &[u8], t: Tunnel, dst: IpAddr, hash: u64) -> Vec<u8> {
        let l3 = if frame[12..14] == [0x81, 0] { 18 } else { 14 };
        let inner = Inner::read(frame, l3, hash).unwrap();
        let mut buf = MemBuf::from_frame(frame);
        let g = Grow::Tunnel {
            tunnel: t,
            dst,
            inner,
        };
        let len = g.apply(&mut buf).unwrap();
        let out = buf.data().to_vec();
        assert_eq!(out.len(), len);
        out
    }

    /// What a backend's kernel does: checks the outer headers (checksums included) and
    /// returns the outer source, destination, TOS, TTL, GUE source port, and the inner packet.
    fn decapsulate(frame: &[u8], encap: Encap) -> (IpAddr, IpAddr, u8, u8, Option<u16>, Vec<u8>) {
        let l3 = if frame[12..14] == [0x81, 0] { 18 } else { 14 };
        let ethertype = u16::from_be_bytes([frame[l3 - 2], frame[l3 - 1]]);
        let ip = &frame[l3..];
        let (src, dst, tos, ttl, proto, payload): (IpAddr, IpAddr, u8, u8, u8, &[u8]) =
            match ethertype {
                0x0800 => {
                    let h = Ipv4HeaderSlice::from_slice(ip).unwrap();
                    let hdr = h.to_header();
                    assert_eq!(
                        hdr.header_checksum,
                        hdr.calc_header_checksum(),
                        "outer checksum"
                    );
                    assert!(h.dont_fragment());
                    let end = usize::from(h.total_len());
                    (
                        h.source_addr().into(),
                        h.destination_addr().into(),
                        (h.dcp().value() << 2) | h.ecn().value(),
                        h.ttl(),
                        h.protocol().0,
                        &ip[20..end],
                    )
                }
                0x86dd => {
                    let h = Ipv6HeaderSlice::from_slice(ip).unwrap();
                    let end = 40 + usize::from(h.payload_length());
                    (
                        h.source_addr().into(),
                        h.destination_addr().into(),
                        h.traffic_class(),
                        h.hop_limit(),
                        h.next_header().0,
                        &ip[40..end],
                    )
                }
                other => panic!("outer ethertype {other:#x}"),
            };
        let (sport, inner) = match encap {
            Encap::Ipip => (None, payload),
            Encap::Gue { port } => {
                assert_eq!(proto, 17);
                let u = UdpHeaderSlice::from_slice(payload).unwrap();
                assert_eq!(u.destination_port(), port);
                assert_eq!(usize::from(u.length()), payload.len());
                if let (IpAddr::V6(s), IpAddr::V6(d)) = (src, dst) {
                    let h = u.to_header();
                    let want = h
                        .calc_checksum_ipv6_raw(s.octets(), d.octets(), &payload[8..])
                        .unwrap();
                    assert_eq!(u.checksum(), want, "outer UDP checksum");
                } else {
                    assert_eq!(u.checksum(), 0);
                }
                let gue = &payload[8..12];
                assert_eq!(gue[0], 0, "GUE version 0, no extension fields");
                assert_eq!(&gue[2..], &[0, 0], "no flags");
                let inner = &payload[12..];
                let want = if inner[0] >> 4 == 6 { 41 } else { 4 };
                assert_eq!(gue[1], want, "GUE protocol");
                (Some(u.source_port()), inner)
            }
        };
        if encap == Encap::Ipip {
            let want = if inner[0] >> 4 == 6 { 41 } else { 4 };
            assert_eq!(proto, want, "outer protocol");
        }
        (src, dst, tos, ttl, sport, inner.to_vec())
    }

    #[test]
    fn ipip_wraps_an_ipv4_datagram_for_an_ipv4_backend() {
        let f = datagram(false, None, 0xb9, 61, b"<13>hello");
        let dst: IpAddr = "198.19.1.11".parse().unwrap();
        let out = encapsulate(&f, tunnel(Encap::Ipip, false), dst, 7);
        assert_eq!(out.len(), f.len() + 20);
        assert_eq!(&out[..12], &f[..12], "MACs kept");
        let (src, d, tos, ttl, _, inner) = decapsulate(&out, Encap::Ipip);
        assert_eq!((src, d), (SRC4.parse().unwrap(), dst));
        assert_eq!(
            (tos, ttl),
            (0xb9, 61),
            "DSCP, ECN and TTL copied (RFC 6040)"
        );
        assert_eq!(inner, &f[14..]);
    }

    #[test]
    fn gue_source_ports_follow_the_flow_within_the_dynamic_range() {
        let f = datagram(false, None, 0, 64, b"x");
        let dst: IpAddr = "198.19.1.11".parse().unwrap();
        let t = tunnel(Encap::Gue { port: 6080 }, false);
        let ports: Vec<u16> = (0..64u64)
            .map(|h| {
                decapsulate(&encapsulate(&f, t, dst, h * 0x9e37_79b9), t.encap)
                    .4
                    .unwrap()
            })
            .collect();
        assert!(ports.iter().all(|p| *p >= 49152));
        let distinct: std::collections::BTreeSet<_> = ports.iter().collect();
        assert!(distinct.len() > 32, "{distinct:?}");
        let again = decapsulate(&encapsulate(&f, t, dst, 0x9e37_79b9), t.encap)
            .4
            .unwrap();
        assert_eq!(again, ports[1], "one flow, one port");
    }

    #[test]
    fn too_big_answers_with_fragmentation_needed_quoting_the_datagram() {
        let f = datagram(false, Some(7), 0, 64, &[5; 1472]);
        let inner = Inner::read(&f, 18, 0).unwrap();
        let mut buf = MemBuf::from_frame(&f);
        let len = Grow::TooBig { inner, mtu: 1480 }.apply(&mut buf).unwrap();
        let out = buf.data();
        assert_eq!(out.len(), len);
        assert_eq!(
            (&out[0..6], &out[6..12]),
            (&f[6..12], &f[0..6]),
            "back to the sender"
        );
        assert_eq!(&out[12..16], &f[12..16], "the VLAN tag kept");
        let ip = Ipv4HeaderSlice::from_slice(&out[18..]).unwrap();
        assert_eq!(ip.source_addr().to_string(), "198.18.0.10", "from the VIP");
        assert_eq!(ip.destination_addr().to_string(), "198.19.0.7");
        assert_eq!(usize::from(ip.total_len()), 576, "RFC 1812's limit");
        assert_eq!(ip.protocol().0, 1);
        let icmp = &out[38..];
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1480);
        assert_eq!(checksum::sum(icmp), 0xffff, "ICMP checksum");
        assert_eq!(&icmp[8..], &f[18..18 + 576 - 28], "quotes the datagram");
    }

    #[test]
    fn too_big_answers_ipv6_with_packet_too_big() {
        let f = datagram(true, None, 0, 64, &[5; 1452]);
        let inner = Inner::read(&f, 14, 0).unwrap();
        let mut buf = MemBuf::from_frame(&f);
        Grow::TooBig { inner, mtu: 1448 }.apply(&mut buf).unwrap();
        let out = buf.data();
        let ip = Ipv6HeaderSlice::from_slice(&out[14..]).unwrap();
        assert_eq!(ip.source_addr().to_string(), "2001:db8::10");
        assert_eq!(ip.next_header().0, 58);
        assert_eq!(
            40 + usize::from(ip.payload_length()),
            1280,
            "RFC 4443's limit"
        );
        let icmp = &out[54..];
        assert_eq!(icmp[0], 2);
        assert_eq!(
            u32::from_be_bytes([icmp[4], icmp[5], icmp[6], icmp[7]]),
            1448
        );
        let s = ipv6_pseudo_sum(
            &ip.source_addr().octets(),
            &ip.destination_addr().octets(),
            icmp.len(),
            58,
        ) + u64::from(checksum::sum(icmp));
        assert_eq!(checksum::fold_to_16(s), 0xffff, "ICMPv6 checksum");
    }

    #[test]
    fn a_buffer_without_headroom_is_left_alone() {
        struct Flat(Vec<u8>);
        impl PacketBuf for Flat {
            fn data(&self) -> &[u8] {
                &self.0
            }
            fn data_mut(&mut self) -> &mut [u8] {
                &mut self.0
            }
        }
        let f = datagram(false, None, 0, 64, b"x");
        let inner = Inner::read(&f, 14, 0).unwrap();
        let mut buf = Flat(f.clone());
        let g = Grow::Tunnel {
            tunnel: tunnel(Encap::Ipip, false),
            dst: "198.19.1.1".parse().unwrap(),
            inner,
        };
        assert_eq!(g.apply(&mut buf), Err(DropReason::NoHeadroom));
        assert_eq!(buf.0, f);
    }

    proptest! {
        /// Decapsulating what Spray encapsulates gives back the datagram, for any datagram,
        /// tag, encapsulation and pair of families.
        #[test]
        fn decapsulation_gives_back_the_datagram(
            v6 in any::<bool>(), outer_v6 in any::<bool>(), gue in any::<bool>(),
            vlan in proptest::option::of(0u16..4095), tos in any::<u8>(), ttl in 1u8..,
            payload in proptest::collection::vec(any::<u8>(), 0..1400), hash in any::<u64>(),
            pad in any::<bool>(),
        ) {
            let mut f = datagram(v6, vlan, tos, ttl, &payload);
            let ip_end = f.len();
            if pad && f.len() < 60 {
                f.resize(60, 0); // Ethernet padding after a short datagram
            }
            let encap = if gue { Encap::Gue { port: 6080 } } else { Encap::Ipip };
            let dst: IpAddr = if outer_v6 { "2001:db8:2::11" } else { "198.19.1.11" }.parse().unwrap();
            let out = encapsulate(&f, tunnel(encap, outer_v6), dst, hash);
            let l3 = if vlan.is_some() { 18 } else { 14 };
            prop_assert_eq!(&out[..l3 - 2], &f[..l3 - 2]);
            let (src, d, otos, ottl, _, inner) = decapsulate(&out, encap);
            prop_assert_eq!(src, tunnel(encap, outer_v6).source);
            prop_assert_eq!(d, dst);
            prop_assert_eq!((otos, ottl), (tos, ttl));
            prop_assert_eq!(&inner[..], &f[l3..ip_end]);
        }
    }
}
