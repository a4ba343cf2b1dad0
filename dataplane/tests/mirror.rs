//! Mirror pools through a worker over the memory port: every datagram the primary pool
//! forwards leaves once more per mirror pool, to that pool's next backend, in order; across
//! snapshots that add and remove pools; with sampling, all-down pools, NAT replies from
//! mirror backends and a full TX ring.

use std::collections::BTreeMap;
use std::sync::Arc;

use dataplane::counters::DropReason;
use dataplane::sched::SchedulerKind;
use dataplane::service::{
    Backend, BackendId, Health, MacAddr, MirrorSpec, Mode, ServiceSpec, Snapshot,
};
use dataplane::testkit::frames::{checksums_valid, udp_frame, FrameSpec};
use dataplane::testkit::rig::{self, mac_of, sa, Rig, PORT_MAC};
use dataplane::wire::parse_udp;

const VIP: &str = "198.18.0.10:514";
const CLIENT: &str = "198.18.0.1:40000";
const PRIMARY: [(&str, u32); 3] = [
    ("198.19.1.1:514", 1),
    ("198.19.1.2:514", 1),
    ("198.19.1.3:514", 1),
];

/// The MAC address of backend `i` (from 1) of mirror pool `pool` (from 1).
fn mirror_mac(pool: u8, i: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0x10 + pool, i])
}

/// Mirror pool `pool` (from 1) of `n` backends 198.19.1<pool>.i:514, ids from `first_id`.
fn pool(pool: u8, n: u8, first_id: u16, sched: SchedulerKind) -> MirrorSpec {
    let backends = (1..=n)
        .map(|i| {
            let addr = sa(&format!("198.19.1{pool}.{i}:514"));
            let mut b = Backend::new(BackendId(first_id + u16::from(i) - 1), addr, 1);
            b.mac = Some(mirror_mac(pool, i));
            b
        })
        .collect();
    MirrorSpec::new(format!("pool{pool}"), sched, backends)
}

fn service(mode: Mode, mirrors: Vec<MirrorSpec>) -> ServiceSpec {
    let mut s = rig::service(0, VIP, mode, SchedulerKind::Rr, &PRIMARY, 0);
    s.mirrors = mirrors;
    s
}

/// Datagram `seq` from the client to the VIP; its payload is its sequence number.
fn datagram(seq: u32) -> Vec<u8> {
    udp_frame(&FrameSpec::new(sa(CLIENT), sa(VIP)), &seq.to_be_bytes())
}

fn seq_of(frame: &[u8]) -> u32 {
    let f = parse_udp(frame).expect("a valid datagram");
    let p = &frame[f.l4 + 8..];
    u32::from_be_bytes(p[..4].try_into().expect("a sequence number"))
}

fn dst_mac(frame: &[u8]) -> MacAddr {
    MacAddr(frame[0..6].try_into().expect("an Ethernet header"))
}

/// The sequence numbers each destination MAC received, in the order they left.
fn by_mac(out: &[Vec<u8>]) -> BTreeMap<MacAddr, Vec<u32>> {
    let mut m: BTreeMap<MacAddr, Vec<u32>> = BTreeMap::new();
    for f in out {
        m.entry(dst_mac(f)).or_default().push(seq_of(f));
    }
    m
}

/// Sends datagrams `seqs` one burst at a time, returns everything that left.
fn send(r: &mut Rig, seqs: std::ops::Range<u32>) -> Vec<Vec<u8>> {
    let frames: Vec<Vec<u8>> = seqs.map(datagram).collect();
    let mut out = Vec::new();
    for chunk in frames.chunks(32) {
        out.extend(r.run(chunk));
    }
    out
}

#[test]
fn every_datagram_reaches_the_primary_and_each_mirror_pool_once_in_order() {
    let mirrors = vec![
        pool(1, 2, 10, SchedulerKind::Rr),
        pool(2, 1, 20, SchedulerKind::Rr),
    ];
    let mut r = Rig::new(vec![service(Mode::Dr, mirrors)]);
    let out = send(&mut r, 0..600);
    assert_eq!(out.len(), 600 * 3, "drops: {:?}", r.drops());
    let got = by_mac(&out);
    // The primary pool: rr over three, as without mirrors.
    for i in 0..3u32 {
        let want: Vec<u32> = (0..600).filter(|s| s % 3 == i).collect();
        assert_eq!(got[&mac_of(i as usize + 1)], want, "primary backend {i}");
    }
    // Pool 1: rr over its two; pool 2: all to its one. Each in the order sent.
    let evens: Vec<u32> = (0..600).filter(|s| s % 2 == 0).collect();
    let odds: Vec<u32> = (0..600).filter(|s| s % 2 == 1).collect();
    assert_eq!(got[&mirror_mac(1, 1)], evens);
    assert_eq!(got[&mirror_mac(1, 2)], odds);
    assert_eq!(got[&mirror_mac(2, 1)], (0..600).collect::<Vec<_>>());
    // A copy is the original's bytes but for its destination MAC (DR).
    for f in &out {
        assert_eq!(&f[6..12], &PORT_MAC.0);
        assert!(checksums_valid(f));
    }
    let c = &r.counters;
    assert_eq!(
        c.vip(dataplane::service::VipId(0)).0,
        600,
        "one datagram, one count"
    );
    assert_eq!(c.backend(BackendId(10)).0, 300);
    assert_eq!(c.backend(BackendId(11)).0, 300);
    assert_eq!(c.backend(BackendId(20)).0, 600);
    assert_eq!(c.mirror_copies.get(), 1200);
    assert_eq!(c.tx_packets.get(), 1800);
    assert_eq!(c.dropped_total(), 0);
}

#[test]
fn a_nat_copy_goes_to_the_mirror_backends_address_with_valid_checksums() {
    let mut r = Rig::new(vec![service(
        Mode::Nat,
        vec![pool(1, 1, 10, SchedulerKind::Rr)],
    )]);
    let out = r.run(&[datagram(7)]);
    assert_eq!(out.len(), 2, "drops: {:?}", r.drops());
    let original = parse_udp(&out[0]).unwrap();
    let copy = parse_udp(&out[1]).unwrap();
    assert_eq!(original.dst(), sa(PRIMARY[0].0));
    assert_eq!(copy.dst(), sa("198.19.11.1:514"));
    assert_eq!(copy.src(), sa(CLIENT));
    assert_eq!(dst_mac(&out[1]), mirror_mac(1, 1));
    assert!(checksums_valid(&out[1]));
    // The TTL was decremented once, on the original the copy was made from.
    assert_eq!(out[0][14 + 8], 63);
    assert_eq!(out[1][14 + 8], 63);
    assert_eq!(seq_of(&out[1]), 7);
}

#[test]
fn snapshots_that_add_and_remove_mirror_pools_take_effect_from_the_next_burst() {
    let mut r = Rig::new(vec![service(Mode::Dr, vec![])]);
    let out = send(&mut r, 0..64);
    assert_eq!(out.len(), 64);
    let one = vec![pool(1, 1, 10, SchedulerKind::Rr)];
    r.snaps
        .send(Arc::new(
            Snapshot::new(2, vec![service(Mode::Dr, one)]).unwrap(),
        ))
        .unwrap();
    let out = send(&mut r, 64..128);
    assert_eq!(out.len(), 128);
    assert_eq!(
        by_mac(&out)[&mirror_mac(1, 1)],
        (64..128).collect::<Vec<_>>()
    );
    let two = vec![
        pool(1, 1, 10, SchedulerKind::Rr),
        pool(2, 1, 20, SchedulerKind::Rr),
    ];
    r.snaps
        .send(Arc::new(
            Snapshot::new(3, vec![service(Mode::Dr, two)]).unwrap(),
        ))
        .unwrap();
    let out = send(&mut r, 128..192);
    let got = by_mac(&out);
    assert_eq!(got[&mirror_mac(1, 1)], (128..192).collect::<Vec<_>>());
    assert_eq!(got[&mirror_mac(2, 1)], (128..192).collect::<Vec<_>>());
    r.snaps
        .send(Arc::new(
            Snapshot::new(4, vec![service(Mode::Dr, vec![])]).unwrap(),
        ))
        .unwrap();
    let out = send(&mut r, 192..256);
    assert_eq!(out.len(), 64, "no copies once the pools are gone");
    // The primary pool's rotation went on undisturbed through all four snapshots.
    assert_eq!(r.counters.backend(BackendId(0)).0, 86);
    assert_eq!(r.counters.backend(BackendId(1)).0, 85);
    assert_eq!(r.counters.backend(BackendId(2)).0, 85);
    assert_eq!(r.counters.dropped_total(), 0);
}

#[test]
fn a_sampled_pool_gets_one_datagram_in_n() {
    let mut sampled = pool(1, 1, 10, SchedulerKind::Rr);
    sampled.sample = 4;
    let mut r = Rig::new(vec![service(Mode::Dr, vec![sampled])]);
    let out = send(&mut r, 0..400);
    let got = by_mac(&out);
    let want: Vec<u32> = (0..400).step_by(4).collect();
    assert_eq!(got[&mirror_mac(1, 1)], want);
    assert_eq!(out.len(), 500);
}

#[test]
fn wrr_and_maglev_balance_within_a_pool() {
    let mut weighted = pool(1, 2, 10, SchedulerKind::Wrr);
    weighted.backends[0].weight = 3;
    let hashed = pool(2, 3, 20, SchedulerKind::Maglev);
    let mut r = Rig::new(vec![service(Mode::Dr, vec![weighted, hashed])]);
    let out = send(&mut r, 0..400);
    let got = by_mac(&out);
    assert_eq!(got[&mirror_mac(1, 1)].len(), 300);
    assert_eq!(got[&mirror_mac(1, 2)].len(), 100);
    // One client flow: maglev keeps it on one backend of its pool.
    let hashed: Vec<usize> = (1..=3)
        .map(|i| got.get(&mirror_mac(2, i)).map_or(0, Vec::len))
        .collect();
    assert_eq!(hashed.iter().filter(|&&n| n > 0).count(), 1, "{hashed:?}");
    assert_eq!(hashed.iter().sum::<usize>(), 400);
}

#[test]
fn a_pool_with_every_backend_down_costs_the_primary_nothing() {
    let mut down = pool(1, 2, 10, SchedulerKind::Rr);
    for b in &mut down.backends {
        b.health = Health::Down;
    }
    let mut r = Rig::new(vec![service(
        Mode::Dr,
        vec![down, pool(2, 1, 20, SchedulerKind::Rr)],
    )]);
    let out = send(&mut r, 0..90);
    let got = by_mac(&out);
    assert_eq!(out.len(), 180);
    assert!(!got.contains_key(&mirror_mac(1, 1)) && !got.contains_key(&mirror_mac(1, 2)));
    assert_eq!(got[&mirror_mac(2, 1)].len(), 90);
    assert_eq!(r.counters.dropped_total(), 0);
    assert_eq!(r.counters.mirror_unsent.get(), 0);
}

#[test]
fn replies_from_mirror_backends_are_dropped_and_counted_never_relayed() {
    let mut r = Rig::new(vec![service(
        Mode::Nat,
        vec![pool(1, 1, 10, SchedulerKind::Rr)],
    )]);
    let from_primary = udp_frame(&FrameSpec::new(sa(PRIMARY[0].0), sa(CLIENT)), b"answer");
    let from_mirror = udp_frame(
        &FrameSpec::new(sa("198.19.11.1:514"), sa(CLIENT)),
        b"answer",
    );
    let out = r.one(&from_primary);
    assert_eq!(parse_udp(&out).unwrap().src(), sa(VIP));
    r.dropped(&from_mirror, DropReason::MirrorReply);
    assert_eq!(r.counters.nat_replies.get(), 1);
}

#[test]
fn a_full_tx_ring_drops_copies_not_originals() {
    let spec = service(Mode::Dr, vec![pool(1, 1, 10, SchedulerKind::Rr)]);
    // Room for one burst of originals and 8 of its 32 copies.
    let mut r = Rig::with(Arc::new(Snapshot::new(1, vec![spec]).unwrap()), 32, 40);
    let out = send(&mut r, 0..32);
    let got = by_mac(&out);
    let primary: usize = (1..=3).map(|i| got[&mac_of(i)].len()).sum();
    assert_eq!(primary, 32, "every original left");
    assert_eq!(got[&mirror_mac(1, 1)], (0..8).collect::<Vec<_>>());
    assert_eq!(r.counters.mirror_tx_full.get(), 24);
    assert_eq!(r.counters.mirror_copies.get(), 8);
    assert_eq!(r.counters.dropped(DropReason::TxFull), 0);
}

#[test]
fn a_mirror_backend_without_a_mac_is_counted_and_the_others_still_get_their_copies() {
    let mut unresolved = pool(1, 1, 10, SchedulerKind::Rr);
    unresolved.backends[0].mac = None;
    let mut r = Rig::new(vec![service(
        Mode::Dr,
        vec![unresolved, pool(2, 1, 20, SchedulerKind::Rr)],
    )]);
    let out = send(&mut r, 0..10);
    assert_eq!(out.len(), 20);
    assert_eq!(r.counters.mirror_unsent.get(), 10);
    assert_eq!(by_mac(&out)[&mirror_mac(2, 1)].len(), 10);
}

#[test]
fn a_snapshot_refuses_a_tunnelled_mirror_backend() {
    let mut p = pool(1, 1, 10, SchedulerKind::Rr);
    p.backends[0].tunnel = Some(dataplane::service::Tunnel {
        encap: dataplane::service::Encap::Ipip,
        source: "198.18.0.2".parse().unwrap(),
        mtu: dataplane::service::DEFAULT_TUNNEL_MTU,
    });
    let err = Snapshot::new(1, vec![service(Mode::Dr, vec![p])]).unwrap_err();
    assert!(err.to_string().contains("mirror"), "{err}");
}
