//! The DPDK port over a `net_ring` vdev (TX loops back to RX): mbufs round-trip through the
//! worker, rewritten in place, copies for a mirror pool share their original's payload, and
//! every mbuf is back in the mempool after close.
//!
//! One test in this file on purpose: EAL initialises once per process, and each integration
//! test file is its own process.
#![cfg(feature = "dpdk")]

use std::ptr::NonNull;
use std::sync::Arc;

use dataplane::counters::WorkerCounters;
use dataplane::flow::NatFlows;
use dataplane::port::dpdk::{ffi, DpdkPort, Eal, EthPort, Mbuf, PortSettings};
use dataplane::port::{PacketBuf, Port, RxIpChecksum};
use dataplane::sched::SchedulerKind;
use dataplane::service::{
    Backend, BackendId, MacAddr, MirrorSpec, Mode, ServiceSpec, Snapshot, VipId, VipKey,
};
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
        Arc::new(Snapshot::new(1, vec![spec.clone()]).unwrap()),
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
    let (free, size) = port.pool_level();
    assert_eq!(
        free, size,
        "every mbuf is back in the pool after the first worker"
    );

    // A copy that shares its original's payload: its own headers, the rest referred to.
    let mut spec_300 = FrameSpec::new(
        "198.18.0.1:40000".parse().unwrap(),
        "198.18.0.10:514".parse().unwrap(),
    );
    spec_300.dst_mac = port.mac();
    let big = udp_frame(&spec_300, &[b'y'; 258]);
    assert_eq!(big.len(), 300);
    {
        // SAFETY: the port's pool is live until close() below; nothing writes `original`
        // while the copy lives.
        let original = unsafe { Mbuf::alloc_with(port.mempool(), &big) }.expect("alloc");
        // SAFETY: as above.
        let copy = unsafe { Mbuf::share_tail(port.mempool(), &original, 42) }.expect("share");
        // SAFETY: as above. Headers that are the whole frame leave nothing to share.
        assert!(unsafe { Mbuf::share_tail(port.mempool(), &original, 300) }.is_none());
        assert_eq!(
            copy.data(),
            &big[..42],
            "the copy lends only its own headers"
        );
        assert_eq!((copy.len(), copy.frame_len()), (42, 300));
        assert_eq!(copy.to_vec(), big);
        let (free, size) = port.pool_level();
        assert_eq!(
            size - free,
            3,
            "the original, the copy's header mbuf, its indirect one"
        );
        drop(original);
        assert_eq!(
            copy.to_vec(),
            big,
            "the payload outlives the original's handle"
        );
        // SAFETY: as above. A copy is not shared again (it is already two segments).
        assert!(unsafe { Mbuf::share_tail(port.mempool(), &copy, 20) }.is_none());
    }
    let (free, size) = port.pool_level();
    assert_eq!(free, size, "both buffers are freed, the shared one last");

    // Through a worker: a NAT service with one mirror pool over a port whose copies share:
    // each datagram leaves twice, the copy rewritten for the mirror backend in its own
    // header segment.
    let mirror_backends = (1..=2u8)
        .map(|i| {
            let mut b = Backend::new(
                BackendId(2 + u16::from(i)),
                format!("198.19.11.{i}:5140").parse().unwrap(),
                1,
            );
            b.mac = Some(MacAddr([2, 0, 0, 0, 0x11, i]));
            b
        })
        .collect();
    let mut mirrored = spec.clone();
    mirrored.mirrors = vec![MirrorSpec::new(
        "archive",
        SchedulerKind::Rr,
        mirror_backends,
    )];
    let mut q = SharingPort {
        queue: port.queue(0).expect("queue 0"),
        pool: port.mempool(),
        sent: Vec::with_capacity(32),
    };
    let mut out: Vec<Mbuf> = (0..4)
        // SAFETY: the port's pool is live until close() below.
        .map(|_| unsafe { Mbuf::alloc_with(port.mempool(), &big) }.expect("alloc"))
        .collect();
    assert_eq!(
        q.queue.tx_burst(&mut out),
        4,
        "into the ring, for the worker to receive"
    );
    let (_tx2, rx2) = crossbeam_channel::unbounded();
    let counters = WorkerCounters::shared();
    let mut w = Worker::new(
        q,
        WorkerSettings {
            burst: 32,
            gateway_mac: MacAddr([2, 0, 0, 0, 0, 1]),
            idle: dataplane::worker::Idle::Off,
        },
        Arc::new(Snapshot::new(2, vec![mirrored]).unwrap()),
        rx2,
        counters.clone(),
        Arc::new(NatFlows::new(64)),
    );
    assert_eq!(w.poll(), 4);
    assert_eq!(counters.mirror_copies.get(), 4);
    assert_eq!(counters.tx_packets.get(), 8);
    assert_eq!(
        counters.tx_bytes.get(),
        8 * 300,
        "a copy counts its whole frame"
    );
    let back = std::mem::take(&mut w.port_mut().sent);
    assert_eq!(back.len(), 8);
    let payload = &big[42..];
    for (i, m) in back.iter().enumerate() {
        let f = m.to_vec();
        assert_eq!(f.len(), 300);
        let p = parse_udp(&f).unwrap();
        let (dst, mac, chained) = if i < 4 {
            (
                format!("198.19.1.{}:514", i % 3 + 1),
                [2, 0, 0, 0, 1, (i % 3 + 1) as u8],
                false,
            )
        } else {
            let k = (i - 4) % 2 + 1;
            (
                format!("198.19.11.{k}:5140"),
                [2, 0, 0, 0, 0x11, k as u8],
                true,
            )
        };
        assert_eq!(p.dst(), dst.parse().unwrap(), "frame {i}");
        assert_eq!(&f[..6], &mac, "frame {i}");
        assert_eq!(m.frame_len() > m.len(), chained, "frame {i}");
        assert_eq!(&f[42..], payload, "frame {i}");
        assert!(checksums_valid(&f), "frame {i}");
    }
    drop(back);
    drop(w);
    let level = port.close().expect("close");
    assert_eq!(level.0, level.1, "every mbuf is back in the pool");
    eal.cleanup().expect("EAL clean-up");
}

/// A queue of the port whose copies for mirror pools always share the payload, as on a
/// device that sends multi-segment frames (`net_ring` advertises no offloads). It keeps what
/// the worker sends instead of looping it back: a received mbuf has refcount 1 (the worker's
/// debug check), and an original whose copy is still in the ring would not.
struct SharingPort {
    queue: DpdkPort,
    pool: NonNull<ffi::rte_mempool>,
    sent: Vec<Mbuf>,
}

impl Port for SharingPort {
    type Buf = Mbuf;
    fn rx_burst(&mut self, bufs: &mut Vec<Mbuf>, max: usize) -> usize {
        self.queue.rx_burst(bufs, max)
    }
    fn tx_burst(&mut self, bufs: &mut Vec<Mbuf>) -> usize {
        let n = bufs.len();
        self.sent.append(bufs);
        n
    }
    fn free(&mut self, buf: Mbuf) {
        self.queue.free(buf);
    }
    fn mac(&self) -> MacAddr {
        self.queue.mac()
    }
    fn copy_frame(&mut self, original: &Mbuf, headers: usize) -> Option<Mbuf> {
        // SAFETY: the pool is the port's, live until close(); the copies are never sent to
        // a device; the worker writes no original after copying it.
        unsafe { Mbuf::share_tail(self.pool, original, headers) }
    }
}
