//! Medians over repetitions, `results.json` and the summary table.
//!
//! A side-by-side run measures each balancer several times, interleaved (every balancer
//! once, then every balancer again), because this kind of machine drifts by tens of percent
//! within minutes. The summary keeps every repetition's figures and reports their medians.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;

use serde::{Deserialize, Serialize};

use super::measure::PeerRun;
use super::Latency;

/// The medians of one balancer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerSummary {
    /// Balancer's name.
    pub name: String,
    /// Repetitions measured.
    pub reps: usize,
    /// Median loss-free forwarded datagrams/s.
    pub loss_free_per_sec: f64,
    /// Every repetition's loss-free rate.
    pub loss_free_runs: Vec<f64>,
    /// Some repetition's loss-free rate was the generator's limit, not the balancer's.
    pub sender_limited: bool,
    /// Median forwarded datagrams/s at saturation.
    pub saturation_forwarded_per_sec: f64,
    /// Median offered datagrams/s at saturation.
    pub saturation_offered_per_sec: f64,
    /// Rate of the latency trial.
    pub latency_rate: u64,
    /// Median of each latency percentile at that rate.
    pub latency: Latency,
    /// Median loss at that rate, percent.
    pub latency_loss_percent: f64,
    /// Median balancer CPU at that rate, percent of one core (`None`: no process).
    pub cpu_percent: Option<f64>,
    /// Median balancer CPU per datagram at that rate, microseconds.
    pub cpu_us_per_datagram: Option<f64>,
    /// Median machine-wide softirq at that rate, percent of one core.
    pub softirq_percent: f64,
    /// Median balancer CPU at saturation, percent of one core.
    pub saturation_cpu_percent: Option<f64>,
    /// Median machine-wide softirq at saturation, percent of one core.
    pub saturation_softirq_percent: f64,
    /// Median most/fewest datagrams per backend at the latency rate.
    pub evenness: Option<f64>,
}

/// What `results.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The machine the figures come from.
    pub machine: String,
    /// Free-form description of the settings (sizes, durations, threshold).
    pub settings: String,
    /// One entry per balancer, in the order first measured.
    pub peers: Vec<PeerSummary>,
    /// Every repetition, as measured.
    pub runs: Vec<PeerRun>,
}

/// Median of `v` (the upper one of an even count; 0 for none).
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return 0.0;
    }
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn median_opt(v: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = v.flatten().collect();
    (!v.is_empty()).then(|| median(&v))
}

/// One line describing this machine: CPU model, cores, kernel.
pub fn machine() -> String {
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default();
    format!("{model}, {cores} cores, Linux {kernel}")
}

/// Summarizes repetitions (any order; grouped by name, in order of first appearance).
pub fn summarize(runs: Vec<PeerRun>, settings: &str) -> Results {
    let mut order: Vec<String> = Vec::new();
    let mut by: BTreeMap<String, Vec<&PeerRun>> = BTreeMap::new();
    for r in &runs {
        if !order.contains(&r.name) {
            order.push(r.name.clone());
        }
        by.entry(r.name.clone()).or_default().push(r);
    }
    let peers = order
        .iter()
        .map(|name| {
            let rs = &by[name];
            let m =
                |f: &dyn Fn(&PeerRun) -> f64| median(&rs.iter().map(|r| f(r)).collect::<Vec<_>>());
            let lat = |f: &dyn Fn(&Latency) -> f64| m(&|r| f(&r.latency.latency));
            PeerSummary {
                name: name.clone(),
                reps: rs.len(),
                loss_free_per_sec: m(&|r| r.loss_free_per_sec),
                loss_free_runs: rs.iter().map(|r| r.loss_free_per_sec).collect(),
                sender_limited: rs.iter().any(|r| r.sender_limited),
                saturation_forwarded_per_sec: m(&|r| r.saturation.forwarded_per_sec),
                saturation_offered_per_sec: m(&|r| r.saturation.offered_per_sec),
                latency_rate: rs.first().map_or(0, |r| r.latency.rate),
                latency: Latency {
                    count: m(&|r| r.latency.latency.count as f64) as u64,
                    p50_us: lat(&|l| l.p50_us),
                    p90_us: lat(&|l| l.p90_us),
                    p99_us: lat(&|l| l.p99_us),
                    p999_us: lat(&|l| l.p999_us),
                    max_us: lat(&|l| l.max_us),
                    mean_us: lat(&|l| l.mean_us),
                },
                latency_loss_percent: m(&|r| r.latency.loss_percent),
                cpu_percent: median_opt(
                    rs.iter()
                        .map(|r| r.latency.cpu.as_ref().and_then(|c| c.process_percent)),
                ),
                cpu_us_per_datagram: median_opt(rs.iter().map(|r| {
                    r.latency
                        .cpu
                        .as_ref()
                        .and_then(|c| c.process_us_per_datagram)
                })),
                softirq_percent: m(&|r| r.latency.cpu.as_ref().map_or(0.0, |c| c.softirq_percent)),
                saturation_cpu_percent: median_opt(
                    rs.iter()
                        .map(|r| r.saturation.cpu.as_ref().and_then(|c| c.process_percent)),
                ),
                saturation_softirq_percent: m(&|r| {
                    r.saturation.cpu.as_ref().map_or(0.0, |c| c.softirq_percent)
                }),
                evenness: median_opt(rs.iter().map(|r| r.latency.evenness)),
            }
        })
        .collect();
    Results {
        machine: machine(),
        settings: settings.to_owned(),
        peers,
        runs,
    }
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "–".to_owned(), |x| format!("{x:.prec$}"))
}

/// The summary as a Markdown table (also readable in a terminal).
pub fn table(r: &Results) -> String {
    let mut s = String::new();
    let rate = r.peers.first().map_or(0, |p| p.latency_rate);
    let _ = writeln!(
        s,
        "| balancer | loss-free/s (median) | runs | max fwd/s | p50 µs | p99 µs | p99.9 µs | max µs | CPU % @{rate}/s | µs CPU/dgram | softirq % | CPU % @max | softirq % @max | max/min |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for p in &r.peers {
        let runs: Vec<String> = p
            .loss_free_runs
            .iter()
            .map(|x| format!("{:.0}k", x / 1e3))
            .collect();
        let _ = writeln!(
            s,
            "| {} | {:.0}{} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {:.0} | {} | {:.0} | {} |",
            p.name,
            p.loss_free_per_sec,
            if p.sender_limited { " (sender-limited)" } else { "" },
            runs.join(" / "),
            p.saturation_forwarded_per_sec,
            p.latency.p50_us,
            p.latency.p99_us,
            p.latency.p999_us,
            p.latency.max_us,
            opt(p.cpu_percent, 1),
            opt(p.cpu_us_per_datagram, 2),
            p.softirq_percent,
            opt(p.saturation_cpu_percent, 0),
            p.saturation_softirq_percent,
            opt(p.evenness, 3),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_group_by_name_in_first_seen_order() {
        let run = |name: &str, lf: f64| PeerRun {
            name: name.into(),
            loss_free_per_sec: lf,
            ..PeerRun::default()
        };
        let r = summarize(
            vec![run("b", 3.0), run("a", 1.0), run("b", 1.0), run("b", 2.0)],
            "",
        );
        assert_eq!(r.peers.len(), 2);
        assert_eq!(r.peers[0].name, "b");
        assert_eq!(r.peers[0].loss_free_per_sec, 2.0);
        assert_eq!(r.peers[0].reps, 3);
        assert_eq!(r.peers[1].loss_free_per_sec, 1.0);
        assert!(table(&r).contains("| b | 2"));
        assert_eq!(median(&[]), 0.0);
    }
}
