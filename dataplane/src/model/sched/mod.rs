//! Schedulers: which backend gets the next packet of a VIP.
//!
//! A scheduler is built once per snapshot from the backends' effective weights (0 = never
//! picked) and is then read-only; the only mutable state is the calling worker's `cursor`,
//! so every worker deals its own round robin without sharing a cache line. A pick is O(1):
//! an index into a precomputed table. Dispatch is an enum match, not a trait object, so the
//! compiler can inline the pick into the worker loop.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

pub(crate) mod maglev;
pub(crate) mod rr;
pub(crate) mod wrr;

/// Scheduler names as they appear in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// Per-packet round robin over backends in rotation; weights other than 0 are ignored.
    Rr,
    /// Per-packet smooth weighted round robin (nginx's algorithm, precomputed).
    Wrr,
    /// Consistent hashing on the flow (Maglev): a flow stays on its backend.
    Maglev,
}

impl SchedulerKind {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rr => "rr",
            Self::Wrr => "wrr",
            Self::Maglev => "maglev",
        }
    }

    /// Whether the scheduler needs [`crate::model::flow::flow_hash`] of each packet.
    pub(crate) fn needs_flow_hash(self) -> bool {
        matches!(self, Self::Maglev)
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Error from parsing a [`SchedulerKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownScheduler(pub String);

impl fmt::Display for UnknownScheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown scheduler {:?}: expected rr, wrr or maglev",
            self.0
        )
    }
}

impl std::error::Error for UnknownScheduler {}

impl FromStr for SchedulerKind {
    type Err = UnknownScheduler;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rr" => Ok(Self::Rr),
            "wrr" => Ok(Self::Wrr),
            "maglev" | "mh" => Ok(Self::Maglev),
            _ => Err(UnknownScheduler(s.to_owned())),
        }
    }
}

/// A built scheduler. `pick` returns an index into the weights it was built from.
#[derive(Debug, Clone)]
pub(crate) enum Scheduler {
    /// See [`rr::RoundRobin`].
    Rr(rr::RoundRobin),
    /// See [`wrr::WeightedRoundRobin`].
    Wrr(wrr::WeightedRoundRobin),
    /// See [`maglev::Maglev`].
    Maglev(maglev::Maglev),
}

impl Scheduler {
    /// Builds a scheduler of `kind` over backends with effective `weights` (0 = out of
    /// rotation). `keys` identify the backends (same length as `weights`); Maglev hashes them
    /// so that a backend keeps its table slots when others come and go.
    pub fn build(kind: SchedulerKind, weights: &[u32], keys: &[SocketAddr]) -> Self {
        match kind {
            SchedulerKind::Rr => Self::Rr(rr::RoundRobin::new(weights)),
            SchedulerKind::Wrr => Self::Wrr(wrr::WeightedRoundRobin::new(weights)),
            SchedulerKind::Maglev => Self::Maglev(maglev::Maglev::new(weights, keys)),
        }
    }

    /// Index of the backend for the next packet, or `None` when no backend is in rotation.
    /// `cursor` is the caller's own position (any value is valid); `flow_hash` is used only
    /// by Maglev.
    #[inline]
    pub fn pick(&self, cursor: &mut u32, flow_hash: u64) -> Option<usize> {
        self.pick_with(cursor, || flow_hash)
    }

    /// Like [`Scheduler::pick`], computing the flow hash only when the scheduler uses it
    /// (the packet path then skips both the hash and a separate "needs a hash?" test).
    #[inline]
    pub(crate) fn pick_with(
        &self,
        cursor: &mut u32,
        flow_hash: impl FnOnce() -> u64,
    ) -> Option<usize> {
        match self {
            Self::Rr(s) => s.pick(cursor),
            Self::Wrr(s) => s.pick(cursor),
            Self::Maglev(s) => s.pick(flow_hash()),
        }
    }

    /// The cyclic sequence of backend indices a cursor walks through (rr and wrr: `pick`
    /// deals `rotation()[cursor]` and advances); `None` for a hashing scheduler.
    pub fn rotation(&self) -> Option<&[u16]> {
        match self {
            Self::Rr(s) => Some(s.rotation()),
            Self::Wrr(s) => Some(s.rotation()),
            Self::Maglev(_) => None,
        }
    }

    /// Whether no backend is in rotation.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Rr(s) => s.is_empty(),
            Self::Wrr(s) => s.is_empty(),
            Self::Maglev(s) => s.is_empty(),
        }
    }
}
