//! Idle back-off: what a poll-mode worker does while its port has nothing to receive.

use std::time::Duration;

#[cfg(doc)]
use super::Worker;

/// What a poll-mode worker does while its port stays empty, so that an idle appliance does
/// not burn its cores. The price is latency on the first packet after a quiet spell, at most
/// about `max_sleep` plus the kernel's timer slack (docs/benchmarks.md has the figures).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idle {
    /// Never back off: the cores poll even while idle, for the lowest latency.
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
pub(crate) enum IdleAction {
    /// Poll again at once (one pause hint).
    Spin,
    /// Pause for `n` hints, then poll.
    Pause(u32),
    /// Sleep, then poll.
    Sleep(Duration),
}

/// Counts empty polls and says how to wait; any packet resets it.
#[derive(Debug, Clone)]
pub(crate) struct IdleBackoff {
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
    pub(crate) fn after_poll(&mut self, received: usize) -> IdleAction {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
