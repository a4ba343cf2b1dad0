//! The dataplane micro-benchmark: the worker loop over a replaying memory port.
//!
//! The port refills each buffer from a template (a 64-byte copy standing in for the NIC's
//! DMA) and recycles what the worker transmits, so the figure is the worker's cost per packet
//! plus that copy. The io-forward baseline runs the same port with a worker that only moves
//! the burst from RX to TX, so the difference is Spray's parse, lookup, schedule, rewrite
//! and counting.
//!
//! With `workers > 1` each worker thread gets its own port, worker and counters, pinned to
//! its own core (`core_affinity`, cores 0, 1, ...) and replaying its own set of client flows
//! (as RSS would hand each core different flows); the NAT flow table is shared, as in
//! `spray run`. The threads start together behind a barrier and the result is the sum of
//! their rates. On a machine with fewer cores than workers, threads share cores and the
//! figure says so by not scaling.

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use dataplane::counters::WorkerCounters;
use dataplane::flow::NatFlows;
use dataplane::port::memory::MemoryPort;
use dataplane::port::Port;
use dataplane::sched::SchedulerKind;
use dataplane::service::{
    Backend, BackendId, Encap, MacAddr, MirrorSpec, Mode, ServiceSpec, Snapshot, Tunnel, VipId,
    VipKey,
};
use dataplane::testkit::frames::{udp_frame, FrameSpec};
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
    /// Full per-packet work, DR mode with every backend reached through an IPIP tunnel: the
    /// DR work on the general path plus an outer IPv4 header grown in the buffer's headroom.
    Tunnel,
    /// DR with one mirror pool of two backends: every datagram also copied into a fresh
    /// buffer and sent to the pool (the general path). Mpps count received datagrams.
    Mirror1,
    /// DR with two mirror pools of two backends each.
    Mirror2,
}

impl Case {
    /// Every case, in the order `spray bench dataplane` runs them (io-forward first: the
    /// others are reported against it).
    pub const ALL: [Case; 6] = [
        Case::IoForward,
        Case::Dr,
        Case::Nat,
        Case::Tunnel,
        Case::Mirror1,
        Case::Mirror2,
    ];

    /// Short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Case::IoForward => "io-forward",
            Case::Dr => "dr",
            Case::Nat => "nat",
            Case::Tunnel => "tunnel-ipip",
            Case::Mirror1 => "dr-mirror1",
            Case::Mirror2 => "dr-mirror2",
        }
    }

    /// The case called `name` ([`Case::name`]).
    pub fn from_name(name: &str) -> Option<Case> {
        Case::ALL.into_iter().find(|c| c.name() == name)
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
    /// Distinct client flows in the replayed traffic (per worker).
    pub flows: usize,
    /// Worker threads, each pinned to its own core.
    pub workers: usize,
    /// Run exactly this many bursts per repetition instead of for `duration` (a fixed
    /// amount of work, for instruction counts under callgrind).
    pub bursts: Option<u64>,
    /// Act as a NIC whose RX checksum offload checked every IPv4 header (and found it
    /// good), so the worker skips its own check: what Spray costs on such a NIC.
    pub nic_checksum: bool,
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
            workers: 1,
            bursts: None,
            nic_checksum: false,
        }
    }
}

/// Result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct MicroResult {
    /// Which case.
    pub case: Case,
    /// Worker threads (cores).
    pub workers: usize,
    /// Median million packets per second, all workers together.
    pub mpps: f64,
    /// Median nanoseconds per packet of one worker (`workers / mpps` µs).
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
pub(crate) fn cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

const PORT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x10]);

/// The benchmark VIP's three backends, reached through `tunnel` when given.
fn backends(tunnel: Option<Tunnel>) -> Vec<Backend> {
    (1..=3u16)
        .map(|i| {
            let mut b = Backend::new(
                BackendId(i - 1),
                SocketAddr::new([198, 19, 1, i as u8].into(), 514),
                1,
            );
            b.mac = Some(MacAddr([2, 0, 0, 0, 1, i as u8]));
            b.tunnel = tunnel;
            b
        })
        .collect()
}

/// The tunnel of [`Case::Tunnel`]: IPIP from the balancer's address, with a jumbo MTU so
/// that every `--size` fits once encapsulated (at the default MTU, 1 500-byte frames would be
/// answered with "fragmentation needed" instead of forwarded).
pub(crate) fn ipip() -> Tunnel {
    Tunnel {
        encap: Encap::Ipip,
        source: [198, 18, 0, 2].into(),
        mtu: 9000,
    }
}

fn snapshot(case: Case, scheduler: SchedulerKind) -> Snapshot {
    let mode = if case == Case::Nat {
        Mode::Nat
    } else {
        Mode::Dr
    };
    let backends = backends((case == Case::Tunnel).then(ipip));
    let spec = ServiceSpec {
        id: VipId(0),
        name: "bench".into(),
        vip: VipKey::udp("198.18.0.10:514".parse().expect("literal")),
        mode,
        scheduler,
        backends,
        fallback: None,
        passive: false,
        mirrors: mirror_pools(match case {
            Case::Mirror1 => 1,
            Case::Mirror2 => 2,
            _ => 0,
        }),
    };
    Snapshot::new(1, vec![spec]).expect("one valid service")
}

/// `n` mirror pools of two resolved backends each, ids after the primary pool's.
pub(crate) fn mirror_pools(n: u8) -> Vec<MirrorSpec> {
    (0..n)
        .map(|p| {
            let backends = (1..=2u8)
                .map(|i| {
                    let addr = SocketAddr::new([198, 19, 10 + p, i].into(), 514);
                    let mut b =
                        Backend::new(BackendId(100 + u16::from(p) * 2 + u16::from(i)), addr, 1);
                    b.mac = Some(MacAddr([2, 0, 0, 10 + p, 1, i]));
                    b
                })
                .collect();
            MirrorSpec::new(format!("pool{p}"), SchedulerKind::Rr, backends)
        })
        .collect()
}

fn templates(s: &MicroSettings, worker: usize) -> Vec<Vec<u8>> {
    (0..s.flows.max(1))
        .map(|i| {
            let src = SocketAddr::new(
                [198, 18, 2 + (worker % 250) as u8, 1 + (i % 200) as u8].into(),
                40000 + i as u16,
            );
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
    let workers = s.workers.max(1);
    MicroResult {
        case,
        workers,
        mpps,
        ns_per_packet: 1e3 * workers as f64 / mpps,
        runs,
        mpps_cpu: (cpu.len() == reps.len()).then(|| median(&cpu)),
    }
}

/// One repetition: every worker at once, their rates summed: (Mpps, Mpps per on-CPU
/// second, when every worker could read its CPU time).
fn once(case: Case, s: &MicroSettings) -> (f64, Option<f64>) {
    let n = s.workers.max(1);
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let barrier = Arc::new(Barrier::new(n));
    let flows = Arc::new(NatFlows::new(1 << 16));
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
            let (barrier, flows, s) = (barrier.clone(), flows.clone(), s.clone());
            thread::spawn(move || {
                if let Some(c) = core {
                    // Best effort: an unpinned thread still measures, only less steadily.
                    core_affinity::set_for_current(c);
                }
                barrier.wait();
                one_worker(case, &s, i, flows)
            })
        })
        .collect();
    let per: Vec<(f64, Option<f64>)> = handles
        .into_iter()
        .map(|h| h.join().expect("a benchmark worker panicked"))
        .collect();
    let mpps = per.iter().map(|p| p.0).sum();
    let cpu = per.iter().map(|p| p.1).sum::<Option<f64>>();
    (mpps, cpu)
}

/// The io-forward loop: RX burst straight to TX burst (this benchmark's and the DPDK one's).
/// Not inlined, so that profilers and callgrind can attribute its cost.
#[inline(never)]
pub(crate) fn io_forward_loop<P: Port>(
    port: &mut P,
    burst: &mut Vec<P::Buf>,
    max: usize,
    bursts: u64,
) -> u64 {
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

/// Runs exactly `bursts` polls (or, when `None`, polls for `duration`) in chunks of 1024 polls; returns
/// (packets, seconds, seconds on a CPU).
pub(crate) fn drive(
    bursts: Option<u64>,
    duration: Duration,
    mut chunk: impl FnMut(u64) -> u64,
) -> (u64, f64, Option<f64>) {
    let cpu0 = cpu_ns();
    let start = Instant::now();
    let mut n = 0u64;
    match bursts {
        Some(b) => n += chunk(b),
        None => {
            while start.elapsed() < duration {
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

/// One worker's repetition: (Mpps, Mpps per on-CPU second of this thread).
fn one_worker(
    case: Case,
    s: &MicroSettings,
    index: usize,
    nat_flows: Arc<NatFlows>,
) -> (f64, Option<f64>) {
    let mut port = MemoryPort::replay(PORT_MAC, templates(s, index), s.burst * 4);
    if s.nic_checksum {
        port.set_rx_ip_checksum_offload(Some(dataplane::port::RxIpChecksum::Good));
    }
    match case {
        Case::IoForward => {
            let mut port = port;
            let mut burst = Vec::with_capacity(s.burst);
            let (n, secs, cpu) = drive(s.bursts, s.duration, |b| {
                io_forward_loop(&mut port, &mut burst, s.burst, b)
            });
            (n as f64 / secs / 1e6, cpu.map(|c| n as f64 / c / 1e6))
        }
        Case::Dr | Case::Nat | Case::Tunnel | Case::Mirror1 | Case::Mirror2 => {
            let (_tx, rx) = crossbeam_channel::unbounded();
            let counters = WorkerCounters::shared();
            let mut w = Worker::new(
                port,
                WorkerSettings {
                    burst: s.burst,
                    gateway_mac: MacAddr::default(),
                    idle: dataplane::worker::Idle::Off,
                },
                Arc::new(snapshot(case, s.scheduler)),
                rx,
                counters.clone(),
                nat_flows,
            );
            let (_, secs, cpu) = drive(s.bursts, s.duration, |b| worker_loop(&mut w, b));
            assert_eq!(
                counters.dropped_total(),
                0,
                "the benchmark traffic must all be forwarded"
            );
            // Datagrams received: with mirror pools more leave than arrive.
            let n = counters.rx_packets.get() as f64;
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
        for case in Case::ALL {
            let r = run_case(case, &s);
            assert!(r.mpps > 0.0, "{case:?}");
            assert_eq!(Case::from_name(case.name()), Some(case));
        }
    }

    #[test]
    fn the_tunnel_case_sends_every_frame_encapsulated() {
        let snap = Arc::new(snapshot(Case::Tunnel, SchedulerKind::Rr));
        let s = MicroSettings::default();
        let t = templates(&s, 0);
        let mut w = Worker::new(
            MemoryPort::new(PORT_MAC, 1024),
            WorkerSettings {
                burst: s.burst,
                gateway_mac: MacAddr::default(),
                idle: dataplane::worker::Idle::Off,
            },
            snap,
            crossbeam_channel::unbounded().1,
            WorkerCounters::shared(),
            Arc::new(NatFlows::new(1024)),
        );
        for f in &t {
            w.port_mut().push_rx(f);
        }
        while w.poll() > 0 {}
        let mut n = 0;
        while let Some(out) = w.port_mut().pop_tx() {
            let inner = &t[n];
            assert_eq!(out.len(), inner.len() + 20, "an outer IPv4 header");
            assert_eq!((out[14], out[23]), (0x45, 4), "IPv4, protocol IPIP");
            assert_eq!(&out[26..30], &[198, 18, 0, 2], "from the tunnel's source");
            assert_eq!(&out[34..], &inner[14..], "the datagram inside, whole");
            n += 1;
        }
        assert_eq!(n, t.len());
    }

    #[test]
    fn templates_have_the_requested_length() {
        let t = templates(&MicroSettings::default(), 0);
        assert!(t.iter().all(|f| f.len() == 64));
        assert_ne!(t[0], templates(&MicroSettings::default(), 1)[0]);
    }

    #[test]
    fn two_workers_forward_and_report_per_worker_cost() {
        let s = MicroSettings {
            duration: Duration::from_millis(20),
            reps: 1,
            workers: 2,
            ..Default::default()
        };
        let r = run_case(Case::Nat, &s);
        assert_eq!(r.workers, 2);
        assert!(r.mpps > 0.0);
        assert!((r.ns_per_packet - 2e3 / r.mpps).abs() < 1e-9);
    }
}
