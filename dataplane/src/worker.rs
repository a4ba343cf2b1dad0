//! The per-core worker loop, generic over a [`Port`].
//!
//! One iteration ([`Worker::poll`]): receive a burst, apply the newest snapshot the control
//! thread sent (a non-blocking `try_recv`, so a swap happens only between two bursts, and
//! the burst just received is dealt with the newest state), process every packet of it,
//! transmit the burst. Per packet: [`parse_udp`], VIP lookup,
//! schedule, rewrite in place, count. Nothing in [`Worker::poll`] allocates, locks or makes a
//! system call of its own (the port may make one per burst).
//!
//! Beyond UDP to a VIP and NAT replies, the worker steers IP fragments after their first
//! fragment ([`crate::frag`]), answers ARP/NDP for its VIPs and queues the rest for the
//! control thread ([`crate::neigh`]), and translates ICMP errors about NAT flows
//! ([`crate::icmp`]). NAT decrements the TTL / hop limit (DR does not); docs/network.md has
//! the policies.
//!
//! A packet that cannot be forwarded goes back to the port and is counted under its
//! [`DropReason`]. A backend that left the rotation in snapshot N receives nothing from the
//! first burst processed after N arrived: the scheduler that could pick it is gone with the
//! old snapshot, and there is no connection table that could remember it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::counters::{DropReason, SharedCounters, WorkerCounters};
use crate::frag::{FragAction, FragTable};
use crate::model::flow::{flow_hash, NatFlows};
use crate::model::PassiveSink;
use crate::model::{
    next_hop, Hop, MacAddr, Mode, Path, ReverseNat, Service, Snapshot, VipId, VipRoute,
};
use crate::neigh::{self, WorkerNeigh};
use crate::port::{PacketBuf, Port, RxIpChecksum};
use crate::rewrite::{
    decrement_ttl, eth_src_word, nat_fragment, nat_from_backend, nat_to_backend, nat_to_backend_v4,
    nat_to_backend_v4_ttl, set_mac_words, set_macs,
};
use crate::wire::{
    classify, classify_tagged_ipv4_udp, classify_untagged_ipv4_udp, vlan, FragInfo, IpFrame,
    Ipv4Udp, Packet, UdpFrame, ETHERTYPE_IPV4,
};

/// Settings of one worker, fixed at start.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Packets per receive burst.
    pub burst: usize,
    /// Next hop for NAT replies toward clients (until neighbour resolution replaces it).
    pub gateway_mac: MacAddr,
    /// What [`Worker::run`] does while its port has nothing to receive.
    pub idle: Idle,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            burst: 32,
            gateway_mac: MacAddr::default(),
            idle: Idle::default(),
        }
    }
}

/// What a poll-mode worker does while its port stays empty, so that an idle appliance does
/// not burn its cores. The price is latency on the first packet after a quiet spell, at most
/// about `max_sleep` plus the kernel's timer slack (docs/benchmarks.md has the figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Never back off: every core at 100 %, the lowest latency.
    Off,
    /// Spin, then pause, then sleep, each step after so many empty polls in a row.
    Backoff {
        /// Empty polls spent spinning (one CPU pause hint each) before backing off.
        spin_polls: u32,
        /// Further empty polls that each pause for [`PAUSES_PER_POLL`] hints (a few µs).
        pause_polls: u32,
        /// Longest sleep between two polls; sleeps start at [`MIN_SLEEP`] and double.
        max_sleep: Duration,
    },
}

/// CPU pause hints per poll in the pause phase of [`Idle::Backoff`].
pub const PAUSES_PER_POLL: u32 = 64;
/// First sleep of the sleep phase of [`Idle::Backoff`].
pub const MIN_SLEEP: Duration = Duration::from_micros(10);

impl Default for Idle {
    fn default() -> Self {
        Self::Backoff {
            spin_polls: 4096,
            pause_polls: 4096,
            max_sleep: Duration::from_micros(100),
        }
    }
}

/// What to do after a poll (the sans-I/O half of the idle back-off; [`Worker::run`] acts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleAction {
    /// Poll again at once (one pause hint).
    Spin,
    /// Pause for `n` hints, then poll.
    Pause(u32),
    /// Sleep, then poll.
    Sleep(Duration),
}

/// Counts empty polls and says how to wait; any packet resets it.
#[derive(Debug, Clone)]
pub struct IdleBackoff {
    policy: Idle,
    empty: u32,
    sleep: Duration,
}

impl IdleBackoff {
    /// A back-off following `policy`.
    pub fn new(policy: Idle) -> Self {
        Self {
            policy,
            empty: 0,
            sleep: MIN_SLEEP,
        }
    }

    /// Call after each poll with the packets it received.
    #[inline]
    pub fn after_poll(&mut self, received: usize) -> IdleAction {
        if received > 0 {
            self.empty = 0;
            self.sleep = MIN_SLEEP;
            return IdleAction::Spin;
        }
        let Idle::Backoff {
            spin_polls,
            pause_polls,
            max_sleep,
        } = self.policy
        else {
            return IdleAction::Spin;
        };
        self.empty = self.empty.saturating_add(1);
        if self.empty <= spin_polls {
            IdleAction::Spin
        } else if self.empty - spin_polls <= pause_polls {
            IdleAction::Pause(PAUSES_PER_POLL)
        } else {
            let d = self.sleep.min(max_sleep);
            self.sleep = (self.sleep * 2).min(max_sleep.max(MIN_SLEEP));
            IdleAction::Sleep(d)
        }
    }
}

/// A poll-mode worker: one port queue, one snapshot pointer, its own cursors and counters.
#[derive(Debug)]
pub struct Worker<P: Port> {
    port: P,
    settings: WorkerSettings,
    snap: Arc<Snapshot>,
    updates: Receiver<Arc<Snapshot>>,
    counters: SharedCounters,
    nat_flows: Arc<NatFlows>,
    /// Round-robin position per VIP, indexed by [`VipId`]; this worker's alone.
    cursors: Vec<u32>,
    rx: Vec<P::Buf>,
    tx: Vec<P::Buf>,
    /// Where the first fragment of each datagram in flight went.
    frags: FragTable,
    /// ARP/NDP: own addresses and the queues to and from the control thread.
    neigh: WorkerNeigh,
    /// Where host/port unreachables about passive NAT services are reported.
    passive: Option<PassiveSink>,
    /// The last burst's route memo, for the next burst to start from ([`MemoSeed`]);
    /// dropped with the snapshot it came from.
    memo_seed: MemoSeed,
}

impl<P: Port> Worker<P> {
    /// A worker over `port`, starting with `snap`, listening for new snapshots on `updates`.
    /// `nat_flows` is shared by all workers of the balancer.
    pub fn new(
        port: P,
        settings: WorkerSettings,
        snap: Arc<Snapshot>,
        updates: Receiver<Arc<Snapshot>>,
        counters: SharedCounters,
        nat_flows: Arc<NatFlows>,
    ) -> Self {
        let burst = settings.burst.max(1);
        let mut w = Self {
            port,
            settings: WorkerSettings { burst, ..settings },
            snap: Arc::new(Snapshot::default()),
            updates,
            counters,
            nat_flows,
            cursors: Vec::new(),
            rx: Vec::with_capacity(burst),
            tx: Vec::with_capacity(burst),
            frags: FragTable::default(),
            neigh: WorkerNeigh::default(),
            passive: None,
            memo_seed: MemoSeed::default(),
        };
        w.apply(snap);
        w
    }

    /// The port, for tests and statistics.
    pub fn port(&self) -> &P {
        &self.port
    }

    /// The port, mutably (tests push packets through it).
    pub fn port_mut(&mut self) -> &mut P {
        &mut self.port
    }

    /// Connects the worker to the neighbour logic (see [`crate::neigh`]).
    pub fn set_neigh(&mut self, neigh: WorkerNeigh) {
        self.neigh = neigh;
    }

    /// Reports ICMP host/port unreachables about passive NAT services to `sink` (bounded;
    /// a full channel is counted in `passive_reports_lost`); see [`crate::icmp`].
    pub fn set_passive_reports(&mut self, sink: Option<PassiveSink>) {
        self.passive = sink;
    }

    /// Replaces the fragment table (size and lifetime; see [`crate::frag`]).
    pub fn set_frag_table(&mut self, frags: FragTable) {
        self.frags = frags;
    }

    /// The snapshot in use.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snap
    }

    fn apply(&mut self, snap: Arc<Snapshot>) {
        // Cursors survive a swap (rotation continues where it was); slots only grow, and
        // growing happens here, between bursts, never on the packet path.
        if self.cursors.len() < snap.vip_slots() {
            self.cursors.resize(snap.vip_slots(), 0);
        }
        self.snap = snap;
        // Its route belongs to the snapshot just replaced.
        self.memo_seed = MemoSeed::default();
        self.counters.snapshots_applied.add(1);
    }

    /// Applies the newest pending snapshot, if any. Older ones are skipped: only the latest
    /// state matters.
    #[inline]
    pub fn check_updates(&mut self) {
        // Almost always nothing is pending, and `try_recv` on an empty unbounded channel runs
        // a full fence (`lock or` on x86), which waits for every store the burst left in the
        // store buffer; `is_empty` is two plain loads there. A snapshot sent while they run
        // is seen by the next burst's check; neither way orders it against a datagram.
        if self.updates.is_empty() {
            return;
        }
        let mut newest = None;
        while let Ok(s) = self.updates.try_recv() {
            newest = Some(s);
        }
        if let Some(s) = newest {
            self.apply(s);
        }
    }

    /// One loop iteration; returns the number of packets received.
    pub fn poll(&mut self) -> usize {
        self.poll_inner(Now(None))
    }

    /// Like [`Worker::poll`], with the caller's clock (fragment table lifetimes); tests use
    /// it to simulate time.
    pub fn poll_at(&mut self, now: Instant) -> usize {
        self.poll_inner(Now(Some(now)))
    }

    fn poll_inner(&mut self, mut now: Now) -> usize {
        if self.neigh.from_control.is_some() {
            self.send_neigh_frames();
        }
        let n = self.port.rx_burst(&mut self.rx, self.settings.burst);
        // Updates are applied after the receive, right before the burst is processed: a
        // worker that loses its core between the two would otherwise deal packets that
        // arrived after a backend was declared down with the snapshot from before (seen in
        // the namespace failover test: 4 datagrams 2.5 ms after the decision).
        self.check_updates();
        if n == 0 {
            return 0;
        }
        let c = &self.counters;
        c.rx_bursts.add(1);
        let ctx = Ctx::new(
            &self.snap,
            &self.nat_flows,
            self.port.mac(),
            self.settings.gateway_mac,
            c,
            &self.neigh,
            self.passive.as_ref(),
        );
        // The burst is processed in place: forwarded buffers are compacted to the front of
        // `rx` (a pointer swap, only once something was dropped), the rest are freed after
        // the loop, and `rx` then becomes the TX burst by swapping the two `Vec`s. Bytes are
        // counted in the same pass. Moving each buffer from one `Vec` to the other and two
        // more passes over the burst for the byte counts cost ~20 instructions per packet
        // (docs/benchmarks.md).
        debug_assert!(
            self.tx.is_empty(),
            "send_neigh_frames transmitted its frames"
        );
        // The two instances differ only in whether they read the NIC's checksum verdict:
        // asked once per burst, and a port without the offload runs the loop it always had
        // (a per-packet test cost ~20 instructions per packet in the memory-port benchmark,
        // from register pressure rather than the test itself).
        let (cursors, frags) = (&mut self.cursors[..], &mut self.frags);
        let mut memo = RouteMemo::resume(self.memo_seed, &self.snap, cursors);
        let (rx_bytes, tx_bytes, kept) = if self.port.rx_ip_checksum_offload() {
            deal::<_, true>(&mut self.rx, &ctx, cursors, frags, &mut now, &mut memo)
        } else {
            deal::<_, false>(&mut self.rx, &ctx, cursors, frags, &mut now, &mut memo)
        };
        memo.flush(cursors, c);
        self.memo_seed = memo.seed();
        c.rx_packets.add(n as u64);
        c.rx_bytes.add(rx_bytes as u64);
        for buf in self.rx.drain(kept..) {
            self.port.free(buf);
        }
        std::mem::swap(&mut self.rx, &mut self.tx);
        self.transmit(tx_bytes);
        n
    }

    /// Transmits `self.tx` (`tx_bytes` in all) and counts what the port took or refused.
    fn transmit(&mut self, tx_bytes: usize) {
        if self.tx.is_empty() {
            return;
        }
        let c = &self.counters;
        let want = self.tx.len();
        let sent = self.port.tx_burst(&mut self.tx);
        c.tx_packets.add(sent as u64);
        // Bytes of a partially refused burst are approximated by the mean length. The
        // division (tens of cycles) only then.
        c.tx_bytes.add(if sent == want {
            tx_bytes as u64
        } else {
            (tx_bytes * sent / want) as u64
        });
        for _ in sent..want {
            c.drop_packet(DropReason::TxFull);
        }
    }

    /// Sends up to one burst of frames the control thread's neighbour logic queued.
    fn send_neigh_frames(&mut self) {
        let Some(rx) = &self.neigh.from_control else {
            return;
        };
        // Nothing queued, the usual case: no `try_recv` and its fence (see `check_updates`).
        if rx.is_empty() {
            return;
        }
        let mut bytes = 0;
        for _ in 0..self.settings.burst {
            let Ok(f) = rx.try_recv() else { break };
            match self.port.alloc_frame(f.bytes()) {
                Some(b) => {
                    bytes += b.data().len();
                    self.tx.push(b);
                    self.counters.neigh_sent.add(1);
                }
                None => self.counters.drop_packet(DropReason::TxFull),
            }
        }
        self.transmit(bytes);
    }

    /// Polls until `stop` is set, backing off per [`WorkerSettings::idle`] while idle.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut idle = IdleBackoff::new(self.settings.idle);
        while !stop.load(Ordering::Relaxed) {
            let n = self.poll();
            match idle.after_poll(n) {
                IdleAction::Spin => {
                    if n == 0 {
                        std::hint::spin_loop();
                    }
                }
                IdleAction::Pause(k) => {
                    for _ in 0..k {
                        std::hint::spin_loop();
                    }
                }
                // Only after thousands of empty polls: never on the packet path.
                IdleAction::Sleep(d) => std::thread::sleep(d),
            }
        }
    }
}

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
/// position and counts. In the DPDK micro-benchmark (DR, docs/benchmarks.md) one call per
/// frame deciding every kind took 19 instructions per packet more, and one run loop for both
/// paths 7 more (NAT: 11).
#[inline(always)]
fn deal<'s, B: PacketBuf, const NIC: bool>(
    rx: &mut [B],
    ctx: &Ctx<'_, 's>,
    cursors: &mut [u32],
    frags: &mut FragTable,
    now: &mut Now,
    memo: &mut RouteMemo<'s>,
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
        let v = process_slow(frame, verified, classified, ctx, cursors, frags, now, memo);
        m = *memo;
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
/// itself: inlined into the worker's poll, its register allocation, and with it a few
/// instructions per packet, changed with every edit anywhere in the poll (±5 in the DPDK
/// micro-benchmark). The memo is copied in and out for the same reason as in [`deal`].
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
    // to the four when the VIP changes and after the run (3 instructions per packet less, and
    // two registers fewer in the loop).
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
            // to here, without leaving the run, by a swap with its parked memo (DR: 42
            // instructions per switch in the DPDK micro-benchmark, `--vips 2`), else by a
            // lookup (~105). Through `process_slow` a switch cost 330. This branch costs one
            // VIP 4 to 11 instructions per packet, depending on register allocation. Out of
            // line (a cold call with the memo handed over through `memo`), it cost one VIP 10
            // and two 155.
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

/// Memos a run of the common case switched away from, for datagrams to several VIPs that
/// interleave: switching back to one of them swaps two memos instead of handing one's counts
/// and position back, looking the VIP up and reading the other's (~105 instructions per
/// switch in the DPDK micro-benchmark with `--vips 2`, docs/benchmarks.md).
///
/// A parked VIP's position is in its memo, not in the cursor array, so nothing else may
/// read or move that VIP's cursor while it is parked: [`deal`] hands every parked memo back
/// ([`Parked::release`]) before the slow path, which reads the cursor array, and at the end
/// of the burst. No VIP is ever in two memos: a run parks only the memo it leaves, and
/// takes a VIP from here before it looks one up. Every parked memo is of the kind of the run
/// that parked it (DR or NAT), since the slots are empty again before another run starts.
#[derive(Debug, Default)]
struct Parked<'s> {
    /// Empty slots hold the default memo (key `u64::MAX`, which no VIP has).
    slots: [RouteMemo<'s>; PARKED],
}

/// VIPs parked beside the run's own. With up to eight VIPs of one kind interleaving, every
/// switch is a swap. Seven slots rather than three: DR with `--vips 8` takes 331 instructions
/// per packet instead of 355, and one or two VIPs cost the same (the scan runs only when the
/// VIP changes, and stops at the first match). Once the slots are full, a switch to a ninth
/// VIP hands the memo it leaves back instead of parking it. The VIPs parked first stay, so
/// the other VIPs pay the full switch (as before parking existed) and the parked ones still
/// swap. Evicting the oldest instead made every switch a full one plus an eviction when five
/// VIPs took turns with three slots (DR, 422 instructions per packet against 358 without
/// parking).
const PARKED: usize = 7;

impl<'s> Parked<'s> {
    /// The slot parking the VIP with [`RouteMemo::key`] `key`.
    #[inline]
    fn find(&self, key: u64) -> Option<usize> {
        self.slots.iter().position(|m| m.key == key)
    }

    /// Parks `m` in a free slot, or hands its counts and position back if there is none.
    #[inline]
    fn park(&mut self, mut m: RouteMemo<'s>, cursors: &mut [u32], c: &WorkerCounters) {
        match self.slots.iter_mut().find(|s| s.key == u64::MAX) {
            Some(slot) => *slot = m,
            None => m.flush(cursors, c),
        }
    }

    /// Hands every parked memo's counts and position back, and empties the slots.
    #[inline]
    fn release(&mut self, cursors: &mut [u32], c: &WorkerCounters) {
        for m in &mut self.slots {
            if m.key != u64::MAX {
                m.release(cursors, c);
            }
        }
    }
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
                // A rewrite never changes a frame's length.
                self.tx_bytes += len;
            }
            Ok(Fwd::Consumed) => {}
            Err(reason) => c.drop_packet(reason),
        }
    }
}

/// The clock, read at most once per burst and only when a fragment needs it.
struct Now(Option<Instant>);

impl Now {
    #[inline]
    fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

/// What the worker does with a buffer it did not drop.
enum Fwd {
    /// Transmit it (rewritten in place).
    Tx,
    /// Free it without counting a drop (its content went to the control thread).
    Consumed,
}

/// Read-only state of one burst (`'s`: the snapshot's borrow, which a [`RouteMemo`] shares).
struct Ctx<'a, 's> {
    snap: &'s Snapshot,
    nat_flows: &'a NatFlows,
    port_mac: MacAddr,
    /// [`eth_src_word`] of `port_mac` before the IPv4 EtherType and before the 802.1Q TPID.
    eth_src_ipv4: u64,
    eth_src_8021q: u64,
    gateway_mac: MacAddr,
    c: &'a WorkerCounters,
    neigh: &'a WorkerNeigh,
    passive: Option<&'a PassiveSink>,
}

impl<'a, 's> Ctx<'a, 's> {
    fn new(
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
        }
    }

    /// Next hop toward clients: the resolved gateway, else the configured one.
    #[inline]
    fn gateway(&self, ipv6: bool) -> MacAddr {
        self.snap.gateway_mac(ipv6).unwrap_or(self.gateway_mac)
    }
}

/// Decides and rewrites one frame in place, for every frame [`deal`]'s common case did not
/// take: another VIP than the memo's, a route without hops, or another kind of frame.
///
/// A whole IPv4 UDP datagram without options, untagged or with one 802.1Q tag, goes through a
/// path specialised for it, on integers ([`process_v4`]); every other frame through
/// [`process_general`], which classifies it fully. All reach the same decisions and the same
/// bytes (tests below check it frame by frame): the split only keeps the general enum,
/// `SocketAddr`s and the rarer kinds of packet off the datagram path, about 150 instructions
/// per packet in the DR micro-benchmark (docs/benchmarks.md). Out of line, apart from the
/// common case's loop ([`common_run`]), so the two kinds of header need no separate copies
/// here (in the loop, one path for both spilled the parsed header: 16 instructions per
/// packet).
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
) -> Result<Fwd, DropReason> {
    // Classified again rather than handed over from the common case's test: a parsed
    // header passed to this call was built on the stack ahead of that test, for every packet
    // (~10 instructions per packet). `classified`: that test recognised the frame, so its
    // header checksum is known to be good and is not summed twice.
    let h = match classify_untagged_ipv4_udp(frame, header_verified || classified) {
        Some(h) => h,
        None => match classify_tagged_ipv4_udp(frame, header_verified) {
            Some(h) => h,
            None => {
                // The general path reads and advances the cursors itself: the memo's
                // position goes back first, and is read again after.
                memo.release(cursors, ctx.c);
                return process_general(frame, ctx, cursors, frags, now);
            }
        },
    };
    process_v4(frame, h, ctx, cursors, frags, now, memo)
}

/// [`process_slow`] for a whole IPv4 UDP datagram without options, `h`.
#[inline(always)]
fn process_v4<'s>(
    frame: &mut [u8],
    h: Ipv4Udp,
    ctx: &Ctx<'_, 's>,
    cursors: &mut [u32],
    frags: &mut FragTable,
    now: &mut Now,
    memo: &mut RouteMemo<'s>,
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
        return to_backend(frame, &h, None, r.id, svc, ctx, cursors, frags, now);
    }
    to_hop_v4(frame, &h, ctx, memo)
}

/// The last VIP route the fast path looked up in this burst: its hops, the worker's position
/// in them, and the VIP packets and bytes counted for it but not yet added to the shared
/// counters. Datagrams in a burst mostly go to one VIP: reusing its route saves the table
/// lookup, keeping its position here saves the cursor array's load, bounds check and store
/// (6–9 instructions per packet), and adding its counts once per run of packets saves a
/// counter update per packet (docs/benchmarks.md). Lives for one burst, so it never
/// outlives the snapshot it was read from; [`RouteMemo::flush`] must run before the burst
/// ends, and the next burst starts from its [`MemoSeed`].
#[derive(Debug, Clone, Copy)]
struct RouteMemo<'s> {
    /// [`RouteMemo::key`] of `route`'s VIP, or `u64::MAX` (no IPv4 key is all ones).
    key: u64,
    route: VipRoute,
    /// `route`'s hops ([`Snapshot::hops`]); empty for [`Path::General`].
    hops: &'s [Hop],
    /// The worker's position in `hops`: its cursor for the VIP, which the cursor array gets
    /// back from [`RouteMemo::flush`]. Unused while `hops` is empty.
    cursor: u32,
    packets: u64,
    bytes: usize,
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
/// datagram the slow path and the table lookup (with bursts of 32 from one VIP, about 5
/// instructions per packet in the DPDK micro-benchmark).
#[derive(Debug, Clone, Copy)]
struct MemoSeed {
    /// [`RouteMemo::key`], or `u64::MAX`: no route.
    key: u64,
    route: VipRoute,
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
    fn key(h: &Ipv4Udp) -> u64 {
        crate::model::addr_table::fold_v4(h.dst_ip.to_be(), h.dst_port.to_be())
    }

    /// A memo holding `seed`'s route, read again from `snap` (the snapshot the seed came
    /// from) with the worker's position from `cursors`.
    #[inline]
    fn resume(seed: MemoSeed, snap: &'s Snapshot, cursors: &[u32]) -> Self {
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
    fn seed(&self) -> MemoSeed {
        MemoSeed {
            key: self.key,
            route: self.route,
        }
    }

    /// Remembers `route` (for `key`), first handing back what it held for the previous one.
    #[inline]
    fn switch(
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
    fn next(&mut self, len: usize) -> Option<&'s Hop> {
        self.count(len);
        next_hop(self.hops, &mut self.cursor)
    }

    /// Counts one packet of `len` bytes for the remembered VIP.
    #[inline(always)]
    fn count(&mut self, len: usize) {
        self.packets += 1;
        self.bytes += len;
    }

    /// Adds the pending counts to the shared counters and gives the cursor array the
    /// position.
    #[inline]
    fn flush(&mut self, cursors: &mut [u32], c: &WorkerCounters) {
        if self.packets > 0 {
            c.vip_packets(self.route.id, self.packets, self.bytes);
            self.packets = 0;
            self.bytes = 0;
        }
        self.store_cursor(cursors);
    }

    /// Gives the cursor array the position in the remembered route's hops, if any.
    #[inline]
    fn store_cursor(&self, cursors: &mut [u32]) {
        if !self.hops.is_empty() {
            if let Some(slot) = cursors.get_mut(usize::from(self.route.id.0)) {
                *slot = self.cursor;
            }
        }
    }

    /// [`RouteMemo::flush`], and forgets the route.
    #[inline]
    fn release(&mut self, cursors: &mut [u32], c: &WorkerCounters) {
        self.flush(cursors, c);
        *self = Self::default();
    }
}

/// [`to_backend`] for an IPv4 datagram to the memo's VIP, whose route has hops (rr or wrr,
/// every backend in rotation resolved): the same decisions, counters and bytes, from the
/// flat [`crate::model::Hop`] records instead of the service, its scheduler and its
/// backends (tests below compare both paths frame by frame).
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

/// The rewrite of [`to_hop_v4`] once `hop` is chosen from the hops of VIP `vip` (NAT when
/// `nat`, else DR), and the backend's count.
#[inline(always)]
fn rewrite_to_hop_v4(
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
fn process_general(
    frame: &mut [u8],
    ctx: &Ctx,
    cursors: &mut [u32],
    frags: &mut FragTable,
    now: &mut Now,
) -> Result<Fwd, DropReason> {
    match classify(frame)? {
        Packet::Udp(f) => udp(frame, &f, None, ctx, cursors, frags, now),
        Packet::FirstFragment(f, info) => udp(frame, &f, Some(&info), ctx, cursors, frags, now),
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
trait Datagram: Copy {
    fn l3(&self) -> usize;
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
fn udp(
    frame: &mut [u8],
    f: &UdpFrame,
    frag: Option<&FragInfo>,
    ctx: &Ctx,
    cursors: &mut [u32],
    frags: &mut FragTable,
    now: &mut Now,
) -> Result<Fwd, DropReason> {
    match ctx.snap.lookup_addr(&f.dst()) {
        Some((vip_id, svc)) => to_backend(frame, f, frag, vip_id, svc, ctx, cursors, frags, now),
        None => from_backend(frame, *f, frag, ctx, frags, now),
    }
}

/// A datagram (or first fragment) to VIP `vip_id`: schedule, rewrite, count.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn to_backend<D: Datagram>(
    frame: &mut [u8],
    f: &D,
    frag: Option<&FragInfo>,
    vip_id: VipId,
    svc: &Service,
    ctx: &Ctx,
    cursors: &mut [u32],
    frags: &mut FragTable,
    now: &mut Now,
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
    Ok(Fwd::Tx)
}

/// A datagram (or first fragment) not for a VIP: maybe a NAT reply from a backend on its way
/// back to a client.
#[inline(never)]
fn from_backend<D: Datagram>(
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
        } => {
            ctx.c.vip_packet(vip, len);
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
    use crate::counters::WorkerCounters;
    use crate::model::sched::SchedulerKind;
    use crate::model::{Backend, BackendId, Health, ServiceSpec, VipKey};
    use crate::port::memory::MemoryPort;
    use crate::testkit::frames::{checksums_valid, udp_frame, FrameSpec};
    use crate::wire::parse_udp;
    use crossbeam_channel::{unbounded, Sender};
    use std::net::SocketAddr;

    const PORT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x10]);
    const GW_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x01]);

    fn mac_of(i: u16) -> MacAddr {
        MacAddr([2, 0, 0, 0, 1, i as u8])
    }

    fn spec(
        id: u16,
        vip: &str,
        mode: Mode,
        sched: SchedulerKind,
        backends: &[(&str, u32)],
        first_backend_id: u16,
    ) -> ServiceSpec {
        ServiceSpec {
            id: VipId(id),
            name: format!("svc{id}"),
            vip: VipKey::udp(vip.parse().unwrap()),
            mode,
            scheduler: sched,
            backends: backends
                .iter()
                .enumerate()
                .map(|(i, (a, w))| {
                    let id = first_backend_id + i as u16;
                    let mut b = Backend::new(BackendId(id), a.parse().unwrap(), *w);
                    b.mac = Some(mac_of(i as u16 + 1));
                    b
                })
                .collect(),
            fallback: None,
            passive: false,
        }
    }

    struct Rig {
        w: Worker<MemoryPort>,
        tx: Sender<Arc<Snapshot>>,
        c: SharedCounters,
    }

    fn rig(specs: Vec<ServiceSpec>) -> Rig {
        let (tx, rx) = unbounded();
        let c = WorkerCounters::shared();
        let w = Worker::new(
            MemoryPort::new(PORT_MAC, 1 << 16),
            WorkerSettings {
                burst: 32,
                gateway_mac: GW_MAC,
                idle: Idle::Off,
            },
            Arc::new(Snapshot::new(1, specs).unwrap()),
            rx,
            c.clone(),
            Arc::new(NatFlows::new(1024)),
        );
        Rig { w, tx, c }
    }

    fn send(r: &mut Rig, src: &str, dst: &str, n: usize) {
        let f = udp_frame(
            &FrameSpec::new(src.parse().unwrap(), dst.parse().unwrap()),
            b"<13>x",
        );
        for _ in 0..n {
            r.w.port_mut().push_rx(&f);
        }
        while r.w.port().rx_len() > 0 {
            r.w.poll();
        }
    }

    fn drain(r: &mut Rig) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| r.w.port_mut().pop_tx()).collect()
    }

    const BACKENDS: [(&str, u32); 3] = [
        ("198.19.1.1:514", 1),
        ("198.19.1.2:514", 1),
        ("198.19.1.3:514", 1),
    ];

    #[test]
    fn one_client_is_spread_evenly_in_dr_mode() {
        let mut r = rig(vec![spec(
            0,
            "198.18.0.10:514",
            Mode::Dr,
            SchedulerKind::Rr,
            &BACKENDS,
            0,
        )]);
        send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 3000);
        let out = drain(&mut r);
        assert_eq!(out.len(), 3000);
        let mut per_mac = [0usize; 3];
        for (i, f) in out.iter().enumerate() {
            // DR: only MACs change; round-robin order is 1,2,3,1,2,3...
            assert_eq!(&f[0..6], &mac_of((i % 3) as u16 + 1).0);
            assert_eq!(&f[6..12], &PORT_MAC.0);
            let p = parse_udp(f).unwrap();
            assert_eq!(p.dst(), "198.18.0.10:514".parse().unwrap());
            per_mac[i % 3] += 1;
        }
        assert_eq!(per_mac, [1000, 1000, 1000]);
        for b in 0..3 {
            assert_eq!(r.c.backend(BackendId(b)).0, 1000);
        }
        assert_eq!(r.c.vip(VipId(0)).0, 3000);
        assert_eq!(r.c.tx_packets.get(), 3000);
        assert_eq!(r.c.dropped_total(), 0);
    }

    #[test]
    fn nat_rewrites_to_each_backend_with_valid_checksums() {
        let mut r = rig(vec![spec(
            0,
            "198.18.0.10:514",
            Mode::Nat,
            SchedulerKind::Rr,
            &BACKENDS,
            0,
        )]);
        send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 6);
        let out = drain(&mut r);
        for (i, f) in out.iter().enumerate() {
            let p = parse_udp(f).unwrap();
            assert_eq!(p.dst(), BACKENDS[i % 3].0.parse::<SocketAddr>().unwrap());
            assert_eq!(p.src(), "198.18.0.1:40000".parse().unwrap());
            assert!(checksums_valid(f));
        }
    }

    #[test]
    fn wrr_weights_are_honoured_exactly() {
        let b = [
            ("198.19.1.1:514", 3),
            ("198.19.1.2:514", 2),
            ("198.19.1.3:514", 1),
        ];
        let mut r = rig(vec![spec(
            0,
            "198.18.0.10:514",
            Mode::Dr,
            SchedulerKind::Wrr,
            &b,
            0,
        )]);
        send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 600);
        assert_eq!(
            [0, 1, 2].map(|i| r.c.backend(BackendId(i)).0),
            [300, 200, 100]
        );
    }

    /// With the NIC's RX checksum offload on, a header it vouches for is not checked
    /// again, which is the saving; every other verdict, and any frame while the offload is
    /// off, still gets Spray's own check.
    #[test]
    fn the_nics_good_checksum_verdict_is_trusted_only_while_the_offload_is_on() {
        let s = spec(
            0,
            "198.18.0.10:514",
            Mode::Dr,
            SchedulerKind::Rr,
            &BACKENDS,
            0,
        );
        let mut r = rig(vec![s]);
        let mut bad = udp_frame(
            &FrameSpec::new(
                "198.18.0.1:40000".parse().unwrap(),
                "198.18.0.10:514".parse().unwrap(),
            ),
            b"<13>x",
        );
        bad[24] ^= 0x55; // the IPv4 header checksum
        let verdicts = |r: &mut Rig, v: RxIpChecksum| {
            r.w.port_mut().push_rx_with(&bad, v);
            r.w.poll();
            (drain(r).len(), r.c.dropped(DropReason::BadIpChecksum))
        };
        // Offload off: the verdict is not even read.
        assert_eq!(verdicts(&mut r, RxIpChecksum::Good), (0, 1));
        r.w.port_mut()
            .set_rx_ip_checksum_offload(Some(RxIpChecksum::Unknown));
        assert_eq!(verdicts(&mut r, RxIpChecksum::Unknown), (0, 2));
        assert_eq!(verdicts(&mut r, RxIpChecksum::Bad), (0, 3));
        // The NIC says good: Spray trusts it and forwards (here the frame was damaged after
        // the "NIC" looked, which a real NIC cannot do).
        assert_eq!(verdicts(&mut r, RxIpChecksum::Good), (1, 3));
        assert_eq!(r.c.backend(BackendId(0)).0, 1);
    }

    #[test]
    fn a_backend_marked_down_gets_nothing_from_the_next_burst_on() {
        let mut s = spec(
            0,
            "198.18.0.10:514",
            Mode::Dr,
            SchedulerKind::Rr,
            &BACKENDS,
            0,
        );
        let mut r = rig(vec![s.clone()]);
        send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 30);
        assert_eq!(r.c.backend(BackendId(0)).0, 10);
        s.backends[0].health = Health::Down;
        r.tx.send(Arc::new(Snapshot::new(2, vec![s.clone()]).unwrap()))
            .unwrap();
        drain(&mut r);
        send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 3000);
        assert_eq!(r.c.backend(BackendId(0)).0, 10, "down backend got packets");
        assert_eq!(
            r.c.backend(BackendId(1)).0 + r.c.backend(BackendId(2)).0,
            3020
        );
        assert!(drain(&mut r).iter().all(|f| f[0..6] != mac_of(1).0));
        // It comes back when healthy.
        s.backends[0].health = Health::Up;
        r.tx.send(Arc::new(Snapshot::new(3, vec![s]).unwrap()))
            .unwrap();
        send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 30);
        assert_eq!(r.c.backend(BackendId(0)).0, 20);
    }

    #[test]
    fn a_vip_without_healthy_backends_drops_and_counts() {
        let b = [("198.19.1.1:514", 0)];
        let mut r = rig(vec![spec(
            0,
            "198.18.0.10:514",
            Mode::Dr,
            SchedulerKind::Rr,
            &b,
            0,
        )]);
        send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 5);
        assert_eq!(r.c.dropped(DropReason::NoHealthyBackend), 5);
        assert_eq!(r.w.port().freed, 5);
        assert_eq!(r.c.vip(VipId(0)).0, 5);
    }

    #[test]
    fn the_fallback_takes_over_when_no_backend_is_in_rotation_and_only_then() {
        let mut s = spec(
            0,
            "198.18.0.10:514",
            Mode::Nat,
            SchedulerKind::Rr,
            &BACKENDS,
            0,
        );
        let mut f = Backend::new(BackendId(9), "198.19.1.99:514".parse().unwrap(), 1);
        f.mac = Some(mac_of(99));
        s.fallback = Some(f);
        let mut r = rig(vec![s.clone()]);
        send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 30);
        assert_eq!(r.c.backend(BackendId(9)).0, 0, "backends up: no fallback");
        for b in &mut s.backends {
            b.health = Health::Down;
        }
        r.tx.send(Arc::new(Snapshot::new(2, vec![s.clone()]).unwrap()))
            .unwrap();
        drain(&mut r);
        send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 30);
        assert_eq!(r.c.backend(BackendId(9)).0, 30);
        assert_eq!(r.c.dropped(DropReason::NoHealthyBackend), 0);
        for f in drain(&mut r) {
            assert_eq!(
                parse_udp(&f).unwrap().dst(),
                "198.19.1.99:514".parse().unwrap()
            );
        }
        // The first healthy backend takes everything back at once.
        s.backends[1].health = Health::Up;
        r.tx.send(Arc::new(Snapshot::new(3, vec![s]).unwrap()))
            .unwrap();
        send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 30);
        assert_eq!(r.c.backend(BackendId(9)).0, 30);
        assert_eq!(r.c.backend(BackendId(1)).0, 10 + 30);
    }

    #[test]
    fn traffic_for_no_vip_is_dropped_and_counted() {
        let mut r = rig(vec![spec(
            0,
            "198.18.0.10:514",
            Mode::Dr,
            SchedulerKind::Rr,
            &BACKENDS,
            0,
        )]);
        send(&mut r, "198.18.0.1:40000", "198.18.0.11:514", 3);
        send(&mut r, "198.18.0.1:40000", "198.18.0.10:515", 2);
        r.w.port_mut().push_rx(&[0u8; 10]);
        r.w.poll();
        assert_eq!(r.c.dropped(DropReason::NoVip), 5);
        assert_eq!(r.c.dropped(DropReason::Truncated), 1);
        assert_eq!(r.w.port().tx_len(), 0);
    }

    /// The design's two-VIP syslog case: two VIPs on port 514, rr over the same three
    /// backend address:ports, NAT. Each reply must leave with the VIP its client used.
    #[test]
    fn nat_replies_get_the_right_vip_when_two_vips_share_backends() {
        let mut r = rig(vec![
            spec(
                0,
                "198.18.0.10:514",
                Mode::Nat,
                SchedulerKind::Rr,
                &BACKENDS,
                0,
            ),
            spec(
                1,
                "198.18.0.11:514",
                Mode::Nat,
                SchedulerKind::Rr,
                &BACKENDS,
                3,
            ),
        ]);
        let clients = ["198.18.0.1:40000", "198.18.0.2:40001"];
        send(&mut r, clients[0], "198.18.0.10:514", 3);
        send(&mut r, clients[1], "198.18.0.11:514", 3);
        drain(&mut r);
        for (client, vip) in [
            (clients[0], "198.18.0.10:514"),
            (clients[1], "198.18.0.11:514"),
        ] {
            for (backend, _) in BACKENDS {
                send(&mut r, backend, client, 1);
                let out = drain(&mut r);
                assert_eq!(out.len(), 1);
                let p = parse_udp(&out[0]).unwrap();
                assert_eq!(
                    p.src(),
                    vip.parse().unwrap(),
                    "reply from {backend} to {client}"
                );
                assert_eq!(p.dst(), client.parse().unwrap());
                assert_eq!(&out[0][0..6], &GW_MAC.0);
                assert!(checksums_valid(&out[0]));
            }
        }
        assert_eq!(r.c.nat_replies.get(), 6);
    }

    #[test]
    fn maglev_keeps_a_flow_on_one_backend() {
        let mut r = rig(vec![spec(
            0,
            "198.18.0.10:514",
            Mode::Dr,
            SchedulerKind::Maglev,
            &BACKENDS,
            0,
        )]);
        send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 50);
        let out = drain(&mut r);
        assert!(out.iter().all(|f| f[0..6] == out[0][0..6]));
    }

    #[test]
    fn idle_backoff_spins_then_pauses_then_sleeps_doubling_to_the_max() {
        let mut b = IdleBackoff::new(Idle::Backoff {
            spin_polls: 2,
            pause_polls: 1,
            max_sleep: Duration::from_micros(35),
        });
        let acts: Vec<_> = (0..7).map(|_| b.after_poll(0)).collect();
        let us = Duration::from_micros;
        assert_eq!(
            acts,
            [
                IdleAction::Spin,
                IdleAction::Spin,
                IdleAction::Pause(PAUSES_PER_POLL),
                IdleAction::Sleep(us(10)),
                IdleAction::Sleep(us(20)),
                IdleAction::Sleep(us(35)),
                IdleAction::Sleep(us(35)),
            ]
        );
        // One packet resets it.
        assert_eq!(b.after_poll(3), IdleAction::Spin);
        assert_eq!(b.after_poll(0), IdleAction::Spin);
        let mut off = IdleBackoff::new(Idle::Off);
        assert!((0..100_000).all(|_| off.after_poll(0) == IdleAction::Spin));
    }

    #[test]
    fn a_full_tx_ring_is_counted() {
        let (tx, rx) = unbounded::<Arc<Snapshot>>();
        drop(tx);
        let c = WorkerCounters::shared();
        let mut w = Worker::new(
            MemoryPort::new(PORT_MAC, 10),
            WorkerSettings::default(),
            Arc::new(
                Snapshot::new(
                    1,
                    vec![spec(
                        0,
                        "198.18.0.10:514",
                        Mode::Dr,
                        SchedulerKind::Rr,
                        &BACKENDS,
                        0,
                    )],
                )
                .unwrap(),
            ),
            rx,
            c.clone(),
            Arc::new(NatFlows::new(64)),
        );
        let f = udp_frame(
            &FrameSpec::new(
                "198.18.0.1:1".parse().unwrap(),
                "198.18.0.10:514".parse().unwrap(),
            ),
            b"",
        );
        for _ in 0..32 {
            w.port_mut().push_rx(&f);
        }
        w.poll();
        assert_eq!(c.tx_packets.get(), 10);
        assert_eq!(c.dropped(DropReason::TxFull), 22);
    }

    /// A snapshot exercising every branch of the UDP path: DR and NAT, shared NAT backends,
    /// maglev, a family mismatch, a backend without a MAC, no backend in rotation, IPv6.
    fn branchy_snapshot() -> Snapshot {
        let v6: [(&str, u32); 2] = [("[2001:db8:1::1]:514", 1), ("[2001:db8:1::2]:514", 1)];
        let mut no_mac = spec(
            5,
            "198.18.0.15:514",
            Mode::Dr,
            SchedulerKind::Wrr,
            &[("198.19.2.1:514", 2), ("198.19.2.2:514", 1)],
            13,
        );
        no_mac.backends[1].mac = None;
        Snapshot::new(
            1,
            vec![
                spec(
                    0,
                    "198.18.0.10:514",
                    Mode::Dr,
                    SchedulerKind::Rr,
                    &BACKENDS,
                    0,
                ),
                spec(
                    1,
                    "198.18.0.11:514",
                    Mode::Nat,
                    SchedulerKind::Rr,
                    &BACKENDS,
                    3,
                ),
                spec(
                    2,
                    "198.18.0.12:514",
                    Mode::Nat,
                    SchedulerKind::Rr,
                    &BACKENDS,
                    6,
                ),
                spec(
                    3,
                    "198.18.0.13:53",
                    Mode::Nat,
                    SchedulerKind::Maglev,
                    &[("198.19.3.1:53", 1), ("198.19.3.2:53", 1)],
                    9,
                ),
                spec(
                    4,
                    "198.18.0.14:514",
                    Mode::Nat,
                    SchedulerKind::Rr,
                    &v6[..1],
                    12,
                ),
                no_mac,
                spec(
                    6,
                    "198.18.0.16:514",
                    Mode::Dr,
                    SchedulerKind::Rr,
                    &[("198.19.4.1:514", 0)],
                    20,
                ),
                spec(
                    7,
                    "[2001:db8::10]:514",
                    Mode::Nat,
                    SchedulerKind::Rr,
                    &v6,
                    15,
                ),
                // wrr with every MAC resolved: the fast path's hops for a weighted rotation,
                // to backends VIPs 1 and 2 also use.
                spec(
                    8,
                    "198.18.0.17:514",
                    Mode::Nat,
                    SchedulerKind::Wrr,
                    &[("198.19.1.1:514", 3), ("198.19.1.2:514", 1)],
                    22,
                ),
            ],
        )
        .unwrap()
    }

    /// Frames for [`branchy_snapshot`]: to each VIP and from each backend, tagged or not,
    /// TTL 1, 2 or 64, with and without a UDP checksum; fragments, IPv6, ICMP, ARP, junk.
    fn branchy_frames() -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let clients = ["198.18.0.1:40000", "198.18.0.2:40001"];
        let vips = (10..=17).map(|i| format!("198.18.0.{i}:514"));
        let vips = vips.chain(["198.18.0.13:53".into(), "198.18.0.10:515".into()]);
        let backends = [
            "198.19.1.1:514",
            "198.19.1.2:514",
            "198.19.3.1:53",
            "198.19.9.9:514",
        ];
        let mut pairs: Vec<(String, String)> = Vec::new();
        for v in vips {
            pairs.extend(clients.map(|c| (c.to_string(), v.clone())));
        }
        for b in backends {
            pairs.extend(clients.map(|c| (b.to_string(), c.to_string())));
        }
        pairs.push(("[2001:db8::1]:1000".into(), "[2001:db8::10]:514".into()));
        pairs.push(("[2001:db8:1::1]:514".into(), "[2001:db8::1]:1000".into()));
        for (src, dst) in &pairs {
            for (vlan, ttl, sum) in [(None, 64, true), (Some(9), 2, false), (None, 1, true)] {
                let mut fs = FrameSpec::new(src.parse().unwrap(), dst.parse().unwrap());
                fs.vlan = vlan;
                fs.ttl = ttl;
                fs.udp_checksum = sum;
                let f = udp_frame(&fs, b"<13>hello, world: 24 byte");
                if vlan.is_none() && ttl == 64 {
                    out.extend(crate::testkit::frames::fragment(&f, 16, 7));
                }
                out.push(f);
            }
        }
        let mut icmp = out[0].clone();
        icmp[23] = 1;
        crate::testkit::frames::fix_ipv4_checksum(&mut icmp, 14);
        out.push(icmp);
        let mut arp = out[0].clone();
        arp[12..14].copy_from_slice(&[8, 6]);
        out.push(arp);
        out.push(vec![0; 10]);
        out
    }

    /// A frame borrowed as a received buffer.
    struct TestBuf<'a>(&'a mut [u8]);

    impl PacketBuf for TestBuf<'_> {
        fn data(&self) -> &[u8] {
            self.0
        }
        fn data_mut(&mut self) -> &mut [u8] {
            self.0
        }
    }

    /// One side of the comparison: its own cursors, counters, fragment and flow tables.
    struct Side<'s> {
        cursors: Vec<u32>,
        memo: RouteMemo<'s>,
        frags: FragTable,
        c: SharedCounters,
        flows: NatFlows,
    }

    impl<'s> Side<'s> {
        fn new(snap: &Snapshot) -> Self {
            Self {
                cursors: vec![0; snap.vip_slots()],
                memo: RouteMemo::default(),
                frags: FragTable::default(),
                c: WorkerCounters::shared(),
                flows: NatFlows::new(64),
            }
        }

        fn run(
            &mut self,
            fast: bool,
            snap: &'s Snapshot,
            at: Instant,
            frame: &mut [u8],
        ) -> Result<Fwd, DropReason> {
            if fast {
                // The worker's own loop, over a burst of one; the memo lives across frames
                // here, as across a burst: one snapshot. Its verdict is read back from what
                // it did: kept the frame, counted a drop, or neither.
                let drops = DropReason::ALL.map(|r| self.c.dropped(r));
                if self.deal(snap, at, &mut [TestBuf(frame)]) == 1 {
                    return Ok(Fwd::Tx);
                }
                return match DropReason::ALL
                    .into_iter()
                    .zip(drops)
                    .find(|&(r, n)| self.c.dropped(r) != n)
                {
                    Some((r, _)) => Err(r),
                    None => Ok(Fwd::Consumed),
                };
            }
            let neigh = WorkerNeigh::default();
            let ctx = Ctx::new(snap, &self.flows, PORT_MAC, GW_MAC, &self.c, &neigh, None);
            let mut now = Now(Some(at));
            let r = process_general(frame, &ctx, &mut self.cursors, &mut self.frags, &mut now);
            if let Err(reason) = r {
                self.c.drop_packet(reason);
            }
            r
        }

        /// The worker's loop over `burst`; returns how many buffers it kept, at the front.
        fn deal(&mut self, snap: &'s Snapshot, at: Instant, burst: &mut [TestBuf]) -> usize {
            let neigh = WorkerNeigh::default();
            let ctx = Ctx::new(snap, &self.flows, PORT_MAC, GW_MAC, &self.c, &neigh, None);
            let mut now = Now(Some(at));
            let (cursors, frags) = (&mut self.cursors, &mut self.frags);
            deal::<_, false>(burst, &ctx, cursors, frags, &mut now, &mut self.memo).2
        }

        /// The fast side over a whole burst: the worker's loop on `frames` at once, which
        /// hands the memo to the slow path and back between runs of the common case.
        /// Returns the frames it kept for transmission, in order.
        fn run_burst(
            &mut self,
            snap: &'s Snapshot,
            at: Instant,
            frames: &mut [Vec<u8>],
        ) -> Vec<Vec<u8>> {
            let mut burst: Vec<TestBuf> = frames.iter_mut().map(|f| TestBuf(f)).collect();
            let kept = self.deal(snap, at, &mut burst);
            burst[..kept].iter().map(|b| b.0.to_vec()).collect()
        }

        fn counts(&mut self) -> Vec<u64> {
            self.memo.flush(&mut self.cursors, &self.c);
            let c = &self.c;
            let mut v: Vec<u64> = (0..32)
                .flat_map(|i| [c.vip(VipId(i)), c.backend(BackendId(i))])
                .flat_map(|(p, b)| [p, b])
                .collect();
            v.extend(DropReason::ALL.map(|r| c.dropped(r)));
            v.extend([c.nat_replies.get(), c.fragments_steered.get()]);
            v
        }
    }

    /// Frame `i` of `frames` (modulo their number), with byte `at` (modulo its length) set to
    /// `v` when `edit` is `Some((at, v))`.
    fn edited(frames: &[Vec<u8>], i: usize, edit: Option<(usize, u8)>) -> Vec<u8> {
        let mut f = frames[i % frames.len()].clone();
        if let Some((at, v)) = edit {
            let n = f.len();
            f[at % n] = v;
        }
        f
    }

    /// Sends `frames` (indices into [`branchy_frames`], each with an optional byte changed)
    /// through the fast path and through the general one alone, and checks that they agree
    /// on every verdict, every byte and every counter.
    fn paths_agree(order: &[(usize, Option<(usize, u8)>)]) {
        let snap = branchy_snapshot();
        let frames = branchy_frames();
        let (mut fast, mut general) = (Side::new(&snap), Side::new(&snap));
        let at = Instant::now();
        for (k, &(i, edit)) in order.iter().enumerate() {
            let mut f = edited(&frames, i, edit);
            let mut g = f.clone();
            let rf = fast.run(true, &snap, at, &mut f);
            let rg = general.run(false, &snap, at, &mut g);
            assert_eq!(
                (rf.as_ref().map(|_| ()), &f),
                (rg.as_ref().map(|_| ()), &g),
                "frame #{k} ({i}, {edit:?})"
            );
            // The fast side's position for its last VIP is in its memo until a flush.
            let mut cursors = fast.cursors.clone();
            fast.memo.store_cursor(&mut cursors);
            assert_eq!(cursors, general.cursors, "frame #{k}");
        }
        assert_eq!(fast.counts(), general.counts());
    }

    /// [`paths_agree`] with the fast side taking `burst` frames at a time: the frames it
    /// transmits and their bytes, the positions and the counters after each burst are the
    /// general path's, frame by frame.
    fn paths_agree_in_bursts(order: &[(usize, Option<(usize, u8)>)], burst: usize) {
        agree_in_bursts(&branchy_snapshot(), &branchy_frames(), order, burst);
    }

    /// [`paths_agree_in_bursts`] for the frames and snapshot given.
    fn agree_in_bursts(
        snap: &Snapshot,
        frames: &[Vec<u8>],
        order: &[(usize, Option<(usize, u8)>)],
        burst: usize,
    ) {
        let (mut fast, mut general) = (Side::new(snap), Side::new(snap));
        let at = Instant::now();
        for (b, chunk) in order.chunks(burst.max(1)).enumerate() {
            let mut batch: Vec<Vec<u8>> = chunk
                .iter()
                .map(|&(i, edit)| edited(frames, i, edit))
                .collect();
            let mut want = Vec::new();
            for f in &batch {
                let mut g = f.clone();
                if let Ok(Fwd::Tx) = general.run(false, snap, at, &mut g) {
                    want.push(g);
                }
            }
            let sent = fast.run_burst(snap, at, &mut batch);
            assert_eq!(sent, want, "burst #{b} {chunk:?}");
            let mut cursors = fast.cursors.clone();
            fast.memo.store_cursor(&mut cursors);
            assert_eq!(cursors, general.cursors, "burst #{b}");
            assert_eq!(fast.counts(), general.counts(), "burst #{b}");
        }
    }

    #[test]
    fn the_fast_path_and_the_general_path_agree_on_every_branch() {
        let n = branchy_frames().len();
        // Each frame several times in a row (round robin, replies after requests), then
        // interleaved.
        let order: Vec<_> = (0..n)
            .flat_map(|i| [i; 4])
            .chain((0..4 * n).map(|k| (k * 7) % n))
            .map(|i| (i, None))
            .collect();
        paths_agree(&order);
        // Runs of one VIP broken by other VIPs and other kinds of frame within a burst.
        for burst in [2, 5, 32] {
            paths_agree_in_bursts(&order, burst);
        }
        // Two VIPs of one kind (NAT) alternating: the common case switches between them
        // without leaving its run.
        let frames = branchy_frames();
        let whole = |ip: [u8; 4]| {
            let f = |i: &usize| {
                let f = &frames[*i];
                f[12..14] == [8, 0]
                    && f[30..34] == ip
                    && f[20] & 0x3f == 0
                    && f[21] == 0
                    && f[22] == 64
            };
            (0..frames.len())
                .find(f)
                .expect("a whole datagram to the VIP")
        };
        let (a, b) = (whole([198, 18, 0, 11]), whole([198, 18, 0, 12]));
        let alternating: Vec<_> = (0..40).map(|k| ([a, b][k % 2], None)).collect();
        paths_agree_in_bursts(&alternating, 8);
    }

    /// VIPs 198.18.1.1, .2 … (port 514), VIP `v` in mode `mode(v)` with three backends of its
    /// own (rr), and a datagram to each: frame `v` goes to VIP `v`.
    fn many_vips(count: u8, mode: impl Fn(u8) -> Mode) -> (Snapshot, Vec<Vec<u8>>) {
        let specs = (0..count)
            .map(|v| {
                let backends: Vec<String> = (1..=3)
                    .map(|b| format!("198.19.{}.{b}:514", 10 + v))
                    .collect();
                let backends: Vec<(&str, u32)> = backends.iter().map(|b| (&b[..], 1)).collect();
                let vip = format!("198.18.1.{}:514", v + 1);
                spec(
                    v.into(),
                    &vip,
                    mode(v),
                    SchedulerKind::Rr,
                    &backends,
                    3 * u16::from(v),
                )
            })
            .collect();
        let frames = (0..count)
            .map(|v| {
                let to = format!("198.18.1.{}:514", v + 1).parse().unwrap();
                let fs = FrameSpec::new("198.18.0.1:40000".parse().unwrap(), to);
                udp_frame(&fs, b"<13>parked")
            })
            .collect();
        (Snapshot::new(1, specs).unwrap(), frames)
    }

    /// VIPs for the interleaving tests: more than the run's own and the parked ones.
    const VIPS: u8 = PARKED as u8 + 3;

    #[test]
    fn interleaved_vips_keep_their_own_positions_and_counts() {
        // Up to eight VIPs of one kind take turns within a burst (a switch swaps parked
        // memos), more than eight (with the slots full, a switch to an unparked VIP hands the
        // memo it leaves back), one VIP among others, and DR and NAT VIPs mixed (a run stops
        // at the other kind, and the parked memos are handed back before the slow path).
        let dr = |_| Mode::Dr;
        let nat = |_| Mode::Nat;
        let mixed = |v: u8| if v % 3 == 2 { Mode::Nat } else { Mode::Dr };
        let modes: [&dyn Fn(u8) -> Mode; 3] = [&dr, &nat, &mixed];
        for mode in modes {
            let (snap, frames) = many_vips(VIPS, mode);
            let mut orders: Vec<Vec<usize>> = (2..=VIPS.into())
                .map(|n| (0..90).map(|k| k % n).collect())
                .collect();
            orders.push(
                (0..70)
                    .map(|k| {
                        if k % 2 == 0 {
                            0
                        } else {
                            k / 2 % usize::from(VIPS)
                        }
                    })
                    .collect(),
            );
            orders.push(
                (0..90)
                    .map(|k| (k * k + k / 3) % usize::from(VIPS))
                    .collect(),
            );
            for order in &orders {
                let order: Vec<_> = order.iter().map(|&v| (v, None)).collect();
                for burst in [1, 5, 9, 32] {
                    agree_in_bursts(&snap, &frames, &order, burst);
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn interleaved_vips_agree_with_the_general_path(
            order in proptest::collection::vec(
                (0..usize::from(VIPS), proptest::option::of((0usize..60, proptest::prelude::any::<u8>()))),
                1..100,
            ),
            burst in 1usize..40,
            nat_vips in 0u16..1 << VIPS,
        ) {
            let (snap, frames) = many_vips(VIPS, |v| if nat_vips >> v & 1 == 1 { Mode::Nat } else { Mode::Dr });
            agree_in_bursts(&snap, &frames, &order, burst);
        }

        #[test]
        fn the_fast_path_and_the_general_path_agree_on_damaged_frames(
            order in proptest::collection::vec(
                (0usize..1000, proptest::option::of((0usize..80, proptest::prelude::any::<u8>()))),
                1..40,
            ),
        ) {
            paths_agree(&order);
        }

        #[test]
        fn the_fast_path_and_the_general_path_agree_on_damaged_frames_in_bursts(
            order in proptest::collection::vec(
                (0usize..1000, proptest::option::of((0usize..80, proptest::prelude::any::<u8>()))),
                1..80,
            ),
            burst in 1usize..40,
        ) {
            paths_agree_in_bursts(&order, burst);
        }
    }
}
