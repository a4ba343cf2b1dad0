//! The per-frame policy of the frame dataplane: what happens to a datagram to a VIP
//! ([`to_backend`], and [`rewrite_to_hop_v4`] for a route's flat hops), to a NAT reply from a
//! backend ([`from_backend`]), to a non-first fragment ([`fragment`]) and to ICMP
//! ([`icmp`]: neighbour discovery, errors about NAT flows). Each decides and rewrites one frame
//! in place and returns what the worker does with its buffer ([`Fwd`]) or why it is dropped.
//! For a service with mirror pools, [`to_backend`] also plans the copies ([`Copies`]) that the
//! worker makes once the burst is dealt.
//!
//! The worker (`crate::worker`) calls it for every frame its common-case loop does not take;
//! the loop itself shares [`rewrite_to_hop_v4`], so both reach the same decisions and bytes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use crate::counters::{DropReason, WorkerCounters};
use crate::encap::{overhead, Grow, Inner, RateLimit};
use crate::frag::{FragAction, FragTable};
use crate::model::flow::{flow_hash, NatFlows};
use crate::model::PassiveSink;
use crate::model::{BackendId, Hop, MacAddr, Mode, ReverseNat, Service, Snapshot, Tunnel, VipId};
use crate::neigh::{self, WorkerNeigh};
use crate::rewrite::{
    decrement_ttl, eth_src_word, nat_fragment, nat_from_backend, nat_to_backend, nat_to_backend_v4,
    nat_to_backend_v4_ttl, set_mac_words, set_macs,
};
use crate::wire::{classify, vlan, FragInfo, IpFrame, Ipv4Udp, Packet, UdpFrame, ETHERTYPE_IPV4};

/// The clock, read at most once per burst and only when a fragment needs it.
pub(crate) struct Now(pub(crate) Option<Instant>);

impl Now {
    #[inline]
    pub(crate) fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

/// Copies for mirror pools that [`to_backend`] planned during a burst; the worker makes
/// them once the burst is dealt, from the originals as they are sent (already rewritten for
/// their primary backend), and sends them after the originals. Its capacity is reserved
/// once; a plan beyond it is counted as [`WorkerCounters::mirror_no_buffer`].
#[derive(Debug, Default)]
pub(crate) struct Copies {
    pub(crate) planned: Vec<CopyTo>,
}

/// One planned copy: of which frame, to which mirror backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CopyTo {
    /// The original's position among the burst's frames to send, set by the worker when it
    /// settles the original (see [`Copies::settle`]).
    pub(crate) frame: usize,
    /// The mirror backend.
    pub(crate) backend: BackendId,
    /// Its address (the copy's new destination under NAT).
    pub(crate) to: SocketAddr,
    /// Its MAC address.
    pub(crate) mac: MacAddr,
    /// Whether the service is NAT: the copy's destination is rewritten again.
    pub(crate) nat: bool,
    /// The bytes before the UDP payload: all a copy rewrites, so all it must own
    /// ([`crate::port::Port::copy_frame`]).
    pub(crate) headers: usize,
}

impl Copies {
    /// Room for `n` plans.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            planned: Vec::with_capacity(n),
        }
    }

    /// How many copies are planned; what [`Copies::settle`] takes as `from`.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.planned.len()
    }

    /// Gives the copies planned since `from` their original's position among the frames to
    /// send (`Some(kept)`), or cancels them when the original was dropped after all (`None`).
    #[inline]
    pub(crate) fn settle(&mut self, from: usize, kept: Option<usize>) {
        match kept {
            Some(k) => self.planned[from..].iter_mut().for_each(|p| p.frame = k),
            None => self.planned.truncate(from),
        }
    }

    /// Plans one copy of the datagram at hand per mirror pool of `svc` that takes it.
    #[inline(never)]
    fn plan(&mut self, svc: &Service, f: &impl Datagram, cursors: &mut [u32], c: &WorkerCounters) {
        let nat = svc.spec.mode == Mode::Nat;
        for m in svc.mirrors.iter() {
            let Some(b) = m.pick(cursors, || flow_hash(&f.src(), &f.dst())) else {
                continue;
            };
            let Some(mac) = b.mac.filter(|_| !nat || b.addr.is_ipv4() != f.is_ipv6()) else {
                c.mirror_unsent.add(1);
                continue;
            };
            if self.planned.len() == self.planned.capacity() {
                c.mirror_no_buffer.add(1);
                continue;
            }
            self.planned.push(CopyTo {
                frame: 0,
                backend: b.id,
                to: b.addr,
                mac,
                nat,
                headers: f.headers_len(),
            });
        }
    }
}

/// Rewrites `headers`, the headers of a copy of `original` (which was rewritten for its
/// primary backend), for the mirror backend of `plan`: the destination address and port
/// again under NAT (the TTL was decremented once, on the original), then the MACs. The
/// copy may own only its headers, so the offsets come from parsing `original`.
///
/// # Errors
/// The [`DropReason`] of a copy that cannot be rewritten (never for a copy of a datagram
/// the primary pool forwarded; kept so that a bad one is counted, not sent).
pub(crate) fn rewrite_copy(
    headers: &mut [u8],
    original: &[u8],
    plan: &CopyTo,
    port_mac: MacAddr,
) -> Result<(), DropReason> {
    if headers.len() < plan.headers {
        return Err(DropReason::Truncated);
    }
    if plan.nat {
        let f = crate::wire::parse_udp(original)?;
        nat_to_backend(headers, &f, plan.to)?;
    }
    set_macs(headers, port_mac, plan.mac);
    Ok(())
}

/// What the worker does with a buffer it did not drop.
pub(crate) enum Fwd {
    /// Transmit it (rewritten in place).
    Tx,
    /// Grow headers in front of it, then transmit it (tunnel encapsulation, or an ICMP error
    /// built over it): the worker applies the [`Grow`] to its buffer.
    Grow(Grow),
    /// Free it without counting a drop (its content went to the control thread).
    Consumed,
}

/// Read-only state of one burst (`'s`: the snapshot's borrow, which a [`RouteMemo`] shares).
pub(crate) struct Ctx<'a, 's> {
    pub(crate) snap: &'s Snapshot,
    pub(crate) nat_flows: &'a NatFlows,
    pub(crate) port_mac: MacAddr,
    /// [`eth_src_word`] of `port_mac` before the IPv4 EtherType and before the 802.1Q TPID.
    pub(crate) eth_src_ipv4: u64,
    pub(crate) eth_src_8021q: u64,
    pub(crate) gateway_mac: MacAddr,
    pub(crate) c: &'a WorkerCounters,
    pub(crate) neigh: &'a WorkerNeigh,
    pub(crate) passive: Option<&'a PassiveSink>,
    /// The limit on ICMP "too big" answers; none are sent without it.
    pub(crate) too_big: Option<&'a RateLimit>,
}

impl<'a, 's> Ctx<'a, 's> {
    pub(crate) fn new(
        snap: &'s Snapshot,
        nat_flows: &'a NatFlows,
        port_mac: MacAddr,
        gateway_mac: MacAddr,
        c: &'a WorkerCounters,
        neigh: &'a WorkerNeigh,
        passive: Option<&'a PassiveSink>,
    ) -> Self {
        Self {
            snap,
            nat_flows,
            port_mac,
            eth_src_ipv4: eth_src_word(port_mac, ETHERTYPE_IPV4),
            eth_src_8021q: eth_src_word(port_mac, vlan::TPID_8021Q),
            gateway_mac,
            c,
            neigh,
            passive,
            too_big: None,
        }
    }

    /// The same context, answering datagrams too big for a tunnel within `limit`.
    pub(crate) fn with_too_big(mut self, limit: &'a RateLimit) -> Self {
        self.too_big = Some(limit);
        self
    }

    /// Next hop toward clients: the resolved gateway, else the configured one.
    #[inline]
    fn gateway(&self, ipv6: bool) -> MacAddr {
        self.snap.gateway_mac(ipv6).unwrap_or(self.gateway_mac)
    }
}

/// The rewrite of [`to_hop_v4`] once `hop` is chosen from the hops of VIP `vip` (NAT when
/// `nat`, else DR), and the backend's count.
#[inline(always)]
pub(crate) fn rewrite_to_hop_v4(
    frame: &mut [u8],
    h: &Ipv4Udp,
    hop: &Hop,
    vip: VipId,
    nat: bool,
    ctx: &Ctx,
) -> Result<(), DropReason> {
    if nat {
        nat_to_backend_v4_ttl(frame, h, hop.ip4, hop.port)?;
        if hop.shared {
            let to = SocketAddr::from((Ipv4Addr::from(hop.ip4), hop.port));
            ctx.nat_flows.record(&h.src(), &to, vip);
        }
    }
    let src_next = match h.vlan {
        None => ctx.eth_src_ipv4,
        Some(_) => ctx.eth_src_8021q,
    };
    set_mac_words(frame, hop.mac_word(), src_next);
    ctx.c.backend_packet(hop.backend(), frame.len());
    Ok(())
}

/// The path for every kind of frame: classify, then act on what it is.
#[inline(never)]
pub(crate) fn process_general(
    frame: &mut [u8],
    ctx: &Ctx,
    cursors: &mut [u32],
    frags: &mut FragTable,
    now: &mut Now,
    copies: &mut Copies,
) -> Result<Fwd, DropReason> {
    match classify(frame)? {
        Packet::Udp(f) => udp(frame, &f, None, ctx, cursors, frags, now, copies),
        Packet::FirstFragment(f, info) => {
            udp(frame, &f, Some(&info), ctx, cursors, frags, now, copies)
        }
        Packet::Fragment(ipf, info) => fragment(frame, &ipf, &info, ctx, frags, now),
        Packet::Icmp(ipf) => icmp(frame, &ipf, ctx, now),
        Packet::Arp { l3, .. } => {
            let v = neigh::handle_arp(frame, l3, ctx.snap, ctx.port_mac, ctx.neigh)?;
            Ok(neigh_verdict(v, ctx.c))
        }
    }
}

#[inline]
fn neigh_verdict(v: neigh::Verdict, c: &WorkerCounters) -> Fwd {
    match v {
        neigh::Verdict::Answered => {
            c.neigh_answered.add(1);
            Fwd::Tx
        }
        neigh::Verdict::Queued => {
            c.neigh_queued.add(1);
            Fwd::Consumed
        }
    }
}

/// What [`to_backend`] and [`from_backend`] need to know of a datagram: implemented by the
/// general [`UdpFrame`] and by the fast path's [`Ipv4Udp`], so both paths share one policy
/// and each gets its own compiled copy of it.
pub(crate) trait Datagram: Copy {
    fn l3(&self) -> usize;
    /// The bytes before the UDP payload.
    fn headers_len(&self) -> usize;
    fn is_ipv6(&self) -> bool;
    fn src(&self) -> SocketAddr;
    fn dst(&self) -> SocketAddr;
    fn nat_to_backend(&self, frame: &mut [u8], to: SocketAddr) -> Result<(), DropReason>;
    fn nat_from_backend(&self, frame: &mut [u8], vip: SocketAddr) -> Result<(), DropReason>;
}

impl Datagram for UdpFrame {
    #[inline(always)]
    fn l3(&self) -> usize {
        self.l3
    }
    #[inline(always)]
    fn headers_len(&self) -> usize {
        self.l4 + crate::wire::field::udp::HEADER_LEN
    }
    #[inline(always)]
    fn is_ipv6(&self) -> bool {
        UdpFrame::is_ipv6(self)
    }
    #[inline(always)]
    fn src(&self) -> SocketAddr {
        UdpFrame::src(self)
    }
    #[inline(always)]
    fn dst(&self) -> SocketAddr {
        UdpFrame::dst(self)
    }
    #[inline(always)]
    fn nat_to_backend(&self, frame: &mut [u8], to: SocketAddr) -> Result<(), DropReason> {
        nat_to_backend(frame, self, to)
    }
    #[inline(always)]
    fn nat_from_backend(&self, frame: &mut [u8], vip: SocketAddr) -> Result<(), DropReason> {
        nat_from_backend(frame, self, vip)
    }
}

impl Datagram for Ipv4Udp {
    #[inline(always)]
    fn l3(&self) -> usize {
        self.l3
    }
    #[inline(always)]
    fn headers_len(&self) -> usize {
        self.l3 + crate::wire::field::ipv4_udp::LEN
    }
    #[inline(always)]
    fn is_ipv6(&self) -> bool {
        false
    }
    #[inline(always)]
    fn src(&self) -> SocketAddr {
        Ipv4Udp::src(self)
    }
    #[inline(always)]
    fn dst(&self) -> SocketAddr {
        Ipv4Udp::dst(self)
    }
    #[inline(always)]
    fn nat_to_backend(&self, frame: &mut [u8], to: SocketAddr) -> Result<(), DropReason> {
        nat_to_backend_v4(frame, self, to)
    }
    #[inline(always)]
    fn nat_from_backend(&self, frame: &mut [u8], vip: SocketAddr) -> Result<(), DropReason> {
        nat_from_backend(frame, &self.udp_frame(), vip)
    }
}

/// A UDP datagram or the first fragment of one (`frag`), from the general path.
#[inline]
#[allow(clippy::too_many_arguments)]
fn udp(
    frame: &mut [u8],
    f: &UdpFrame,
    frag: Option<&FragInfo>,
    ctx: &Ctx,
    cursors: &mut [u32],
    frags: &mut FragTable,
    now: &mut Now,
    copies: &mut Copies,
) -> Result<Fwd, DropReason> {
    match ctx.snap.lookup_addr(&f.dst()) {
        Some((vip_id, svc)) => to_backend(
            frame, f, frag, vip_id, svc, ctx, cursors, frags, now, copies,
        ),
        None => from_backend(frame, *f, frag, ctx, frags, now),
    }
}

/// A datagram (or first fragment) to VIP `vip_id`: schedule, rewrite, count.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn to_backend<D: Datagram>(
    frame: &mut [u8],
    f: &D,
    frag: Option<&FragInfo>,
    vip_id: VipId,
    svc: &Service,
    ctx: &Ctx,
    cursors: &mut [u32],
    frags: &mut FragTable,
    now: &mut Now,
    copies: &mut Copies,
) -> Result<Fwd, DropReason> {
    let c = ctx.c;
    let len = frame.len();
    c.vip_packet(vip_id, len);
    let mut scratch = 0;
    let cursor = cursors
        .get_mut(usize::from(vip_id.0))
        .unwrap_or(&mut scratch);
    let (i, b) = svc
        .pick_indexed_with(cursor, || flow_hash(&f.src(), &f.dst()))
        .ok_or(DropReason::NoHealthyBackend)?;
    let mac = b.mac.ok_or(DropReason::NoBackendMac)?;
    if let Some(tunnel) = b.tunnel {
        let dst = b.addr.ip();
        let hash = flow_hash(&f.src(), &f.dst());
        let inner = Inner::read(frame, f.l3(), hash)?;
        let grow = tunnel_or_too_big(tunnel, dst, inner, ctx, now)?;
        if let (Some(info), Grow::Tunnel { .. }) = (frag, grow) {
            let action = FragAction::Backend {
                vip: vip_id,
                backend: b.id,
                mac,
                nat_to: None,
                tunnel: Some((tunnel, dst, hash)),
            };
            frags.insert_first(now.get(), info, action)?;
        }
        if let Grow::Tunnel { .. } = grow {
            set_macs(frame, ctx.port_mac, mac);
            c.backend_packet(b.id, len + grow.len());
        }
        return Ok(Fwd::Grow(grow));
    }
    let nat = svc.spec.mode == Mode::Nat;
    if nat {
        decrement_ttl(frame, f.l3(), f.is_ipv6())?;
    }
    if let Some(info) = frag {
        let action = FragAction::Backend {
            vip: vip_id,
            backend: b.id,
            mac,
            nat_to: nat.then(|| b.addr.ip()),
            tunnel: None,
        };
        frags.insert_first(now.get(), info, action)?;
    }
    if nat {
        f.nat_to_backend(frame, b.addr)?;
        if svc.backend_is_shared(i) {
            ctx.nat_flows.record(&f.src(), &b.addr, vip_id);
        }
    }
    set_macs(frame, ctx.port_mac, mac);
    c.backend_packet(b.id, len);
    // Whole datagrams only: a fragmented one goes to the primary pool alone (docs/config.md).
    if !svc.mirrors.is_empty() && frag.is_none() {
        copies.plan(svc, f, cursors, c);
    }
    Ok(Fwd::Tx)
}

/// The headers for a datagram to a tunnelled backend at `dst`: the encapsulation, or, when
/// the encapsulated datagram would exceed the tunnel's MTU, the ICMP error that tells the
/// client the MTU left for it (at most [`crate::encap::TOO_BIG_PER_SEC`] a second per worker).
///
/// # Errors
/// [`DropReason::TunnelTooBig`] for a datagram too big whose answer is rate-limited.
#[inline]
fn tunnel_or_too_big(
    tunnel: Tunnel,
    dst: IpAddr,
    inner: Inner,
    ctx: &Ctx,
    now: &mut Now,
) -> Result<Grow, DropReason> {
    let overhead = overhead(&tunnel, dst);
    if inner.len + overhead <= usize::from(tunnel.mtu) {
        return Ok(Grow::Tunnel { tunnel, dst, inner });
    }
    if !ctx.too_big.is_some_and(|l| l.allow(now.get())) {
        return Err(DropReason::TunnelTooBig);
    }
    // Not forwarded, so counted as a drop, though the frame leaves as the answer.
    ctx.c.drop_packet(DropReason::TunnelTooBig);
    ctx.c.icmp_too_big.add(1);
    let mtu = tunnel.mtu.saturating_sub(overhead as u16);
    Ok(Grow::TooBig { inner, mtu })
}

/// A datagram (or first fragment) not for a VIP: maybe a NAT reply from a backend on its way
/// back to a client.
#[inline(never)]
pub(crate) fn from_backend<D: Datagram>(
    frame: &mut [u8],
    f: D,
    frag: Option<&FragInfo>,
    ctx: &Ctx,
    frags: &mut FragTable,
    now: &mut Now,
) -> Result<Fwd, DropReason> {
    let snap = ctx.snap;
    let vip_id: VipId = match snap.reverse(&f.src()) {
        Some(ReverseNat::One(v)) => *v,
        Some(ReverseNat::Shared(vips)) => match ctx.nat_flows.lookup(&f.dst(), &f.src()) {
            Some(v) => v,
            // The entry was overwritten by a colliding flow: the first VIP is the best guess.
            None => *vips.first().ok_or(DropReason::NoVip)?,
        },
        None if snap.is_mirror_source(&f.src()) => return Err(DropReason::MirrorReply),
        None => return Err(DropReason::NoVip),
    };
    let svc = snap.service(vip_id).ok_or(DropReason::NoVip)?;
    let vip = svc.spec.vip.addr;
    let gw = ctx.gateway(f.is_ipv6());
    decrement_ttl(frame, f.l3(), f.is_ipv6())?;
    if let Some(info) = frag {
        let action = FragAction::Reply {
            vip: vip.ip(),
            mac: gw,
        };
        frags.insert_first(now.get(), info, action)?;
    }
    f.nat_from_backend(frame, vip)?;
    set_macs(frame, ctx.port_mac, gw);
    ctx.c.nat_replies.add(1);
    Ok(Fwd::Tx)
}

/// A non-first fragment: goes where its first fragment went.
#[inline]
fn fragment(
    frame: &mut [u8],
    ipf: &IpFrame,
    info: &FragInfo,
    ctx: &Ctx,
    frags: &mut FragTable,
    now: &mut Now,
) -> Result<Fwd, DropReason> {
    let len = frame.len();
    let v6 = ipf.is_ipv6();
    match frags.lookup(now.get(), info)? {
        FragAction::Backend {
            vip,
            backend,
            mac,
            nat_to,
            tunnel,
        } => {
            ctx.c.vip_packet(vip, len);
            if let Some((tunnel, dst, hash)) = tunnel {
                let inner = Inner::read(frame, ipf.l3, hash)?;
                let grow = tunnel_or_too_big(tunnel, dst, inner, ctx, now)?;
                if let Grow::Tunnel { .. } = grow {
                    set_macs(frame, ctx.port_mac, mac);
                    ctx.c.backend_packet(backend, len + grow.len());
                    ctx.c.fragments_steered.add(1);
                }
                return Ok(Fwd::Grow(grow));
            }
            if let Some(to) = nat_to {
                decrement_ttl(frame, ipf.l3, v6)?;
                nat_fragment(frame, ipf.l3, false, to)?;
            }
            set_macs(frame, ctx.port_mac, mac);
            ctx.c.backend_packet(backend, len);
        }
        FragAction::Reply { vip, mac } => {
            decrement_ttl(frame, ipf.l3, v6)?;
            nat_fragment(frame, ipf.l3, true, vip)?;
            set_macs(frame, ctx.port_mac, mac);
            ctx.c.nat_replies.add(1);
        }
    }
    ctx.c.fragments_steered.add(1);
    Ok(Fwd::Tx)
}

/// ICMP: neighbour discovery, or an error about a NAT flow.
#[inline]
fn icmp(frame: &mut [u8], ipf: &IpFrame, ctx: &Ctx, now: &mut Now) -> Result<Fwd, DropReason> {
    let v6 = ipf.is_ipv6();
    let ty = *frame
        .get(ipf.l4)
        .filter(|_| ipf.l4 < ipf.end)
        .ok_or(DropReason::Truncated)?;
    if v6 && neigh::is_ndp(ty) {
        let v = neigh::handle_ndp(frame, ipf, ctx.snap, ctx.port_mac, ctx.neigh)?;
        return Ok(neigh_verdict(v, ctx.c));
    }
    let t = crate::icmp::translate_error(frame, ipf, ctx.snap, ctx.nat_flows)?;
    if let Some(sink) = ctx.passive {
        if let Some(r) = crate::icmp::passive_report(ctx.snap, v6, &t, now.get()) {
            if sink.0.try_send(r).is_err() {
                ctx.c.passive_reports_lost.add(1);
            }
        }
    }
    decrement_ttl(frame, ipf.l3, v6)?;
    set_macs(frame, ctx.port_mac, ctx.gateway(v6));
    ctx.c.icmp_translated.add(1);
    Ok(Fwd::Tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::frames::{checksums_valid, udp_frame, FrameSpec};
    use crate::wire::parse_udp;

    /// A copy that owns only its headers (its payload shared with the original) gets the
    /// bytes a full copy gets: the offsets come from the original, and nothing past the
    /// headers is written.
    #[test]
    fn a_copy_owning_only_its_headers_is_rewritten_like_a_full_copy() {
        let port_mac = MacAddr([2, 0, 0, 0, 0, 0xaa]);
        for (client, vip, mirror) in [
            ("198.18.0.1:40000", "198.18.0.10:514", "198.19.11.1:5140"),
            (
                "[2001:db8::1]:40000",
                "[2001:db8::10]:514",
                "[2001:db8:11::1]:5140",
            ),
        ] {
            let spec = FrameSpec::new(client.parse().unwrap(), vip.parse().unwrap());
            let original = udp_frame(&spec, b"<13>a syslog line");
            let f = parse_udp(&original).unwrap();
            for nat in [false, true] {
                let plan = CopyTo {
                    frame: 0,
                    backend: BackendId(7),
                    to: mirror.parse().unwrap(),
                    mac: MacAddr([2, 0, 0, 0, 0x11, 1]),
                    nat,
                    headers: f.headers_len(),
                };
                assert!(plan.headers < original.len());
                let mut full = original.clone();
                rewrite_copy(&mut full, &original, &plan, port_mac).unwrap();
                let mut head = original[..plan.headers].to_vec();
                rewrite_copy(&mut head, &original, &plan, port_mac).unwrap();
                assert_eq!(head, full[..plan.headers], "{mirror} nat {nat}");
                assert_eq!(full[plan.headers..], original[plan.headers..]);
                assert!(checksums_valid(&full), "{mirror} nat {nat}");
                assert_eq!(&full[..6], &plan.mac.0);
                let dst = parse_udp(&full).unwrap().dst();
                assert_eq!(dst, if nat { plan.to } else { f.dst() });
                // Fewer bytes than the headers: an error to count, not a panic.
                let short = plan.headers - 1;
                assert_eq!(
                    rewrite_copy(&mut head[..short], &original, &plan, port_mac),
                    Err(DropReason::Truncated)
                );
            }
        }
    }
}
