//! State changes of backends, kept in a bounded ring for the control socket.
//!
//! Every change the controller makes (a check takes a backend down or up, a passive report
//! makes it suspect, an operator drains it or changes its weight) becomes one
//! [`HealthEvent`], logged with `tracing` and pushed into an [`EventRing`] that keeps the
//! last [`EVENT_RING`] of them; older ones are dropped. Readers get a copy
//! ([`EventRing::events`]), so the lock is held only for a `Vec` clone.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use serde::Serialize;

/// Events kept.
pub const EVENT_RING: usize = 1024;

/// What happened to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The checker took it out of rotation.
    Down,
    /// The checker put it back.
    Up,
    /// A worker saw an ICMP error from it: an immediate check follows.
    Suspect,
    /// The operator drained it (no new packets).
    Drained,
    /// The operator put it back in rotation.
    Enabled,
    /// The operator changed its weight.
    Weight,
}

impl EventKind {
    /// Lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Down => "down",
            Self::Up => "up",
            Self::Suspect => "suspect",
            Self::Drained => "drained",
            Self::Enabled => "enabled",
            Self::Weight => "weight",
        }
    }
}

/// One state change.
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
    /// Check type (`udp`, `tcp`, `http`, `icmp`, `exec`), `passive` or `admin`.
    pub check: String,
    /// The deciding error, or why it happened.
    pub reason: String,
    /// Consecutive successes behind the decision.
    pub successes: u32,
    /// Consecutive failures behind the decision.
    pub failures: u32,
}

/// The last [`EVENT_RING`] events, oldest first.
#[derive(Debug)]
pub struct EventRing {
    events: VecDeque<HealthEvent>,
    cap: usize,
}

impl Default for EventRing {
    fn default() -> Self {
        Self::new(EVENT_RING)
    }
}

impl EventRing {
    /// A ring keeping the last `cap` (at least 1) events.
    pub fn new(cap: usize) -> Self {
        let cap = cap.max(1);
        Self {
            events: VecDeque::with_capacity(cap),
            cap,
        }
    }

    /// Adds `e`, dropping the oldest event when full.
    pub fn push(&mut self, e: HealthEvent) {
        if self.events.len() == self.cap {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// A copy of the events, oldest first.
    pub fn events(&self) -> Vec<HealthEvent> {
        self.events.iter().cloned().collect()
    }
}

/// The ring as shared between the controller (writer) and readers.
pub type SharedEvents = Arc<Mutex<EventRing>>;

/// A copy of the events in `ring`, oldest first (empty if a writer panicked).
pub fn events(ring: &SharedEvents) -> Vec<HealthEvent> {
    ring.lock().map(|r| r.events()).unwrap_or_default()
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

    #[test]
    fn ring_keeps_the_newest() {
        let mut r = EventRing::new(3);
        for i in 0..5 {
            r.push(ev(i));
        }
        let g: Vec<_> = r.events().iter().map(|e| e.generation).collect();
        assert_eq!(g, [2, 3, 4]);
    }

    #[test]
    fn events_serialise_for_the_control_socket() {
        let j = serde_json::to_string(&ev(1)).unwrap();
        assert!(j.contains("\"kind\":\"down\""), "{j}");
        assert!(!j.contains("instant"), "{j}");
    }
}
