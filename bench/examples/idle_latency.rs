//! What the worker's idle back-off costs: latency of the first packet after a quiet spell,
//! and CPU burnt while idle, for `Idle::Off` and the default back-off.
//!
//! `cargo run --release -p spray-bench --example idle_latency [samples] [quiet_ms]`
//!
//! The worker runs [`Worker::run`] on its own thread over a port fed by lock-free queues (no
//! blocking call on either side); the main thread waits `quiet_ms` (long enough for the
//! back-off to reach its longest sleep), pushes one frame with its timestamp and spins until
//! the worker has transmitted it.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use dataplane::counters::WorkerCounters;
use dataplane::flow::NatFlows;
use dataplane::port::memory::MemBuf;
use dataplane::port::Port;
use dataplane::sched::SchedulerKind;
use dataplane::service::{Backend, BackendId, MacAddr, Mode, ServiceSpec, Snapshot, VipId, VipKey};
use dataplane::testkit::frames::{udp_frame, FrameSpec};
use dataplane::worker::{Idle, Worker, WorkerSettings};

struct QueuePort {
    rx: Receiver<MemBuf>,
    tx: Sender<MemBuf>,
}

impl Port for QueuePort {
    type Buf = MemBuf;
    fn rx_burst(&mut self, bufs: &mut Vec<MemBuf>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let Ok(b) = self.rx.try_recv() else { break };
            bufs.push(b);
            n += 1;
        }
        n
    }
    fn tx_burst(&mut self, bufs: &mut Vec<MemBuf>) -> usize {
        let n = bufs.len();
        for b in bufs.drain(..) {
            let _ = self.tx.try_send(b);
        }
        n
    }
    fn free(&mut self, _buf: MemBuf) {}
    fn mac(&self) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, 0x10])
    }
}

fn snapshot() -> Snapshot {
    let mut b = Backend::new(BackendId(0), "198.19.1.1:514".parse().unwrap(), 1);
    b.mac = Some(MacAddr([2, 0, 0, 0, 1, 1]));
    Snapshot::new(
        1,
        vec![ServiceSpec::new(
            VipId(0),
            "idle",
            VipKey::udp("198.18.0.10:514".parse().unwrap()),
            Mode::Dr,
            SchedulerKind::Rr,
            vec![b],
        )],
    )
    .unwrap()
}

/// Process CPU time (user + system), from /proc/self/stat, in seconds.
fn cpu_secs() -> f64 {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let f: Vec<&str> = s
        .rsplit_once(')')
        .map_or("", |x| x.1)
        .split_whitespace()
        .collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(11) + t(12)) / 100.0 // utime, stime in clock ticks (USER_HZ = 100)
}

fn measure(idle: Idle, samples: usize, quiet: Duration) -> (Vec<Duration>, f64) {
    let (rx, port_rx) = crossbeam_channel::bounded(64);
    let (port_tx, tx) = crossbeam_channel::bounded(64);
    let stop = Arc::new(AtomicBool::new(false));
    let port = QueuePort {
        rx: port_rx,
        tx: port_tx,
    };
    let st = Arc::clone(&stop);
    let h = std::thread::spawn(move || {
        let _ = core_affinity::set_for_current(core_affinity::CoreId { id: 1 });
        let (_u, updates) = crossbeam_channel::unbounded();
        let mut w = Worker::new(
            port,
            WorkerSettings {
                burst: 32,
                gateway_mac: MacAddr::default(),
                idle,
            },
            Arc::new(snapshot()),
            updates,
            WorkerCounters::shared(),
            Arc::new(NatFlows::new(64)),
        );
        w.run(&st);
    });
    let frame = udp_frame(
        &FrameSpec::new(
            "198.18.0.1:4000".parse().unwrap(),
            "198.18.0.10:514".parse().unwrap(),
        ),
        &[0u8; 22],
    );
    // CPU burnt while idle: one quiet second.
    let c0 = cpu_secs();
    std::thread::sleep(Duration::from_secs(1));
    let idle_cpu = cpu_secs() - c0;
    let mut lat = Vec::with_capacity(samples);
    for _ in 0..samples {
        std::thread::sleep(quiet);
        let t0 = Instant::now();
        let _ = rx.try_send(MemBuf::from_frame(&frame));
        loop {
            if tx.try_recv().is_ok() {
                lat.push(t0.elapsed());
                break;
            }
            std::hint::spin_loop();
        }
    }
    stop.store(true, Ordering::Relaxed);
    h.join().unwrap();
    lat.sort();
    (lat, idle_cpu)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let samples = args.first().copied().unwrap_or(200) as usize;
    let quiet = Duration::from_millis(args.get(1).copied().unwrap_or(20));
    for (name, idle) in [("off", Idle::Off), ("backoff (default)", Idle::default())] {
        let (lat, cpu) = measure(idle, samples, quiet);
        let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
        println!(
            "idle {name:<18} first packet after {} ms quiet: median {:?}, p90 {:?}, p99 {:?}, \
             max {:?}; idle CPU {:.0} % of a core",
            quiet.as_millis(),
            p(0.5),
            p(0.9),
            p(0.99),
            lat[lat.len() - 1],
            cpu * 100.0
        );
    }
}
