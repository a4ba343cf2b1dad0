//! The route a burst remembers between its datagrams ([`RouteMemo`]), what it leaves for the
//! next burst ([`MemoSeed`]) and the memos parked while datagrams to several VIPs interleave
//! ([`Parked`]).

use crate::counters::WorkerCounters;
use crate::model::{next_hop, Hop, Snapshot, VipRoute};
use crate::wire::Ipv4Udp;

/// The last VIP route the fast path looked up in this burst: its hops, the worker's position
/// in them, and the VIP packets and bytes counted for it but not yet added to the shared
/// counters. Datagrams in a burst mostly go to one VIP: reusing its route saves the table
/// lookup, keeping its position here saves the cursor array's load, bounds check and store,
/// and adding its counts once per run of packets saves a counter update per packet (see
/// docs/benchmarks.md). Lives for one burst, so it never
/// outlives the snapshot it was read from; [`RouteMemo::flush`] must run before the burst
/// ends, and the next burst starts from its [`MemoSeed`].
#[derive(Debug, Clone, Copy)]
pub(super) struct RouteMemo<'s> {
    /// [`RouteMemo::key`] of `route`'s VIP, or `u64::MAX` (no IPv4 key is all ones).
    pub(super) key: u64,
    pub(super) route: VipRoute,
    /// `route`'s hops ([`Snapshot::hops`]); empty for [`Path::General`].
    pub(super) hops: &'s [Hop],
    /// The worker's position in `hops`: its cursor for the VIP, which the cursor array gets
    /// back from [`RouteMemo::flush`]. Unused while `hops` is empty.
    pub(super) cursor: u32,
    pub(super) packets: u64,
    pub(super) bytes: usize,
}

impl Default for RouteMemo<'_> {
    fn default() -> Self {
        Self {
            key: u64::MAX,
            route: VipRoute::default(),
            hops: &[],
            cursor: 0,
            packets: 0,
            bytes: 0,
        }
    }
}

/// What a [`RouteMemo`] leaves for the next burst: its VIP's key and route, valid while the
/// worker keeps the snapshot they were read from. Starting a burst from it spares its first
/// datagram the slow path and the table lookup.
#[derive(Debug, Clone, Copy)]
pub(super) struct MemoSeed {
    /// [`RouteMemo::key`], or `u64::MAX`: no route.
    pub(super) key: u64,
    pub(super) route: VipRoute,
}

impl Default for MemoSeed {
    fn default() -> Self {
        Self {
            key: u64::MAX,
            route: VipRoute::default(),
        }
    }
}

impl<'s> RouteMemo<'s> {
    /// The VIP key of `h`'s destination, from the address and port as the frame holds them
    /// (big-endian): the byte swaps to host order and back cancel, so the common case
    /// compares the loaded words as they are.
    #[inline(always)]
    pub(super) fn key(h: &Ipv4Udp) -> u64 {
        crate::model::addr_table::fold_v4(h.dst_ip.to_be(), h.dst_port.to_be())
    }

    /// A memo holding `seed`'s route, read again from `snap` (the snapshot the seed came
    /// from) with the worker's position from `cursors`.
    #[inline]
    pub(super) fn resume(seed: MemoSeed, snap: &'s Snapshot, cursors: &[u32]) -> Self {
        if seed.key == u64::MAX {
            return Self::default();
        }
        Self {
            key: seed.key,
            route: seed.route,
            hops: snap.hops(seed.route),
            cursor: cursors
                .get(usize::from(seed.route.id.0))
                .copied()
                .unwrap_or(0),
            packets: 0,
            bytes: 0,
        }
    }

    /// What the next burst may start from.
    #[inline]
    pub(super) fn seed(&self) -> MemoSeed {
        MemoSeed {
            key: self.key,
            route: self.route,
        }
    }

    /// Remembers `route` (for `key`), first handing back what it held for the previous one.
    #[inline]
    pub(super) fn switch(
        &mut self,
        key: u64,
        route: VipRoute,
        snap: &'s Snapshot,
        cursors: &mut [u32],
        c: &WorkerCounters,
    ) {
        self.flush(cursors, c);
        *self = Self::resume(MemoSeed { key, route }, snap, cursors);
    }

    /// The next hop of the remembered route, counting one packet of `len` bytes for its VIP.
    #[inline(always)]
    pub(super) fn next(&mut self, len: usize) -> Option<&'s Hop> {
        self.count(len);
        next_hop(self.hops, &mut self.cursor)
    }

    /// Counts one packet of `len` bytes for the remembered VIP.
    #[inline(always)]
    pub(super) fn count(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len;
    }

    /// Adds the pending counts to the shared counters and gives the cursor array the
    /// position.
    #[inline]
    pub(super) fn flush(&mut self, cursors: &mut [u32], c: &WorkerCounters) {
        if self.packets > 0 {
            c.vip_packets(self.route.id, self.packets, self.bytes);
            self.packets = 0;
            self.bytes = 0;
        }
        self.store_cursor(cursors);
    }

    /// Gives the cursor array the position in the remembered route's hops, if any.
    #[inline]
    pub(super) fn store_cursor(&self, cursors: &mut [u32]) {
        if !self.hops.is_empty() {
            if let Some(slot) = cursors.get_mut(usize::from(self.route.id.0)) {
                *slot = self.cursor;
            }
        }
    }

    /// [`RouteMemo::flush`], and forgets the route.
    #[inline]
    pub(super) fn release(&mut self, cursors: &mut [u32], c: &WorkerCounters) {
        self.flush(cursors, c);
        *self = Self::default();
    }
}

/// Memos a run of the common case switched away from, for datagrams to several VIPs that
/// interleave: switching back to one of them swaps two memos instead of handing one's counts
/// and position back, looking the VIP up and reading the other's (see docs/benchmarks.md).
///
/// A parked VIP's position is in its memo, not in the cursor array, so nothing else may
/// read or move that VIP's cursor while it is parked: `burst::deal` hands every parked memo back
/// ([`Parked::release`]) before the slow path, which reads the cursor array, and at the end
/// of the burst. No VIP is ever in two memos: a run parks only the memo it leaves, and
/// takes a VIP from here before it looks one up. Every parked memo is of the kind of the run
/// that parked it (DR or NAT), since the slots are empty again before another run starts.
#[derive(Debug, Default)]
pub(super) struct Parked<'s> {
    /// Empty slots hold the default memo (key `u64::MAX`, which no VIP has).
    pub(super) slots: [RouteMemo<'s>; PARKED],
}

/// VIPs parked beside the run's own: with up to eight VIPs of one kind interleaving, every
/// switch is a swap, and one or two VIPs pay nothing for the extra slots (the scan runs only
/// when the VIP changes, and stops at the first match). Once the slots are full, a switch to
/// a ninth VIP hands the memo it leaves back instead of parking it: the VIPs parked first
/// stay, so the other VIPs pay the full switch (as before parking existed) and the parked
/// ones still swap. Evicting the oldest instead would make every switch a full one plus an
/// eviction whenever more VIPs take turns than there are slots (see docs/benchmarks.md).
pub(super) const PARKED: usize = 7;

impl<'s> Parked<'s> {
    /// The slot parking the VIP with [`RouteMemo::key`] `key`.
    #[inline]
    pub(super) fn find(&self, key: u64) -> Option<usize> {
        self.slots.iter().position(|m| m.key == key)
    }

    /// Parks `m` in a free slot, or hands its counts and position back if there is none.
    #[inline]
    pub(super) fn park(&mut self, mut m: RouteMemo<'s>, cursors: &mut [u32], c: &WorkerCounters) {
        match self.slots.iter_mut().find(|s| s.key == u64::MAX) {
            Some(slot) => *slot = m,
            None => m.flush(cursors, c),
        }
    }

    /// Hands every parked memo's counts and position back, and empties the slots.
    #[inline]
    pub(super) fn release(&mut self, cursors: &mut [u32], c: &WorkerCounters) {
        for m in &mut self.slots {
            if m.key != u64::MAX {
                m.release(cursors, c);
            }
        }
    }
}
