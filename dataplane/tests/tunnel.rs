//! Tunnelled backends through a worker over the memory port: what leaves is parsed as the
//! backend's kernel would (etherparse), checked header by header, and the datagram inside
//! must be the one the client sent, byte for byte.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use dataplane::counters::DropReason;
use dataplane::sched::SchedulerKind;
use dataplane::service::{
    BackendId, Encap, Health, MacAddr, Mode, ServiceSpec, Snapshot, Tunnel, DEFAULT_GUE_PORT,
    DEFAULT_TUNNEL_MTU,
};
use dataplane::testkit::frames::{fragment, ip_part, udp_frame, FrameSpec};
use dataplane::testkit::rig::{self, mac_of, sa, Rig, PORT_MAC};
use etherparse::{
    icmpv4::DestUnreachableHeader, EtherType, Ethernet2HeaderSlice, Icmpv4Slice, Icmpv4Type,
    Icmpv6Slice, Icmpv6Type, Ipv4HeaderSlice, Ipv6HeaderSlice, UdpHeaderSlice,
};

const CLIENT_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x77]);
const VIP4: &str = "198.18.0.10:514";
const VIP6: &str = "[2001:db8::10]:514";
/// The balancer's own addresses: the outer source toward backends of each family.
const SELF4: &str = "198.18.0.2";
const SELF6: &str = "2001:db8::2";
const BACKENDS4: [&str; 3] = ["198.19.1.1:514", "198.19.1.2:514", "198.19.1.3:514"];
const BACKENDS6: [&str; 3] = [
    "[2001:db8:1::11]:514",
    "[2001:db8:1::12]:514",
    "[2001:db8:1::13]:514",
];
/// A worker's budget of ICMP "too big" answers a second (`encap::TOO_BIG_PER_SEC`, private).
const TOO_BIG_PER_SEC: usize = 100;
const IPIP: Encap = Encap::Ipip;
const GUE: Encap = Encap::Gue {
    port: DEFAULT_GUE_PORT,
};

/// A DR service on `vip` whose `backends` (address, weight) are all reached through `encap`
/// with the balancer's address of their family as the outer source, backend ids from 0.
fn tunnelled(
    vip: &str,
    sched: SchedulerKind,
    backends: &[(&str, u32)],
    encap: Encap,
    mtu: u16,
) -> ServiceSpec {
    let mut s = rig::service(0, vip, Mode::Dr, sched, backends, 0);
    for b in &mut s.backends {
        let source: IpAddr = if b.addr.is_ipv6() { SELF6 } else { SELF4 }
            .parse()
            .unwrap();
        b.tunnel = Some(Tunnel { encap, source, mtu });
    }
    s
}

/// [`tunnelled`] with weight 1 and the default MTU.
fn even(vip: &str, sched: SchedulerKind, backends: &[&str], encap: Encap) -> ServiceSpec {
    let weighted: Vec<(&str, u32)> = backends.iter().map(|a| (*a, 1)).collect();
    tunnelled(vip, sched, &weighted, encap, DEFAULT_TUNNEL_MTU)
}

/// A datagram from `src` to `dst` as the client's router hands it to the balancer.
fn from_client(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let mut s = FrameSpec::new(sa(src), sa(dst));
    s.src_mac = CLIENT_MAC;
    s.dst_mac = PORT_MAC;
    udp_frame(&s, payload)
}

/// A client address of `vip`'s family with source port `port`.
fn client(vip: &str, port: u16) -> String {
    if sa(vip).is_ipv6() {
        format!("[2001:db8:7::1]:{port}")
    } else {
        format!("198.51.100.7:{port}")
    }
}

/// What a backend's kernel sees of an encapsulated frame, every outer field already checked
/// against the frame's own lengths and checksums.
#[derive(Debug)]
struct Outer {
    dst_mac: [u8; 6],
    /// The 802.1Q TCI, when tagged.
    vlan: Option<u16>,
    src: IpAddr,
    dst: IpAddr,
    /// IPv4 protocol or IPv6 next header.
    proto: u8,
    tos: u8,
    ttl: u8,
    /// The IPv6 flow label (0 over IPv4).
    flow: u32,
    /// GUE: the outer UDP source port and the GUE protocol field.
    gue: Option<(u16, u8)>,
    /// The encapsulated IP packet.
    inner: Vec<u8>,
}

/// Decapsulates `frame` as Linux's `ipip`/`ip6tnl`/`sit` devices, or `fou` in GUE mode on
/// `DEFAULT_GUE_PORT`, would: panics on any outer header they would refuse. Bytes after the
/// outer packet (Ethernet padding) are ignored, as they are.
fn decap(frame: &[u8], encap: Encap) -> Outer {
    let eth = Ethernet2HeaderSlice::from_slice(frame).unwrap();
    assert_eq!(eth.source(), PORT_MAC.0, "sent from the port");
    let (vlan, ethertype, l3) = match eth.ether_type() {
        EtherType::VLAN_TAGGED_FRAME => (
            Some(u16::from_be_bytes([frame[14], frame[15]])),
            EtherType(u16::from_be_bytes([frame[16], frame[17]])),
            18,
        ),
        other => (None, other, 14),
    };
    let ip = &frame[l3..];
    let (src, dst, proto, tos, ttl, flow, payload): (IpAddr, IpAddr, u8, u8, u8, u32, &[u8]) =
        match ethertype {
            EtherType::IPV4 => {
                let h = Ipv4HeaderSlice::from_slice(ip).unwrap();
                let hdr = h.to_header();
                assert_eq!(hdr.header_checksum, hdr.calc_header_checksum());
                assert!(h.dont_fragment(), "outer DF: never fragmented on the way");
                assert!(!h.more_fragments() && h.fragments_offset().value() == 0);
                let end = usize::from(h.total_len());
                assert!(end <= ip.len(), "outer length");
                (
                    h.source_addr().into(),
                    h.destination_addr().into(),
                    h.protocol().0,
                    (h.dcp().value() << 2) | h.ecn().value(),
                    h.ttl(),
                    0,
                    &ip[20..end],
                )
            }
            EtherType::IPV6 => {
                let h = Ipv6HeaderSlice::from_slice(ip).unwrap();
                let end = 40 + usize::from(h.payload_length());
                assert!(end <= ip.len(), "outer length");
                (
                    h.source_addr().into(),
                    h.destination_addr().into(),
                    h.next_header().0,
                    h.traffic_class(),
                    h.hop_limit(),
                    h.flow_label().value(),
                    &ip[40..end],
                )
            }
            other => panic!("outer ethertype {other:?}"),
        };
    let (gue, inner) = match encap {
        Encap::Ipip => (None, payload),
        Encap::Gue { port } => {
            assert_eq!(proto, 17, "GUE rides on UDP");
            let u = UdpHeaderSlice::from_slice(payload).unwrap();
            assert_eq!(u.destination_port(), port);
            assert_eq!(usize::from(u.length()), payload.len(), "UDP length");
            match (src, dst) {
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    let want = u
                        .to_header()
                        .calc_checksum_ipv6_raw(s.octets(), d.octets(), &payload[8..])
                        .unwrap();
                    assert_eq!(u.checksum(), want, "outer UDP checksum over IPv6");
                }
                _ => assert_eq!(u.checksum(), 0, "no UDP checksum over IPv4 (fou's default)"),
            }
            let g = &payload[8..12];
            assert_eq!(
                g[0], 0,
                "GUE variant 0, version 0, no control, no extension"
            );
            assert_eq!(&g[2..4], &[0, 0], "no GUE flags");
            (Some((u.source_port(), g[1])), &payload[12..])
        }
    };
    Outer {
        dst_mac: eth.destination(),
        vlan,
        src,
        dst,
        proto,
        tos,
        ttl,
        flow,
        gue,
        inner: inner.to_vec(),
    }
}

/// Index (from 0) of the backend of `backends` whose address is `ip`.
fn which(backends: &[&str], ip: IpAddr) -> usize {
    backends
        .iter()
        .position(|b| sa(b).ip() == ip)
        .unwrap_or_else(|| panic!("{ip} is no backend"))
}

/// Where one datagram went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pick {
    /// Index of its backend.
    backend: usize,
    /// GUE: the outer UDP source port.
    sport: Option<u16>,
    /// The outer IPv6 flow label (0 over IPv4).
    flow: u32,
}

/// Sends `frames` and checks every frame out is the matching one encapsulated toward one of
/// `backends` (outer source `source`, protocol of the inner family); returns, in order,
/// where each went.
fn forward_all(
    r: &mut Rig,
    frames: &[Vec<u8>],
    backends: &[&str],
    encap: Encap,
    source: &str,
) -> Vec<Pick> {
    let out = r.run(frames);
    assert_eq!(out.len(), frames.len(), "drops: {:?}", r.drops());
    assert!(r.drops().is_empty(), "{:?}", r.drops());
    let source: IpAddr = source.parse().unwrap();
    frames
        .iter()
        .zip(&out)
        .map(|(sent, got)| {
            let o = decap(got, encap);
            let inner = inner_packet(sent);
            assert_eq!(o.inner, inner, "the client's datagram, untouched");
            let inner_proto = if inner[0] >> 4 == 6 { 41 } else { 4 };
            match o.gue {
                Some((_, p)) => assert_eq!(p, inner_proto, "GUE protocol"),
                None => assert_eq!(o.proto, inner_proto, "outer protocol"),
            }
            assert_eq!(o.src, source, "outer source");
            assert_eq!(
                (o.tos, o.ttl),
                (0, 64),
                "TOS and TTL copied from the datagram"
            );
            let i = which(backends, o.dst);
            assert_eq!(o.dst_mac, mac_of(i + 1).0, "to the backend's next hop");
            assert_eq!(o.vlan, vlan_of(sent), "on the datagram's VLAN");
            Pick {
                backend: i,
                sport: o.gue.map(|(sport, _)| sport),
                flow: o.flow,
            }
        })
        .collect()
}

/// The 802.1Q TCI of `frame`, if tagged.
fn vlan_of(frame: &[u8]) -> Option<u16> {
    (frame[12..14] == [0x81, 0]).then(|| u16::from_be_bytes([frame[14], frame[15]]))
}

/// The IP packet of `frame`, without any Ethernet padding after it.
fn inner_packet(frame: &[u8]) -> &[u8] {
    let ip = ip_part(frame);
    let len = if ip[0] >> 4 == 6 {
        40 + usize::from(u16::from_be_bytes([ip[4], ip[5]]))
    } else {
        usize::from(u16::from_be_bytes([ip[2], ip[3]]))
    };
    &ip[..len]
}

/// Datagrams each backend got.
fn spread(picks: &[Pick]) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for p in picks {
        *m.entry(p.backend).or_insert(0) += 1;
    }
    m
}

/// 300 datagrams to `vip`: 30 flows (client ports) of 10 datagrams each, interleaved.
fn datagrams(vip: &str) -> Vec<Vec<u8>> {
    (0..300u16)
        .map(|i| {
            let port = 40000 + i % 30;
            from_client(&client(vip, port), vip, format!("<13>msg {i}").as_bytes())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// IPIP and GUE, round robin

#[test]
fn ipip_rr_spreads_exactly_evenly_and_keeps_the_datagram_whole() {
    let mut r = Rig::new(vec![even(VIP4, SchedulerKind::Rr, &BACKENDS4, IPIP)]);
    let picks = forward_all(&mut r, &datagrams(VIP4), &BACKENDS4, IPIP, SELF4);
    assert_eq!(
        spread(&picks),
        BTreeMap::from([(0, 100), (1, 100), (2, 100)])
    );
    for i in 0..3u16 {
        assert_eq!(r.counters.backend(BackendId(i)).0, 100);
    }
}

#[test]
fn ipip_carries_ipv6_in_ipv6() {
    let mut r = Rig::new(vec![even(VIP6, SchedulerKind::Rr, &BACKENDS6, IPIP)]);
    let picks = forward_all(&mut r, &datagrams(VIP6), &BACKENDS6, IPIP, SELF6);
    assert_eq!(
        spread(&picks),
        BTreeMap::from([(0, 100), (1, 100), (2, 100)])
    );
    check_flow_labels(&picks);
}

/// Checks the GUE source ports of `picks` (from [`datagrams`]): in the dynamic range, one
/// per flow, different between flows.
fn check_gue_ports(picks: &[Pick]) {
    let mut by_flow: BTreeMap<usize, BTreeSet<u16>> = BTreeMap::new();
    for (n, p) in picks.iter().enumerate() {
        let sport = p.sport.expect("a GUE frame");
        assert!((0xc000..=0xffff).contains(&sport), "source port {sport}");
        by_flow.entry(n % 30).or_default().insert(sport);
    }
    for (flow, ports) in &by_flow {
        assert_eq!(
            ports.len(),
            1,
            "flow {flow}: one source port, got {ports:?}"
        );
    }
    let distinct: BTreeSet<u16> = by_flow.values().flatten().copied().collect();
    assert!(
        distinct.len() >= 25,
        "30 flows on {} source ports",
        distinct.len()
    );
}

/// Checks the outer IPv6 flow labels of `picks` (from [`datagrams`]): one per flow (RFC
/// 6438), different between flows.
fn check_flow_labels(picks: &[Pick]) {
    let mut by_flow: BTreeMap<usize, BTreeSet<u32>> = BTreeMap::new();
    for (n, p) in picks.iter().enumerate() {
        by_flow.entry(n % 30).or_default().insert(p.flow);
    }
    assert!(by_flow.values().all(|l| l.len() == 1), "{by_flow:?}");
    let distinct: BTreeSet<u32> = by_flow.values().flatten().copied().collect();
    assert!(
        distinct.len() >= 25,
        "30 flows on {} labels",
        distinct.len()
    );
}

#[test]
fn gue_rr_spreads_evenly_with_a_source_port_per_flow() {
    let mut r = Rig::new(vec![even(VIP4, SchedulerKind::Rr, &BACKENDS4, GUE)]);
    let picks = forward_all(&mut r, &datagrams(VIP4), &BACKENDS4, GUE, SELF4);
    assert_eq!(
        spread(&picks),
        BTreeMap::from([(0, 100), (1, 100), (2, 100)])
    );
    check_gue_ports(&picks);
}

#[test]
fn gue_carries_ipv6_with_protocol_41_and_a_udp_checksum() {
    let mut r = Rig::new(vec![even(VIP6, SchedulerKind::Rr, &BACKENDS6, GUE)]);
    let picks = forward_all(&mut r, &datagrams(VIP6), &BACKENDS6, GUE, SELF6);
    assert_eq!(
        spread(&picks),
        BTreeMap::from([(0, 100), (1, 100), (2, 100)])
    );
    check_gue_ports(&picks);
    check_flow_labels(&picks);
}

#[test]
fn a_tagged_or_padded_datagram_keeps_its_vlan_and_leaves_its_padding_outside() {
    for encap in [IPIP, GUE] {
        for (vip, backends, source) in [(VIP4, &BACKENDS4, SELF4), (VIP6, &BACKENDS6, SELF6)] {
            let mut r = Rig::new(vec![even(vip, SchedulerKind::Rr, backends, encap)]);
            let frames: Vec<Vec<u8>> = [None, Some(0x2123)]
                .into_iter()
                .map(|vlan| {
                    let mut s = FrameSpec::new(sa(&client(vip, 40000)), sa(vip));
                    s.src_mac = CLIENT_MAC;
                    s.dst_mac = PORT_MAC;
                    s.vlan = vlan;
                    let mut f = udp_frame(&s, b"x");
                    // Ethernet's minimum frame, as a NIC hands over a short datagram.
                    f.resize(f.len().max(60), 0);
                    f
                })
                .collect();
            forward_all(&mut r, &frames, backends, encap, source);
        }
    }
}

// ---------------------------------------------------------------------------------------
// One family inside the other

#[test]
fn ipv6_datagrams_reach_ipv4_backends_and_ipv4_datagrams_ipv6_backends() {
    for encap in [IPIP, GUE] {
        // IPv6 in IPv4 (`sit`, protocol 41), and IPv4 in IPv6 (`ip6tnl`, next header 4).
        for (vip, backends, source) in [(VIP6, &BACKENDS4, SELF4), (VIP4, &BACKENDS6, SELF6)] {
            let mut r = Rig::new(vec![even(vip, SchedulerKind::Rr, backends, encap)]);
            let frames = datagrams(vip);
            let picks = forward_all(&mut r, &frames, backends, encap, source);
            assert_eq!(
                spread(&picks),
                BTreeMap::from([(0, 100), (1, 100), (2, 100)]),
                "{vip} over {encap:?}"
            );
            let out = r.run(&frames[..1]);
            let outer_v6 = sa(backends[0]).is_ipv6();
            let ethertype = if outer_v6 { [0x86, 0xdd] } else { [0x08, 0x00] };
            assert_eq!(out[0][12..14], ethertype, "outer family: the backend's");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Health

#[test]
fn a_tunnelled_backend_marked_down_gets_nothing() {
    for sched in [SchedulerKind::Rr, SchedulerKind::Maglev] {
        let mut s = even(VIP4, sched, &BACKENDS4, IPIP);
        let mut r = Rig::new(vec![s.clone()]);
        let before = spread(&forward_all(
            &mut r,
            &datagrams(VIP4),
            &BACKENDS4,
            IPIP,
            SELF4,
        ));
        assert_eq!(
            before.len(),
            3,
            "{sched:?}: all three in use first: {before:?}"
        );
        s.backends[1].health = Health::Down;
        r.snaps
            .send(Arc::new(Snapshot::new(2, vec![s]).unwrap()))
            .unwrap();
        let picks = forward_all(&mut r, &datagrams(VIP4), &BACKENDS4, IPIP, SELF4);
        let after = spread(&picks);
        assert_eq!(
            after.get(&1),
            None,
            "{sched:?}: the down backend got packets"
        );
        assert_eq!(after.values().sum::<usize>(), 300);
        if sched == SchedulerKind::Rr {
            assert_eq!(after, BTreeMap::from([(0, 150), (2, 150)]));
        }
    }
}

// ---------------------------------------------------------------------------------------
// Too big for the tunnel

/// A datagram from the client to `vip` whose IP packet is `ip_len` bytes long.
fn sized(vip: &str, ip_len: usize) -> Vec<u8> {
    let headers = if sa(vip).is_ipv6() { 48 } else { 28 };
    from_client(&client(vip, 40000), vip, &vec![0x5a; ip_len - headers])
}

/// Checks that `got` is the ICMPv4 "fragmentation needed" for `sent` with `mtu`.
fn check_frag_needed(got: &[u8], sent: &[u8], mtu: u16) {
    let eth = Ethernet2HeaderSlice::from_slice(got).unwrap();
    assert_eq!(
        (eth.destination(), eth.source()),
        (CLIENT_MAC.0, PORT_MAC.0),
        "back to the client's router"
    );
    assert_eq!(eth.ether_type(), EtherType::IPV4);
    let ip = Ipv4HeaderSlice::from_slice(&got[14..]).unwrap();
    let hdr = ip.to_header();
    assert_eq!(hdr.header_checksum, hdr.calc_header_checksum());
    assert_eq!(ip.source_addr(), sa(VIP4).ip(), "from the VIP");
    assert_eq!(
        IpAddr::from(ip.destination_addr()),
        sa(&client(VIP4, 1)).ip()
    );
    assert_eq!(ip.protocol().0, 1);
    assert_eq!(usize::from(ip.total_len()), got.len() - 14);
    assert!(got.len() - 14 <= 576, "within RFC 1812's 576 bytes");
    let icmp = Icmpv4Slice::from_slice(&got[34..]).unwrap();
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (3, 4));
    assert_eq!(
        icmp.icmp_type(),
        Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: mtu
        })
    );
    assert_eq!(
        icmp.checksum(),
        icmp.icmp_type().calc_checksum(icmp.payload())
    );
    let quoted = icmp.payload();
    assert_eq!(
        quoted,
        &ip_part(sent)[..quoted.len()],
        "quotes the datagram"
    );
    assert!(quoted.len() >= 28, "at least the IP and UDP headers");
}

/// Checks that `got` is the ICMPv6 "packet too big" for `sent` with `mtu`.
fn check_packet_too_big(got: &[u8], sent: &[u8], mtu: u32) {
    let eth = Ethernet2HeaderSlice::from_slice(got).unwrap();
    assert_eq!(
        (eth.destination(), eth.source()),
        (CLIENT_MAC.0, PORT_MAC.0)
    );
    assert_eq!(eth.ether_type(), EtherType::IPV6);
    let ip = Ipv6HeaderSlice::from_slice(&got[14..]).unwrap();
    assert_eq!(ip.source_addr(), sa(VIP6).ip(), "from the VIP");
    assert_eq!(
        IpAddr::from(ip.destination_addr()),
        sa(&client(VIP6, 1)).ip()
    );
    assert_eq!(ip.next_header().0, 58);
    assert_eq!(40 + usize::from(ip.payload_length()), got.len() - 14);
    assert!(got.len() - 14 <= 1280, "within the IPv6 minimum MTU");
    let icmp = Icmpv6Slice::from_slice(&got[54..]).unwrap();
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (2, 0));
    assert_eq!(icmp.icmp_type(), Icmpv6Type::PacketTooBig { mtu });
    assert!(icmp.is_checksum_valid(ip.source_addr().octets(), ip.destination_addr().octets()));
    let quoted = icmp.payload();
    assert_eq!(
        quoted,
        &ip_part(sent)[..quoted.len()],
        "quotes the datagram"
    );
}

#[test]
fn a_datagram_too_big_for_the_tunnel_is_answered_with_fragmentation_needed() {
    for (encap, overhead) in [(IPIP, 20), (GUE, 32)] {
        let mut r = Rig::new(vec![tunnelled(
            VIP4,
            SchedulerKind::Rr,
            &[(BACKENDS4[0], 1)],
            encap,
            1300,
        )]);
        // Exactly the MTU once encapsulated: forwarded.
        let fits = sized(VIP4, 1300 - overhead);
        let o = decap(&r.one(&fits), encap);
        assert_eq!(o.inner, ip_part(&fits));
        assert_eq!(r.counters.dropped(DropReason::TunnelTooBig), 0);
        // Beyond it: answered.
        let big = sized(VIP4, 1290);
        let got = r.one(&big);
        check_frag_needed(&got, &big, 1300 - overhead as u16);
        assert_eq!(r.counters.dropped(DropReason::TunnelTooBig), 1, "{encap:?}");
        assert_eq!(r.counters.icmp_too_big.get(), 1);
        assert_eq!(r.drops(), vec![("tunnel_too_big", 1)]);
        assert_eq!(
            r.counters.backend(BackendId(0)).0,
            1,
            "only the one that fit"
        );
    }
}

#[test]
fn an_ipv6_datagram_too_big_for_the_tunnel_is_answered_with_packet_too_big() {
    // Over IPv6 (and IPv6 in IPv4): the MTU left is the tunnel's less the outer headers.
    for (backend, encap, overhead) in [
        (BACKENDS6[0], IPIP, 40u16),
        (BACKENDS6[0], GUE, 52),
        (BACKENDS4[0], IPIP, 20),
    ] {
        let mtu = 1400;
        let mut r = Rig::new(vec![tunnelled(
            VIP6,
            SchedulerKind::Rr,
            &[(backend, 1)],
            encap,
            mtu,
        )]);
        let fits = sized(VIP6, usize::from(mtu - overhead));
        assert_eq!(decap(&r.one(&fits), encap).inner, ip_part(&fits));
        let big = sized(VIP6, usize::from(mtu - overhead) + 1);
        let got = r.one(&big);
        check_packet_too_big(&got, &big, u32::from(mtu - overhead));
        assert_eq!(
            r.drops(),
            vec![("tunnel_too_big", 1)],
            "{backend} {encap:?}"
        );
        assert_eq!(r.counters.icmp_too_big.get(), 1);
    }
}

#[test]
fn too_big_answers_are_rate_limited_per_second() {
    let mut r = Rig::new(vec![tunnelled(
        VIP4,
        SchedulerKind::Rr,
        &[(BACKENDS4[0], 1)],
        IPIP,
        1300,
    )]);
    let big = sized(VIP4, 1290);
    let out = r.run(&vec![big.clone(); 150]);
    let limit = TOO_BIG_PER_SEC;
    assert_eq!(out.len(), limit);
    for got in &out {
        check_frag_needed(got, &big, 1280);
    }
    assert_eq!(r.counters.dropped(DropReason::TunnelTooBig), 150);
    assert_eq!(r.counters.icmp_too_big.get(), limit as u64);
    // A second later the budget is back.
    r.now += Duration::from_secs(1);
    assert_eq!(r.run(&vec![big; 10]).len(), 10);
}

// ---------------------------------------------------------------------------------------
// Weighted and consistent schedulers

#[test]
fn wrr_over_tunnelled_backends_follows_the_weights() {
    let weighted = [(BACKENDS4[0], 1), (BACKENDS4[1], 2), (BACKENDS4[2], 3)];
    let mut r = Rig::new(vec![tunnelled(
        VIP4,
        SchedulerKind::Wrr,
        &weighted,
        GUE,
        DEFAULT_TUNNEL_MTU,
    )]);
    let frames: Vec<Vec<u8>> = datagrams(VIP4).into_iter().cycle().take(600).collect();
    let picks = forward_all(&mut r, &frames, &BACKENDS4, GUE, SELF4);
    assert_eq!(
        spread(&picks),
        BTreeMap::from([(0, 100), (1, 200), (2, 300)])
    );
}

#[test]
fn maglev_keeps_each_flow_on_one_tunnelled_backend() {
    let mut r = Rig::new(vec![even(VIP4, SchedulerKind::Maglev, &BACKENDS4, IPIP)]);
    let picks = forward_all(&mut r, &datagrams(VIP4), &BACKENDS4, IPIP, SELF4);
    let mut by_flow: BTreeMap<usize, BTreeSet<usize>> = BTreeMap::new();
    for (n, p) in picks.iter().enumerate() {
        by_flow.entry(n % 30).or_default().insert(p.backend);
    }
    assert!(by_flow.values().all(|b| b.len() == 1), "{by_flow:?}");
    let used: BTreeSet<usize> = by_flow.values().flatten().copied().collect();
    assert_eq!(used.len(), 3, "30 flows over all three backends");
    // The same flows again, in another worker: the same backends.
    let mut again = Rig::new(vec![even(VIP4, SchedulerKind::Maglev, &BACKENDS4, IPIP)]);
    let second = forward_all(&mut again, &datagrams(VIP4), &BACKENDS4, IPIP, SELF4);
    assert_eq!(picks, second);
}

// ---------------------------------------------------------------------------------------
// Fragments

#[test]
fn the_fragments_of_a_datagram_follow_the_first_one_through_the_same_tunnel() {
    for vip in [VIP4, VIP6] {
        let backends: &[&str] = if sa(vip).is_ipv6() {
            &BACKENDS6
        } else {
            &BACKENDS4
        };
        let source = if sa(vip).is_ipv6() { SELF6 } else { SELF4 };
        let mut r = Rig::new(vec![even(vip, SchedulerKind::Rr, backends, GUE)]);
        let whole = from_client(&client(vip, 40000), vip, &[7; 2000]);
        let frags = fragment(&whole, 1024, 0x1234);
        assert!(frags.len() > 1);
        let picks = forward_all(&mut r, &frags, backends, GUE, source);
        let (first, rest) = picks.split_first().unwrap();
        assert!(
            rest.iter().all(|p| p == first),
            "{vip}: one backend and one outer flow for the whole datagram: {picks:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Tunnelled and direct backends together

#[test]
fn a_service_mixing_tunnelled_and_direct_backends_sends_each_its_way() {
    let mut s = even(VIP4, SchedulerKind::Rr, &BACKENDS4, IPIP);
    s.backends[2].tunnel = None;
    let mut r = Rig::new(vec![s]);
    let frames = datagrams(VIP4);
    let out = r.run(&frames);
    assert_eq!(out.len(), frames.len(), "drops: {:?}", r.drops());
    let mut direct = 0;
    for (sent, got) in frames.iter().zip(&out) {
        if got[0..6] == mac_of(3).0 {
            // Direct server return on the segment: only the MACs change.
            assert_eq!(got[12..], sent[12..]);
            direct += 1;
        } else {
            assert_eq!(decap(got, IPIP).inner, ip_part(sent));
        }
    }
    assert_eq!(direct, 100);
}

/// A snapshot whose tunnel could not be written is refused before any worker sees it: an
/// IPv6 outer header would not fit the room made for an IPv4 backend, and a NAT service's
/// replies come back through Spray, which a tunnel's backends do not do.
#[test]
fn a_snapshot_with_a_tunnel_it_cannot_build_is_refused() {
    let mut wrong_family = even(VIP4, SchedulerKind::Rr, &BACKENDS4, IPIP);
    wrong_family.backends[1].tunnel.as_mut().unwrap().source = SELF6.parse().unwrap();
    let e = Snapshot::new(1, vec![wrong_family]).unwrap_err();
    assert_eq!(
        e,
        dataplane::service::SnapshotError::BadTunnel(BackendId(1))
    );
    assert!(
        e.to_string()
            .contains("outer source of the backend's family"),
        "{e}"
    );

    let mut nat = even(VIP4, SchedulerKind::Rr, &BACKENDS4, GUE);
    nat.mode = Mode::Nat;
    assert_eq!(
        Snapshot::new(1, vec![nat]).unwrap_err(),
        dataplane::service::SnapshotError::BadTunnel(BackendId(0))
    );
    Snapshot::new(1, vec![even(VIP4, SchedulerKind::Rr, &BACKENDS4, GUE)]).unwrap();
}
