//! Mirror pools in socket mode, on loopback: every datagram reaches the primary pool and one
//! backend of each mirror pool, in the order sent; replies come back from the primary pool
//! only, and a mirror backend's replies are dropped and counted.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::unbounded;
use dataplane::counters::{DropReason, WorkerCounters};
use dataplane::sched::SchedulerKind;
use dataplane::service::{
    Backend, BackendId, Health, MirrorSpec, Mode, ServiceSpec, Snapshot, VipId, VipKey,
};
use dataplane::socket::{ProxySettings, ProxyWorker};

const WAIT: Duration = Duration::from_secs(5);

/// A backend on loopback recording the sequence numbers it receives, in order, and
/// answering each with `reply` when set.
struct Sink {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<u32>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    fn new(reply: Option<&'static [u8]>) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (got, stop) = (got.clone(), stop.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((4, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    got.lock()
                        .unwrap()
                        .push(u32::from_be_bytes(buf[..4].try_into().unwrap()));
                    if let Some(r) = reply {
                        sock.send_to(r, from).unwrap();
                    }
                }
            })
        };
        Self {
            addr,
            got,
            stop,
            thread: Some(thread),
        }
    }

    fn got(&self) -> Vec<u32> {
        self.got.lock().unwrap().clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn backends(sinks: &[Sink], first_id: u16) -> Vec<Backend> {
    sinks
        .iter()
        .enumerate()
        .map(|(i, s)| Backend::new(BackendId(first_id + i as u16), s.addr, 1))
        .collect()
}

fn service(vip: SocketAddr, primary: &[Sink], mirrors: Vec<MirrorSpec>) -> ServiceSpec {
    let mut s = ServiceSpec::new(
        VipId(0),
        "syslog",
        VipKey::udp(vip),
        Mode::Nat,
        SchedulerKind::Rr,
        backends(primary, 0),
    );
    s.mirrors = mirrors;
    s
}

fn worker(spec: ServiceSpec) -> (ProxyWorker, dataplane::counters::SharedCounters) {
    let (_tx, rx) = unbounded();
    let counters = WorkerCounters::shared();
    let snap = Arc::new(Snapshot::new(1, vec![spec]).unwrap());
    let w = ProxyWorker::new(0, snap, rx, ProxySettings::default(), counters.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    (w, counters)
}

fn poll_until(w: &mut ProxyWorker, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        w.poll(Duration::from_millis(2)).unwrap();
    }
}

fn free_vip() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn each_datagram_reaches_the_primary_pool_and_each_mirror_pool_once_in_order() {
    let primary = [Sink::new(None), Sink::new(None)];
    let pool1 = [Sink::new(None), Sink::new(None)];
    let pool2 = [Sink::new(None)];
    let mirrors = vec![
        MirrorSpec::new("archive", SchedulerKind::Rr, backends(&pool1, 10)),
        MirrorSpec::new("siem", SchedulerKind::Rr, backends(&pool2, 20)),
    ];
    let vip = free_vip();
    let (mut w, c) = worker(service(vip, &primary, mirrors));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    const N: u32 = 200;
    for seq in 0..N {
        client.send_to(&seq.to_be_bytes(), vip).unwrap();
        // A few at a time, so that the loopback socket buffers never overflow.
        if seq % 16 == 15 {
            w.poll(Duration::from_millis(1)).unwrap();
        }
    }
    let all = |s: &[Sink]| s.iter().map(|s| s.got().len()).sum::<usize>();
    poll_until(&mut w, "every copy", || {
        all(&primary) + all(&pool1) + all(&pool2) == 3 * N as usize
    });
    let evens: Vec<u32> = (0..N).step_by(2).collect();
    let odds: Vec<u32> = (1..N).step_by(2).collect();
    assert_eq!(primary[0].got(), evens);
    assert_eq!(primary[1].got(), odds);
    assert_eq!(pool1[0].got(), evens);
    assert_eq!(pool1[1].got(), odds);
    assert_eq!(pool2[0].got(), (0..N).collect::<Vec<_>>());
    assert_eq!(c.mirror_copies.get(), 2 * u64::from(N));
    assert_eq!(c.backend(BackendId(20)).0, u64::from(N));
    assert_eq!(c.vip(VipId(0)).0, u64::from(N));
    assert_eq!(c.dropped_total(), 0);
}

#[test]
fn replies_come_from_the_primary_pool_only() {
    let primary = [Sink::new(Some(b"primary"))];
    let pool = [Sink::new(Some(b"mirror"))];
    let down = {
        let mut b = backends(&[Sink::new(Some(b"down"))], 30);
        b[0].health = Health::Down;
        b
    };
    let mirrors = vec![
        MirrorSpec::new("copy", SchedulerKind::Rr, backends(&pool, 10)),
        MirrorSpec::new("all-down", SchedulerKind::Rr, down),
    ];
    let vip = free_vip();
    let (mut w, c) = worker(service(vip, &primary, mirrors));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    for seq in 0..10u32 {
        client.send_to(&seq.to_be_bytes(), vip).unwrap();
    }
    poll_until(&mut w, "the mirror's replies", || {
        c.dropped(DropReason::MirrorReply) == 10 && c.nat_replies.get() == 10
    });
    let mut buf = [0u8; 16];
    let mut answers = Vec::new();
    while let Ok((n, from)) = client.recv_from(&mut buf) {
        assert_eq!(from, vip, "replies leave with the VIP as source");
        answers.push(buf[..n].to_vec());
    }
    assert_eq!(answers, vec![b"primary".to_vec(); 10]);
    assert_eq!(pool[0].got().len(), 10);
    assert_eq!(c.mirror_copies.get(), 10, "the all-down pool costs nothing");
}
