//! One trial: a sender's report and its sinks' reports merged into what the balancer did.
//!
//! Loss is what the sender handed to the kernel minus the distinct sequence numbers that
//! reached any sink. A datagram delivered to two backends shows up as `unique` exceeding
//! `sent`, which is counted as a duplicate too (sinks cannot see each other's bitmaps).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::send::SendReport;
use super::sink::SinkReport;
use super::{add_buckets, new_histogram, Latency};

/// CPU time used during a trial, as a share of one core.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Cpu {
    /// utime + stime of the balancer's processes (and their children), percent of one core;
    /// `None` for a balancer that is no process (nftables).
    pub process_percent: Option<f64>,
    /// Microseconds of balancer CPU per forwarded datagram.
    pub process_us_per_datagram: Option<f64>,
    /// softirq time of the whole machine (from `/proc/stat`), percent of one core: every
    /// packet's receive processing in every namespace, so it includes the generator's and
    /// the sinks' share. The only figure that sees the kernel balancer's work.
    pub softirq_percent: f64,
}

/// One backend's share of a trial.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendResult {
    /// Label (the sink's address).
    pub name: String,
    /// Distinct datagrams of the sender's stream that reached it.
    pub received: u64,
    /// Copies of datagrams it had already received.
    pub duplicates: u64,
    /// Datagrams that arrived after a newer one.
    pub reordered: u64,
    /// One-way latency at this backend.
    pub latency: Latency,
}

/// A merged trial.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    /// Requested datagrams/s (0: saturation).
    pub rate: u64,
    /// Sender's datagrams per `sendmmsg`.
    pub batch: usize,
    /// Seconds the sender sent.
    pub secs: f64,
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams/s the sender achieved.
    pub offered_per_sec: f64,
    /// Distinct datagrams that reached a backend.
    pub unique: u64,
    /// `sent - unique` (0 when negative).
    pub lost: u64,
    /// `lost / sent`, percent.
    pub loss_percent: f64,
    /// Duplicates over all backends.
    pub duplicates: u64,
    /// Reordered over all backends.
    pub reordered: u64,
    /// `unique / secs`.
    pub forwarded_per_sec: f64,
    /// Most over fewest datagrams per backend (`None` when one got nothing).
    pub evenness: Option<f64>,
    /// Per backend, in sink order.
    pub per_backend: Vec<BackendResult>,
    /// One-way latency over all backends.
    pub latency: Latency,
    /// Balancer CPU, when measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
}

/// Merges a sender's report with its sinks' reports (`(label, report)`, one per backend).
pub fn merge(send: &SendReport, sinks: &[(String, SinkReport)]) -> TrialResult {
    let mut all: Histogram<u64> = new_histogram();
    let mut per_backend = Vec::with_capacity(sinks.len());
    for (name, r) in sinks {
        add_buckets(&mut all, &r.histogram);
        let s = r
            .streams
            .iter()
            .find(|s| s.stream == send.stream)
            .cloned()
            .unwrap_or_default();
        per_backend.push(BackendResult {
            name: name.clone(),
            received: s.unique,
            duplicates: s.duplicates,
            reordered: s.reordered,
            latency: r.latency.clone(),
        });
    }
    let unique: u64 = per_backend.iter().map(|b| b.received).sum();
    let mut duplicates: u64 = per_backend.iter().map(|b| b.duplicates).sum();
    duplicates += unique.saturating_sub(send.sent);
    let unique = unique.min(send.sent);
    let lost = send.sent - unique;
    let min = per_backend.iter().map(|b| b.received).min().unwrap_or(0);
    let max = per_backend.iter().map(|b| b.received).max().unwrap_or(0);
    TrialResult {
        rate: send.rate,
        batch: send.batch,
        secs: send.secs,
        sent: send.sent,
        offered_per_sec: send.offered_per_sec,
        unique,
        lost,
        loss_percent: if send.sent == 0 {
            0.0
        } else {
            100.0 * lost as f64 / send.sent as f64
        },
        duplicates,
        reordered: per_backend.iter().map(|b| b.reordered).sum(),
        forwarded_per_sec: if send.secs > 0.0 {
            unique as f64 / send.secs
        } else {
            0.0
        },
        evenness: (min > 0).then(|| max as f64 / min as f64),
        per_backend,
        latency: Latency::of(&all),
        cpu: None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::sink::Tally;
    use super::super::Header;
    use super::*;

    #[test]
    fn merge_counts_loss_and_evenness_over_backends() {
        let send = SendReport {
            stream: 9,
            sent: 10,
            secs: 1.0,
            offered_per_sec: 10.0,
            ..SendReport::default()
        };
        let mut sinks = Vec::new();
        for b in 0..3u64 {
            let mut t = Tally::new(0);
            // Backend 2 misses seq 8; everyone else gets its third.
            for seq in (b..10).step_by(3).filter(|&s| s != 8) {
                let mut d = [b' '; 44];
                Header {
                    stream: 9,
                    seq,
                    sent_ns: 0,
                }
                .emit(&mut d);
                t.datagram(&d, 1000 * (b + 1));
            }
            sinks.push((format!("b{b}"), t.report("x")));
        }
        let r = merge(&send, &sinks);
        assert_eq!(r.unique, 9);
        assert_eq!(r.lost, 1);
        assert!((r.loss_percent - 10.0).abs() < 1e-9);
        assert_eq!(
            r.per_backend.iter().map(|b| b.received).collect::<Vec<_>>(),
            [4, 3, 2]
        );
        assert_eq!(r.evenness, Some(2.0));
        assert_eq!(r.latency.count, 9);
        assert!((r.latency.max_us - 3.0).abs() < 0.01);
    }
}
