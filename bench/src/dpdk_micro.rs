//! The DPDK micro-benchmark: one core, a `net_ring` vdev (TX loops back to RX), 64-byte
//! frames (other sizes with `net_null`: [`DpdkMicroSettings::size`]), burst 32.
//!
//! The ring is primed with a few hundred frames for a DR VIP; they then circulate. Up to four
//! loops run over the same port in the same process, in turn within every repetition:
//! - io-forward: `rx_burst` straight to `tx_burst`, the framework's own cost;
//! - mac-forward: io-forward plus both MAC addresses of every frame written (DPDK testpmd's
//!   `mac` forwarding mode, with Spray's own two-store MAC write): the cheapest rewrite any
//!   per-packet work can do, so the ceiling for Spray's ratio against io-forward;
//! - hand-written DR (one VIP, `net_null` only): the checks, header checksum, VIP compare,
//!   round-robin pick, MAC write and per-backend counts of Spray's DR fast path, written
//!   inline for the benchmark's one VIP, without the worker (no snapshot, memo, slow path or
//!   shared counters): about the most scalar code could make of the full work;
//! - spray: [`Worker::poll`], Spray's full per-packet work (parse with the IPv4 header
//!   checksum check, VIP lookup, round-robin pick, MAC rewrite, counters). DR keeps each
//!   frame addressed to the VIP, so the same frames can go round forever.
//!
//! With [`DpdkMicroSettings::null`] the port is a `net_null` vdev instead: RX allocates
//! fresh mbufs (a mempool get per packet, as a NIC refilling its ring), TX frees them. Its
//! frames carry no content, so a 64-byte template is copied into each received mbuf in
//! *both* loops (the stand-in for the NIC's DMA, as in the memory-port benchmark); the
//! difference between the two loops is again Spray's own work. Since every frame is
//! rewritten from the template, NAT works there too ([`DpdkMicroSettings::nat`]), and so do
//! tunnelled backends ([`DpdkMicroSettings::tunnel`]): the outer header is grown in the
//! mbuf's headroom, which every freshly allocated mbuf has again.
//!
//! With [`DpdkMicroSettings::vips`] above 1 (`net_null` only), consecutive frames go to
//! consecutive VIPs, each with its own backends: the worst case for the worker's memo of the
//! last VIP, which must switch for every frame.
//!
//! EAL initialises once per process, so hugepages versus `--no-huge` are two runs.

use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

use dataplane::counters::WorkerCounters;
use dataplane::flow::NatFlows;
use dataplane::port::dpdk::{DpdkPort, Eal, EthPort, Mbuf, PortSettings};
use dataplane::port::{PacketBuf, Port, RxIpChecksum};
use dataplane::rewrite::{eth_src_word, set_mac_words};
use dataplane::sched::SchedulerKind;
use dataplane::service::{
    Backend, BackendId, MacAddr, Mode, ServiceSpec, Snapshot, Tunnel, VipId, VipKey,
};
use dataplane::testkit::frames::{udp_frame, FrameSpec};
use dataplane::wire::checksum::ipv4_header20_valid;
use dataplane::wire::ETHERTYPE_IPV4;
use dataplane::worker::{Idle, Worker, WorkerSettings};

use crate::micro::{drive, io_forward_loop, ipip, median};

/// Settings of a run.
#[derive(Debug, Clone)]
pub struct DpdkMicroSettings {
    /// Use hugepages from this hugetlbfs mount; `None`: `--no-huge`.
    pub huge_dir: Option<String>,
    /// Packets per burst.
    pub burst: usize,
    /// Frames circulating in the ring.
    pub in_flight: usize,
    /// Measured time per repetition.
    pub duration: Duration,
    /// Repetitions of each loop; medians are reported.
    pub reps: usize,
    /// The EAL core.
    pub core: usize,
    /// `net_null` with a template copy per packet instead of a circulating `net_ring`.
    pub null: bool,
    /// Run exactly this many bursts per repetition instead of for `duration` (a fixed
    /// amount of work, for instruction counts under callgrind).
    pub bursts: Option<u64>,
    /// NAT instead of DR (`net_null` only: a NAT-rewritten frame no longer goes to the VIP,
    /// so it cannot circulate in a `net_ring`). Adds the TTL decrement, the address and port
    /// rewrite and both checksum patches.
    pub nat: bool,
    /// DR to backends behind IPIP tunnels instead of plain DR (`net_null` only: an
    /// encapsulated frame is addressed to its backend, so it cannot circulate in a
    /// `net_ring`). Adds the general path and the outer IPv4 header written in the headroom.
    pub tunnel: bool,
    /// VIPs, each with its own three backends; consecutive frames go to consecutive VIPs
    /// (`net_null` only), the worst case for the worker's memo of the last VIP.
    pub vips: usize,
    /// Mark every received frame's IPv4 header checksum good, as a NIC with the RX offload
    /// does (`net_null` only): Spray and the hand-written loop then skip summing it.
    pub nic_checksum: bool,
    /// Mirror pools of two backends each per VIP (`net_null` only): every datagram is also
    /// sent once per pool, the copy sharing its payload ([`Port::copy_frame`]). Mpps count
    /// received datagrams.
    pub mirrors: u8,
    /// Copies for mirror pools copy the whole frame, as on a device without multi-segment
    /// transmit (to compare with sharing).
    pub full_copy: bool,
    /// Frame length in bytes, Ethernet header included (`net_null` only; 64 otherwise).
    pub size: usize,
}

/// A port that copies a template frame into every received buffer (for `net_null`), the
/// templates in turn.
/// With `verdict`, it also marks every buffer's IPv4 header checksum good and reports the
/// offload on, as a NIC that verifies it would.
#[derive(Debug)]
struct FillPort {
    inner: DpdkPort,
    frames: Vec<Vec<u8>>,
    next: usize,
    fill: bool,
    verdict: bool,
    full_copy: bool,
    pool: NonNull<dataplane::port::dpdk::ffi::rte_mempool>,
}

impl FillPort {
    /// Copies the templates into `bufs`, marking their checksum good when `VERDICT`.
    #[inline(always)]
    fn refill<const VERDICT: bool>(&mut self, bufs: &mut [Mbuf]) {
        if self.frames.len() == 1 {
            // One template: the loop of the rounds before `--vips` existed, so that their
            // figures stay comparable (the turn-taking below costs ~11 instructions per packet
            // in both loops).
            let frame = &self.frames[0];
            for b in bufs {
                let d = b.data_mut();
                let k = d.len().min(frame.len());
                d[..k].copy_from_slice(&frame[..k]);
                if VERDICT {
                    b.set_rx_ip_checksum(RxIpChecksum::Good);
                }
            }
        } else {
            for b in bufs {
                let frame = &self.frames[self.next];
                self.next = if self.next + 1 == self.frames.len() {
                    0
                } else {
                    self.next + 1
                };
                let d = b.data_mut();
                let k = d.len().min(frame.len());
                d[..k].copy_from_slice(&frame[..k]);
                if VERDICT {
                    b.set_rx_ip_checksum(RxIpChecksum::Good);
                }
            }
        }
    }
}

impl Port for FillPort {
    type Buf = Mbuf;
    #[inline]
    fn rx_burst(&mut self, bufs: &mut Vec<Mbuf>, max: usize) -> usize {
        let start = bufs.len();
        let n = self.inner.rx_burst(bufs, max);
        if self.fill {
            // The verdict in the copy's own pass, as a NIC's RX path writes it with the rest
            // of the mbuf: a second pass over the burst to set it cost io-forward 28 %.
            if self.verdict {
                self.refill::<true>(&mut bufs[start..]);
            } else {
                self.refill::<false>(&mut bufs[start..]);
            }
        }
        n
    }
    #[inline]
    fn tx_burst(&mut self, bufs: &mut Vec<Mbuf>) -> usize {
        self.inner.tx_burst(bufs)
    }
    fn free(&mut self, buf: Mbuf) {
        self.inner.free(buf);
    }
    fn mac(&self) -> MacAddr {
        self.inner.mac()
    }
    fn alloc_frame(&mut self, frame: &[u8]) -> Option<Mbuf> {
        self.inner.alloc_frame(frame)
    }
    /// Shares the payload unless `full_copy`, whatever the device advertises: `net_null`
    /// does not advertise multi-segment transmit, but frees what it is given, chains
    /// included, so it measures what sharing costs a NIC that sends them.
    fn copy_frame(&mut self, original: &Mbuf, headers: usize) -> Option<Mbuf> {
        if self.full_copy {
            self.inner.alloc_frame(original.data())
        } else {
            // SAFETY: the pool is the port's, live until `port.close()`; net_null's transmit
            // frees chains (see above); the worker writes no original after copying it.
            unsafe { Mbuf::share_tail(self.pool, original, headers) }
        }
    }

    fn rx_ip_checksum_offload(&self) -> bool {
        self.verdict
    }
}

impl Default for DpdkMicroSettings {
    fn default() -> Self {
        Self {
            huge_dir: None,
            burst: 32,
            in_flight: 512,
            duration: Duration::from_secs(1),
            reps: 5,
            core: 0,
            null: false,
            bursts: None,
            nat: false,
            tunnel: false,
            vips: 1,
            mirrors: 0,
            full_copy: false,
            size: 64,
            nic_checksum: false,
        }
    }
}

/// Medians in Mpps, and every repetition.
#[derive(Debug, Clone)]
pub struct DpdkMicroResult {
    /// io-forward Mpps (median).
    pub io_forward: f64,
    /// Whether copies for mirror pools shared the payload (the port sends multi-segment
    /// frames and `full_copy` was off).
    pub shared: bool,
    /// mac-forward Mpps (median; `net_null` only, `None` on `net_ring`, whose circulating
    /// frames must keep their MACs).
    pub mac_forward: Option<f64>,
    /// Spray's full work Mpps (median).
    pub spray: f64,
    /// Every io-forward repetition.
    pub io_forward_runs: Vec<f64>,
    /// Every spray repetition.
    pub spray_runs: Vec<f64>,
    /// Every mac-forward repetition.
    pub mac_forward_runs: Vec<f64>,
    /// Hand-written DR Mpps per on-CPU second (median; `net_null`, DR, one VIP only).
    pub hand_dr_cpu: Option<f64>,
    /// Median of the per-repetition ratios hand-written DR / io-forward, on-CPU time.
    pub hand_ratio_cpu: Option<f64>,
    /// io-forward Mpps per second the thread was on a CPU (median; `None` without
    /// `/proc/thread-self/schedstat`): unlike wall-clock Mpps, not lowered by time the
    /// thread spent preempted on a shared machine.
    pub io_forward_cpu: Option<f64>,
    /// Spray's full work Mpps per on-CPU second (median).
    pub spray_cpu: Option<f64>,
    /// mac-forward Mpps per on-CPU second (median).
    pub mac_forward_cpu: Option<f64>,
    /// Median of the per-repetition ratios mac-forward / io-forward, on-CPU time: the most
    /// that any work touching every frame reached in this run.
    pub mac_ratio_cpu: Option<f64>,
    /// Median of the per-repetition ratios spray / io-forward, on-CPU time (each
    /// repetition's loops ran back to back, so they shared the machine's state).
    pub ratio_cpu: Option<f64>,
}

/// VIP `v`'s address: 198.18.0.10 and up, port 514.
fn vip_addr(v: u8) -> std::net::SocketAddr {
    std::net::SocketAddr::from(([198, 18, 0, 10 + v], 514))
}

/// `vips` services of three backends each, in `mode`, the backends behind `tunnel` if any.
fn snapshot(mode: Mode, tunnel: Option<Tunnel>, vips: u8, mirrors: u8) -> Snapshot {
    let services = (0..vips)
        .map(|v| {
            let backends = (1..=3u8)
                .map(|i| {
                    let mut b = Backend::new(
                        BackendId(3 * u16::from(v) + u16::from(i) - 1),
                        std::net::SocketAddr::from(([198, 19, 1 + v, i], 514)),
                        1,
                    );
                    b.mac = Some(MacAddr([2, 0, 0, v, 1, i]));
                    b.tunnel = tunnel;
                    b
                })
                .collect();
            let mut spec = ServiceSpec::new(
                VipId(u16::from(v)),
                "bench",
                VipKey::udp(vip_addr(v)),
                mode,
                SchedulerKind::Rr,
                backends,
            );
            spec.mirrors = crate::micro::mirror_pools(mirrors);
            // Ids unique across VIPs: after every primary backend.
            for (k, b) in spec.entries_mut().skip(3).enumerate() {
                b.id = BackendId(3 * 200 + u16::from(v) * 8 + k as u16);
            }
            spec
        })
        .collect();
    Snapshot::new(1, services).expect("valid services")
}

/// The mac-forward loop: io-forward plus both MAC addresses of every frame written, with the
/// same two 8-byte stores as Spray's DR rewrite (`dst` and `src_type`: the words
/// [`set_mac_words`] takes). Not inlined (see [`io_forward_loop`]).
#[inline(never)]
fn mac_forward_loop(
    port: &mut FillPort,
    burst: &mut Vec<Mbuf>,
    max: usize,
    bursts: u64,
    (dst, src_type): (u64, u64),
) -> u64 {
    let mut n = 0u64;
    for _ in 0..bursts {
        n += port.rx_burst(burst, max) as u64;
        for b in burst.iter_mut() {
            let frame = b.data_mut();
            // net_null's frames are the 64-byte templates, so every frame holds both MACs;
            // a shorter one would be left alone (never happens here).
            if frame.len() >= 14 {
                set_mac_words(frame, dst, src_type);
            }
        }
        port.tx_burst(burst);
    }
    n
}

/// The hand-written DR loop's fixed state: the VIP's key as the frame holds it (destination
/// address and port, [`frame_key`]), its three backends' MAC words, the port's source word.
struct HandDr {
    key: u64,
    hops: [u64; 3],
    src_type: u64,
    /// Per backend: packets and bytes (added once per burst).
    counts: [[u64; 2]; 3],
    /// The next backend.
    cursor: usize,
    /// Frames that failed a check (none should: they are the VIP's own datagrams).
    missed: u64,
}

/// The destination address and port of an IPv4 frame without options, as loaded from it.
fn frame_key(h: &[u8; 42]) -> u64 {
    let ip = u32::from_ne_bytes([h[30], h[31], h[32], h[33]]);
    let port = u16::from_ne_bytes([h[36], h[37]]);
    u64::from(ip) << 16 | u64::from(port)
}

/// The hand-written DR loop (see the module doc): Spray's DR fast path for one VIP with
/// three backends, inline, counting per burst. Not inlined (see [`io_forward_loop`]).
#[inline(never)]
fn hand_dr_loop<const VERDICT: bool>(
    port: &mut FillPort,
    burst: &mut Vec<Mbuf>,
    max: usize,
    bursts: u64,
    st: &mut HandDr,
) -> u64 {
    let mut n = 0u64;
    let mut cursor = st.cursor;
    for _ in 0..bursts {
        n += port.rx_burst(burst, max) as u64;
        let mut counts = [[0u64; 2]; 3];
        for b in burst.iter_mut() {
            let verified = VERDICT && b.rx_ip_checksum() == RxIpChecksum::Good;
            let frame = b.data_mut();
            let len = frame.len();
            let Some(h) = frame.first_chunk::<42>() else {
                st.missed += 1;
                continue;
            };
            let w = |at: usize| u32::from_le_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
            let total = usize::from(u16::from_be_bytes([h[16], h[17]]));
            let udp = usize::from(u16::from_be_bytes([h[38], h[39]]));
            let ip: &[u8; 20] = h[14..34].try_into().expect("20 of 42 bytes");
            if w(12) & 0x00ff_ffff != 0x0045_0008
                || w(20) & 0xff00_ff3f != 0x1100_0000
                || total.wrapping_sub(28) > len - 42
                || udp.wrapping_sub(8) > total - 28
                || !(verified || ipv4_header20_valid(ip))
                || frame_key(h) != st.key
            {
                st.missed += 1;
                continue;
            }
            let c = cursor.min(2);
            cursor = if c == 2 { 0 } else { c + 1 };
            set_mac_words(frame, st.hops[c], st.src_type);
            counts[c][0] += 1;
            counts[c][1] += len as u64;
        }
        for (t, c) in st.counts.iter_mut().zip(counts) {
            t[0] += c[0];
            t[1] += c[1];
        }
        port.tx_burst(burst);
    }
    st.cursor = cursor;
    n
}

/// The full-work loop: [`Worker::poll`] `bursts` times. Not inlined (see [`io_forward_loop`]).
#[inline(never)]
fn worker_loop(w: &mut Worker<FillPort>, bursts: u64) -> u64 {
    let mut n = 0u64;
    for _ in 0..bursts {
        n += w.poll() as u64;
    }
    n
}

/// Runs the benchmark (initialises EAL: once per process).
///
/// # Errors
/// EAL or port set-up errors, as text.
pub fn run(s: &DpdkMicroSettings) -> Result<DpdkMicroResult, String> {
    if s.nat && !s.null {
        return Err("NAT needs net_null (--null): NAT-rewritten frames cannot circulate".into());
    }
    if s.tunnel && !s.null {
        return Err(
            "--tunnel needs net_null (--null): encapsulated frames cannot circulate".into(),
        );
    }
    if s.tunnel && s.nat {
        return Err("--tunnel and --nat: a tunnel is a form of DR, not NAT".into());
    }
    if s.nic_checksum && !s.null {
        return Err("--nic-checksum needs net_null (--null): the verdict is set on refill".into());
    }
    let vips = match u8::try_from(s.vips) {
        Ok(v @ 1..=200) => v,
        _ => return Err(format!("--vips {}: from 1 to 200", s.vips)),
    };
    if s.mirrors > 0 && (!s.null || s.tunnel) {
        return Err("--mirrors needs net_null (--null) and no --tunnel".into());
    }
    if s.size != 64 && (!s.null || !(42..=1514).contains(&s.size)) {
        return Err(format!(
            "--size {}: from 42 to 1514 bytes, with net_null (--null)",
            s.size
        ));
    }
    if vips > 1 && !s.null {
        return Err("--vips needs net_null (--null): the ring circulates one VIP's frames".into());
    }
    let mut args = vec![
        "-l".to_owned(),
        s.core.to_string(),
        "--no-pci".into(),
        "--file-prefix".into(),
        format!("spray-bench-{}", std::process::id()),
        "-m".into(),
        "512".into(),
        "--vdev".into(),
        if s.null {
            format!("net_null0,size={}", s.size)
        } else {
            "net_ring0".into()
        },
        "--log-level".into(),
        "warning".into(),
    ];
    match &s.huge_dir {
        None => args.push("--no-huge".into()),
        Some(d) => args.extend(["--huge-unlink".into(), "--huge-dir".into(), d.clone()]),
    }
    let eal = Eal::init(&args).map_err(|e| e.to_string())?;
    let port = EthPort::open(
        &eal,
        if s.null { "net_null0" } else { "net_ring0" },
        &PortSettings {
            rx_ring: 1024,
            tx_ring: 1024,
            ..PortSettings::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let frames: Vec<Vec<u8>> = (0..vips)
        .map(|v| {
            let mut spec =
                FrameSpec::new("198.18.0.1:40000".parse().expect("literal"), vip_addr(v));
            spec.dst_mac = port.mac();
            udp_frame(&spec, &vec![b'x'; s.size - 42])
        })
        .collect();
    let frame = frames[0].clone();
    let shared = s.mirrors > 0 && !s.full_copy;
    let mut q = port.queue(0).ok_or("no queue 0")?;
    let mut prime: Vec<Mbuf> = (0..s.in_flight)
        // SAFETY: the port's pool is live until `port.close()` below.
        .filter_map(|_| unsafe { Mbuf::alloc_with(port.mempool(), &frame) })
        .collect();
    let primed = prime.len();
    let sent = q.tx_burst(&mut prime);
    if !s.null && sent != primed {
        return Err(format!("primed only {sent} of {primed} frames"));
    }
    let (_tx, rx) = crossbeam_channel::unbounded();
    let counters = WorkerCounters::shared();
    let q = FillPort {
        inner: q,
        frames,
        next: 0,
        fill: s.null,
        verdict: s.nic_checksum,
        full_copy: s.full_copy,
        pool: port.mempool(),
    };
    let mut w = Worker::new(
        q,
        WorkerSettings {
            burst: s.burst,
            gateway_mac: MacAddr::default(),
            idle: Idle::Off,
        },
        Arc::new(snapshot(
            if s.nat { Mode::Nat } else { Mode::Dr },
            s.tunnel.then(ipip),
            vips,
            s.mirrors,
        )),
        rx,
        counters.clone(),
        Arc::new(NatFlows::new(1024)),
    );
    let mut burst = Vec::with_capacity(s.burst);
    // The first backend's MAC (dst) and the port's (src): what a DR rewrite writes.
    let mut dst = [0u8; 8];
    dst[..6].copy_from_slice(&[2, 0, 0, 0, 1, 1]);
    let macs = (
        u64::from_le_bytes(dst),
        eth_src_word(w.port_mut().mac(), ETHERTYPE_IPV4),
    );
    let (mut io, mut full, mut mac) = (Vec::new(), Vec::new(), Vec::new());
    let (mut io_cpu, mut full_cpu, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut mac_cpu, mut mac_ratios) = (Vec::new(), Vec::new());
    let (mut hand_cpu, mut hand_ratios) = (Vec::new(), Vec::new());
    let mut hand = (s.null && !s.nat && !s.tunnel && vips == 1 && s.mirrors == 0).then(|| HandDr {
        key: frame_key(
            w.port_mut().frames[0]
                .first_chunk()
                .expect("a 64-byte frame"),
        ),
        hops: [1u8, 2, 3].map(|i| u64::from_le_bytes([2, 0, 0, 0, 1, i, 0, 0])),
        src_type: macs.1,
        counts: [[0; 2]; 3],
        cursor: 0,
        missed: 0,
    });
    for _ in 0..s.reps.max(1) {
        let (n, secs, cpu_io) = drive(s.bursts, s.duration, |b| {
            io_forward_loop(w.port_mut(), &mut burst, s.burst, b)
        });
        io.push(n as f64 / secs / 1e6);
        let cpu_io = cpu_io.map(|c| n as f64 / c / 1e6);
        if s.null {
            let (n, secs, cpu) = drive(s.bursts, s.duration, |b| {
                mac_forward_loop(w.port_mut(), &mut burst, s.burst, b, macs)
            });
            mac.push(n as f64 / secs / 1e6);
            if let (Some(a), Some(c)) = (cpu_io, cpu) {
                let m = n as f64 / c / 1e6;
                mac_cpu.push(m);
                mac_ratios.push(m / a);
            }
        }
        if let Some(st) = hand.as_mut() {
            let (n, _, cpu) = drive(s.bursts, s.duration, |b| {
                if s.nic_checksum {
                    hand_dr_loop::<true>(w.port_mut(), &mut burst, s.burst, b, st)
                } else {
                    hand_dr_loop::<false>(w.port_mut(), &mut burst, s.burst, b, st)
                }
            });
            if let (Some(a), Some(c)) = (cpu_io, cpu) {
                let m = n as f64 / c / 1e6;
                hand_cpu.push(m);
                hand_ratios.push(m / a);
            }
        }
        let (n, secs, cpu_full) = drive(s.bursts, s.duration, |b| worker_loop(&mut w, b));
        full.push(n as f64 / secs / 1e6);
        let cpu_full = cpu_full.map(|c| n as f64 / c / 1e6);
        if let (Some(a), Some(b)) = (cpu_io, cpu_full) {
            io_cpu.push(a);
            full_cpu.push(b);
            ratios.push(b / a);
        }
    }
    let dropped = counters.dropped_total();
    // Every datagram the worker received left once more per mirror pool.
    let copies = counters.mirror_copies.get();
    let want = counters.rx_packets.get() * u64::from(s.mirrors);
    if copies != want {
        return Err(format!("{copies} copies for mirror pools, not {want}"));
    }
    if let Some(st) = &hand {
        let sent: u64 = st.counts.iter().map(|c| c[0]).sum();
        if st.missed > 0 || st.counts.iter().any(|c| c[0].abs_diff(sent / 3) > 1) {
            return Err(format!(
                "the hand-written loop missed {} frames and spread {:?}",
                st.missed, st.counts
            ));
        }
    }
    // net_ring keeps what is in its ring across close: take the frames back first (net_null
    // never runs dry and holds nothing).
    let p = w.port_mut();
    while !s.null && p.rx_burst(&mut burst, s.burst) > 0 {
        burst.clear();
    }
    drop(w);
    let (free, size) = port.close().map_err(|e| e.to_string())?;
    eal.cleanup()?;
    if dropped > 0 {
        return Err(format!("the worker dropped {dropped} frames"));
    }
    if free != size {
        return Err(format!("mempool {free}/{size} after close"));
    }
    Ok(DpdkMicroResult {
        io_forward: median(&io),
        shared,
        mac_forward: (!mac.is_empty()).then(|| median(&mac)),
        spray: median(&full),
        io_forward_runs: io,
        mac_forward_runs: mac,
        spray_runs: full,
        io_forward_cpu: (!io_cpu.is_empty()).then(|| median(&io_cpu)),
        spray_cpu: (!full_cpu.is_empty()).then(|| median(&full_cpu)),
        ratio_cpu: (!ratios.is_empty()).then(|| median(&ratios)),
        mac_forward_cpu: (!mac_cpu.is_empty()).then(|| median(&mac_cpu)),
        mac_ratio_cpu: (!mac_ratios.is_empty()).then(|| median(&mac_ratios)),
        hand_dr_cpu: (!hand_cpu.is_empty()).then(|| median(&hand_cpu)),
        hand_ratio_cpu: (!hand_ratios.is_empty()).then(|| median(&hand_ratios)),
    })
}
