//! The per-core worker loop, generic over a [`Port`].
//!
//! One iteration ([`Worker::poll`]): receive a burst, apply the newest snapshot the control
//! thread sent (a non-blocking `try_recv`, so a swap happens only between two bursts, and
//! the burst just received is dealt with the newest state), process every packet of it,
//! transmit the burst. Per packet: [`parse_udp`](crate::wire::parse_udp), VIP lookup,
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
//!
//! The module's parts: `idle` (what [`Worker::run`] does while the port is empty), `burst`
//! (how one received burst is dealt: runs of the common case, every other frame one by one)
//! and `memo` (the route a burst remembers between its datagrams). The per-frame policy they
//! call is `crate::decide`.

mod burst;
mod idle;
mod memo;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::Receiver;

use crate::counters::{DropReason, SharedCounters};
use crate::decide::{rewrite_copy, Copies, Ctx, Now};
use crate::encap::RateLimit;
use crate::frag::FragTable;
use crate::model::flow::NatFlows;
use crate::model::PassiveSink;
use crate::model::{MacAddr, Snapshot, MIRRORS_PER_FRAME};
use crate::neigh::WorkerNeigh;
use crate::port::{PacketBuf, Port};

use self::burst::deal;
pub use self::idle::{Idle, MIN_SLEEP, PAUSES_PER_POLL};
pub(crate) use self::idle::{IdleAction, IdleBackoff};
use self::memo::{MemoSeed, RouteMemo};

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

/// A poll-mode worker: one port queue, one snapshot pointer, its own cursors and counters.
#[derive(Debug)]
pub struct Worker<P: Port> {
    port: P,
    settings: WorkerSettings,
    snap: Arc<Snapshot>,
    updates: Receiver<Arc<Snapshot>>,
    counters: SharedCounters,
    nat_flows: Arc<NatFlows>,
    /// Round-robin position per VIP, indexed by [`VipId`], then the mirror pools' slots
    /// ([`Snapshot::cursor_slots`]); this worker's alone.
    cursors: Vec<u32>,
    rx: Vec<P::Buf>,
    tx: Vec<P::Buf>,
    /// The copies for mirror pools planned in the burst at hand, and their buffers: sent
    /// after the originals, so a full TX ring drops copies, not originals.
    copies: Copies,
    copy_tx: Vec<P::Buf>,
    /// Where the first fragment of each datagram in flight went.
    frags: FragTable,
    /// ARP/NDP: own addresses and the queues to and from the control thread.
    neigh: WorkerNeigh,
    /// Where host/port unreachables about passive NAT services are reported.
    passive: Option<PassiveSink>,
    /// The budget of ICMP "too big" answers (tunnelled backends).
    too_big: RateLimit,
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
            copies: Copies::with_capacity(burst * MIRRORS_PER_FRAME),
            copy_tx: Vec::with_capacity(burst * MIRRORS_PER_FRAME),
            frags: FragTable::default(),
            neigh: WorkerNeigh::default(),
            passive: None,
            too_big: RateLimit::default(),
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
        if self.cursors.len() < snap.cursor_slots() {
            self.cursors.resize(snap.cursor_slots(), 0);
        }
        self.snap = snap;
        // Its route belongs to the snapshot just replaced.
        self.memo_seed = MemoSeed::default();
        self.counters.snapshots_applied.add(1);
    }

    /// Applies the newest pending snapshot, if any. Older ones are skipped: only the latest
    /// state matters.
    #[inline]
    pub(crate) fn check_updates(&mut self) {
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
        )
        .with_too_big(&self.too_big);
        // The burst is processed in place: forwarded buffers are compacted to the front of
        // `rx` (a pointer swap, only once something was dropped), the rest are freed after
        // the loop, and `rx` then becomes the TX burst by swapping the two `Vec`s. Bytes are
        // counted in the same pass: no buffer moves between the `Vec`s one by one and the
        // burst is walked once (see docs/benchmarks.md).
        debug_assert!(
            self.tx.is_empty(),
            "send_neigh_frames transmitted its frames"
        );
        // The two instances differ only in whether they read the NIC's checksum verdict:
        // asked once per burst, and a port without the offload runs the loop it always had
        // (a per-packet test costs more than the test itself: it adds register pressure to
        // the loop; see docs/benchmarks.md).
        let (cursors, frags) = (&mut self.cursors[..], &mut self.frags);
        let mut memo = RouteMemo::resume(self.memo_seed, &self.snap, cursors);
        let copies = &mut self.copies;
        let (rx_bytes, tx_bytes, kept) = if self.port.rx_ip_checksum_offload() {
            deal::<_, true>(
                &mut self.rx,
                &ctx,
                cursors,
                frags,
                &mut now,
                &mut memo,
                copies,
            )
        } else {
            deal::<_, false>(
                &mut self.rx,
                &ctx,
                cursors,
                frags,
                &mut now,
                &mut memo,
                copies,
            )
        };
        memo.flush(cursors, c);
        self.memo_seed = memo.seed();
        c.rx_packets.add(n as u64);
        c.rx_bytes.add(rx_bytes as u64);
        for buf in self.rx.drain(kept..) {
            self.port.free(buf);
        }
        if !self.copies.planned.is_empty() {
            self.make_copies();
        }
        std::mem::swap(&mut self.rx, &mut self.tx);
        self.transmit(tx_bytes);
        if !self.copy_tx.is_empty() {
            self.transmit_copies();
        }
        n
    }

    /// Makes the planned copies of the originals waiting in `rx`, each rewritten for its
    /// mirror backend, into `copy_tx`. The port makes each copy (sharing the payload where
    /// it can): the original is already rewritten for its own backend and goes out unchanged.
    fn make_copies(&mut self) {
        let c = &self.counters;
        let mac = self.port.mac();
        for plan in self.copies.planned.drain(..) {
            let Some(original) = self.rx.get(plan.frame) else {
                continue;
            };
            let Some(mut copy) = self.port.copy_frame(original, plan.headers) else {
                c.mirror_no_buffer.add(1);
                continue;
            };
            match rewrite_copy(copy.data_mut(), original.data(), &plan, mac) {
                Ok(()) => {
                    c.backend_packet(plan.backend, copy.frame_len());
                    self.copy_tx.push(copy);
                }
                Err(_) => {
                    c.mirror_unsent.add(1);
                    self.port.free(copy);
                }
            }
        }
    }

    /// Transmits `copy_tx` after the originals; what the port refuses is a copy's loss.
    fn transmit_copies(&mut self) {
        let c = &self.counters;
        let want = self.copy_tx.len();
        let bytes: usize = self.copy_tx.iter().map(|b| b.frame_len()).sum();
        let sent = self.port.tx_burst(&mut self.copy_tx);
        c.tx_packets.add(sent as u64);
        c.tx_bytes.add((bytes * sent / want) as u64);
        c.mirror_copies.add(sent as u64);
        c.mirror_tx_full.add((want - sent) as u64);
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
        // Bytes of a partially refused burst are approximated by the mean length, so the
        // division, slow beside the rest of the accounting, runs only then.
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
