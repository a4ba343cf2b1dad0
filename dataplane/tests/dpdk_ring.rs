//! The DPDK port over a `net_ring` vdev (TX loops back to RX): mbufs round-trip through the
//! worker, rewritten in place, and every mbuf is back in the mempool after close.
//!
//! One test in this file on purpose: EAL initialises once per process, and each integration
//! test file is its own process.
#![cfg(feature = "dpdk")]

use std::sync::Arc;

use dataplane::counters::WorkerCounters;
use dataplane::flow::NatFlows;
use dataplane::port::dpdk::{Eal, EthPort, Mbuf, PortSettings};
use dataplane::port::{PacketBuf, Port, RxIpChecksum};
use dataplane::sched::SchedulerKind;
use dataplane::service::{Backend, BackendId, MacAddr, Mode, ServiceSpec, Snapshot, VipId, VipKey};
use dataplane::testkit::frames::{checksums_valid, udp_frame, FrameSpec};
use dataplane::wire::parse_udp;
use dataplane::worker::{Worker, WorkerSettings};

#[test]
fn ring_round_trip_rewrites_and_returns_every_mbuf() {
    let prefix = format!("spray-test-ring-{}", std::process::id());
    let eal = Eal::init(&[
        "-l",
        "0",
        "--no-pci",
        "--no-huge",
        "-m",
        "256",
        "--file-prefix",
        &prefix,
        "--log-level",
        "warning",
        "--vdev",
        "net_ring0",
    ])
    .expect("EAL init (needs root or CAP_SYS_ADMIN with --no-huge)");
    // A second init in the same process is refused, not undefined behaviour.
    assert!(Eal::init(&["-l", "0"]).is_err());
    let s = PortSettings {
        rx_ring: 256,
        tx_ring: 256,
        mempool_cache: 32,
        ..PortSettings::default()
    };
    let port = EthPort::open(&eal, "net_ring0", &s).expect("open net_ring0");
    let err = EthPort::open(&eal, "net_nothing9", &s)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("net_nothing9") && err.contains("not found"),
        "{err}"
    );
    let (free, size) = port.pool_level();
    assert_eq!(free, size, "a fresh pool is full");

    // The checksum verdict a NIC stand-in (the DPDK micro-benchmark's template port) sets is
    // the one the worker reads.
    {
        // SAFETY: the port's pool is live until `port.close()` below; the mbuf is dropped
        // (freed) before that.
        let mut m = unsafe { Mbuf::alloc_with(port.mempool(), &[0u8; 60]) }.expect("an mbuf");
        assert_eq!(
            m.rx_ip_checksum(),
            RxIpChecksum::Unknown,
            "a fresh mbuf has no verdict"
        );
        for v in [
            RxIpChecksum::Good,
            RxIpChecksum::Bad,
            RxIpChecksum::Unknown,
            RxIpChecksum::Good,
        ] {
            m.set_rx_ip_checksum(v);
            assert_eq!(m.rx_ip_checksum(), v);
        }
        assert_eq!(m.data(), &[0u8; 60][..]);
    }

    let backends: Vec<Backend> = (1..=3u8)
        .map(|i| {
            let mut b = Backend::new(
                BackendId(u16::from(i) - 1),
                format!("198.19.1.{i}:514").parse().unwrap(),
                1,
            );
            b.mac = Some(MacAddr([2, 0, 0, 0, 1, i]));
            b
        })
        .collect();
    let spec = ServiceSpec::new(
        VipId(0),
        "syslog",
        VipKey::udp("198.18.0.10:514".parse().unwrap()),
        Mode::Nat,
        SchedulerKind::Rr,
        backends,
    );
    let (_tx, rx) = crossbeam_channel::unbounded();
    let counters = WorkerCounters::shared();
    let mut q = port.queue(0).expect("queue 0");
    assert!(port.queue(1).is_none());
    // Inject 9 frames for the VIP through the loopback.
    let frame = udp_frame(
        &FrameSpec::new(
            "198.18.0.1:40000".parse().unwrap(),
            "198.18.0.10:514".parse().unwrap(),
        ),
        b"<13>hello",
    );
    let mut out: Vec<Mbuf> = (0..9)
        .map(|_| {
            // SAFETY: the port's pool is live until close() below.
            unsafe { Mbuf::alloc_with(port.mempool(), &frame) }.expect("alloc")
        })
        .collect();
    assert_eq!(out[0].data(), &frame[..]);
    assert_eq!(q.tx_burst(&mut out), 9);
    assert!(out.is_empty());
    let (free, size) = port.pool_level();
    assert_eq!(size - free, 9, "nine mbufs in flight");

    let mut w = Worker::new(
        q,
        WorkerSettings {
            burst: 32,
            gateway_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            idle: dataplane::worker::Idle::Off,
        },
        Arc::new(Snapshot::new(1, vec![spec]).unwrap()),
        rx,
        counters.clone(),
        Arc::new(NatFlows::new(64)),
    );
    // One poll: 9 received, NAT-rewritten to the backends and looped back to RX.
    assert_eq!(w.poll(), 9);
    assert_eq!(counters.tx_packets.get(), 9);
    for b in 0..3 {
        assert_eq!(counters.backend(BackendId(b)).0, 3);
    }
    // Take them back out and check them: rr order, MACs, valid checksums.
    let mut back = Vec::with_capacity(32);
    let port_q = w.port_mut();
    assert_eq!(port_q.rx_burst(&mut back, 32), 9);
    for (i, m) in back.iter().enumerate() {
        let f = m.data();
        let p = parse_udp(f).unwrap();
        assert_eq!(
            p.dst(),
            format!("198.19.1.{}:514", i % 3 + 1).parse().unwrap()
        );
        assert_eq!(&f[0..6], &[2, 0, 0, 0, 1, (i % 3 + 1) as u8]);
        assert!(checksums_valid(f));
    }
    drop(back);
    drop(w);
    let level = port.close().expect("close");
    assert_eq!(level.0, level.1, "every mbuf is back in the pool");
    eal.cleanup().expect("EAL clean-up");
}
