//! ICMP errors about NAT flows, translated back so the client sees the VIP.
//!
//! In NAT mode a client talks to `VIP:port`, Spray rewrites the datagram to `backend:port`,
//! and an ICMP error the backend (or a router between Spray and the backend) sends about it
//! quotes the rewritten header: `client -> backend`. Forwarded as is, the client would learn
//! nothing it can match (its socket is connected to the VIP), and the backend's address would
//! leak. So, as a NAT router does (RFC 5508 section 4.2), Spray rewrites:
//!
//! * the quoted IP destination and UDP destination port back to the VIP's, patching the
//!   quoted IPv4 header checksum and the quoted UDP checksum (when the sender used one);
//! * the outer source address, when the error comes from the backend itself, to the VIP's;
//! * the ICMP checksum (RFC 1624 increments over every word that changed, plus the IPv6
//!   pseudo-header), the outer IPv4 header checksum, and the TTL (decremented by the
//!   worker, as for any NAT reply).
//!
//! Translated: ICMPv4 destination unreachable (3, fragmentation needed included), time
//! exceeded (11) and parameter problem (12); ICMPv6 destination unreachable (1), packet too
//! big (2), time exceeded (3) and parameter problem (4). Anything else, or an error whose
//! quoted datagram is not a UDP flow to a NAT backend, is [`DropReason::IcmpNotTranslated`].
//! Errors arriving for a VIP (quoting a reply `VIP -> client`) are not sent on: under a
//! per-packet scheduler nothing records which backend sent that reply.
//!
//! # Passive detection
//!
//! A destination unreachable (IPv4 3, ICMPv6 1) with a host or port code that quotes a
//! datagram sent to a backend of a NAT service whose `spec.passive` is set becomes a
//! [`PassiveReport`] (`passive_report`), as socket mode makes from its error queues
//! ([`crate::socket`]); the worker sends it with `try_send` and translates the error as above.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use crate::counters::DropReason;
use crate::model::flow::NatFlows;
use crate::model::PassiveReport;
use crate::model::{Mode, ReverseNat, Snapshot, VipId};
use crate::wire::checksum::Delta;
use crate::wire::IpFrame;

const PROTO_UDP: u8 = 17;

#[inline]
fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline]
fn wr16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Whether an ICMP (v4 or v6) type is an error that quotes the offending datagram.
#[inline]
pub(crate) fn is_error(ipv6: bool, icmp_type: u8) -> bool {
    if ipv6 {
        matches!(icmp_type, 1..=4)
    } else {
        matches!(icmp_type, 3 | 11 | 12)
    }
}

/// What [`translate_error`] translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Translated {
    /// The VIP the quoted datagram was sent to.
    pub vip: VipId,
    /// The backend address:port the quoted datagram was NATed to.
    pub backend: SocketAddr,
    /// ICMP type and code of the error.
    pub icmp: (u8, u8),
}

/// The errno a destination unreachable maps to for passive detection: `EHOSTUNREACH` for
/// host (IPv4 3/1, ICMPv6 1/3, address unreachable), `ECONNREFUSED` for port (IPv4 3/3,
/// ICMPv6 1/4); `None` for any other error.
#[inline]
pub fn passive_errno(ipv6: bool, (icmp_type, code): (u8, u8)) -> Option<i32> {
    match (ipv6, icmp_type, code) {
        (false, 3, 1) | (true, 1, 3) => Some(libc::EHOSTUNREACH),
        (false, 3, 3) | (true, 1, 4) => Some(libc::ECONNREFUSED),
        _ => None,
    }
}

/// The report passive detection makes of `t` (an error [`translate_error`] translated), if
/// it is a host or port unreachable about a NAT service whose `spec.passive` is set. No
/// allocation.
#[inline]
pub(crate) fn passive_report(
    snap: &Snapshot,
    ipv6: bool,
    t: &Translated,
    at: Instant,
) -> Option<PassiveReport> {
    let errno = passive_errno(ipv6, t.icmp)?;
    let spec = &snap.service(t.vip)?.spec;
    (spec.passive && spec.mode == Mode::Nat).then_some(PassiveReport {
        vip: t.vip,
        backend: t.backend,
        errno,
        icmp: t.icmp,
        at,
    })
}

/// Rewrites, in place, an ICMP error about a datagram Spray NATed toward a backend so that it
/// refers to the VIP; returns the VIP, the backend and the ICMP type and code. The caller decrements the TTL and sets the MACs.
///
/// # Errors
/// [`DropReason::IcmpNotTranslated`] when the message is not such an error (see the module
/// docs), [`DropReason::FamilyMismatch`] when the VIP is of another family.
pub(crate) fn translate_error(
    frame: &mut [u8],
    ipf: &IpFrame,
    snap: &Snapshot,
    nat_flows: &NatFlows,
) -> Result<Translated, DropReason> {
    let v6 = ipf.is_ipv6();
    let icmp = ipf.l4;
    let end = ipf.end.min(frame.len());
    if icmp + 8 > end || !is_error(v6, frame[icmp]) {
        return Err(DropReason::IcmpNotTranslated);
    }
    let icmp_tc = (frame[icmp], frame[icmp + 1]);
    // The quoted datagram: IP header, then (at least) the 8-byte UDP header.
    let inner = icmp + 8;
    let (ihl, src_at, dst_at, alen) = if v6 {
        if inner + 48 > end || frame[inner] >> 4 != 6 || frame[inner + 6] != PROTO_UDP {
            return Err(DropReason::IcmpNotTranslated);
        }
        (40, 8, 24, 16)
    } else {
        if inner + 20 > end || frame[inner] >> 4 != 4 {
            return Err(DropReason::IcmpNotTranslated);
        }
        let ihl = usize::from(frame[inner] & 0x0f) * 4;
        // A quoted non-first fragment has no UDP header to match.
        let frag_off = rd16(frame, inner + 6) & 0x1fff;
        if ihl < 20 || inner + ihl + 8 > end || frame[inner + 9] != PROTO_UDP || frag_off != 0 {
            return Err(DropReason::IcmpNotTranslated);
        }
        (ihl, 12, 16, 4)
    };
    let udp = inner + ihl;
    let ip_of = |b: &[u8], at: usize| -> IpAddr {
        if v6 {
            let mut a = [0u8; 16];
            a.copy_from_slice(&b[at..at + 16]);
            IpAddr::from(a)
        } else {
            IpAddr::from([b[at], b[at + 1], b[at + 2], b[at + 3]])
        }
    };
    let client = SocketAddr::new(ip_of(frame, inner + src_at), rd16(frame, udp));
    let backend = SocketAddr::new(ip_of(frame, inner + dst_at), rd16(frame, udp + 2));
    // The error must be on its way to the client that sent the quoted datagram.
    if client.ip() != ipf.dst {
        return Err(DropReason::IcmpNotTranslated);
    }
    let vip_id = match snap.reverse(&backend) {
        Some(ReverseNat::One(v)) => *v,
        Some(ReverseNat::Shared(vips)) => match nat_flows.lookup(&client, &backend) {
            Some(v) => v,
            None => *vips.first().ok_or(DropReason::IcmpNotTranslated)?,
        },
        None => return Err(DropReason::IcmpNotTranslated),
    };
    let vip = snap
        .service(vip_id)
        .ok_or(DropReason::IcmpNotTranslated)?
        .spec
        .vip
        .addr;
    let (old_bits, new_bits) = match (backend.ip(), vip.ip()) {
        (IpAddr::V4(o), IpAddr::V4(n)) => (u128::from(o.to_bits()), u128::from(n.to_bits())),
        (IpAddr::V6(o), IpAddr::V6(n)) => (o.to_bits(), n.to_bits()),
        _ => return Err(DropReason::FamilyMismatch),
    };
    let vip_octets: ([u8; 16], usize) = match vip.ip() {
        IpAddr::V4(a) => {
            let mut o = [0u8; 16];
            o[..4].copy_from_slice(&a.octets());
            (o, 4)
        }
        IpAddr::V6(a) => (a.octets(), 16),
    };
    let mut addr = Delta::default();
    if v6 {
        addr.replace128(old_bits, new_bits);
    } else {
        addr.replace32(old_bits as u32, new_bits as u32);
    }
    // Every word changed inside the ICMP message, for the ICMP checksum.
    let mut msg = addr;

    // Quoted IP destination (and its IPv4 header checksum).
    frame[inner + dst_at..inner + dst_at + alen].copy_from_slice(&vip_octets.0[..vip_octets.1]);
    if !v6 {
        let old = rd16(frame, inner + 10);
        let new = addr.apply(old);
        wr16(frame, inner + 10, new);
        msg.replace16(old, new);
    }
    // Quoted UDP destination port and checksum (pseudo-header address + port).
    let mut udp_delta = addr;
    udp_delta.replace16(backend.port(), vip.port());
    msg.replace16(backend.port(), vip.port());
    wr16(frame, udp + 2, vip.port());
    let old = rd16(frame, udp + 6);
    let new = udp_delta.apply_udp(old);
    wr16(frame, udp + 6, new);
    msg.replace16(old, new);

    // Outer source: the backend itself speaks as the VIP.
    if ipf.src == backend.ip() {
        let l3 = ipf.l3;
        let at = l3 + if v6 { 8 } else { 12 };
        frame[at..at + alen].copy_from_slice(&vip_octets.0[..vip_octets.1]);
        if v6 {
            // ICMPv6's checksum covers the pseudo-header (RFC 4443 section 2.3).
            msg.replace128(old_bits, new_bits);
        } else {
            let old = rd16(frame, l3 + 10);
            wr16(frame, l3 + 10, addr.apply(old));
        }
    }
    let old = rd16(frame, icmp + 2);
    wr16(frame, icmp + 2, msg.apply(old));
    Ok(Translated {
        vip: vip_id,
        backend,
        icmp: icmp_tc,
    })
}
