//! Mirror pools: further pools of servers behind one service, each of which gets its own copy
//! of the service's datagrams (replication, fan-out), balanced within the pool by the pool's
//! own scheduler.
//!
//! The primary pool (the service's `backends`) is unchanged by mirrors: it is picked and
//! rewritten first, and a copy is only made of a datagram the primary pool forwards. A pool
//! with no backend in rotation, or a datagram its sampling skips, costs one check.

use super::sched::SchedulerKind;
use super::service::{Backend, Service, ServiceSpec};

/// Most copies for mirror pools a worker makes per received datagram, on average over a
/// burst (its buffers are reserved once for that many): more are counted as
/// [`crate::counters::WorkerCounters::mirror_no_buffer`].
pub const MIRRORS_PER_FRAME: usize = 4;

/// One mirror pool of a service, as the control plane describes it. It forwards the way
/// its service does (DR or NAT); its backends' ids are unique in the snapshot like any other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorSpec {
    /// Operator's name of the pool, unique within its service.
    pub name: String,
    /// Which scheduler picks the pool's backend for each copy.
    pub scheduler: SchedulerKind,
    /// The pool's backends, healthy or not, in config order.
    pub backends: Vec<Backend>,
    /// One datagram in `sample` is copied (1: every one).
    pub sample: u32,
}

impl MirrorSpec {
    /// A pool that copies every datagram.
    pub fn new(name: impl Into<String>, scheduler: SchedulerKind, backends: Vec<Backend>) -> Self {
        Self {
            name: name.into(),
            scheduler,
            backends,
            sample: 1,
        }
    }
}

/// A mirror pool as workers see it.
#[derive(Debug, Clone)]
pub(crate) struct Mirror {
    /// The pool's backends behind their scheduler (the service's VIP and mode, no fallback).
    pub(crate) pool: Service,
    /// One datagram in `sample` is copied.
    pub(crate) sample: u32,
    /// The worker's position in the pool's rotation is `cursors[slot]`, and how many
    /// datagrams the sampling has seen is `cursors[slot + 1]`: every worker keeps its own, as
    /// for a VIP.
    pub(crate) slot: usize,
}

impl Mirror {
    /// Builds the pool's scheduler; `slot` is assigned by the snapshot.
    pub(crate) fn new(of: &ServiceSpec, spec: &MirrorSpec) -> Self {
        let mut pool_spec = ServiceSpec::new(
            of.id,
            spec.name.clone(),
            of.vip,
            of.mode,
            spec.scheduler,
            spec.backends.clone(),
        );
        pool_spec.passive = false;
        Self {
            pool: Service::new(pool_spec),
            sample: spec.sample.max(1),
            slot: 0,
        }
    }

    /// The pool's backend for the copy of the datagram at hand, or `None` when the sampling
    /// skips it or no backend of the pool is in rotation. `cursors` is the worker's slot
    /// array (at least [`super::Snapshot::cursor_slots`] long; a shorter one copies nothing).
    #[inline]
    pub(crate) fn pick(
        &self,
        cursors: &mut [u32],
        flow_hash: impl FnOnce() -> u64,
    ) -> Option<&Backend> {
        let [cursor, seen] = cursors.get_mut(self.slot..self.slot + 2)? else {
            return None;
        };
        if self.sample > 1 {
            let take = *seen == 0;
            *seen = (*seen + 1) % self.sample;
            if !take {
                return None;
            }
        }
        self.pool
            .pick_indexed_with(cursor, flow_hash)
            .map(|(_, b)| b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BackendId, Health, Mode, VipId, VipKey};

    fn pool(sched: SchedulerKind, weights: &[u32], sample: u32) -> Mirror {
        let backends = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr = format!("198.19.2.{}:514", i + 1).parse().unwrap();
                Backend::new(BackendId(10 + i as u16), addr, w)
            })
            .collect();
        let of = ServiceSpec::new(
            VipId(0),
            "svc",
            VipKey::udp("198.18.0.10:514".parse().unwrap()),
            Mode::Dr,
            SchedulerKind::Rr,
            Vec::new(),
        );
        let mut spec = MirrorSpec::new("m", sched, backends);
        spec.sample = sample;
        let mut m = Mirror::new(&of, &spec);
        m.slot = 1;
        m
    }

    fn picks(m: &Mirror, n: usize) -> Vec<Option<u16>> {
        let mut cursors = [0u32; 3];
        (0..n)
            .map(|_| m.pick(&mut cursors, || 7).map(|b| b.id.0))
            .collect()
    }

    #[test]
    fn rr_takes_each_backend_in_turn() {
        let got = picks(&pool(SchedulerKind::Rr, &[1, 1, 1], 1), 6);
        let want = [10, 11, 12, 10, 11, 12].map(Some);
        assert_eq!(got, want);
    }

    #[test]
    fn wrr_follows_the_weights() {
        let got = picks(&pool(SchedulerKind::Wrr, &[3, 1], 1), 400);
        let first = got.iter().filter(|p| **p == Some(10)).count();
        assert_eq!((first, got.len() - first), (300, 100));
    }

    #[test]
    fn sampling_takes_the_first_of_every_n_and_does_not_advance_the_rotation_otherwise() {
        let got = picks(&pool(SchedulerKind::Rr, &[1, 1], 3), 9);
        let want = [
            Some(10),
            None,
            None,
            Some(11),
            None,
            None,
            Some(10),
            None,
            None,
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn a_pool_without_a_backend_in_rotation_gives_none() {
        let mut m = pool(SchedulerKind::Rr, &[1, 0], 1);
        assert_eq!(picks(&m, 3), [Some(10); 3]);
        m.pool.spec.backends[0].health = Health::Down;
        let m = Mirror::new(
            &ServiceSpec::new(
                VipId(0),
                "svc",
                m.pool.spec.vip,
                Mode::Dr,
                SchedulerKind::Rr,
                Vec::new(),
            ),
            &MirrorSpec::new("m", SchedulerKind::Rr, m.pool.spec.backends.clone()),
        );
        assert_eq!(picks(&m, 3), [None; 3]);
    }

    #[test]
    fn a_cursor_array_too_short_for_the_slot_copies_nothing() {
        let m = pool(SchedulerKind::Rr, &[1], 1);
        assert_eq!(m.pick(&mut [0u32; 2], || 0).map(|b| b.id), None);
    }
}
