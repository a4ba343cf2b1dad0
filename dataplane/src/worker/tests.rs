//! Unit tests of the worker: the poll loop end to end over a memory port, and the common
//! case, the slow path and the general path agreeing frame by frame.

use super::burst::deal;
use super::memo::{RouteMemo, PARKED};
use crate::counters::WorkerCounters;
use crate::counters::{DropReason, SharedCounters};
use crate::decide::{process_general, Copies, Ctx, Fwd, Now};
use crate::frag::FragTable;
use crate::model::flow::NatFlows;
use crate::model::sched::SchedulerKind;
use crate::model::{Backend, BackendId, Health};
use crate::model::{Mode, Snapshot, VipId};
use crate::neigh::WorkerNeigh;
use crate::port::{PacketBuf, RxIpChecksum};
use crate::testkit::frames::{checksums_valid, udp_frame, FrameSpec};
use crate::testkit::rig::{mac_of, sa, service, Rig, GW_MAC, PORT_MAC};
use crate::wire::parse_udp;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// Pushes `n` copies of one datagram from `src` to `dst` and polls until they are processed.
fn send(r: &mut Rig, src: &str, dst: &str, n: usize) {
    let f = udp_frame(&FrameSpec::new(sa(src), sa(dst)), b"<13>x");
    for _ in 0..n {
        r.w.port_mut().push_rx(&f);
    }
    r.poll();
}

const BACKENDS: [(&str, u32); 3] = [
    ("198.19.1.1:514", 1),
    ("198.19.1.2:514", 1),
    ("198.19.1.3:514", 1),
];

#[test]
fn one_client_is_spread_evenly_in_dr_mode() {
    let mut r = Rig::new(vec![service(
        0,
        "198.18.0.10:514",
        Mode::Dr,
        SchedulerKind::Rr,
        &BACKENDS,
        0,
    )]);
    send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 3000);
    let out = r.out();
    assert_eq!(out.len(), 3000);
    let mut per_mac = [0usize; 3];
    for (i, f) in out.iter().enumerate() {
        // DR: only MACs change; round-robin order is 1,2,3,1,2,3...
        assert_eq!(&f[0..6], &mac_of(i % 3 + 1).0);
        assert_eq!(&f[6..12], &PORT_MAC.0);
        let p = parse_udp(f).unwrap();
        assert_eq!(p.dst(), sa("198.18.0.10:514"));
        per_mac[i % 3] += 1;
    }
    assert_eq!(per_mac, [1000, 1000, 1000]);
    for b in 0..3 {
        assert_eq!(r.counters.backend(BackendId(b)).0, 1000);
    }
    assert_eq!(r.counters.vip(VipId(0)).0, 3000);
    assert_eq!(r.counters.tx_packets.get(), 3000);
    assert_eq!(r.counters.dropped_total(), 0);
}

#[test]
fn nat_rewrites_to_each_backend_with_valid_checksums() {
    let mut r = Rig::new(vec![service(
        0,
        "198.18.0.10:514",
        Mode::Nat,
        SchedulerKind::Rr,
        &BACKENDS,
        0,
    )]);
    send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 6);
    let out = r.out();
    for (i, f) in out.iter().enumerate() {
        let p = parse_udp(f).unwrap();
        assert_eq!(p.dst(), BACKENDS[i % 3].0.parse::<SocketAddr>().unwrap());
        assert_eq!(p.src(), sa("198.18.0.1:40000"));
        assert!(checksums_valid(f));
    }
}

#[test]
fn wrr_weights_are_honoured_exactly() {
    let b = [
        ("198.19.1.1:514", 3),
        ("198.19.1.2:514", 2),
        ("198.19.1.3:514", 1),
    ];
    let mut r = Rig::new(vec![service(
        0,
        "198.18.0.10:514",
        Mode::Dr,
        SchedulerKind::Wrr,
        &b,
        0,
    )]);
    send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 600);
    assert_eq!(
        [0, 1, 2].map(|i| r.counters.backend(BackendId(i)).0),
        [300, 200, 100]
    );
}

/// With the NIC's RX checksum offload on, a header it vouches for is not checked
/// again, which is the saving; every other verdict, and any frame while the offload is
/// off, still gets Spray's own check.
#[test]
fn the_nics_good_checksum_verdict_is_trusted_only_while_the_offload_is_on() {
    let s = service(
        0,
        "198.18.0.10:514",
        Mode::Dr,
        SchedulerKind::Rr,
        &BACKENDS,
        0,
    );
    let mut r = Rig::new(vec![s]);
    let mut bad = udp_frame(
        &FrameSpec::new(sa("198.18.0.1:40000"), sa("198.18.0.10:514")),
        b"<13>x",
    );
    bad[24] ^= 0x55; // the IPv4 header checksum
    let verdicts = |r: &mut Rig, v: RxIpChecksum| {
        r.w.port_mut().push_rx_with(&bad, v);
        r.w.poll();
        (r.out().len(), r.counters.dropped(DropReason::BadIpChecksum))
    };
    // Offload off: the verdict is not even read.
    assert_eq!(verdicts(&mut r, RxIpChecksum::Good), (0, 1));
    r.w.port_mut()
        .set_rx_ip_checksum_offload(Some(RxIpChecksum::Unknown));
    assert_eq!(verdicts(&mut r, RxIpChecksum::Unknown), (0, 2));
    assert_eq!(verdicts(&mut r, RxIpChecksum::Bad), (0, 3));
    // The NIC says good: Spray trusts it and forwards (here the frame was damaged after
    // the "NIC" looked, which a real NIC cannot do).
    assert_eq!(verdicts(&mut r, RxIpChecksum::Good), (1, 3));
    assert_eq!(r.counters.backend(BackendId(0)).0, 1);
}

#[test]
fn a_backend_marked_down_gets_nothing_from_the_next_burst_on() {
    let mut s = service(
        0,
        "198.18.0.10:514",
        Mode::Dr,
        SchedulerKind::Rr,
        &BACKENDS,
        0,
    );
    let mut r = Rig::new(vec![s.clone()]);
    send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 30);
    assert_eq!(r.counters.backend(BackendId(0)).0, 10);
    s.backends[0].health = Health::Down;
    r.snaps
        .send(Arc::new(Snapshot::new(2, vec![s.clone()]).unwrap()))
        .unwrap();
    r.out();
    send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 3000);
    assert_eq!(
        r.counters.backend(BackendId(0)).0,
        10,
        "down backend got packets"
    );
    assert_eq!(
        r.counters.backend(BackendId(1)).0 + r.counters.backend(BackendId(2)).0,
        3020
    );
    assert!(r.out().iter().all(|f| f[0..6] != mac_of(1).0));
    // It comes back when healthy.
    s.backends[0].health = Health::Up;
    r.snaps
        .send(Arc::new(Snapshot::new(3, vec![s]).unwrap()))
        .unwrap();
    send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 30);
    assert_eq!(r.counters.backend(BackendId(0)).0, 20);
}

#[test]
fn a_vip_without_healthy_backends_drops_and_counts() {
    let b = [("198.19.1.1:514", 0)];
    let mut r = Rig::new(vec![service(
        0,
        "198.18.0.10:514",
        Mode::Dr,
        SchedulerKind::Rr,
        &b,
        0,
    )]);
    send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 5);
    assert_eq!(r.counters.dropped(DropReason::NoHealthyBackend), 5);
    assert_eq!(r.w.port().freed, 5);
    assert_eq!(r.counters.vip(VipId(0)).0, 5);
}

#[test]
fn the_fallback_takes_over_when_no_backend_is_in_rotation_and_only_then() {
    let mut s = service(
        0,
        "198.18.0.10:514",
        Mode::Nat,
        SchedulerKind::Rr,
        &BACKENDS,
        0,
    );
    let mut f = Backend::new(BackendId(9), sa("198.19.1.99:514"), 1);
    f.mac = Some(mac_of(99));
    s.fallback = Some(f);
    let mut r = Rig::new(vec![s.clone()]);
    send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 30);
    assert_eq!(
        r.counters.backend(BackendId(9)).0,
        0,
        "backends up: no fallback"
    );
    for b in &mut s.backends {
        b.health = Health::Down;
    }
    r.snaps
        .send(Arc::new(Snapshot::new(2, vec![s.clone()]).unwrap()))
        .unwrap();
    r.out();
    send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 30);
    assert_eq!(r.counters.backend(BackendId(9)).0, 30);
    assert_eq!(r.counters.dropped(DropReason::NoHealthyBackend), 0);
    for f in r.out() {
        assert_eq!(parse_udp(&f).unwrap().dst(), sa("198.19.1.99:514"));
    }
    // The first healthy backend takes everything back at once.
    s.backends[1].health = Health::Up;
    r.snaps
        .send(Arc::new(Snapshot::new(3, vec![s]).unwrap()))
        .unwrap();
    send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 30);
    assert_eq!(r.counters.backend(BackendId(9)).0, 30);
    assert_eq!(r.counters.backend(BackendId(1)).0, 10 + 30);
}

#[test]
fn traffic_for_no_vip_is_dropped_and_counted() {
    let mut r = Rig::new(vec![service(
        0,
        "198.18.0.10:514",
        Mode::Dr,
        SchedulerKind::Rr,
        &BACKENDS,
        0,
    )]);
    send(&mut r, "198.18.0.1:40000", "198.18.0.11:514", 3);
    send(&mut r, "198.18.0.1:40000", "198.18.0.10:515", 2);
    r.w.port_mut().push_rx(&[0u8; 10]);
    r.w.poll();
    assert_eq!(r.counters.dropped(DropReason::NoVip), 5);
    assert_eq!(r.counters.dropped(DropReason::Truncated), 1);
    assert_eq!(r.w.port().tx_len(), 0);
}

/// The design's two-VIP syslog case: two VIPs on port 514, rr over the same three
/// backend address:ports, NAT. Each reply must leave with the VIP its client used.
#[test]
fn nat_replies_get_the_right_vip_when_two_vips_share_backends() {
    let mut r = Rig::new(vec![
        service(
            0,
            "198.18.0.10:514",
            Mode::Nat,
            SchedulerKind::Rr,
            &BACKENDS,
            0,
        ),
        service(
            1,
            "198.18.0.11:514",
            Mode::Nat,
            SchedulerKind::Rr,
            &BACKENDS,
            3,
        ),
    ]);
    let clients = ["198.18.0.1:40000", "198.18.0.2:40001"];
    send(&mut r, clients[0], "198.18.0.10:514", 3);
    send(&mut r, clients[1], "198.18.0.11:514", 3);
    r.out();
    for (client, vip) in [
        (clients[0], "198.18.0.10:514"),
        (clients[1], "198.18.0.11:514"),
    ] {
        for (backend, _) in BACKENDS {
            send(&mut r, backend, client, 1);
            let out = r.out();
            assert_eq!(out.len(), 1);
            let p = parse_udp(&out[0]).unwrap();
            assert_eq!(
                p.src(),
                vip.parse().unwrap(),
                "reply from {backend} to {client}"
            );
            assert_eq!(p.dst(), client.parse().unwrap());
            assert_eq!(&out[0][0..6], &GW_MAC.0);
            assert!(checksums_valid(&out[0]));
        }
    }
    assert_eq!(r.counters.nat_replies.get(), 6);
}

#[test]
fn maglev_keeps_a_flow_on_one_backend() {
    let mut r = Rig::new(vec![service(
        0,
        "198.18.0.10:514",
        Mode::Dr,
        SchedulerKind::Maglev,
        &BACKENDS,
        0,
    )]);
    send(&mut r, "198.18.0.1:40000", "198.18.0.10:514", 50);
    let out = r.out();
    assert!(out.iter().all(|f| f[0..6] == out[0][0..6]));
}

#[test]
fn a_full_tx_ring_is_counted() {
    let spec = service(
        0,
        "198.18.0.10:514",
        Mode::Dr,
        SchedulerKind::Rr,
        &BACKENDS,
        0,
    );
    let snap = Arc::new(Snapshot::new(1, vec![spec]).unwrap());
    let mut r = Rig::with(snap, 32, 10);
    send(&mut r, "198.18.0.1:1", "198.18.0.10:514", 32);
    assert_eq!(r.counters.tx_packets.get(), 10);
    assert_eq!(r.counters.dropped(DropReason::TxFull), 22);
}

/// A snapshot exercising every branch of the UDP path: DR and NAT, shared NAT backends,
/// maglev, a family mismatch, a backend without a MAC, no backend in rotation, IPv6.
fn branchy_snapshot() -> Snapshot {
    let v6: [(&str, u32); 2] = [("[2001:db8:1::1]:514", 1), ("[2001:db8:1::2]:514", 1)];
    let mut no_mac = service(
        5,
        "198.18.0.15:514",
        Mode::Dr,
        SchedulerKind::Wrr,
        &[("198.19.2.1:514", 2), ("198.19.2.2:514", 1)],
        13,
    );
    no_mac.backends[1].mac = None;
    Snapshot::new(
        1,
        vec![
            service(
                0,
                "198.18.0.10:514",
                Mode::Dr,
                SchedulerKind::Rr,
                &BACKENDS,
                0,
            ),
            service(
                1,
                "198.18.0.11:514",
                Mode::Nat,
                SchedulerKind::Rr,
                &BACKENDS,
                3,
            ),
            service(
                2,
                "198.18.0.12:514",
                Mode::Nat,
                SchedulerKind::Rr,
                &BACKENDS,
                6,
            ),
            service(
                3,
                "198.18.0.13:53",
                Mode::Nat,
                SchedulerKind::Maglev,
                &[("198.19.3.1:53", 1), ("198.19.3.2:53", 1)],
                9,
            ),
            service(
                4,
                "198.18.0.14:514",
                Mode::Nat,
                SchedulerKind::Rr,
                &v6[..1],
                12,
            ),
            no_mac,
            service(
                6,
                "198.18.0.16:514",
                Mode::Dr,
                SchedulerKind::Rr,
                &[("198.19.4.1:514", 0)],
                20,
            ),
            service(
                7,
                "[2001:db8::10]:514",
                Mode::Nat,
                SchedulerKind::Rr,
                &v6,
                15,
            ),
            // wrr with every MAC resolved: the fast path's hops for a weighted rotation,
            // to backends VIPs 1 and 2 also use.
            service(
                8,
                "198.18.0.17:514",
                Mode::Nat,
                SchedulerKind::Wrr,
                &[("198.19.1.1:514", 3), ("198.19.1.2:514", 1)],
                22,
            ),
        ],
    )
    .unwrap()
}

/// Frames for [`branchy_snapshot`]: to each VIP and from each backend, tagged or not,
/// TTL 1, 2 or 64, with and without a UDP checksum; fragments, IPv6, ICMP, ARP, junk.
fn branchy_frames() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let clients = ["198.18.0.1:40000", "198.18.0.2:40001"];
    let vips = (10..=17).map(|i| format!("198.18.0.{i}:514"));
    let vips = vips.chain(["198.18.0.13:53".into(), "198.18.0.10:515".into()]);
    let backends = [
        "198.19.1.1:514",
        "198.19.1.2:514",
        "198.19.3.1:53",
        "198.19.9.9:514",
    ];
    let mut pairs: Vec<(String, String)> = Vec::new();
    for v in vips {
        pairs.extend(clients.map(|c| (c.to_string(), v.clone())));
    }
    for b in backends {
        pairs.extend(clients.map(|c| (b.to_string(), c.to_string())));
    }
    pairs.push(("[2001:db8::1]:1000".into(), "[2001:db8::10]:514".into()));
    pairs.push(("[2001:db8:1::1]:514".into(), "[2001:db8::1]:1000".into()));
    for (src, dst) in &pairs {
        for (vlan, ttl, sum) in [(None, 64, true), (Some(9), 2, false), (None, 1, true)] {
            let mut fs = FrameSpec::new(sa(src), sa(dst));
            fs.vlan = vlan;
            fs.ttl = ttl;
            fs.udp_checksum = sum;
            let f = udp_frame(&fs, b"<13>hello, world: 24 byte");
            if vlan.is_none() && ttl == 64 {
                out.extend(crate::testkit::frames::fragment(&f, 16, 7));
            }
            out.push(f);
        }
    }
    let mut icmp = out[0].clone();
    icmp[23] = 1;
    crate::testkit::frames::fix_ipv4_checksum(&mut icmp, 14);
    out.push(icmp);
    let mut arp = out[0].clone();
    arp[12..14].copy_from_slice(&[8, 6]);
    out.push(arp);
    out.push(vec![0; 10]);
    out
}

/// A frame borrowed as a received buffer.
struct TestBuf<'a>(&'a mut [u8]);

impl PacketBuf for TestBuf<'_> {
    fn data(&self) -> &[u8] {
        self.0
    }
    fn data_mut(&mut self) -> &mut [u8] {
        self.0
    }
}

/// One side of the comparison: its own cursors, counters, fragment and flow tables.
struct Side<'s> {
    cursors: Vec<u32>,
    memo: RouteMemo<'s>,
    frags: FragTable,
    c: SharedCounters,
    flows: NatFlows,
}

impl<'s> Side<'s> {
    fn new(snap: &Snapshot) -> Self {
        Self {
            cursors: vec![0; snap.cursor_slots()],
            memo: RouteMemo::default(),
            frags: FragTable::default(),
            c: WorkerCounters::shared(),
            flows: NatFlows::new(64),
        }
    }

    fn run(
        &mut self,
        fast: bool,
        snap: &'s Snapshot,
        at: Instant,
        frame: &mut [u8],
    ) -> Result<Fwd, DropReason> {
        if fast {
            // The worker's own loop, over a burst of one; the memo lives across frames
            // here, as across a burst: one snapshot. Its verdict is read back from what
            // it did: kept the frame, counted a drop, or neither.
            let drops = DropReason::ALL.map(|r| self.c.dropped(r));
            if self.deal(snap, at, &mut [TestBuf(frame)]) == 1 {
                return Ok(Fwd::Tx);
            }
            return match DropReason::ALL
                .into_iter()
                .zip(drops)
                .find(|&(r, n)| self.c.dropped(r) != n)
            {
                Some((r, _)) => Err(r),
                None => Ok(Fwd::Consumed),
            };
        }
        let neigh = WorkerNeigh::default();
        let ctx = Ctx::new(snap, &self.flows, PORT_MAC, GW_MAC, &self.c, &neigh, None);
        let mut now = Now(Some(at));
        let r = process_general(
            frame,
            &ctx,
            &mut self.cursors,
            &mut self.frags,
            &mut now,
            &mut Copies::default(),
        );
        if let Err(reason) = r {
            self.c.drop_packet(reason);
        }
        r
    }

    /// The worker's loop over `burst`; returns how many buffers it kept, at the front.
    fn deal(&mut self, snap: &'s Snapshot, at: Instant, burst: &mut [TestBuf]) -> usize {
        let neigh = WorkerNeigh::default();
        let ctx = Ctx::new(snap, &self.flows, PORT_MAC, GW_MAC, &self.c, &neigh, None);
        let mut now = Now(Some(at));
        let (cursors, frags) = (&mut self.cursors, &mut self.frags);
        deal::<_, false>(
            burst,
            &ctx,
            cursors,
            frags,
            &mut now,
            &mut self.memo,
            &mut Copies::default(),
        )
        .2
    }

    /// The fast side over a whole burst: the worker's loop on `frames` at once, which
    /// hands the memo to the slow path and back between runs of the common case.
    /// Returns the frames it kept for transmission, in order.
    fn run_burst(
        &mut self,
        snap: &'s Snapshot,
        at: Instant,
        frames: &mut [Vec<u8>],
    ) -> Vec<Vec<u8>> {
        let mut burst: Vec<TestBuf> = frames.iter_mut().map(|f| TestBuf(f)).collect();
        let kept = self.deal(snap, at, &mut burst);
        burst[..kept].iter().map(|b| b.0.to_vec()).collect()
    }

    fn counts(&mut self) -> Vec<u64> {
        self.memo.flush(&mut self.cursors, &self.c);
        let c = &self.c;
        let mut v: Vec<u64> = (0..32)
            .flat_map(|i| [c.vip(VipId(i)), c.backend(BackendId(i))])
            .flat_map(|(p, b)| [p, b])
            .collect();
        v.extend(DropReason::ALL.map(|r| c.dropped(r)));
        v.extend([c.nat_replies.get(), c.fragments_steered.get()]);
        v
    }
}

/// Frame `i` of `frames` (modulo their number), with byte `at` (modulo its length) set to
/// `v` when `edit` is `Some((at, v))`.
fn edited(frames: &[Vec<u8>], i: usize, edit: Option<(usize, u8)>) -> Vec<u8> {
    let mut f = frames[i % frames.len()].clone();
    if let Some((at, v)) = edit {
        let n = f.len();
        f[at % n] = v;
    }
    f
}

/// Sends `frames` (indices into [`branchy_frames`], each with an optional byte changed)
/// through the fast path and through the general one alone, and checks that they agree
/// on every verdict, every byte and every counter.
fn paths_agree(order: &[(usize, Option<(usize, u8)>)]) {
    let snap = branchy_snapshot();
    let frames = branchy_frames();
    let (mut fast, mut general) = (Side::new(&snap), Side::new(&snap));
    let at = Instant::now();
    for (k, &(i, edit)) in order.iter().enumerate() {
        let mut f = edited(&frames, i, edit);
        let mut g = f.clone();
        let rf = fast.run(true, &snap, at, &mut f);
        let rg = general.run(false, &snap, at, &mut g);
        assert_eq!(
            (rf.as_ref().map(|_| ()), &f),
            (rg.as_ref().map(|_| ()), &g),
            "frame #{k} ({i}, {edit:?})"
        );
        // The fast side's position for its last VIP is in its memo until a flush.
        let mut cursors = fast.cursors.clone();
        fast.memo.store_cursor(&mut cursors);
        assert_eq!(cursors, general.cursors, "frame #{k}");
    }
    assert_eq!(fast.counts(), general.counts());
}

/// [`paths_agree`] with the fast side taking `burst` frames at a time: the frames it
/// transmits and their bytes, the positions and the counters after each burst are the
/// general path's, frame by frame.
fn paths_agree_in_bursts(order: &[(usize, Option<(usize, u8)>)], burst: usize) {
    agree_in_bursts(&branchy_snapshot(), &branchy_frames(), order, burst);
}

/// [`paths_agree_in_bursts`] for the frames and snapshot given.
fn agree_in_bursts(
    snap: &Snapshot,
    frames: &[Vec<u8>],
    order: &[(usize, Option<(usize, u8)>)],
    burst: usize,
) {
    let (mut fast, mut general) = (Side::new(snap), Side::new(snap));
    let at = Instant::now();
    for (b, chunk) in order.chunks(burst.max(1)).enumerate() {
        let mut batch: Vec<Vec<u8>> = chunk
            .iter()
            .map(|&(i, edit)| edited(frames, i, edit))
            .collect();
        let mut want = Vec::new();
        for f in &batch {
            let mut g = f.clone();
            if let Ok(Fwd::Tx) = general.run(false, snap, at, &mut g) {
                want.push(g);
            }
        }
        let sent = fast.run_burst(snap, at, &mut batch);
        assert_eq!(sent, want, "burst #{b} {chunk:?}");
        let mut cursors = fast.cursors.clone();
        fast.memo.store_cursor(&mut cursors);
        assert_eq!(cursors, general.cursors, "burst #{b}");
        assert_eq!(fast.counts(), general.counts(), "burst #{b}");
    }
}

#[test]
fn the_fast_path_and_the_general_path_agree_on_every_branch() {
    let n = branchy_frames().len();
    // Each frame several times in a row (round robin, replies after requests), then
    // interleaved.
    let order: Vec<_> = (0..n)
        .flat_map(|i| [i; 4])
        .chain((0..4 * n).map(|k| (k * 7) % n))
        .map(|i| (i, None))
        .collect();
    paths_agree(&order);
    // Runs of one VIP broken by other VIPs and other kinds of frame within a burst.
    for burst in [2, 5, 32] {
        paths_agree_in_bursts(&order, burst);
    }
    // Two VIPs of one kind (NAT) alternating: the common case switches between them
    // without leaving its run.
    let frames = branchy_frames();
    let whole = |ip: [u8; 4]| {
        let f = |i: &usize| {
            let f = &frames[*i];
            f[12..14] == [8, 0] && f[30..34] == ip && f[20] & 0x3f == 0 && f[21] == 0 && f[22] == 64
        };
        (0..frames.len())
            .find(f)
            .expect("a whole datagram to the VIP")
    };
    let (a, b) = (whole([198, 18, 0, 11]), whole([198, 18, 0, 12]));
    let alternating: Vec<_> = (0..40).map(|k| ([a, b][k % 2], None)).collect();
    paths_agree_in_bursts(&alternating, 8);
}

/// VIPs 198.18.1.1, .2 … (port 514), VIP `v` in mode `mode(v)` with three backends of its
/// own (rr), and a datagram to each: frame `v` goes to VIP `v`.
fn many_vips(count: u8, mode: impl Fn(u8) -> Mode) -> (Snapshot, Vec<Vec<u8>>) {
    let specs = (0..count)
        .map(|v| {
            let backends: Vec<String> = (1..=3)
                .map(|b| format!("198.19.{}.{b}:514", 10 + v))
                .collect();
            let backends: Vec<(&str, u32)> = backends.iter().map(|b| (&b[..], 1)).collect();
            let vip = format!("198.18.1.{}:514", v + 1);
            service(
                v.into(),
                &vip,
                mode(v),
                SchedulerKind::Rr,
                &backends,
                3 * u16::from(v),
            )
        })
        .collect();
    let frames = (0..count)
        .map(|v| {
            let to = format!("198.18.1.{}:514", v + 1).parse().unwrap();
            let fs = FrameSpec::new(sa("198.18.0.1:40000"), to);
            udp_frame(&fs, b"<13>parked")
        })
        .collect();
    (Snapshot::new(1, specs).unwrap(), frames)
}

/// VIPs for the interleaving tests: more than the run's own and the parked ones.
const VIPS: u8 = PARKED as u8 + 3;

#[test]
fn interleaved_vips_keep_their_own_positions_and_counts() {
    // Up to eight VIPs of one kind take turns within a burst (a switch swaps parked
    // memos), more than eight (with the slots full, a switch to an unparked VIP hands the
    // memo it leaves back), one VIP among others, and DR and NAT VIPs mixed (a run stops
    // at the other kind, and the parked memos are handed back before the slow path).
    let dr = |_| Mode::Dr;
    let nat = |_| Mode::Nat;
    let mixed = |v: u8| if v % 3 == 2 { Mode::Nat } else { Mode::Dr };
    let modes: [&dyn Fn(u8) -> Mode; 3] = [&dr, &nat, &mixed];
    for mode in modes {
        let (snap, frames) = many_vips(VIPS, mode);
        let mut orders: Vec<Vec<usize>> = (2..=VIPS.into())
            .map(|n| (0..90).map(|k| k % n).collect())
            .collect();
        orders.push(
            (0..70)
                .map(|k| {
                    if k % 2 == 0 {
                        0
                    } else {
                        k / 2 % usize::from(VIPS)
                    }
                })
                .collect(),
        );
        orders.push(
            (0..90)
                .map(|k| (k * k + k / 3) % usize::from(VIPS))
                .collect(),
        );
        for order in &orders {
            let order: Vec<_> = order.iter().map(|&v| (v, None)).collect();
            for burst in [1, 5, 9, 32] {
                agree_in_bursts(&snap, &frames, &order, burst);
            }
        }
    }
}

proptest::proptest! {
    #[test]
    fn interleaved_vips_agree_with_the_general_path(
        order in proptest::collection::vec(
            (0..usize::from(VIPS), proptest::option::of((0usize..60, proptest::prelude::any::<u8>()))),
            1..100,
        ),
        burst in 1usize..40,
        nat_vips in 0u16..1 << VIPS,
    ) {
        let (snap, frames) = many_vips(VIPS, |v| if nat_vips >> v & 1 == 1 { Mode::Nat } else { Mode::Dr });
        agree_in_bursts(&snap, &frames, &order, burst);
    }

    #[test]
    fn the_fast_path_and_the_general_path_agree_on_damaged_frames(
        order in proptest::collection::vec(
            (0usize..1000, proptest::option::of((0usize..80, proptest::prelude::any::<u8>()))),
            1..40,
        ),
    ) {
        paths_agree(&order);
    }

    #[test]
    fn the_fast_path_and_the_general_path_agree_on_damaged_frames_in_bursts(
        order in proptest::collection::vec(
            (0usize..1000, proptest::option::of((0usize..80, proptest::prelude::any::<u8>()))),
            1..80,
        ),
        burst in 1usize..40,
    ) {
        paths_agree_in_bursts(&order, burst);
    }
}
