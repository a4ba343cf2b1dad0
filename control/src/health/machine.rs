//! The rise/fall state machine of one checked backend, sans I/O.
//!
//! It takes probe results and passive reports with the time they happened and says when the
//! backend changes state; it never reads a clock or touches a socket, so tests drive it with
//! made-up instants (quinn's `handle_*` convention).
//!
//! * An up backend goes down after `fall` consecutive failures; a down one comes up after
//!   `rise` consecutive successes. A result of the other kind resets the run, so a flapping
//!   backend (ok, fail, ok, fail...) stays where it is.
//! * An ICMP destination unreachable that came back for a *data* datagram (a passive
//!   report from a worker) takes an up backend down at once: the datagram was not delivered,
//!   which is proof, not a hint, and the backend's kernel rate-limits those errors so
//!   tightly (one a second per peer) that waiting for a check to see one loses seconds.
//! * Backends start up (keepalived's default): a dead one is found after `fall` checks.

use std::time::Instant;

/// Health as the checker sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// In rotation (unless drained or of weight 0).
    Up,
    /// Out of rotation.
    Down,
}

impl State {
    /// Lowercase name for logs and events.
    pub fn name(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
        }
    }
}

/// A change of state decided by [`Machine::handle_result`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// When the deciding result came in.
    pub at: Instant,
    /// The new state.
    pub to: State,
    /// Consecutive successes that led to it (0 for a failure).
    pub successes: u32,
    /// Consecutive failures that led to it (0 for a success).
    pub failures: u32,
    /// The deciding probe's error, or "check passed".
    pub reason: String,
}

/// Rise/fall bookkeeping of one backend.
#[derive(Debug, Clone)]
pub struct Machine {
    state: State,
    rise: u32,
    fall: u32,
    successes: u32,
    failures: u32,
    last_change: Option<Instant>,
    last_failure: Option<Instant>,
}

/// How long after a failed check silence stops being "no news" (see [`Machine::silence_counts`]).
///
/// Linux sends at most one ICMP error per second to a peer after a burst of six
/// (`net.ipv4.icmp_ratelimit`, 1000 ms): a dead UDP backend probed every 100 ms answers the
/// first probes with port unreachable and then mostly with nothing. 1.5 s covers one
/// rate-limit period with margin.
pub const SILENCE_QUIET: std::time::Duration = std::time::Duration::from_millis(1500);

impl Machine {
    /// A backend that starts up; `rise` and `fall` are at least 1.
    pub fn new(rise: u32, fall: u32) -> Self {
        Self {
            state: State::Up,
            rise: rise.max(1),
            fall: fall.max(1),
            successes: 0,
            failures: 0,
            last_change: None,
            last_failure: None,
        }
    }

    /// Whether a silent probe (a UDP check heard neither reply nor error) counts as a
    /// success at `now`: only when no check failed within [`SILENCE_QUIET`]. Otherwise it is
    /// no news and must be ignored: it neither resets the failure count nor helps a down
    /// backend rise.
    pub fn silence_counts(&self, now: Instant) -> bool {
        match self.last_failure {
            Some(t) => now.saturating_duration_since(t) >= SILENCE_QUIET,
            None => true,
        }
    }

    /// The current state.
    pub fn state(&self) -> State {
        self.state
    }

    /// When the last failure (a failed check or an unreachable for data) came in.
    pub fn last_failure(&self) -> Option<Instant> {
        self.last_failure
    }

    /// When the state last changed.
    pub fn last_change(&self) -> Option<Instant> {
        self.last_change
    }

    /// Consecutive (successes, failures) so far.
    pub fn counts(&self) -> (u32, u32) {
        (self.successes, self.failures)
    }

    /// Feeds one probe result; returns the transition when it changes the state.
    #[must_use]
    pub fn handle_result(&mut self, now: Instant, ok: bool, reason: &str) -> Option<Transition> {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.state == State::Down && self.successes >= self.rise {
                return Some(self.change(now, State::Up, reason));
            }
        } else {
            self.last_failure = Some(now);
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.state == State::Up && self.failures >= self.fall {
                return Some(self.change(now, State::Down, reason));
            }
        }
        None
    }

    /// A datagram sent to the backend came back as destination unreachable: an up backend
    /// goes down at once, and a down one starts its quiet period ([`SILENCE_QUIET`]) again.
    #[must_use]
    pub fn handle_unreachable(&mut self, now: Instant, reason: &str) -> Option<Transition> {
        self.last_failure = Some(now);
        self.successes = 0;
        self.failures = self.failures.saturating_add(1);
        (self.state == State::Up).then(|| self.change(now, State::Down, reason))
    }

    fn change(&mut self, now: Instant, to: State, reason: &str) -> Transition {
        let t = Transition {
            at: now,
            to,
            successes: self.successes,
            failures: self.failures,
            reason: reason.to_owned(),
        };
        self.state = to;
        self.last_change = Some(now);
        self.successes = 0;
        self.failures = 0;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64) -> Instant {
        thread_local!(static T0: Instant = Instant::now());
        T0.with(|t| *t + Duration::from_millis(ms))
    }

    /// A dead UDP backend behind Linux's ICMP rate limit: probed every 100 ms, it answers
    /// one probe in ten with port unreachable and the rest with silence. Silence right after
    /// an error must not reset the failure count (or the backend would never go down) nor
    /// raise it again (or it would flap back up); real silence, 1.5 s after the last error,
    /// brings it back.
    #[test]
    fn silence_after_an_icmp_error_is_no_news() {
        let mut m = Machine::new(2, 3);
        let mut went_down = None;
        for k in 0..40u64 {
            let now = at(k * 100);
            let failed = k % 10 == 0;
            let t = if failed {
                m.handle_result(now, false, "icmp port unreachable")
            } else if m.silence_counts(now) {
                m.handle_result(now, true, "silence")
            } else {
                None
            };
            if let Some(t) = t {
                assert_eq!(t.to, State::Down, "silence raised it at {k}");
                went_down.get_or_insert(k);
            }
        }
        // The third error (at 2 s) decides, and nothing brings it back while errors go on.
        assert_eq!(went_down, Some(20));
        assert_eq!(m.state(), State::Down);
        // Errors stop (the backend is back): silence counts again after the quiet period.
        let last_error = at(30 * 100);
        assert!(!m.silence_counts(last_error + Duration::from_millis(1400)));
        assert!(m.silence_counts(last_error + SILENCE_QUIET));
        let t1 = last_error + SILENCE_QUIET;
        assert!(m.handle_result(t1, true, "silence").is_none());
        let up = m.handle_result(t1 + Duration::from_millis(100), true, "silence");
        assert_eq!(up.map(|t| t.to), Some(State::Up));
    }

    #[test]
    fn silence_counts_when_nothing_ever_failed() {
        let m = Machine::new(2, 3);
        assert!(m.silence_counts(at(0)));
    }

    #[test]
    fn falls_after_fall_failures_and_rises_after_rise_successes() {
        let mut m = Machine::new(2, 3);
        assert_eq!(m.state(), State::Up);
        assert!(m.handle_result(at(0), false, "refused").is_none());
        assert!(m.handle_result(at(100), false, "refused").is_none());
        let t = m.handle_result(at(200), false, "refused").unwrap();
        assert_eq!((t.to, t.failures, t.at), (State::Down, 3, at(200)));
        assert_eq!(t.reason, "refused");
        assert_eq!(m.state(), State::Down);
        // Further failures change nothing.
        assert!(m.handle_result(at(300), false, "refused").is_none());
        assert!(m.handle_result(at(400), true, "ok").is_none());
        let t = m.handle_result(at(500), true, "ok").unwrap();
        assert_eq!((t.to, t.successes), (State::Up, 2));
        assert_eq!(m.last_change(), Some(at(500)));
    }

    #[test]
    fn a_success_resets_the_failure_run() {
        let mut m = Machine::new(1, 2);
        assert!(m.handle_result(at(0), false, "x").is_none());
        assert!(m.handle_result(at(1), true, "ok").is_none());
        assert!(m.handle_result(at(2), false, "x").is_none());
        assert!(m.handle_result(at(3), false, "x").is_some());
    }

    #[test]
    fn flapping_never_changes_state() {
        let mut up = Machine::new(2, 2);
        let mut down = Machine::new(2, 2);
        for i in 0..2 {
            let _ = down.handle_result(at(i), false, "x");
        }
        assert_eq!(down.state(), State::Down);
        for i in 0..100 {
            let ok = i % 2 == 0;
            assert!(up.handle_result(at(i), ok, "flap").is_none());
            assert!(down.handle_result(at(i), ok, "flap").is_none());
        }
        assert_eq!((up.state(), down.state()), (State::Up, State::Down));
    }

    #[test]
    fn rise_and_fall_of_one_act_at_once() {
        let mut m = Machine::new(1, 1);
        assert_eq!(m.handle_result(at(0), false, "x").unwrap().to, State::Down);
        assert_eq!(m.handle_result(at(1), true, "ok").unwrap().to, State::Up);
    }

    #[test]
    fn an_unreachable_for_data_takes_an_up_backend_down_at_once() {
        let mut m = Machine::new(2, 3);
        let t = m
            .handle_unreachable(at(5), "icmp port unreachable")
            .unwrap();
        assert_eq!((t.to, t.failures, t.at), (State::Down, 1, at(5)));
        assert_eq!(m.last_failure(), Some(at(5)));
        // A down backend stays down, and silence is no news for a while again.
        assert!(m
            .handle_unreachable(at(900), "icmp port unreachable")
            .is_none());
        assert!(!m.silence_counts(at(900) + SILENCE_QUIET - Duration::from_millis(1)));
        assert!(m.silence_counts(at(900) + SILENCE_QUIET));
        // It rises on `rise` successes as after any other failure.
        assert!(m.handle_result(at(2500), true, "ok").is_none());
        assert_eq!(m.handle_result(at(2600), true, "ok").unwrap().to, State::Up);
    }
}
