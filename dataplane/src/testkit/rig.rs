//! A [`Worker`] over a [`MemoryPort`], driven frame by frame: push frames, poll, read what
//! it transmitted and what it dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{unbounded, Sender};

use crate::counters::{DropReason, SharedCounters, WorkerCounters};
use crate::model::flow::NatFlows;
use crate::model::sched::SchedulerKind;
use crate::model::{Backend, BackendId, MacAddr, Mode, ServiceSpec, Snapshot, VipId, VipKey};
use crate::port::memory::MemoryPort;
use crate::worker::{Idle, Worker, WorkerSettings};

/// The port's own MAC address.
pub const PORT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x10]);
/// The gateway's MAC address (the next hop of NAT replies).
pub const GW_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x01]);

/// The MAC address [`service`] gives its backend `i` (from 1).
pub fn mac_of(i: usize) -> MacAddr {
    MacAddr([2, 0, 0, 0, 1, i as u8])
}

/// An address from a literal.
pub fn sa(s: &str) -> SocketAddr {
    s.parse().expect("an address:port literal")
}

/// Service `id` on `vip` over `backends` (address, weight) with backend ids from
/// `first_backend_id` and MAC addresses [`mac_of`]`(1..)`.
pub fn service(
    id: u16,
    vip: &str,
    mode: Mode,
    sched: SchedulerKind,
    backends: &[(&str, u32)],
    first_backend_id: u16,
) -> ServiceSpec {
    ServiceSpec::new(
        VipId(id),
        format!("svc{id}"),
        VipKey::udp(sa(vip)),
        mode,
        sched,
        backends
            .iter()
            .enumerate()
            .map(|(i, (a, w))| {
                let mut b = Backend::new(BackendId(first_backend_id + i as u16), sa(a), *w);
                b.mac = Some(mac_of(i + 1));
                b
            })
            .collect(),
    )
}

/// A worker without idle back-off, with [`PORT_MAC`] and [`GW_MAC`] (32-frame bursts
/// unless made [`Rig::with`] others).
pub struct Rig {
    /// The worker.
    pub w: Worker<MemoryPort>,
    /// Its snapshot channel.
    pub snaps: Sender<Arc<Snapshot>>,
    /// Its counters.
    pub counters: SharedCounters,
    /// The clock each [`Rig::poll`] passes to the worker.
    pub now: Instant,
}

impl Rig {
    /// A worker over a snapshot of `specs`.
    pub fn new(specs: Vec<ServiceSpec>) -> Self {
        Self::with_snapshot(Snapshot::new(1, specs).expect("a valid snapshot"))
    }

    /// A worker over `snap`.
    pub fn with_snapshot(snap: Snapshot) -> Self {
        Self::with(Arc::new(snap), 32, 1 << 16)
    }

    /// A worker over `snap` with bursts of `burst` frames and rings of `ring` frames.
    pub fn with(snap: Arc<Snapshot>, burst: usize, ring: usize) -> Self {
        let (snaps, rx) = unbounded();
        let counters = WorkerCounters::shared();
        let w = Worker::new(
            MemoryPort::new(PORT_MAC, ring),
            WorkerSettings {
                burst,
                gateway_mac: GW_MAC,
                idle: Idle::Off,
            },
            snap,
            rx,
            counters.clone(),
            Arc::new(NatFlows::new(1024)),
        );
        Self {
            w,
            snaps,
            counters,
            now: Instant::now(),
        }
    }

    /// Pushes `frames`, polls until they are all processed, returns what was sent.
    pub fn run(&mut self, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        for f in frames {
            self.w.port_mut().push_rx(f);
        }
        self.poll();
        self.out()
    }

    /// Polls until the port's RX ring is empty.
    pub fn poll(&mut self) {
        loop {
            self.w.poll_at(self.now);
            if self.w.port().rx_len() == 0 {
                break;
            }
        }
    }

    /// What the worker transmitted since the last call.
    pub fn out(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.w.port_mut().pop_tx()).collect()
    }

    /// Runs `frame`, which must come out as exactly one frame.
    pub fn one(&mut self, frame: &[u8]) -> Vec<u8> {
        let out = self.run(&[frame.to_vec()]);
        assert_eq!(out.len(), 1, "drops: {:?}", self.drops());
        out.into_iter().next().expect("one frame")
    }

    /// Runs `frame`, which must be dropped and counted under `reason`.
    pub fn dropped(&mut self, frame: &[u8], reason: DropReason) {
        let before = self.counters.dropped(reason);
        let out = self.run(&[frame.to_vec()]);
        assert!(out.is_empty(), "expected a drop ({reason:?}), got a frame");
        assert_eq!(
            self.counters.dropped(reason),
            before + 1,
            "{reason:?}; drops: {:?}",
            self.drops()
        );
    }

    /// The drop counters that are not 0.
    pub fn drops(&self) -> Vec<(&'static str, u64)> {
        DropReason::ALL
            .iter()
            .map(|r| (r.name(), self.counters.dropped(*r)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}
