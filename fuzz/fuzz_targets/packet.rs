//! The per-packet path: a worker over the memory port receives the frames in the input and
//! must never panic. Input: frames, each preceded by a 2-byte big-endian length (a short
//! tail is one more frame); the first byte of each length also advances the simulated
//! clock, so fragment entries expire. Every frame is also fed to the control thread's
//! neighbour parser.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use dataplane::frag::FragTable;
use dataplane::neigh::{NeighConfig, Neighbours, WorkerNeigh};
use dataplane::sched::SchedulerKind;
use dataplane::service::{Backend, BackendId, MacAddr, MirrorSpec, Mode, ServiceSpec, Snapshot};
use dataplane::testkit::rig::{self, Rig};
use libfuzzer_sys::fuzz_target;

/// Backends of weights 1, 2, 3; the first of each service without a MAC (the
/// no_backend_mac path).
fn service(id: u16, vip: &str, mode: Mode, sched: SchedulerKind, backends: &[&str]) -> ServiceSpec {
    let weighted: Vec<(&str, u32)> = backends
        .iter()
        .enumerate()
        .map(|(i, a)| (*a, 1 + i as u32))
        .collect();
    let mut s = rig::service(id, vip, mode, sched, &weighted, id * 8);
    s.backends[0].mac = None;
    s
}

fn snapshot() -> Snapshot {
    let v4 = ["198.19.1.1:1514", "198.19.1.2:1514", "198.19.1.3:1514"];
    let mirror = ["198.19.3.1:1514", "198.19.3.2:1514", "198.19.3.3:1514"];
    let v6 = [
        "[2001:db8:1::11]:1514",
        "[2001:db8:1::12]:1514",
        "[2001:db8:1::13]:1514",
    ];
    Snapshot::new(
        1,
        vec![
            service(0, "198.18.0.10:514", Mode::Nat, SchedulerKind::Rr, &v4),
            service(1, "198.18.0.11:514", Mode::Nat, SchedulerKind::Maglev, &v4),
            service(2, "198.18.0.12:514", Mode::Dr, SchedulerKind::Wrr, &v4),
            service(3, "[2001:db8::10]:514", Mode::Nat, SchedulerKind::Rr, &v6),
            service(4, "[2001:db8::11]:514", Mode::Dr, SchedulerKind::Rr, &v6),
            mirrored(5, "198.18.0.13:514", Mode::Nat, &v4[..2], &mirror),
            mirrored(6, "198.18.0.14:514", Mode::Dr, &v4[..2], &mirror),
        ],
    )
    .unwrap()
    .with_gateway_macs(Some(MacAddr([2, 0, 0, 0, 0, 1])), None)
}

/// Service `id` over `v4` with one mirror pool over `mirror` (ids from `id * 8 + 4`), all
/// resolved but the pool's first backend.
fn mirrored(id: u16, vip: &str, mode: Mode, v4: &[&str], mirror: &[&str]) -> ServiceSpec {
    let mut s = service(id, vip, mode, SchedulerKind::Rr, v4);
    let backends = mirror
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let mut b = Backend::new(BackendId(id * 8 + 4 + i as u16), a.parse().unwrap(), 1);
            b.mac = (i > 0).then(|| MacAddr([2, 0, 0, 0, 2, i as u8]));
            b
        })
        .collect();
    s.mirrors = vec![MirrorSpec::new("copy", SchedulerKind::Rr, backends)];
    s
}

/// Built once: Maglev tables are too slow to rebuild per input.
static SNAPSHOT: OnceLock<Arc<Snapshot>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let mut r = Rig::with(
        SNAPSHOT.get_or_init(|| Arc::new(snapshot())).clone(),
        8,
        1 << 12,
    );
    let w = &mut r.w;
    w.set_frag_table(FragTable::new(8, Duration::from_millis(100)));
    let (to_control, from_workers) = crossbeam_channel::bounded(4);
    w.set_neigh(WorkerNeigh {
        local_v4: Some("198.19.0.1".parse().unwrap()),
        local_v6: Some("2001:db8:1::1".parse().unwrap()),
        to_control: Some(to_control),
        from_control: None,
    });
    let mut n = Neighbours::new(NeighConfig::new(MacAddr([2, 0, 0, 0, 0, 0x10])));
    let mut now = Instant::now();
    let mut rest = data;
    while !rest.is_empty() {
        let (len, tick) = match rest {
            [a, b, tail @ ..] => {
                rest = tail;
                (
                    usize::from(u16::from_be_bytes([*a, *b])) % 9300,
                    u64::from(*a),
                )
            }
            _ => {
                let l = rest.len();
                (l, 0)
            }
        };
        let take = len.min(rest.len());
        let (frame, tail) = rest.split_at(take);
        rest = tail;
        n.handle_frame(now, frame);
        w.port_mut().push_rx(frame);
        now += Duration::from_millis(tick);
        w.poll_at(now);
        while w.port_mut().pop_tx().is_some() {}
        while from_workers.try_recv().is_ok() {}
    }
});
