//! How a worker deals one received burst: runs of the common case (an untagged IPv4 datagram
//! to a VIP whose route has hops) in one loop, every other frame one by one through the
//! policy in [`crate::decide`].

use crate::counters::{DropReason, WorkerCounters};
use crate::decide::{
    from_backend, process_general, rewrite_to_hop_v4, to_backend, Copies, Ctx, Fwd, Now,
};
use crate::frag::FragTable;
use crate::model::{next_hop, Path};
use crate::port::{PacketBuf, RxIpChecksum};
use crate::wire::{classify_tagged_ipv4_udp, classify_untagged_ipv4_udp, Ipv4Udp};

use super::memo::{MemoSeed, Parked, RouteMemo};

/// Processes a received burst in place: forwarded buffers are compacted to the front of
/// `rx` (a pointer swap, only once something was dropped); returns (bytes received, bytes
/// to transmit, buffers to transmit). `NIC`: trust the NIC's "IPv4 header checksum good".
///
/// Runs of the common case go through [`common_run`], one call per run, one instance per
/// path of the memo's route (DR or NAT); the frame a run stops at (another kind of frame, or
/// a VIP whose route is of the other kind or has no hops) goes to [`process_slow`], which may
/// switch the memo, and the next run starts after it. The memo is copied into a local for
/// the burst and handed back around every such call: a memo reached through a pointer that
/// an out-of-line call receives stays in memory, and every packet then loaded and stored its
/// position and counts. A loop per path, rather than one call per frame deciding every kind
/// or one loop for both paths, keeps each loop to what its path needs (see
/// docs/benchmarks.md).
#[inline(always)]
pub(super) fn deal<'s, B: PacketBuf, const NIC: bool>(
    rx: &mut [B],
    ctx: &Ctx<'_, 's>,
    cursors: &mut [u32],
    frags: &mut FragTable,
    now: &mut Now,
    memo: &mut RouteMemo<'s>,
    copies: &mut Copies,
) -> (usize, usize, usize) {
    let mut d = Dealt::default();
    let mut m = *memo;
    let mut i = 0;
    loop {
        let (next, classified) = match m.route.path {
            Path::Dr => common_run::<B, NIC, false>(rx, i, ctx, cursors, &mut m, &mut d),
            Path::NatV4 => common_run::<B, NIC, true>(rx, i, ctx, cursors, &mut m, &mut d),
            Path::General => (i, false),
        };
        i = next;
        let Some(buf) = rx.get_mut(i) else { break };
        let verified = NIC && buf.rx_ip_checksum() == RxIpChecksum::Good;
        let frame = buf.data_mut();
        let len = frame.len();
        d.rx_bytes += len;
        d.parked.release(cursors, ctx.c);
        *memo = m;
        let planned = copies.len();
        let v = process_slow(
            frame, verified, classified, ctx, cursors, frags, now, memo, copies,
        );
        m = *memo;
        // Headers grown in front (a tunnel, an ICMP answer) change the length sent.
        let (v, len) = match v {
            Ok(Fwd::Grow(g)) => match g.apply(buf) {
                Ok(sent) => (Ok(Fwd::Tx), sent),
                Err(reason) => (Err(reason), len),
            },
            v => (v, len),
        };
        if copies.len() > planned {
            copies.settle(planned, matches!(v, Ok(Fwd::Tx)).then_some(d.kept));
        }
        d.settle(rx, i, len, v, ctx.c);
        i += 1;
    }
    d.parked.release(cursors, ctx.c);
    *memo = m;
    (d.rx_bytes, d.tx_bytes, d.kept)
}

/// Deals `rx[i..]` while each frame is the common case: an untagged IPv4 datagram to a VIP
/// whose route has hops and is DR, or NAT when `NAT` (the memo's VIP, or another one of the
/// same kind, which the memo then switches to). Returns the index of the first frame that is
/// not, untouched, or `rx.len()`, and whether that frame passed
/// [`classify_untagged_ipv4_udp`] (its header checksum is then verified).
///
/// Out of line (one call per run, not per frame), so that the loop has the registers to
/// itself: inlined into the worker's poll, its register allocation, and with it its cost per
/// packet, changed with every edit anywhere in the poll (see docs/benchmarks.md). The memo
/// is copied in and out for the same reason as in [`deal`].
#[inline(never)]
fn common_run<'s, B: PacketBuf, const NIC: bool, const NAT: bool>(
    rx: &mut [B],
    mut i: usize,
    ctx: &Ctx<'_, 's>,
    cursors: &mut [u32],
    memo: &mut RouteMemo<'s>,
    d: &mut Dealt<'s>,
) -> (usize, bool) {
    let path = if NAT { Path::NatV4 } else { Path::Dr };
    let mut m = *memo;
    // Frames the run keeps for one VIP all add the same length to the bytes received,
    // transmitted and counted for the VIP, and one to its packets: summed once here and added
    // to the four when the VIP changes and after the run (fewer additions, and two registers
    // fewer in the loop).
    let (mut kept, mut since, mut bytes) = (d.kept, d.kept, 0);
    let mut classified = false;
    while let Some(buf) = rx.get_mut(i) {
        let verified = NIC && buf.rx_ip_checksum() == RxIpChecksum::Good;
        let frame = buf.data_mut();
        let Some(h) = classify_untagged_ipv4_udp(frame, verified) else {
            break;
        };
        let key = RouteMemo::key(&h);
        if key != m.key {
            // Datagrams to several VIPs interleave: another VIP of this run's kind is switched
            // to here, without leaving the run, by a swap with its parked memo, else by a
            // lookup. Inline, because a switch through `process_slow`, or through a cold call
            // handing the memo over in `memo`, costs several times as much (see
            // docs/benchmarks.md).
            m.packets += (kept - since) as u64;
            m.bytes += bytes;
            d.rx_bytes += bytes;
            d.tx_bytes += bytes;
            (since, bytes) = (kept, 0);
            match d.parked.find(key) {
                Some(j) => {
                    debug_assert_eq!(d.parked.slots[j].route.path, path, "parked by another run");
                    std::mem::swap(&mut m, &mut d.parked.slots[j]);
                }
                None => match ctx.snap.route_v4(h.dst_ip, h.dst_port) {
                    Some(r) if r.path == path => {
                        let next = RouteMemo::resume(MemoSeed { key, route: r }, ctx.snap, cursors);
                        d.parked
                            .park(std::mem::replace(&mut m, next), cursors, ctx.c);
                    }
                    _ => {
                        classified = true;
                        break;
                    }
                },
            }
        }
        let Some(hop) = next_hop(m.hops, &mut m.cursor) else {
            classified = true;
            break;
        };
        let len = frame.len();
        // The path as a constant: each instance holds only what its rewrite needs.
        if let Err(reason) = rewrite_to_hop_v4(frame, &h, hop, m.route.id, NAT, ctx) {
            // NAT only (a TTL at its end): received and counted for the VIP, then dropped.
            d.rx_bytes += len;
            m.count(len);
            ctx.c.drop_packet(reason);
            i += 1;
            continue;
        }
        if kept != i {
            rx.swap(kept, i);
        }
        kept += 1;
        bytes += len;
        i += 1;
    }
    m.packets += (kept - since) as u64;
    m.bytes += bytes;
    d.rx_bytes += bytes;
    d.tx_bytes += bytes;
    d.kept = kept;
    *memo = m;
    (i, classified)
}

/// What [`deal`] has done with a burst so far.
#[derive(Debug, Default)]
struct Dealt<'s> {
    rx_bytes: usize,
    tx_bytes: usize,
    /// Buffers kept for transmission, at the front of the burst.
    kept: usize,
    parked: Parked<'s>,
}

impl Dealt<'_> {
    /// Acts on the verdict `v` for `rx[i]`, of `len` bytes: keeps it (moved to the front) or
    /// counts its drop.
    #[inline(always)]
    fn settle<B>(
        &mut self,
        rx: &mut [B],
        i: usize,
        len: usize,
        v: Result<Fwd, DropReason>,
        c: &WorkerCounters,
    ) {
        match v {
            Ok(Fwd::Tx) => {
                if self.kept != i {
                    rx.swap(self.kept, i);
                }
                self.kept += 1;
                self.tx_bytes += len;
            }
            Ok(Fwd::Consumed) => {}
            // `deal` applied it and settles what it became.
            Ok(Fwd::Grow(_)) => debug_assert!(false, "grown before settling"),
            Err(reason) => c.drop_packet(reason),
        }
    }
}

/// Decides and rewrites one frame in place, for every frame [`deal`]'s common case did not
/// take: another VIP than the memo's, a route without hops, or another kind of frame.
///
/// A whole IPv4 UDP datagram without options, untagged or with one 802.1Q tag, goes through a
/// path specialised for it, on integers ([`process_v4`]); every other frame through
/// [`process_general`], which classifies it fully. All reach the same decisions and the same
/// bytes (`worker::tests` checks it frame by frame): the split only keeps the general enum,
/// `SocketAddr`s and the rarer kinds of packet off the datagram path (see
/// docs/benchmarks.md). Out of line, apart from the common case's loop ([`common_run`]), so
/// the two kinds of header need no separate copies here (in the loop, one path for both
/// spilled the parsed header to the stack).
#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn process_slow<'s>(
    frame: &mut [u8],
    header_verified: bool,
    classified: bool,
    ctx: &Ctx<'_, 's>,
    cursors: &mut [u32],
    frags: &mut FragTable,
    now: &mut Now,
    memo: &mut RouteMemo<'s>,
    copies: &mut Copies,
) -> Result<Fwd, DropReason> {
    // Classified again rather than handed over from the common case's test: a parsed
    // header passed to this call would be built on the stack ahead of that test, for every
    // packet. `classified`: that test recognised the frame, so its
    // header checksum is known to be good and is not summed twice.
    let h = match classify_untagged_ipv4_udp(frame, header_verified || classified) {
        Some(h) => h,
        None => match classify_tagged_ipv4_udp(frame, header_verified) {
            Some(h) => h,
            None => {
                // The general path reads and advances the cursors itself: the memo's
                // position goes back first, and is read again after.
                memo.release(cursors, ctx.c);
                return process_general(frame, ctx, cursors, frags, now, copies);
            }
        },
    };
    process_v4(frame, h, ctx, cursors, frags, now, memo, copies)
}

/// [`process_slow`] for a whole IPv4 UDP datagram without options, `h`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn process_v4<'s>(
    frame: &mut [u8],
    h: Ipv4Udp,
    ctx: &Ctx<'_, 's>,
    cursors: &mut [u32],
    frags: &mut FragTable,
    now: &mut Now,
    memo: &mut RouteMemo<'s>,
    copies: &mut Copies,
) -> Result<Fwd, DropReason> {
    let key = RouteMemo::key(&h);
    if memo.key != key {
        match ctx.snap.route_v4(h.dst_ip, h.dst_port) {
            Some(r) => memo.switch(key, r, ctx.snap, cursors, ctx.c),
            None => return from_backend(frame, h, None, ctx, frags, now),
        }
    }
    let r = memo.route;
    if r.path == Path::General {
        // The memo holds no position for a route without hops: `to_backend` reads and
        // advances the VIP's cursor itself.
        let svc = ctx.snap.service(r.id).ok_or(DropReason::NoVip)?;
        return to_backend(frame, &h, None, r.id, svc, ctx, cursors, frags, now, copies);
    }
    to_hop_v4(frame, &h, ctx, memo)
}

/// [`to_backend`] for an IPv4 datagram to the memo's VIP, whose route has hops (rr or wrr,
/// every backend in rotation resolved): the same decisions, counters and bytes, from the
/// flat [`crate::model::Hop`] records instead of the service, its scheduler and its
/// backends (`worker::tests` compares both paths frame by frame).
#[inline(always)]
fn to_hop_v4(
    frame: &mut [u8],
    h: &Ipv4Udp,
    ctx: &Ctx,
    memo: &mut RouteMemo,
) -> Result<Fwd, DropReason> {
    let route = memo.route;
    let hop = memo.next(frame.len()).ok_or(DropReason::NoHealthyBackend)?;
    rewrite_to_hop_v4(frame, h, hop, route.id, route.path == Path::NatV4, ctx)?;
    Ok(Fwd::Tx)
}
