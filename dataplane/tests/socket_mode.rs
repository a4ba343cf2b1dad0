//! Socket mode end to end on loopback (127.0.0.0/8 and ::1): real sockets, no root needed.
//!
//! Backends are sink sockets served by threads that count (and optionally echo) what they
//! receive; the proxy worker runs in its own thread, or is polled by the test itself where
//! the test needs to look inside. Clients pace themselves (a chunk, then wait until the sinks
//! have it all), so nothing is lost to full buffers and every count is exact.

use std::cell::Cell;
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Sender};
use dataplane::counters::{DropReason, SharedCounters, WorkerCounters};
use dataplane::sched::SchedulerKind;
use dataplane::service::{Backend, BackendId, Health, Mode, ServiceSpec, Snapshot, VipId, VipKey};
use dataplane::socket::{ProxySettings, ProxyWorker, SocketSettings};

// ---- an allocation counter, armed per thread, for the no-allocation test ----

struct CountingAlloc;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

fn note_allocation() {
    if ARMED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to the system allocator with the caller's arguments
// unchanged, so `System`'s guarantees carry over; counting touches no allocator state.
unsafe impl std::alloc::GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: the caller's contract for `alloc` is passed through unchanged.
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from `System` with this layout (all allocations go there).
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: as for `dealloc`; the caller's contract for `realloc` is passed through.
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

// ---- helpers ----

const WAIT: Duration = Duration::from_secs(3);
/// Why a VIP that another process holds cannot be bound.
const TAKEN: &str = "already bound by another process (another spray, or a server on this port)";
const LO4: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const LO6: IpAddr = IpAddr::V6(Ipv6Addr::LOCALHOST);

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_micros(200));
    }
}

/// A free UDP port on `ip`: bind port 0, note what the kernel gave, let it go.
fn free_addr(ip: IpAddr) -> SocketAddr {
    UdpSocket::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// A backend: a thread counting datagrams, remembering their sources and, with a tag,
/// echoing each one back prefixed by the tag.
struct Sink {
    addr: SocketAddr,
    count: Arc<AtomicU64>,
    sources: Arc<Mutex<HashSet<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sink {
    fn new(ip: IpAddr, echo_tag: Option<u8>) -> Self {
        let sock = UdpSocket::bind((ip, 0)).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(5)))
            .unwrap();
        let addr = sock.local_addr().unwrap();
        let count = Arc::new(AtomicU64::new(0));
        let sources = Arc::new(Mutex::new(HashSet::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (count, sources, stop) = (count.clone(), sources.clone(), stop.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf[1..]) else {
                        continue;
                    };
                    sources.lock().unwrap().insert(from);
                    // Counted before the echo: a test that has its reply may read the count.
                    count.fetch_add(1, Ordering::Relaxed);
                    if let Some(tag) = echo_tag {
                        buf[0] = tag;
                        sock.send_to(&buf[..=n], from).unwrap();
                    }
                }
            })
        };
        Self {
            addr,
            count,
            sources,
            stop,
            thread: Some(thread),
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
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

fn sinks(ip: IpAddr, n: usize, echo: bool) -> Vec<Sink> {
    (0..n)
        .map(|i| Sink::new(ip, echo.then_some(i as u8)))
        .collect()
}

fn counts(s: &[Sink]) -> Vec<u64> {
    s.iter().map(Sink::count).collect()
}

fn total(s: &[Sink]) -> u64 {
    s.iter().map(Sink::count).sum()
}

/// A service on `vip` over `backends` (address, weight), backend ids from `first_id`.
fn service(
    id: u16,
    vip: SocketAddr,
    scheduler: SchedulerKind,
    backends: &[(SocketAddr, u32)],
    first_id: u16,
) -> ServiceSpec {
    ServiceSpec {
        id: VipId(id),
        name: format!("svc{id}"),
        vip: VipKey::udp(vip),
        mode: Mode::Nat,
        scheduler,
        backends: backends
            .iter()
            .enumerate()
            .map(|(i, &(addr, w))| Backend::new(BackendId(first_id + i as u16), addr, w))
            .collect(),
        fallback: None,
        passive: false,
        mirrors: Vec::new(),
    }
}

fn rr(vip: SocketAddr, s: &[Sink]) -> ServiceSpec {
    let b: Vec<_> = s.iter().map(|s| (s.addr, 1)).collect();
    service(0, vip, SchedulerKind::Rr, &b, 0)
}

fn snapshot(generation: u64, specs: Vec<ServiceSpec>) -> Snapshot {
    Snapshot::new(generation, specs).unwrap()
}

/// A worker running in its own thread.
struct Proxy {
    updates: Sender<Arc<Snapshot>>,
    counters: SharedCounters,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<ProxyWorker>>,
}

impl Proxy {
    fn start(snap: Snapshot, settings: ProxySettings) -> Self {
        let (updates, rx) = unbounded();
        let counters = WorkerCounters::shared();
        let mut w = ProxyWorker::new(0, Arc::new(snap), rx, settings, counters.clone())
            .unwrap_or_else(|e| panic!("{e}"));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            thread::spawn(move || {
                w.run(&stop).unwrap_or_else(|e| panic!("{e}"));
                w
            })
        };
        Self {
            updates,
            counters,
            stop,
            thread: Some(thread),
        }
    }

    fn update(&self, snap: Snapshot) {
        self.updates.send(Arc::new(snap)).unwrap();
    }

    fn finish(mut self) -> ProxyWorker {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends `n` datagrams from `client` to `vip` in chunks of 50, waiting after each chunk
/// until `delivered()` has grown by everything sent so far.
fn send_paced(client: &UdpSocket, vip: SocketAddr, n: u64, delivered: impl Fn() -> u64) {
    let base = delivered();
    for i in 0..n {
        client.send_to(&i.to_be_bytes(), vip).unwrap();
        if (i + 1) % 50 == 0 || i + 1 == n {
            wait_for("the backends to receive a chunk", || delivered() > base + i);
        }
    }
}

fn client(ip: IpAddr) -> UdpSocket {
    let c = UdpSocket::bind((ip, 0)).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    c
}

fn ipv6_available() -> bool {
    UdpSocket::bind((LO6, 0)).is_ok()
}

// ---- (a), (b): per-packet scheduling of one client ----

#[test]
fn rr_spreads_one_client_evenly_over_three_backends() {
    let s = sinks(LO4, 3, false);
    let vip = free_addr(LO4);
    let proxy = Proxy::start(snapshot(1, vec![rr(vip, &s)]), ProxySettings::default());
    let c = client(LO4);
    send_paced(&c, vip, 3000, || total(&s));
    assert_eq!(counts(&s), [1000, 1000, 1000]);

    let k = &proxy.counters;
    wait_for("the counters", || k.tx_packets.get() == 3000);
    assert_eq!(k.rx_packets.get(), 3000);
    assert_eq!(k.rx_bytes.get(), 3000 * 8);
    assert_eq!(k.vip(VipId(0)), (3000, 3000 * 8));
    assert_eq!(k.tx_bytes.get(), 3000 * 8);
    for b in 0..3 {
        assert_eq!(k.backend(BackendId(b)), (1000, 1000 * 8));
    }
    assert_eq!(k.dropped_total(), 0);
    // One session for the one client, whose source port all backends saw.
    let w = proxy.finish();
    assert_eq!(w.sessions(), 1);
    let seen: HashSet<SocketAddr> = s
        .iter()
        .flat_map(|s| s.sources.lock().unwrap().clone())
        .collect();
    assert_eq!(seen.len(), 1, "one upstream socket per client: {seen:?}");
}

#[test]
fn wrr_deals_exact_weights_3_2_1() {
    let s = sinks(LO4, 3, false);
    let vip = free_addr(LO4);
    let b = [(s[0].addr, 3), (s[1].addr, 2), (s[2].addr, 1)];
    let spec = service(0, vip, SchedulerKind::Wrr, &b, 0);
    let proxy = Proxy::start(snapshot(1, vec![spec]), ProxySettings::default());
    send_paced(&client(LO4), vip, 3000, || total(&s));
    assert_eq!(counts(&s), [1500, 1000, 500]);
    wait_for("the counters", || proxy.counters.tx_packets.get() == 3000);
    assert_eq!(proxy.counters.backend(BackendId(0)).0, 1500);
    assert_eq!(proxy.counters.backend(BackendId(2)).0, 500);
}

// ---- (c): a snapshot takes a backend out at once and puts it back ----

#[test]
fn a_down_backend_gets_nothing_from_the_next_datagram_on() {
    let s = sinks(LO4, 3, false);
    let vip = free_addr(LO4);
    let up = rr(vip, &s);
    let proxy = Proxy::start(snapshot(1, vec![up.clone()]), ProxySettings::default());
    let c = client(LO4);
    send_paced(&c, vip, 300, || total(&s));
    assert_eq!(counts(&s), [100, 100, 100]);

    let mut down = up.clone();
    down.backends[0].health = Health::Down;
    // Sent before the next datagram: the worker applies it before reading that datagram.
    proxy.update(snapshot(2, vec![down]));
    send_paced(&c, vip, 300, || total(&s));
    assert_eq!(counts(&s), [100, 250, 250]);

    proxy.update(snapshot(3, vec![up]));
    send_paced(&c, vip, 300, || total(&s));
    assert_eq!(counts(&s), [200, 350, 350]);
    wait_for("the counters", || proxy.counters.tx_packets.get() == 900);
    assert_eq!(proxy.counters.snapshots_applied.get(), 3);
    assert_eq!(proxy.counters.dropped_total(), 0);
}

#[test]
fn a_vip_without_backends_in_rotation_drops_and_counts() {
    let s = sinks(LO4, 1, false);
    let vip = free_addr(LO4);
    let mut spec = rr(vip, &s);
    spec.backends[0].health = Health::Down;
    let proxy = Proxy::start(snapshot(1, vec![spec]), ProxySettings::default());
    let c = client(LO4);
    for i in 0..10u64 {
        c.send_to(&i.to_be_bytes(), vip).unwrap();
    }
    let k = &proxy.counters;
    wait_for("the drops", || {
        k.dropped(DropReason::NoHealthyBackend) == 10
    });
    assert_eq!((k.rx_packets.get(), k.tx_packets.get()), (10, 0));
    assert_eq!(s[0].count(), 0);
}

// ---- (d), (e), (f): replies leave from the VIP ----

/// Sends `n` datagrams to `vip`, collects the replies and returns them as
/// (source, echo tag, payload).
fn exchange(c: &UdpSocket, vip: SocketAddr, n: u64) -> Vec<(SocketAddr, u8, u64)> {
    let mut replies = Vec::new();
    let mut buf = [0u8; 64];
    for i in 0..n {
        c.send_to(&i.to_be_bytes(), vip).unwrap();
        // One at a time: each reply must be there before the next request goes.
        let (len, from) = c.recv_from(&mut buf).expect("a reply");
        assert_eq!(len, 9);
        let payload = u64::from_be_bytes(buf[1..9].try_into().unwrap());
        replies.push((from, buf[0], payload));
    }
    replies
}

#[test]
fn replies_come_from_the_vip() {
    let s = sinks(LO4, 3, true);
    let vip = free_addr(LO4);
    let proxy = Proxy::start(snapshot(1, vec![rr(vip, &s)]), ProxySettings::default());
    let c = client(LO4);
    let replies = exchange(&c, vip, 30);
    for (i, &(from, tag, payload)) in replies.iter().enumerate() {
        assert_eq!(from, vip, "reply {i} must come from the VIP");
        assert_eq!(payload, i as u64);
        assert_eq!(tag, (i % 3) as u8, "round robin over the echoing backends");
    }
    wait_for("the counters", || proxy.counters.nat_replies.get() == 30);
    assert_eq!(proxy.counters.dropped_total(), 0);
}

#[test]
fn a_wildcard_vip_answers_from_the_address_each_datagram_was_sent_to() {
    let s = sinks(LO4, 2, true);
    let port = free_addr(IpAddr::V4(Ipv4Addr::UNSPECIFIED)).port();
    let vip = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let proxy = Proxy::start(snapshot(1, vec![rr(vip, &s)]), ProxySettings::default());
    // One client socket talks to two addresses of the host: two sessions, and each reply
    // comes from the address its request went to, not from the kernel's pick (127.0.0.1).
    let c = client(LO4);
    for last in [5u8, 6, 5] {
        let to = SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), port));
        for (from, _, _) in exchange(&c, to, 4) {
            assert_eq!(from, to);
        }
    }
    if ipv6_available() {
        let vip6 = SocketAddr::from((Ipv6Addr::UNSPECIFIED, free_addr(LO6).port()));
        let s6 = sinks(LO6, 1, true);
        let proxy6 = Proxy::start(snapshot(1, vec![rr(vip6, &s6)]), ProxySettings::default());
        let to = SocketAddr::from((Ipv6Addr::LOCALHOST, vip6.port()));
        for (from, _, _) in exchange(&client(LO6), to, 3) {
            assert_eq!(from, to);
        }
        assert_eq!(proxy6.counters.dropped_total(), 0);
    }
    assert_eq!(proxy.counters.dropped_total(), 0);
}

#[test]
fn two_vips_sharing_backends_each_get_their_own_replies() {
    let s = sinks(LO4, 3, true);
    let vip1 = free_addr(LO4);
    let vip2 = free_addr(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    let b: Vec<_> = s.iter().map(|s| (s.addr, 1)).collect();
    let specs = vec![
        service(0, vip1, SchedulerKind::Rr, &b, 0),
        service(1, vip2, SchedulerKind::Rr, &b, 3),
    ];
    let proxy = Proxy::start(snapshot(1, specs), ProxySettings::default());
    // The same client socket talks to both VIPs, interleaved.
    let c = client(LO4);
    for round in 0..10 {
        for vip in [vip1, vip2] {
            let r = exchange(&c, vip, 3);
            assert!(
                r.iter().all(|&(from, _, _)| from == vip),
                "round {round}: replies for {vip} came from {r:?}"
            );
        }
    }
    let k = &proxy.counters;
    wait_for("the counters", || k.nat_replies.get() == 60);
    assert_eq!(k.vip(VipId(0)).0, 30);
    assert_eq!(k.vip(VipId(1)).0, 30);
    for b in 0..6 {
        assert_eq!(k.backend(BackendId(b)).0, 10, "backend entry {b}");
    }
    assert_eq!(
        proxy.finish().sessions(),
        2,
        "one session per (VIP, client)"
    );
}

#[test]
fn ipv6_on_loopback() {
    if !ipv6_available() {
        eprintln!("skipped: no ::1 in this network namespace");
        return;
    }
    let s = sinks(LO6, 3, true);
    let vip = free_addr(LO6);
    let proxy = Proxy::start(snapshot(1, vec![rr(vip, &s)]), ProxySettings::default());
    let c = client(LO6);
    let replies = exchange(&c, vip, 300);
    for (i, &(from, tag, _)) in replies.iter().enumerate() {
        assert_eq!(from, vip, "reply {i} must come from the VIP");
        assert_eq!(tag, (i % 3) as u8);
    }
    assert_eq!(counts(&s), [100, 100, 100]);
    wait_for("the counters", || proxy.counters.nat_replies.get() == 300);
    assert_eq!(proxy.counters.dropped_total(), 0);
}

#[test]
fn a_v4_vip_with_a_v6_backend_drops_as_family_mismatch() {
    if !ipv6_available() {
        eprintln!("skipped: no ::1 in this network namespace");
        return;
    }
    let s6 = sinks(LO6, 1, false);
    let vip = free_addr(LO4);
    let proxy = Proxy::start(snapshot(1, vec![rr(vip, &s6)]), ProxySettings::default());
    client(LO4).send_to(b"x", vip).unwrap();
    wait_for("the drop", || {
        proxy.counters.dropped(DropReason::FamilyMismatch) == 1
    });
}

#[test]
fn two_workers_share_a_vip_through_so_reuseport() {
    let s = sinks(LO4, 3, true);
    let vip = free_addr(LO4);
    let snap = snapshot(1, vec![rr(vip, &s)]);
    let a = Proxy::start(snap.clone(), ProxySettings::default());
    let b = Proxy::start(snap, ProxySettings::default());
    // The kernel hashes each client to one worker; every reply still comes from the VIP.
    for _ in 0..16 {
        let c = client(LO4);
        assert!(exchange(&c, vip, 6).iter().all(|r| r.0 == vip));
    }
    let (ka, kb) = (&a.counters, &b.counters);
    wait_for("the counters", || {
        ka.nat_replies.get() + kb.nat_replies.get() == 96
    });
    assert_eq!(ka.rx_packets.get() + kb.rx_packets.get(), 96);
    println!(
        "worker a: {} datagrams, worker b: {}",
        ka.rx_packets.get(),
        kb.rx_packets.get()
    );
}

// ---- snapshots add and remove VIPs ----

#[test]
fn snapshots_bind_new_vips_and_close_removed_ones() {
    let s = sinks(LO4, 2, true);
    let vip1 = free_addr(LO4);
    let vip2 = free_addr(LO4);
    let spec1 = rr(vip1, &s);
    let mut spec2 = rr(vip2, &s);
    spec2.id = VipId(1);
    let proxy = Proxy::start(snapshot(1, vec![spec1.clone()]), ProxySettings::default());
    let c = client(LO4);
    assert_eq!(exchange(&c, vip1, 2).len(), 2);

    proxy.update(snapshot(2, vec![spec1.clone(), spec2.clone()]));
    wait_for("the update", || proxy.counters.snapshots_applied.get() == 2);
    assert!(exchange(&c, vip2, 2).iter().all(|r| r.0 == vip2));

    proxy.update(snapshot(3, vec![spec2]));
    wait_for("the update", || proxy.counters.snapshots_applied.get() == 3);
    // The worker closed vip1's socket: the port can be bound again.
    wait_for("vip1's port to be released", || {
        UdpSocket::bind(vip1).is_ok()
    });
    assert!(exchange(&c, vip2, 2).iter().all(|r| r.0 == vip2));

    // A VIP that cannot be bound on update is counted, not fatal.
    let squatter = UdpSocket::bind(vip1).unwrap();
    proxy.update(snapshot(4, vec![spec1, rr_id(vip2, &s, 1)]));
    wait_for("the bind error", || proxy.counters.bind_errors.get() == 1);
    assert!(exchange(&c, vip2, 2).iter().all(|r| r.0 == vip2));
    let mut w = proxy.finish();
    let errors: Vec<String> = w.take_errors().iter().map(ToString::to_string).collect();
    assert_eq!(errors, [format!("cannot bind VIP {vip1}: {TAKEN}")]);
    drop(squatter);
}

fn rr_id(vip: SocketAddr, s: &[Sink], id: u16) -> ServiceSpec {
    let mut spec = rr(vip, s);
    spec.id = VipId(id);
    spec
}

#[test]
fn a_taken_vip_is_a_clear_start_up_error() {
    let squatter = UdpSocket::bind((LO4, 0)).unwrap();
    let vip = squatter.local_addr().unwrap();
    let s = sinks(LO4, 1, false);
    let (_tx, rx) = unbounded();
    let err = ProxyWorker::new(
        0,
        Arc::new(snapshot(1, vec![rr(vip, &s)])),
        rx,
        ProxySettings::default(),
        WorkerCounters::shared(),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), format!("cannot bind VIP {vip}: {TAKEN}"));
}

#[test]
fn a_datagram_coming_back_from_a_session_socket_is_dropped_as_a_loop() {
    // Two VIPs, each the other's backend: without the check one datagram circles forever.
    let (a, b) = (free_addr(LO4), free_addr(LO4));
    let specs = vec![
        service(0, a, SchedulerKind::Rr, &[(b, 1)], 0),
        service(1, b, SchedulerKind::Rr, &[(a, 1)], 1),
    ];
    let proxy = Proxy::start(snapshot(1, specs), ProxySettings::default());
    let c = client(LO4);
    c.send_to(b"once", a).unwrap();
    let k = &proxy.counters;
    wait_for("the loop drop", || k.dropped(DropReason::Loop) == 1);
    thread::sleep(Duration::from_millis(200));
    // In at a, out to b, back in at b from a's session socket: dropped there.
    assert_eq!(
        (
            k.rx_packets.get(),
            k.tx_packets.get(),
            k.dropped(DropReason::Loop)
        ),
        (2, 1, 1)
    );
    // A client on loopback is not mistaken for a session: it is forwarded.
    c.send_to(b"twice", b).unwrap();
    wait_for("the forward", || k.tx_packets.get() == 2);
}

// ---- sessions: expiry, cap, no allocation per datagram ----

/// A worker polled by the test thread itself.
fn manual(snap: Snapshot, settings: ProxySettings) -> (ProxyWorker, SharedCounters) {
    let (_tx, rx) = unbounded();
    let counters = WorkerCounters::shared();
    let w = ProxyWorker::new(0, Arc::new(snap), rx, settings, counters.clone())
        .unwrap_or_else(|e| panic!("{e}"));
    (w, counters)
}

fn poll_until(w: &mut ProxyWorker, what: &str, mut done: impl FnMut(&ProxyWorker) -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done(w) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        w.poll(Duration::from_millis(5)).unwrap();
    }
}

#[test]
fn idle_sessions_expire_and_the_cap_drops_new_clients() {
    let s = sinks(LO4, 1, false);
    let vip = free_addr(LO4);
    let settings = ProxySettings {
        socket: SocketSettings {
            session_idle: Duration::from_millis(100),
            ..SocketSettings::default()
        },
        max_sessions: 2,
        ..ProxySettings::default()
    };
    let (mut w, k) = manual(snapshot(1, vec![rr(vip, &s)]), settings);
    let clients: Vec<UdpSocket> = (0..3).map(|_| client(LO4)).collect();
    for c in &clients[..2] {
        c.send_to(b"a", vip).unwrap();
    }
    poll_until(&mut w, "two sessions", |w| w.sessions() == 2);
    clients[2].send_to(b"b", vip).unwrap();
    poll_until(&mut w, "the refusal", |_| {
        k.dropped(DropReason::SessionTableFull) == 1
    });
    assert_eq!(w.sessions(), 2, "the table never grows past max_sessions");
    // Known clients are still served at the cap.
    clients[0].send_to(b"c", vip).unwrap();
    poll_until(&mut w, "a known client", |_| k.tx_packets.get() == 3);

    let quiet_since = Instant::now();
    poll_until(&mut w, "idle sessions to close", |w| w.sessions() == 0);
    assert!(quiet_since.elapsed() >= Duration::from_millis(50));
    // Room again: the third client gets a session now.
    clients[2].send_to(b"d", vip).unwrap();
    poll_until(&mut w, "the new session", |w| w.sessions() == 1);
    assert_eq!(k.tx_packets.get(), 4);
    assert_eq!(k.dropped(DropReason::SessionTableFull), 1);
    wait_for("the sink", || s[0].count() == 4);
}

#[test]
fn the_datagram_path_does_not_allocate() {
    // Backends are plain sockets here, read and answered by this thread.
    let backends: Vec<UdpSocket> = (0..3).map(|_| client(LO4)).collect();
    let b: Vec<_> = backends
        .iter()
        .map(|s| (s.local_addr().unwrap(), 1))
        .collect();
    let vip = free_addr(LO4);
    let (mut w, k) = manual(
        snapshot(1, vec![service(0, vip, SchedulerKind::Rr, &b, 0)]),
        ProxySettings::default(),
    );
    let c = client(LO4);
    let mut buf = [0u8; 64];
    for round in 0..3u64 {
        // Round 0 opens the session (allocation allowed); rounds 1 and 2 must not allocate.
        for i in 0..30u64 {
            c.send_to(&i.to_be_bytes(), vip).unwrap();
        }
        ARMED.with(|a| a.set(round > 0));
        poll_until(&mut w, "forwarding", |_| {
            k.tx_packets.get() == 30 * (round + 1)
        });
        ARMED.with(|a| a.set(false));
        for s in &backends {
            for _ in 0..10 {
                let (n, from) = s.recv_from(&mut buf).unwrap();
                s.send_to(&buf[..n], from).unwrap();
            }
        }
        ARMED.with(|a| a.set(round > 0));
        poll_until(&mut w, "the replies", |_| {
            k.nat_replies.get() == 30 * (round + 1)
        });
        ARMED.with(|a| a.set(false));
        for _ in 0..30 {
            c.recv_from(&mut buf).unwrap();
        }
    }
    assert_eq!(ALLOCATIONS.load(Ordering::Relaxed), 0);
    assert_eq!(k.dropped_total(), 0);
}

// ---- (g): transparent mode ----

/// Whether this process holds CAP_NET_ADMIN or CAP_NET_RAW (either allows IP_TRANSPARENT).
fn may_set_transparent() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap_or(0);
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_NET_RAW: u32 = 13;
    eff & (1 << CAP_NET_ADMIN | 1 << CAP_NET_RAW) != 0
}

#[test]
fn transparent_without_capability_is_a_clear_error() {
    const CHILD: &str = "SPRAY_TEST_WITHOUT_NET_ADMIN";
    if !may_set_transparent() {
        let (_tx, rx) = unbounded();
        let err = ProxyWorker::new(
            0,
            Arc::new(Snapshot::default()),
            rx,
            ProxySettings {
                socket: SocketSettings {
                    transparent: true,
                    ..SocketSettings::default()
                },
                ..ProxySettings::default()
            },
            WorkerCounters::shared(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "transparent = true needs CAP_NET_ADMIN (IP_TRANSPARENT): Operation not permitted"
        );
        return;
    }
    assert!(
        std::env::var_os(CHILD).is_none(),
        "setpriv left CAP_NET_ADMIN or CAP_NET_RAW in place"
    );
    // Privileged (root): run this very test again in a child that lost both capabilities.
    let out = std::process::Command::new("setpriv")
        .args([
            "--inh-caps=-net_admin,-net_raw",
            "--bounding-set=-net_admin,-net_raw",
            "--",
        ])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "transparent_without_capability_is_a_clear_error",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            eprintln!("skipped the EPERM check: cannot run setpriv: {e}");
            return;
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !stdout.contains("running 1 test") {
        eprintln!(
            "skipped the EPERM check: setpriv could not drop capabilities: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return;
    }
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "child without CAP_NET_ADMIN:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn transparent_backends_see_the_client_address() {
    if !may_set_transparent() {
        eprintln!("skipped: needs CAP_NET_ADMIN (see transparent_without_capability_...)");
        return;
    }
    let s = sinks(LO4, 3, false);
    let vip = free_addr(LO4);
    let settings = ProxySettings {
        socket: SocketSettings {
            transparent: true,
            ..SocketSettings::default()
        },
        ..ProxySettings::default()
    };
    let proxy = Proxy::start(snapshot(1, vec![rr(vip, &s)]), settings);
    // The session socket binds the client's own address:port beside the client's socket,
    // which on one host needs SO_REUSEADDR on both.
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    sock.set_reuse_address(true).unwrap();
    sock.bind(&SocketAddr::from((LO4, 0)).into()).unwrap();
    let c: UdpSocket = sock.into();
    let me = c.local_addr().unwrap();
    send_paced(&c, vip, 30, || total(&s));
    assert_eq!(counts(&s), [10, 10, 10]);
    for sink in &s {
        let seen = sink.sources.lock().unwrap().clone();
        assert_eq!(
            seen,
            HashSet::from([me]),
            "backends see the client as source"
        );
    }
    assert_eq!(proxy.counters.dropped_total(), 0);
}
