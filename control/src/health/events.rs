//! What happened to the table, kept in a bounded ring for the control socket.
//!
//! Every change the controller makes becomes one [`Logged`] entry with the next sequence
//! number: a check or a passive report changed a backend's health ([`LogKind::Health`],
//! with the [`HealthEvent`] detail), the operator changed the table ([`LogKind::Admin`]), or
//! the config file was reloaded or refused ([`LogKind::Reload`]). One ring, one sequence, so
//! `events` with `since` is one ordered stream. It keeps the last [`EVENT_RING`] entries;
//! older ones are dropped. Readers get a copy, so the lock is held only for a `Vec` clone.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Serialize;

/// Entries kept.
pub const EVENT_RING: usize = 1024;

/// What a check decided about a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The checker took it out of rotation.
    Down,
    /// The checker put it back.
    Up,
}

impl EventKind {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Up => "up",
        }
    }
}

/// One health transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthEvent {
    /// Wall-clock time of the decision.
    pub time: SystemTime,
    /// Monotonic time of the decision (for measurements in this process).
    #[serde(skip)]
    pub instant: Instant,
    /// Snapshot generation that carries the change (0 when none was needed).
    pub generation: u64,
    /// What happened.
    pub kind: EventKind,
    /// The backend's address:port.
    pub backend: SocketAddr,
    /// The services affected, as `name (vip)`.
    pub services: Vec<String>,
    /// Check type (`udp`, `tcp`, `http`, `icmp`, `exec`) or `passive`.
    pub check: String,
    /// The deciding error, or why it happened.
    pub reason: String,
    /// Consecutive successes behind the decision.
    pub successes: u32,
    /// Consecutive failures behind the decision.
    pub failures: u32,
}

/// Which kind of change a [`Logged`] entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogKind {
    /// A check or a passive report (see [`Logged::health`]).
    Health,
    /// An operator's change through the control socket.
    Admin,
    /// A reload of the config file, applied or refused.
    Reload,
}

impl LogKind {
    /// The name the control socket uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::Admin => "admin",
            Self::Reload => "reload",
        }
    }
}

/// One entry of the ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// Sequence number, set by [`EventRing::push`]: one more than the entry before.
    pub seq: u64,
    /// Wall-clock time.
    pub time: SystemTime,
    /// What kind of change.
    pub kind: LogKind,
    /// The service concerned, when there is one.
    pub service: Option<String>,
    /// The backend concerned, when there is one.
    pub backend: Option<SocketAddr>,
    /// What happened, and who did it.
    pub message: String,
    /// The detail of a health transition.
    pub health: Option<HealthEvent>,
}

/// The last [`EVENT_RING`] entries, oldest first.
#[derive(Debug)]
pub struct EventRing {
    events: VecDeque<Logged>,
    cap: usize,
    last_seq: u64,
}

impl Default for EventRing {
    fn default() -> Self {
        Self::new(EVENT_RING)
    }
}

impl EventRing {
    /// A ring keeping the last `cap` (at least 1) entries.
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self {
            events: VecDeque::with_capacity(cap),
            cap,
            last_seq: 0,
        }
    }

    /// Adds `e` with the next sequence number, dropping the oldest entry when full;
    /// returns the number.
    pub fn push(&mut self, mut e: Logged) -> u64 {
        if self.events.len() == self.cap {
            self.events.pop_front();
        }
        self.last_seq += 1;
        e.seq = self.last_seq;
        self.events.push_back(e);
        self.last_seq
    }

    /// A copy of the entries with a sequence number above `seq`, oldest first.
    pub fn since(&self, seq: u64) -> Vec<Logged> {
        self.events
            .iter()
            .filter(|e| e.seq > seq)
            .cloned()
            .collect()
    }

    /// A copy of the health transitions, oldest first.
    pub fn health(&self) -> Vec<HealthEvent> {
        self.events
            .iter()
            .filter_map(|e| e.health.clone())
            .collect()
    }
}

/// The ring as shared between the controller (writer) and readers.
pub type SharedEvents = Arc<Mutex<EventRing>>;

/// A copy of the health transitions in `ring`, oldest first (empty if a writer panicked).
pub fn events(ring: &SharedEvents) -> Vec<HealthEvent> {
    ring.lock().map(|r| r.health()).unwrap_or_default()
}

/// A copy of the entries of `ring` after `seq`, oldest first (empty if a writer panicked).
pub fn since(ring: &SharedEvents, seq: u64) -> Vec<Logged> {
    ring.lock().map(|r| r.since(seq)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u32) -> HealthEvent {
        HealthEvent {
            time: SystemTime::now(),
            instant: Instant::now(),
            generation: u64::from(n),
            kind: EventKind::Down,
            backend: "127.0.0.1:1".parse().unwrap(),
            services: vec![],
            check: "udp".into(),
            reason: String::new(),
            successes: 0,
            failures: n,
        }
    }

    fn logged(n: u32) -> Logged {
        Logged {
            seq: 0,
            time: SystemTime::now(),
            kind: if n % 2 == 0 {
                LogKind::Health
            } else {
                LogKind::Admin
            },
            service: None,
            backend: None,
            message: format!("event {n}"),
            health: (n % 2 == 0).then(|| ev(n)),
        }
    }

    #[test]
    fn ring_keeps_the_newest_in_one_sequence() {
        let mut r = EventRing::new(3);
        for i in 0..5 {
            assert_eq!(r.push(logged(i)), u64::from(i) + 1);
        }
        let seqs: Vec<_> = r.since(0).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        let seqs: Vec<_> = r.since(4).iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [5]);
        let g: Vec<_> = r.health().iter().map(|e| e.generation).collect();
        assert_eq!(g, [2, 4], "health entries only");
    }

    #[test]
    fn events_serialise_for_the_control_socket() {
        let j = serde_json::to_string(&ev(1)).unwrap();
        assert!(j.contains("\"kind\":\"down\""), "{j}");
        assert!(!j.contains("instant"), "{j}");
    }
}
