//! Network correctness over the memory port: ARP/NDP, IPv6, fragments, VLAN, TTL, ICMP and
//! hostile input. Frames are built in Rust (`dataplane::testkit::frames`, `dataplane::neigh`),
//! and what comes out is compared byte for byte with a frame built to be the expected one.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use dataplane::counters::DropReason;
use dataplane::frag::FragTable;
use dataplane::neigh::{
    arp_frame, multicast_mac, ndp_frame, solicited_node, NeighConfig, NeighFrame, NeighState,
    Neighbours, WorkerNeigh,
};
use dataplane::sched::SchedulerKind;
use dataplane::service::{MacAddr, Mode, ServiceSpec, Snapshot, VipId};
use dataplane::socket::{PassiveReport, PassiveSink};
use dataplane::testkit::frames::{
    add_ipv4_options, checksums_valid, fragment, icmp_error, ip_part, udp_frame, FrameSpec,
};
use dataplane::testkit::rig::{self, mac_of, sa, Rig, GW_MAC, PORT_MAC};

const CLIENT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x01]);
const LOCAL_V4: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 1);
const LOCAL_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);

/// Service `id` over `backends` of weight 1, ids from `id * 16`, with or without MACs.
fn service(
    id: u16,
    vip: &str,
    mode: Mode,
    sched: SchedulerKind,
    backends: &[&str],
    macs: bool,
) -> ServiceSpec {
    let weighted: Vec<(&str, u32)> = backends.iter().map(|a| (*a, 1)).collect();
    let mut s = rig::service(id, vip, mode, sched, &weighted, id * 16);
    if !macs {
        for b in &mut s.backends {
            b.mac = None;
        }
    }
    s
}

/// A frame `src -> dst` as it arrives from the client side (client MAC -> port MAC).
fn inbound(src: &str, dst: &str, ttl: u8, vlan: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut s = FrameSpec::new(sa(src), sa(dst));
    s.src_mac = CLIENT_MAC;
    s.dst_mac = PORT_MAC;
    s.ttl = ttl;
    s.vlan = vlan;
    udp_frame(&s, payload)
}

/// The frame Spray should send: port MAC -> `mac`.
fn outbound(
    src: &str,
    dst: &str,
    ttl: u8,
    vlan: Option<u16>,
    mac: MacAddr,
    payload: &[u8],
) -> Vec<u8> {
    let mut s = FrameSpec::new(sa(src), sa(dst));
    s.src_mac = PORT_MAC;
    s.dst_mac = mac;
    s.ttl = ttl;
    s.vlan = vlan;
    udp_frame(&s, payload)
}

const V4_BACKENDS: [&str; 3] = ["198.19.1.1:1514", "198.19.1.2:1514", "198.19.1.3:1514"];
const V6_BACKENDS: [&str; 3] = [
    "[2001:db8:1::11]:1514",
    "[2001:db8:1::12]:1514",
    "[2001:db8:1::13]:1514",
];

// ---------------------------------------------------------------------------------------
// 2. IPv6 and VLAN, DR and NAT, TTL

#[test]
fn ipv6_nat_with_vlan_is_byte_exact_and_decrements_the_hop_limit() {
    let mut r = Rig::new(vec![service(
        0,
        "[2001:db8::10]:514",
        Mode::Nat,
        SchedulerKind::Rr,
        &V6_BACKENDS,
        true,
    )]);
    for (i, b) in V6_BACKENDS.iter().enumerate() {
        let got = r.one(&inbound(
            "[2001:db8::1]:40000",
            "[2001:db8::10]:514",
            64,
            Some(0x2007),
            b"<13>v6",
        ));
        let want = outbound(
            "[2001:db8::1]:40000",
            b,
            63,
            Some(0x2007),
            mac_of(i + 1),
            b"<13>v6",
        );
        assert_eq!(got, want, "backend {b}");
        assert!(checksums_valid(&got));
    }
}

#[test]
fn ipv6_dr_with_vlan_changes_only_the_macs() {
    let mut r = Rig::new(vec![service(
        0,
        "[2001:db8::10]:514",
        Mode::Dr,
        SchedulerKind::Rr,
        &V6_BACKENDS,
        true,
    )]);
    let got = r.one(&inbound(
        "[2001:db8::1]:40000",
        "[2001:db8::10]:514",
        5,
        Some(42),
        b"dr",
    ));
    let want = outbound(
        "[2001:db8::1]:40000",
        "[2001:db8::10]:514",
        5,
        Some(42),
        mac_of(1),
        b"dr",
    );
    assert_eq!(got, want);
}

#[test]
fn ipv4_dr_keeps_the_ttl_and_the_vlan_tag() {
    let mut r = Rig::new(vec![service(
        0,
        "198.18.0.10:514",
        Mode::Dr,
        SchedulerKind::Rr,
        &V4_BACKENDS,
        true,
    )]);
    // TTL 1 is fine in DR: Spray is a bridge there, not a router.
    let got = r.one(&inbound(
        "198.18.0.1:4000",
        "198.18.0.10:514",
        1,
        Some(7),
        b"x",
    ));
    assert_eq!(
        got,
        outbound(
            "198.18.0.1:4000",
            "198.18.0.10:514",
            1,
            Some(7),
            mac_of(1),
            b"x"
        )
    );
}

#[test]
fn ipv6_nat_replies_leave_from_the_vip_with_a_valid_checksum() {
    let mut r = Rig::new(vec![service(
        0,
        "[2001:db8::10]:53",
        Mode::Nat,
        SchedulerKind::Rr,
        &V6_BACKENDS,
        true,
    )]);
    let mut s = FrameSpec::new(sa(V6_BACKENDS[1]), sa("[2001:db8::1]:5353"));
    s.dst_mac = PORT_MAC;
    let got = r.one(&udp_frame(&s, b"answer"));
    let want = outbound(
        "[2001:db8::10]:53",
        "[2001:db8::1]:5353",
        63,
        None,
        GW_MAC,
        b"answer",
    );
    assert_eq!(got, want);
    assert!(checksums_valid(&got));
}

#[test]
fn nat_drops_and_counts_when_the_ttl_would_reach_zero() {
    let mut r = Rig::new(vec![
        service(
            0,
            "198.18.0.10:514",
            Mode::Nat,
            SchedulerKind::Rr,
            &V4_BACKENDS,
            true,
        ),
        service(
            1,
            "[2001:db8::10]:514",
            Mode::Nat,
            SchedulerKind::Rr,
            &V6_BACKENDS,
            true,
        ),
    ]);
    r.dropped(
        &inbound("198.18.0.1:4000", "198.18.0.10:514", 1, None, b"x"),
        DropReason::TtlExceeded,
    );
    r.dropped(
        &inbound("198.18.0.1:4000", "198.18.0.10:514", 0, None, b"x"),
        DropReason::TtlExceeded,
    );
    r.dropped(
        &inbound("[2001:db8::1]:4000", "[2001:db8::10]:514", 1, None, b"x"),
        DropReason::TtlExceeded,
    );
    // TTL 2 goes out as 1 (a fresh rig: the drops above moved the rr cursor).
    let mut r = frag_rig(Mode::Nat, SchedulerKind::Rr, false);
    let got = r.one(&inbound(
        "198.18.0.1:4000",
        "198.18.0.10:514",
        2,
        None,
        b"x",
    ));
    assert_eq!(
        got,
        outbound("198.18.0.1:4000", V4_BACKENDS[0], 1, None, mac_of(1), b"x")
    );
}

// ---------------------------------------------------------------------------------------
// 3. Fragments

fn frag_rig(mode: Mode, sched: SchedulerKind, v6: bool) -> Rig {
    let (vip, backends): (&str, &[&str]) = if v6 {
        ("[2001:db8::10]:514", &V6_BACKENDS)
    } else {
        ("198.18.0.10:514", &V4_BACKENDS)
    };
    Rig::new(vec![service(0, vip, mode, sched, backends, true)])
}

fn payload(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
}

/// Datagrams of three fragments each, interleaved; with rr, each datagram goes whole to
/// one backend, and every fragment equals the fragment of the datagram built for it.
fn fragments_follow_their_first(v6: bool, mode: Mode) {
    let mut r = frag_rig(mode, SchedulerKind::Rr, v6);
    let (client, vip, backends): (&str, &str, &[&str]) = if v6 {
        ("[2001:db8::1]:40000", "[2001:db8::10]:514", &V6_BACKENDS)
    } else {
        ("198.18.0.1:40000", "198.18.0.10:514", &V4_BACKENDS)
    };
    let n: usize = 6;
    let datagrams: Vec<Vec<Vec<u8>>> = (0..n)
        .map(|d| {
            fragment(
                &inbound(client, vip, 64, None, &payload(2000, d as u8)),
                800,
                100 + d as u32,
            )
        })
        .collect();
    // First fragments of all datagrams, then the rest in order: each datagram's pieces
    // are separated by other datagrams' pieces (which round robin would scatter).
    let mut frames = Vec::new();
    for piece in 0..3usize {
        for d in &datagrams {
            frames.push(d[piece].clone());
        }
    }
    let out = r.run(&frames);
    assert_eq!(out.len(), frames.len(), "drops: {:?}", r.drops());
    for (d, _) in datagrams.iter().enumerate() {
        let b = d % 3; // rr order of the first fragments
        let (dst, ttl) = match mode {
            Mode::Nat => (backends[b], 63),
            Mode::Dr => (vip, 64),
        };
        let want = fragment(
            &outbound(
                client,
                dst,
                ttl,
                None,
                mac_of(b + 1),
                &payload(2000, d as u8),
            ),
            800,
            100 + d as u32,
        );
        for piece in 0..3 {
            assert_eq!(
                out[piece * n + d],
                want[piece],
                "datagram {d} piece {piece}"
            );
        }
    }
    assert_eq!(r.counters.fragments_steered.get(), 2 * n as u64);
}

#[test]
fn ipv4_fragments_follow_their_first_nat() {
    fragments_follow_their_first(false, Mode::Nat);
}

#[test]
fn ipv4_fragments_follow_their_first_dr() {
    fragments_follow_their_first(false, Mode::Dr);
}

#[test]
fn ipv6_fragments_follow_their_first_nat() {
    fragments_follow_their_first(true, Mode::Nat);
}

#[test]
fn fragments_of_a_nat_reply_get_the_vip_as_source() {
    let mut r = frag_rig(Mode::Nat, SchedulerKind::Rr, false);
    let mut s = FrameSpec::new(sa(V4_BACKENDS[2]), sa("198.18.0.1:40000"));
    s.dst_mac = PORT_MAC;
    let body = payload(1500, 9);
    let got = r.run(&fragment(&udp_frame(&s, &body), 1000, 77));
    let want = fragment(
        &outbound(
            "198.18.0.10:514",
            "198.18.0.1:40000",
            63,
            None,
            GW_MAC,
            &body,
        ),
        1000,
        77,
    );
    assert_eq!(got, want);
}

#[test]
fn a_fragment_before_its_first_is_dropped_and_counted() {
    let mut r = frag_rig(Mode::Nat, SchedulerKind::Rr, false);
    let f = fragment(
        &inbound(
            "198.18.0.1:1",
            "198.18.0.10:514",
            64,
            None,
            &payload(100, 1),
        ),
        64,
        5,
    );
    r.dropped(&f[1], DropReason::FragmentNoFirst);
    // The first then goes through; the late second one does not come back.
    assert_eq!(r.run(&f[..1]).len(), 1);
}

#[test]
fn overlapping_fragments_are_dropped_with_the_rest_of_their_datagram() {
    let mut r = frag_rig(Mode::Dr, SchedulerKind::Rr, false);
    let f = fragment(
        &inbound(
            "198.18.0.1:1",
            "198.18.0.10:514",
            64,
            None,
            &payload(200, 1),
        ),
        64,
        6,
    );
    assert_eq!(r.run(&f[..2]).len(), 2);
    // A copy of piece 1 (offset 64): overlaps what was forwarded.
    r.dropped(&f[1], DropReason::FragmentOverlap);
    r.dropped(&f[2], DropReason::FragmentOverlap);
}

#[test]
fn fragment_table_exhaustion_is_counted() {
    let mut r = frag_rig(Mode::Dr, SchedulerKind::Rr, false);
    r.w.set_frag_table(FragTable::new(4, Duration::from_secs(1)));
    let firsts: Vec<Vec<u8>> = (0..5)
        .map(|id| {
            fragment(
                &inbound(
                    "198.18.0.1:1",
                    "198.18.0.10:514",
                    64,
                    None,
                    &payload(100, 1),
                ),
                64,
                id,
            )
            .swap_remove(0)
        })
        .collect();
    assert_eq!(r.run(&firsts[..4]).len(), 4);
    r.dropped(&firsts[4], DropReason::FragmentTableFull);
    // Entries expire: room again a little later.
    r.now += Duration::from_secs(2);
    assert_eq!(r.run(&firsts[4..]).len(), 1);
}

#[test]
fn a_tiny_first_fragment_is_refused() {
    let mut r = frag_rig(Mode::Dr, SchedulerKind::Rr, false);
    let whole = inbound(
        "198.18.0.1:1",
        "198.18.0.10:514",
        64,
        None,
        &payload(100, 1),
    );
    // Cut the first fragment to 0 bytes of UDP: 8-byte pieces would hold the header, so
    // build one with an empty payload by hand.
    let mut f = fragment(&whole, 8, 1).swap_remove(0);
    f.truncate(14 + 20 + 8);
    f[16..18].copy_from_slice(&20u16.to_be_bytes());
    dataplane::testkit::frames::fix_ipv4_checksum(&mut f, 14);
    r.dropped(&f, DropReason::Fragment);
}

// ---------------------------------------------------------------------------------------
// 4. ICMP errors about NAT flows

#[test]
fn port_unreachable_from_a_backend_reaches_the_client_as_from_the_vip() {
    let mut r = frag_rig(Mode::Nat, SchedulerKind::Rr, false);
    let client = "198.18.0.1:40000";
    let vip = "198.18.0.10:514";
    let backend = V4_BACKENDS[1];
    // What the backend received (TTL 63 after Spray), quoted whole.
    let seen = outbound(client, backend, 63, None, mac_of(2), b"<13>hi");
    let icmp = icmp_error(
        mac_of(2),
        PORT_MAC,
        sa(backend).ip(),
        sa(client).ip(),
        64,
        3,
        3,
        [0; 4],
        ip_part(&seen),
    );
    let got = r.one(&icmp);
    let client_sent = outbound(client, vip, 63, None, mac_of(2), b"<13>hi");
    let want = icmp_error(
        PORT_MAC,
        GW_MAC,
        sa(vip).ip(),
        sa(client).ip(),
        63,
        3,
        3,
        [0; 4],
        ip_part(&client_sent),
    );
    assert_eq!(got, want);
    assert_eq!(r.counters.icmp_translated.get(), 1);
}

#[test]
fn frag_needed_from_a_router_keeps_the_router_as_source() {
    let mut r = frag_rig(Mode::Nat, SchedulerKind::Rr, false);
    let client = "198.18.0.1:40000";
    let router: IpAddr = "198.19.0.254".parse().unwrap();
    let seen = outbound(client, V4_BACKENDS[0], 62, None, mac_of(1), &payload(64, 3));
    // A router quotes the IP header and the first 8 bytes of the datagram only.
    let quoted = &ip_part(&seen)[..28];
    let icmp = icmp_error(
        GW_MAC,
        PORT_MAC,
        router,
        sa(client).ip(),
        64,
        3,
        4,
        [0, 0, 0x05, 0xdc],
        quoted,
    );
    let got = r.one(&icmp);
    let client_sent = outbound(
        client,
        "198.18.0.10:514",
        62,
        None,
        mac_of(1),
        &payload(64, 3),
    );
    let want = icmp_error(
        PORT_MAC,
        GW_MAC,
        router,
        sa(client).ip(),
        63,
        3,
        4,
        [0, 0, 0x05, 0xdc],
        &ip_part(&client_sent)[..28],
    );
    assert_eq!(got, want);
}

#[test]
fn packet_too_big_from_an_ipv6_backend_is_translated() {
    let mut r = frag_rig(Mode::Nat, SchedulerKind::Rr, true);
    let client = "[2001:db8::1]:40000";
    let backend = V6_BACKENDS[0];
    let seen = outbound(client, backend, 63, Some(3), mac_of(1), &payload(40, 1));
    let mut icmp = icmp_error(
        mac_of(1),
        PORT_MAC,
        sa(backend).ip(),
        sa(client).ip(),
        64,
        2,
        0,
        [0, 0, 0x05, 0x00],
        ip_part(&seen),
    );
    let got = r.one(&icmp);
    let client_sent = outbound(
        client,
        "[2001:db8::10]:514",
        63,
        None,
        mac_of(1),
        &payload(40, 1),
    );
    let want = icmp_error(
        PORT_MAC,
        GW_MAC,
        "2001:db8::10".parse().unwrap(),
        sa(client).ip(),
        63,
        2,
        0,
        [0, 0, 0x05, 0x00],
        ip_part(&client_sent),
    );
    assert_eq!(got, want);
    // Echo requests and errors about unknown flows are not forwarded.
    icmp[14 + 40] = 128;
    r.dropped(&icmp, DropReason::IcmpNotTranslated);
}

#[test]
fn icmp_about_unknown_flows_is_dropped() {
    let mut r = frag_rig(Mode::Nat, SchedulerKind::Rr, false);
    let seen = outbound("198.18.0.1:1", "198.19.9.9:1514", 63, None, mac_of(1), b"x");
    let icmp = icmp_error(
        mac_of(1),
        PORT_MAC,
        "198.19.9.9".parse().unwrap(),
        "198.18.0.1".parse().unwrap(),
        64,
        3,
        3,
        [0; 4],
        ip_part(&seen),
    );
    r.dropped(&icmp, DropReason::IcmpNotTranslated);
}

/// A rig over one service (`mode`, `passive`) whose worker reports to a channel of `cap`.
fn passive_rig(mode: Mode, v6: bool, passive: bool, cap: usize) -> (Rig, Receiver<PassiveReport>) {
    let (vip, backends): (&str, &[&str]) = if v6 {
        ("[2001:db8::10]:514", &V6_BACKENDS)
    } else {
        ("198.18.0.10:514", &V4_BACKENDS)
    };
    let mut spec = service(0, vip, mode, SchedulerKind::Rr, backends, true);
    spec.passive = passive;
    let mut r = Rig::new(vec![spec]);
    let (tx, rx) = bounded(cap);
    r.w.set_passive_reports(Some(PassiveSink(tx)));
    (r, rx)
}

/// An ICMP error `ty`/`code` from `backend` about the datagram `client -> backend` Spray sent.
fn unreachable_from(backend: &str, client: &str, ty: u8, code: u8, v6: bool) -> Vec<u8> {
    let vlan = if v6 { Some(3) } else { None };
    let seen = outbound(client, backend, 63, vlan, mac_of(2), b"<13>hi");
    icmp_error(
        mac_of(2),
        PORT_MAC,
        sa(backend).ip(),
        sa(client).ip(),
        64,
        ty,
        code,
        [0; 4],
        ip_part(&seen),
    )
}

/// What the client should receive for [`unreachable_from`] from a backend of `vip`.
fn translated(vip: &str, client: &str, ty: u8, code: u8) -> Vec<u8> {
    let client_sent = outbound(client, vip, 63, None, mac_of(2), b"<13>hi");
    icmp_error(
        PORT_MAC,
        GW_MAC,
        sa(vip).ip(),
        sa(client).ip(),
        63,
        ty,
        code,
        [0; 4],
        ip_part(&client_sent),
    )
}

#[test]
fn port_unreachable_about_a_passive_nat_flow_is_reported_once_and_still_translated() {
    let (mut r, reports) = passive_rig(Mode::Nat, false, true, 16);
    let client = "198.18.0.1:40000";
    let vip = "198.18.0.10:514";
    let backend = V4_BACKENDS[1];
    let got = r.one(&unreachable_from(backend, client, 3, 3, false));
    // Translated exactly as without passive detection.
    let client_sent = outbound(client, vip, 63, None, mac_of(2), b"<13>hi");
    let want = icmp_error(
        PORT_MAC,
        GW_MAC,
        sa(vip).ip(),
        sa(client).ip(),
        63,
        3,
        3,
        [0; 4],
        ip_part(&client_sent),
    );
    assert_eq!(got, want);
    assert_eq!(r.counters.icmp_translated.get(), 1);
    let rep = reports.try_recv().expect("one report");
    assert_eq!(
        rep,
        PassiveReport {
            vip: VipId(0),
            backend: sa(backend),
            errno: libc::ECONNREFUSED,
            icmp: (3, 3),
            at: r.now,
        }
    );
    assert!(reports.try_recv().is_err(), "exactly one report");
    assert_eq!(r.counters.passive_reports_lost.get(), 0);

    // Host unreachable: EHOSTUNREACH. Fragmentation needed (3/4): translated, not reported.
    r.one(&unreachable_from(V4_BACKENDS[0], client, 3, 1, false));
    let rep = reports.try_recv().expect("host unreachable reported");
    assert_eq!(
        (rep.backend, rep.errno, rep.icmp),
        (sa(V4_BACKENDS[0]), libc::EHOSTUNREACH, (3, 1))
    );
    r.one(&unreachable_from(V4_BACKENDS[0], client, 3, 4, false));
    assert!(reports.try_recv().is_err(), "3/4 is not a passive signal");
    assert_eq!(r.counters.icmp_translated.get(), 3);
}

#[test]
fn ipv6_port_and_address_unreachable_are_reported() {
    let (mut r, reports) = passive_rig(Mode::Nat, true, true, 16);
    let client = "[2001:db8::1]:40000";
    let got = r.one(&unreachable_from(V6_BACKENDS[2], client, 1, 4, true));
    assert_eq!(got, translated("[2001:db8::10]:514", client, 1, 4));
    let rep = reports.try_recv().expect("one report");
    assert_eq!(
        (rep.vip, rep.backend, rep.errno, rep.icmp),
        (VipId(0), sa(V6_BACKENDS[2]), libc::ECONNREFUSED, (1, 4))
    );
    r.one(&unreachable_from(V6_BACKENDS[0], client, 1, 3, true));
    let rep = reports.try_recv().expect("one report");
    assert_eq!((rep.errno, rep.icmp), (libc::EHOSTUNREACH, (1, 3)));
    // Administratively prohibited (1/1) and packet too big: translated, not reported.
    r.one(&unreachable_from(V6_BACKENDS[0], client, 1, 1, true));
    r.one(&unreachable_from(V6_BACKENDS[0], client, 2, 0, true));
    assert!(reports.try_recv().is_err());
}

#[test]
fn no_report_when_the_service_is_not_passive() {
    let (mut r, reports) = passive_rig(Mode::Nat, false, false, 16);
    let client = "198.18.0.1:40000";
    let got = r.one(&unreachable_from(V4_BACKENDS[1], client, 3, 3, false));
    assert_eq!(got, translated("198.18.0.10:514", client, 3, 3));
    assert_eq!(r.counters.icmp_translated.get(), 1);
    assert!(reports.try_recv().is_err());
}

#[test]
fn no_report_for_dr_services() {
    let (mut r, reports) = passive_rig(Mode::Dr, false, true, 16);
    // A DR backend answers as the VIP; an error about either is not a NAT flow.
    for dst in [V4_BACKENDS[1], "198.18.0.10:514"] {
        let icmp = unreachable_from(dst, "198.18.0.1:40000", 3, 3, false);
        r.dropped(&icmp, DropReason::IcmpNotTranslated);
    }
    assert!(reports.try_recv().is_err());
}

#[test]
fn a_full_report_channel_is_counted_not_waited_for() {
    let (mut r, reports) = passive_rig(Mode::Nat, false, true, 1);
    let icmp = unreachable_from(V4_BACKENDS[1], "198.18.0.1:40000", 3, 3, false);
    let out = r.run(&[icmp.clone(), icmp.clone(), icmp]);
    assert_eq!(out.len(), 3, "every error is still translated");
    assert_eq!(reports.len(), 1);
    assert_eq!(r.counters.passive_reports_lost.get(), 2);
}

// ---------------------------------------------------------------------------------------
// 1. ARP and NDP

fn neigh_rig(specs: Vec<ServiceSpec>) -> (Rig, Receiver<NeighFrame>, Sender<NeighFrame>) {
    let mut r = Rig::new(specs);
    let (to_control, from_workers) = bounded(4);
    let (to_worker, from_control) = bounded(64);
    r.w.set_neigh(WorkerNeigh {
        local_v4: Some(LOCAL_V4),
        local_v6: Some(LOCAL_V6),
        to_control: Some(to_control),
        from_control: Some(from_control),
    });
    (r, from_workers, to_worker)
}

fn arp(
    vlan: Option<u16>,
    dst: [u8; 6],
    op: u16,
    sha: MacAddr,
    spa: &str,
    tha: [u8; 6],
    tpa: &str,
) -> Vec<u8> {
    let mut b = [0u8; 128];
    let n = arp_frame(
        &mut b,
        vlan,
        dst,
        op,
        sha,
        spa.parse().unwrap(),
        tha,
        tpa.parse().unwrap(),
    );
    b[..n].to_vec()
}

#[test]
fn arp_requests_for_a_vip_or_the_port_are_answered_in_place() {
    let (mut r, _, _) = neigh_rig(vec![service(
        0,
        "198.18.0.10:514",
        Mode::Dr,
        SchedulerKind::Rr,
        &V4_BACKENDS,
        true,
    )]);
    for (vlan, target) in [(None, "198.18.0.10"), (Some(9), "198.19.0.1")] {
        let req = arp(vlan, [0xff; 6], 1, CLIENT_MAC, "198.18.0.1", [0; 6], target);
        let got = r.one(&req);
        let want = arp(
            vlan,
            CLIENT_MAC.0,
            2,
            PORT_MAC,
            target,
            CLIENT_MAC.0,
            "198.18.0.1",
        );
        assert_eq!(got, want, "{target}");
    }
    assert_eq!(r.counters.neigh_answered.get(), 2);
    let other = arp(
        None,
        [0xff; 6],
        1,
        CLIENT_MAC,
        "198.18.0.1",
        [0; 6],
        "198.18.0.99",
    );
    r.dropped(&other, DropReason::NeighNotForUs);
    let mut bad = other.clone();
    bad[14 + 1] = 9; // hardware type 9
    r.dropped(&bad, DropReason::BadNeigh);
    r.dropped(&other[..30], DropReason::Truncated);
}

#[allow(clippy::too_many_arguments)]
fn ndp(
    vlan: Option<u16>,
    src_mac: MacAddr,
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    ty: u8,
    flags: u8,
    target: Ipv6Addr,
    opt: u8,
) -> Vec<u8> {
    let mut b = [0u8; 128];
    let n = ndp_frame(
        &mut b, vlan, src_mac, dst_mac, src, dst, ty, flags, target, opt,
    );
    b[..n].to_vec()
}

#[test]
fn neighbour_solicitations_for_a_vip_are_answered_in_place() {
    let (mut r, _, _) = neigh_rig(vec![service(
        0,
        "[2001:db8::10]:514",
        Mode::Dr,
        SchedulerKind::Rr,
        &V6_BACKENDS,
        true,
    )]);
    let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
    let client: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let sn = solicited_node(vip);
    for vlan in [None, Some(5)] {
        let ns = ndp(
            vlan,
            CLIENT_MAC,
            multicast_mac(sn),
            client,
            sn,
            135,
            0,
            vip,
            1,
        );
        let got = r.one(&ns);
        let want = ndp(vlan, PORT_MAC, CLIENT_MAC.0, vip, client, 136, 0x60, vip, 2);
        assert_eq!(got, want);
    }
    // Damaged checksum, wrong hop limit, other targets.
    let mut ns = ndp(
        None,
        CLIENT_MAC,
        multicast_mac(sn),
        client,
        sn,
        135,
        0,
        vip,
        1,
    );
    ns[14 + 40 + 2] ^= 1;
    r.dropped(&ns, DropReason::BadNeigh);
    let mut ns = ndp(
        None,
        CLIENT_MAC,
        multicast_mac(sn),
        client,
        sn,
        135,
        0,
        vip,
        1,
    );
    ns[14 + 7] = 64;
    r.dropped(&ns, DropReason::BadNeigh);
    let other: Ipv6Addr = "2001:db8::99".parse().unwrap();
    let ns = ndp(
        None,
        CLIENT_MAC,
        multicast_mac(sn),
        client,
        sn,
        135,
        0,
        other,
        1,
    );
    r.dropped(&ns, DropReason::NeighNotForUs);
}

#[test]
fn arp_replies_go_to_the_control_thread_until_its_queue_is_full() {
    let (mut r, from_workers, _) = neigh_rig(vec![]);
    let reply = arp(
        None,
        PORT_MAC.0,
        2,
        mac_of(1),
        "198.19.1.1",
        PORT_MAC.0,
        "198.19.0.1",
    );
    for _ in 0..4 {
        assert!(r.run(std::slice::from_ref(&reply)).is_empty());
    }
    assert_eq!(r.counters.neigh_queued.get(), 4);
    r.dropped(&reply, DropReason::NeighQueueFull);
    assert_eq!(from_workers.try_recv().unwrap().bytes(), &reply[..]);
}

/// The control thread's side, stepped together with a worker (quinn's `Pair`): resolution,
/// publication in the snapshot, refresh, expiry, and the announcement of a new VIP.
#[test]
fn backend_macs_are_resolved_published_refreshed_and_withdrawn() {
    let backends = ["198.19.1.1:1514", "198.19.1.2:1514"];
    let specs = vec![service(
        0,
        "198.18.0.10:514",
        Mode::Nat,
        SchedulerKind::Rr,
        &backends,
        false,
    )];
    let (mut r, from_workers, to_worker) = neigh_rig(specs.clone());
    let mut cfg = NeighConfig::new(PORT_MAC);
    cfg.local_v4 = Some(LOCAL_V4);
    cfg.gateway_v4 = Some("198.18.0.254".parse().unwrap());
    let mut n = Neighbours::new(cfg);
    let t0 = r.now;

    // Before resolution: counted, never sent to a wrong address.
    let pkt = inbound("198.18.0.1:40000", "198.18.0.10:514", 64, None, b"x");
    r.dropped(&pkt, DropReason::NoBackendMac);

    // The VIP becomes active: a gratuitous ARP; each unknown address: a broadcast request.
    n.handle_services(t0, &specs);
    n.step(t0, &from_workers, &to_worker);
    r.poll();
    let sent = r.out();
    let garp = arp(
        None,
        [0xff; 6],
        1,
        PORT_MAC,
        "198.18.0.10",
        [0; 6],
        "198.18.0.10",
    );
    let ask = |ip: &str| arp(None, [0xff; 6], 1, PORT_MAC, "198.19.0.1", [0; 6], ip);
    assert!(sent.contains(&garp), "gratuitous ARP for the VIP");
    for ip in ["198.18.0.254", "198.19.1.1", "198.19.1.2"] {
        assert!(sent.contains(&ask(ip)), "request for {ip}");
    }
    assert_eq!(sent.len(), 4);
    assert_eq!(r.counters.neigh_sent.get(), 4);

    // Answers come back through the worker.
    let answer =
        |mac: MacAddr, ip: &str| arp(None, PORT_MAC.0, 2, mac, ip, PORT_MAC.0, "198.19.0.1");
    r.run(&[
        answer(mac_of(1), "198.19.1.1"),
        answer(mac_of(2), "198.19.1.2"),
        answer(GW_MAC, "198.18.0.254"),
    ]);
    let publish = |n: &Neighbours, r: &mut Rig, g: u64| {
        let mut s = specs.clone();
        n.fill_macs(&mut s);
        let (v4, v6) = n.gateway_macs();
        let snap = Snapshot::new(g, s).unwrap().with_gateway_macs(v4, v6);
        r.snaps.send(Arc::new(snap)).unwrap();
    };
    assert!(n.step(t0, &from_workers, &to_worker), "generation moved");
    publish(&n, &mut r, 2);
    let mut got = r.run(&[pkt.clone(), pkt.clone()]);
    got.sort();
    assert_eq!(
        got,
        vec![
            outbound("198.18.0.1:40000", backends[0], 63, None, mac_of(1), b"x"),
            outbound("198.18.0.1:40000", backends[1], 63, None, mac_of(2), b"x"),
        ]
    );

    // 30 s later, a unicast probe; the second backend answers, the first does not.
    let t1 = t0 + Duration::from_secs(30);
    n.step(t1, &from_workers, &to_worker);
    r.poll();
    let probes = r.out();
    let uni = |mac: MacAddr, ip: &str| arp(None, mac.0, 1, PORT_MAC, "198.19.0.1", [0; 6], ip);
    assert!(probes.contains(&uni(mac_of(1), "198.19.1.1")));
    assert!(probes.contains(&uni(mac_of(2), "198.19.1.2")));
    r.run(&[
        answer(mac_of(2), "198.19.1.2"),
        answer(GW_MAC, "198.18.0.254"),
    ]);
    let mut moved = false;
    for s in 0..=3 {
        moved |= n.step(t1 + Duration::from_secs(s), &from_workers, &to_worker);
    }
    assert!(moved);
    assert!(matches!(
        n.state("198.19.1.1".parse().unwrap()),
        Some(NeighState::Failed { .. })
    ));
    assert_eq!(n.lookup("198.19.1.2".parse().unwrap()), Some(mac_of(2)));
    publish(&n, &mut r, 3);
    r.out();
    r.run(&[pkt.clone(), pkt.clone()]);
    assert_eq!(
        r.counters.dropped(DropReason::NoBackendMac),
        2,
        "one of the two, again"
    );
}

#[test]
fn static_macs_are_kept_and_v6_vips_are_announced() {
    let mut specs = vec![service(
        0,
        "[2001:db8::10]:514",
        Mode::Dr,
        SchedulerKind::Rr,
        &V6_BACKENDS,
        false,
    )];
    specs[0].backends[0].mac = Some(mac_of(9));
    let mut cfg = NeighConfig::new(PORT_MAC);
    cfg.local_v6 = Some(LOCAL_V6);
    let mut n = Neighbours::new(cfg);
    let now = Instant::now();
    n.handle_services(now, &specs);
    let mut frames = Vec::new();
    let mut b = [0u8; 128];
    while let Some(len) = n.poll_transmit(&mut b) {
        frames.push(b[..len].to_vec());
    }
    let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
    let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let na = ndp(
        None,
        PORT_MAC,
        multicast_mac(all),
        vip,
        all,
        136,
        0x20,
        vip,
        2,
    );
    assert!(frames.contains(&na), "unsolicited NA");
    // Solicitations only for the two backends without a static MAC.
    let ns = |t: &str| {
        let t: Ipv6Addr = t.parse().unwrap();
        let sn = solicited_node(t);
        ndp(
            None,
            PORT_MAC,
            multicast_mac(sn),
            LOCAL_V6,
            sn,
            135,
            0,
            t,
            1,
        )
    };
    assert!(frames.contains(&ns("2001:db8:1::12")));
    assert!(frames.contains(&ns("2001:db8:1::13")));
    assert_eq!(frames.len(), 3);
    // An advertisement answers one; fill_macs keeps the static entry.
    let t: Ipv6Addr = "2001:db8:1::12".parse().unwrap();
    n.handle_frame(
        now,
        &ndp(None, mac_of(2), PORT_MAC.0, t, LOCAL_V6, 136, 0x60, t, 2),
    );
    let mut filled = specs.clone();
    n.fill_macs(&mut filled);
    let macs: Vec<_> = filled[0].backends.iter().map(|b| b.mac).collect();
    assert_eq!(macs, vec![Some(mac_of(9)), Some(mac_of(2)), None]);
    assert!(n.poll_timeout().is_some());
}

// ---------------------------------------------------------------------------------------
// 5. Hostile input

#[test]
fn each_hostile_frame_has_its_drop_reason() {
    let mut r = frag_rig(Mode::Nat, SchedulerKind::Rr, false);
    let good = inbound(
        "198.18.0.1:4000",
        "198.18.0.10:514",
        64,
        None,
        b"0123456789",
    );
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut g = good.clone();
        f(&mut g);
        g
    };
    let fix = |g: &mut Vec<u8>| dataplane::testkit::frames::fix_ipv4_checksum(g, 14);
    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        ("empty", vec![], DropReason::Truncated),
        ("eth only", good[..14].to_vec(), DropReason::Truncated),
        ("cut ip", good[..30].to_vec(), DropReason::Truncated),
        ("cut udp", good[..38].to_vec(), DropReason::Truncated),
        (
            "ihl 4",
            with(&|g| {
                g[14] = 0x44;
                fix(g)
            }),
            DropReason::BadIpHeader,
        ),
        (
            "ihl 15 > total",
            with(&|g| g[14] = 0x4f),
            DropReason::BadIpHeader,
        ),
        (
            "total < header",
            with(&|g| {
                g[16..18].copy_from_slice(&[0, 10]);
                fix(g)
            }),
            DropReason::BadIpHeader,
        ),
        (
            "total > frame",
            with(&|g| {
                g[16..18].copy_from_slice(&[0x05, 0xdc]);
                fix(g)
            }),
            DropReason::Truncated,
        ),
        (
            "ip checksum",
            with(&|g| g[24] ^= 0x40),
            DropReason::BadIpChecksum,
        ),
        (
            "udp len > payload",
            with(&|g| g[38..40].copy_from_slice(&[0, 19])),
            DropReason::BadUdpLength,
        ),
        (
            "udp len < 8",
            with(&|g| g[38..40].copy_from_slice(&[0, 0])),
            DropReason::BadUdpLength,
        ),
        (
            "version 5",
            with(&|g| {
                g[14] = 0x55;
                fix(g)
            }),
            DropReason::BadIpHeader,
        ),
        (
            "ping of death",
            {
                let mut f = fragment(&good, 8, 1).swap_remove(1);
                f[20..22].copy_from_slice(&0x1fffu16.to_be_bytes());
                fix(&mut f);
                f
            },
            DropReason::BadIpHeader,
        ),
        (
            "odd fragment size",
            {
                let mut f = fragment(&good, 8, 1).swap_remove(0);
                f.push(0);
                f[16..18].copy_from_slice(&29u16.to_be_bytes());
                fix(&mut f);
                f
            },
            DropReason::BadIpHeader,
        ),
        (
            "not ip",
            with(&|g| g[12..14].copy_from_slice(&[0x88, 0xcc])),
            DropReason::NotIp,
        ),
        (
            "tcp",
            with(&|g| {
                g[23] = 6;
                fix(g)
            }),
            DropReason::NotUdp,
        ),
    ];
    for (name, frame, want) in cases {
        let before = r.counters.dropped(want);
        let out = r.run(&[frame]);
        assert!(out.is_empty(), "{name} was forwarded");
        assert_eq!(
            r.counters.dropped(want),
            before + 1,
            "{name}: {:?}",
            r.drops()
        );
    }
}

#[test]
fn legal_oddities_are_forwarded_correctly() {
    let mut r = frag_rig(Mode::Nat, SchedulerKind::Rr, false);
    let (c, v, b) = ("198.18.0.1:4000", "198.18.0.10:514", V4_BACKENDS);
    // IP options (record route, 8 bytes with padding): the header length is respected.
    let opts = [7, 7, 4, 0, 0, 0, 0, 1];
    let got = r.one(&add_ipv4_options(&inbound(c, v, 64, None, b"opt"), &opts));
    assert_eq!(
        got,
        add_ipv4_options(&outbound(c, b[0], 63, None, mac_of(1), b"opt"), &opts)
    );
    assert!(checksums_valid(&got));
    // Zero-length UDP payload.
    let got = r.one(&inbound(c, v, 64, None, b""));
    assert_eq!(got, outbound(c, b[1], 63, None, mac_of(2), b""));
    // A 9000-byte jumbo frame.
    let big = payload(9000 - 14 - 28, 7);
    let got = r.one(&inbound(c, v, 64, None, &big));
    assert_eq!(got.len(), 9000);
    assert_eq!(got, outbound(c, b[2], 63, None, mac_of(3), &big));
    // UDP length shorter than the IP payload (RFC 768 allows it): forwarded, trailing
    // bytes untouched.
    let mut short = inbound(c, v, 64, None, b"0123456789");
    short[38..40].copy_from_slice(&[0, 12]);
    let mut want = outbound(c, b[0], 63, None, mac_of(1), b"0123456789");
    want[38..40].copy_from_slice(&[0, 12]);
    let got = r.one(&short);
    // Ports and checksum were patched incrementally: only the length field differs from
    // the reference, and its checksum word moved with it.
    assert_eq!(got[..38], want[..38]);
    assert_eq!(got[42..], want[42..]);
    // Ethernet padding after a short datagram.
    let mut padded = inbound(c, v, 64, None, b"");
    padded.resize(60, 0);
    let got = r.one(&padded);
    let mut want = outbound(c, b[1], 63, None, mac_of(2), b"");
    want.resize(60, 0);
    assert_eq!(got, want);
    assert_eq!(r.counters.dropped_total(), 0);
}

#[test]
fn traffic_for_no_vip_is_dropped_and_counted() {
    let mut r = frag_rig(Mode::Dr, SchedulerKind::Rr, false);
    r.dropped(
        &inbound("198.18.0.1:4000", "198.18.0.77:514", 64, None, b"x"),
        DropReason::NoVip,
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    fn rig() -> Rig {
        let mut r = Rig::new(vec![
            service(
                0,
                "198.18.0.10:514",
                Mode::Nat,
                SchedulerKind::Rr,
                &V4_BACKENDS,
                true,
            ),
            service(
                1,
                "198.18.0.11:514",
                Mode::Nat,
                SchedulerKind::Maglev,
                &V4_BACKENDS,
                true,
            ),
            service(
                2,
                "[2001:db8::10]:514",
                Mode::Nat,
                SchedulerKind::Wrr,
                &V6_BACKENDS,
                true,
            ),
            service(
                3,
                "[2001:db8::11]:514",
                Mode::Dr,
                SchedulerKind::Rr,
                &V6_BACKENDS,
                false,
            ),
        ]);
        let (tx, _rx) = bounded(2);
        r.w.set_neigh(WorkerNeigh {
            local_v4: Some(LOCAL_V4),
            local_v6: Some(LOCAL_V6),
            to_control: Some(tx),
            from_control: None,
        });
        r
    }

    fn seeds() -> Vec<Vec<u8>> {
        let mut v = vec![
            inbound(
                "198.18.0.1:4000",
                "198.18.0.10:514",
                64,
                Some(3),
                b"0123456789abcdef",
            ),
            inbound(
                "[2001:db8::1]:4000",
                "[2001:db8::10]:514",
                64,
                None,
                b"0123456789abcdef",
            ),
            arp(
                None,
                [0xff; 6],
                1,
                CLIENT_MAC,
                "198.18.0.1",
                [0; 6],
                "198.18.0.10",
            ),
        ];
        v.extend(fragment(&v[0].clone(), 8, 3));
        v.extend(fragment(&v[1].clone(), 8, 3));
        let seen = outbound("198.18.0.1:1", V4_BACKENDS[0], 63, None, mac_of(1), b"x");
        v.push(icmp_error(
            mac_of(1),
            PORT_MAC,
            sa(V4_BACKENDS[0]).ip(),
            "198.18.0.1".parse().unwrap(),
            64,
            3,
            3,
            [0; 4],
            ip_part(&seen),
        ));
        v
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        /// Damaged real frames (bytes changed, cut, extended) never panic the worker, and
        /// whatever it forwards still parses.
        #[test]
        fn the_worker_never_panics_on_damaged_frames(
            edits in proptest::collection::vec((any::<usize>(), any::<usize>(), any::<u8>(), 0usize..200), 1..16)
        ) {
            let seeds = seeds();
            let mut r = rig();
            let mut frames = Vec::new();
            for (s, i, b, cut) in edits {
                let mut f = seeds[s % seeds.len()].clone();
                let i = i % f.len();
                f[i] = b;
                if cut < f.len() && cut % 3 == 0 {
                    f.truncate(cut);
                }
                frames.push(f);
            }
            let n = frames.len();
            let out = r.run(&frames);
            prop_assert!(out.len() <= n);
            prop_assert_eq!(r.counters.rx_packets.get(), n as u64);
        }

        #[test]
        fn the_worker_never_panics_on_random_frames(
            frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 1..16)
        ) {
            let mut r = rig();
            r.run(&frames);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fuzz corpus

/// The seed corpus of the `packet` fuzz target (fuzz/corpus/packet): real frames, each
/// preceded by its 2-byte length, as the target reads them. The committed files must match
/// what today's builders make; after changing a builder, refresh them with
/// `SPRAY_WRITE_CORPUS=1 cargo test -p spray-dataplane --test network fuzz_corpus`.
#[test]
fn fuzz_corpus_matches_the_builders() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/packet");
    let write = std::env::var_os("SPRAY_WRITE_CORPUS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let c4 = "198.18.0.1:40000";
    let c6 = "[2001:db8::1]:40000";
    let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
    let sn = solicited_node(vip);
    let client6: Ipv6Addr = "2001:db8::1".parse().unwrap();
    let seen = outbound(c4, V4_BACKENDS[0], 63, None, mac_of(1), b"<13>hi");
    let seen6 = outbound(c6, V6_BACKENDS[0], 63, None, mac_of(1), b"<13>hi");
    let mut reply = FrameSpec::new(sa(V4_BACKENDS[1]), sa(c4));
    reply.dst_mac = PORT_MAC;
    let seeds: Vec<(&str, Vec<Vec<u8>>)> = vec![
        (
            "udp4",
            vec![inbound(c4, "198.18.0.10:514", 64, None, b"<13>hello")],
        ),
        (
            "udp4-maglev-dr",
            vec![
                inbound(c4, "198.18.0.11:514", 64, None, b"a"),
                inbound(c4, "198.18.0.12:514", 64, None, b"b"),
            ],
        ),
        (
            "udp4-vlan",
            vec![inbound(c4, "198.18.0.10:514", 64, Some(42), b"<13>hello")],
        ),
        (
            "udp6",
            vec![inbound(c6, "[2001:db8::10]:514", 64, None, b"<13>hello")],
        ),
        (
            "udp6-vlan-dr",
            vec![inbound(c6, "[2001:db8::11]:514", 64, Some(7), b"x")],
        ),
        ("nat-reply4", vec![udp_frame(&reply, b"reply")]),
        (
            "options4",
            vec![add_ipv4_options(
                &inbound(c4, "198.18.0.10:514", 64, None, b"opt"),
                &[7, 7, 4, 0, 0, 0, 0, 1],
            )],
        ),
        (
            "frags4",
            fragment(
                &inbound(c4, "198.18.0.10:514", 64, None, &payload(100, 1)),
                32,
                9,
            ),
        ),
        (
            "frags6",
            fragment(
                &inbound(c6, "[2001:db8::10]:514", 64, None, &payload(100, 2)),
                32,
                9,
            ),
        ),
        (
            "icmp4-unreach",
            vec![icmp_error(
                mac_of(1),
                PORT_MAC,
                sa(V4_BACKENDS[0]).ip(),
                sa(c4).ip(),
                64,
                3,
                3,
                [0; 4],
                ip_part(&seen),
            )],
        ),
        (
            "icmp6-too-big",
            vec![icmp_error(
                mac_of(1),
                PORT_MAC,
                sa(V6_BACKENDS[0]).ip(),
                sa(c6).ip(),
                64,
                2,
                0,
                [0, 0, 5, 0],
                ip_part(&seen6),
            )],
        ),
        (
            "arp-request",
            vec![arp(
                None,
                [0xff; 6],
                1,
                CLIENT_MAC,
                "198.18.0.1",
                [0; 6],
                "198.18.0.10",
            )],
        ),
        (
            "arp-reply",
            vec![arp(
                None,
                PORT_MAC.0,
                2,
                mac_of(1),
                "198.19.1.1",
                PORT_MAC.0,
                "198.19.0.1",
            )],
        ),
        (
            "ns",
            vec![ndp(
                None,
                CLIENT_MAC,
                multicast_mac(sn),
                client6,
                sn,
                135,
                0,
                vip,
                1,
            )],
        ),
        (
            "na",
            vec![ndp(
                None,
                mac_of(1),
                PORT_MAC.0,
                client6,
                LOCAL_V6,
                136,
                0x60,
                client6,
                2,
            )],
        ),
        (
            "jumbo4",
            vec![inbound(
                c4,
                "198.18.0.10:514",
                64,
                None,
                &payload(9000 - 42, 3),
            )],
        ),
    ];
    for (name, frames) in seeds {
        let mut bytes = Vec::new();
        for f in frames {
            bytes.extend_from_slice(&(f.len() as u16).to_be_bytes());
            bytes.extend_from_slice(&f);
        }
        let path = dir.join(name);
        if write {
            std::fs::write(&path, bytes).unwrap();
        } else {
            let committed = std::fs::read(&path).unwrap_or_default();
            assert!(
                committed == bytes,
                "{} is stale: refresh it with SPRAY_WRITE_CORPUS=1 (see this test's doc)",
                path.display()
            );
        }
    }
}
