//! The dataplane micro-benchmark: the worker loop over a replaying memory port.
//!
//! The port refills each buffer from a template (a 64-byte copy standing in for the NIC's
//! DMA) and recycles what the worker transmits, so the figure is the worker's cost per packet
//! plus that copy. The io-forward baseline runs the same port with a worker that only moves
//! the burst from RX to TX, so the difference is Spray's parse, lookup, schedule, rewrite
//! and counting.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::counters::WorkerCounters;
use dataplane::flow::NatFlows;
use dataplane::port::memory::{MemBuf, MemoryPort};
use dataplane::port::Port;
use dataplane::sched::SchedulerKind;
use dataplane::service::{Backend, BackendId, MacAddr, Mode, ServiceSpec, Snapshot, VipId, VipKey};
use dataplane::wire::build::{udp_frame, FrameSpec};
use dataplane::worker::{Worker, WorkerSettings};
use serde::Serialize;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Case {
    /// RX burst straight to TX burst: the framework's own cost.
    IoForward,
    /// Full per-packet work, DR mode.
    Dr,
    /// Full per-packet work, NAT mode.
    Nat,
}

impl Case {
    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Case::IoForward => "io-forward",
            Case::Dr => "dr",
            Case::Nat => "nat",
        }
    }
}

/// Settings of one run.
#[derive(Debug, Clone)]
pub struct MicroSettings {
    /// Packets per burst.
    pub burst: usize,
    /// Frame length in bytes (without FCS).
    pub frame_len: usize,
    /// Measured time per repetition.
    pub duration: Duration,
    /// Repetitions; the median is reported.
    pub reps: usize,
    /// Scheduler of the VIP.
    pub scheduler: SchedulerKind,
    /// Distinct client flows in the replayed traffic.
    pub flows: usize,
    /// Run exactly this many bursts per repetition instead of for `duration` (a fixed
    /// amount of work, for instruction counts under callgrind).
    pub bursts: Option<u64>,
}

impl Default for MicroSettings {
    fn default() -> Self {
        Self {
            burst: 32,
            frame_len: 64,
            duration: Duration::from_millis(1000),
            reps: 5,
            scheduler: SchedulerKind::Rr,
            flows: 64,
            bursts: None,
        }
    }
}

/// Result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct MicroResult {
    /// Which case.
    pub case: Case,
    /// Median million packets per second.
    pub mpps: f64,
    /// Median nanoseconds per packet.
    pub ns_per_packet: f64,
    /// Every repetition's Mpps.
    pub runs: Vec<f64>,
    /// Median Mpps per second the thread was on a CPU (`None` without
    /// `/proc/thread-self/schedstat`): unlike `mpps`, not lowered by time spent preempted
    /// on a shared machine.
    pub mpps_cpu: Option<f64>,
}

/// Nanoseconds the calling thread has spent on a CPU (the first field of
/// `/proc/thread-self/schedstat`), if the kernel exposes it.
fn cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

const PORT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x10]);

fn snapshot(mode: Mode, scheduler: SchedulerKind) -> Snapshot {
    let backends = (1..=3u16)
        .map(|i| {
            let mut b = Backend::new(
                BackendId(i - 1),
                SocketAddr::new([198, 19, 1, i as u8].into(), 514),
                1,
            );
            b.mac = Some(MacAddr([2, 0, 0, 0, 1, i as u8]));
            b
        })
        .collect();
    let spec = ServiceSpec {
        id: VipId(0),
        name: "bench".into(),
        vip: VipKey::udp("198.18.0.10:514".parse().expect("literal")),
        mode,
        scheduler,
        backends,
        fallback: None,
        passive: false,
    };
    Snapshot::new(1, vec![spec]).expect("one valid service")
}

fn templates(s: &MicroSettings) -> Vec<Vec<u8>> {
    (0..s.flows.max(1))
        .map(|i| {
            let src = SocketAddr::new([198, 18, 0, 1 + (i % 200) as u8].into(), 40000 + i as u16);
            let spec = FrameSpec::new(src, "198.18.0.10:514".parse().expect("literal"));
            let payload = vec![b'x'; s.frame_len.saturating_sub(42)];
            udp_frame(&spec, &payload)
        })
        .collect()
}

/// Runs one case; the median of `reps` repetitions.
pub fn run_case(case: Case, s: &MicroSettings) -> MicroResult {
    let reps: Vec<(f64, Option<f64>)> = (0..s.reps.max(1)).map(|_| once(case, s)).collect();
    let runs: Vec<f64> = reps.iter().map(|r| r.0).collect();
    let cpu: Vec<f64> = reps.iter().filter_map(|r| r.1).collect();
    let mpps = median(&runs);
    MicroResult {
        case,
        mpps,
        ns_per_packet: 1e3 / mpps,
        runs,
        mpps_cpu: (cpu.len() == reps.len()).then(|| median(&cpu)),
    }
}

/// The io-forward loop: RX burst straight to TX burst. Not inlined, so that profilers and
/// callgrind can attribute its cost.
#[inline(never)]
fn io_forward_loop(port: &mut MemoryPort, burst: &mut Vec<MemBuf>, max: usize, bursts: u64) -> u64 {
    let mut n = 0u64;
    for _ in 0..bursts {
        n += port.rx_burst(burst, max) as u64;
        port.tx_burst(burst);
    }
    n
}

/// The full-work loop: [`Worker::poll`] `bursts` times. Not inlined (see [`io_forward_loop`]).
#[inline(never)]
fn worker_loop(w: &mut Worker<MemoryPort>, bursts: u64) -> u64 {
    let mut n = 0u64;
    for _ in 0..bursts {
        n += w.poll() as u64;
    }
    n
}

/// Runs `bursts` (or, when `None`, for `duration`) in chunks of 1024 polls; returns
/// (packets, seconds, seconds on a CPU).
fn drive(s: &MicroSettings, mut chunk: impl FnMut(u64) -> u64) -> (u64, f64, Option<f64>) {
    let cpu0 = cpu_ns();
    let start = Instant::now();
    let mut n = 0u64;
    match s.bursts {
        Some(b) => n += chunk(b),
        None => {
            while start.elapsed() < s.duration {
                n += chunk(1024);
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = match (cpu0, cpu_ns()) {
        (Some(a), Some(b)) if b > a => Some((b - a) as f64 / 1e9),
        _ => None,
    };
    (n, secs, cpu)
}

/// One repetition: (Mpps, Mpps per on-CPU second).
fn once(case: Case, s: &MicroSettings) -> (f64, Option<f64>) {
    let port = MemoryPort::replay(PORT_MAC, templates(s), s.burst * 4);
    match case {
        Case::IoForward => {
            let mut port = port;
            let mut burst = Vec::with_capacity(s.burst);
            let (n, secs, cpu) = drive(s, |b| io_forward_loop(&mut port, &mut burst, s.burst, b));
            (n as f64 / secs / 1e6, cpu.map(|c| n as f64 / c / 1e6))
        }
        Case::Dr | Case::Nat => {
            let mode = if case == Case::Dr {
                Mode::Dr
            } else {
                Mode::Nat
            };
            let (_tx, rx) = crossbeam_channel::unbounded();
            let counters = WorkerCounters::shared();
            let mut w = Worker::new(
                port,
                WorkerSettings {
                    burst: s.burst,
                    gateway_mac: MacAddr::default(),
                    idle: dataplane::worker::Idle::Off,
                },
                Arc::new(snapshot(mode, s.scheduler)),
                rx,
                counters.clone(),
                Arc::new(NatFlows::new(1 << 16)),
            );
            let (_, secs, cpu) = drive(s, |b| worker_loop(&mut w, b));
            assert_eq!(
                counters.dropped_total(),
                0,
                "the benchmark traffic must all be forwarded"
            );
            let n = counters.tx_packets.get() as f64;
            (n / secs / 1e6, cpu.map(|c| n / c / 1e6))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_forwards_packets() {
        let s = MicroSettings {
            duration: Duration::from_millis(20),
            reps: 1,
            ..Default::default()
        };
        for case in [Case::IoForward, Case::Dr, Case::Nat] {
            let r = run_case(case, &s);
            assert!(r.mpps > 0.0, "{case:?}");
        }
    }

    #[test]
    fn templates_have_the_requested_length() {
        let t = templates(&MicroSettings::default());
        assert!(t.iter().all(|f| f.len() == 64));
    }
}
