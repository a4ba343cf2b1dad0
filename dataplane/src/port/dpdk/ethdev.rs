//! Ethernet ports: configuration, queues, mempool, start and stop, and [`DpdkPort`], one
//! queue pair of a started port as a [`crate::port::Port`].
//!
//! Everything fallible happens in [`EthPort::open`], before any worker starts (as in
//! DPDK's l3fwd): configure N RX and N TX queues (RSS on the UDP 4-tuple when N > 1 and the
//! device supports it), create the port's mempool, set up the queues, start, read the link.
//! [`EthPort::queue`] then hands out one [`DpdkPort`] per queue pair, each for one worker.
//!
//! A `DpdkPort` holds ids and its port's mempool (to originate the odd ARP/NDP frame, see
//! [`Port::alloc_frame`]), so it can move to its worker thread; the port it refers to must
//! stay started, and its mempool alive, while it lives. [`EthPort::close`] enforces that at
//! run time: it refuses while any `DpdkPort` of the port is alive (a token `Arc` counts
//! them).
//!
//! Copies for mirror pools ([`Port::copy_frame`]) are full copies in one mbuf, unless
//! [`PortSettings::share_copies`] asks for sharing and the device sends multi-segment frames
//! (`RTE_ETH_TX_OFFLOAD_MULTI_SEGS`): then a header mbuf chained to an indirect mbuf that
//! refers to the original's payload ([`Mbuf::share_tail`]). Copying is the default because
//! it measured faster at 64 and 1 514 bytes on the development VM (docs/benchmarks.md,
//! "Mirror pools").
//!
//! Mempool size: every RX descriptor holds an mbuf, every TX descriptor may hold one until
//! the NIC is done, and each worker has a burst in hand, the copies of a burst for mirror
//! pools (two mbufs each when shared) and the mempool's per-lcore cache:
//! `queues × (rx_ring + tx_ring) + queues × (burst × (1 + 2 × MIRRORS_PER_FRAME) + cache)`,
//! rounded up to 2^k − 1 (the ring-backed mempool's best size). Copies for mirror pools thus
//! never take the mbufs the RX ring needs.

use std::ffi::{c_int, CString};
use std::ptr::NonNull;
use std::sync::Arc;

use super::eal::{last_error, strerror, Eal};
use super::ffi;
use super::mbuf::Mbuf;
use crate::model::{MacAddr, MIRRORS_PER_FRAME};
use crate::port::{PacketBuf, Port, PortSettings};

/// Largest burst a [`DpdkPort`] receives at once.
pub(crate) const MAX_BURST: usize = 256;

/// Error from port set-up; each names the device and the step, and quotes `rte_strerror`.
#[derive(Debug)]
pub enum EthError {
    /// No port by that name (PCI address or vdev name).
    NotFound {
        /// The device as configured.
        device: String,
        /// Why.
        reason: String,
    },
    /// A set-up step failed.
    Step {
        /// The device as configured.
        device: String,
        /// What was being done ("configure 2 rx/tx queues", "set up rx queue 1", ...).
        step: String,
        /// `rte_strerror` of the failure.
        reason: String,
    },
    /// [`EthPort::close`] was called while a [`DpdkPort`] of the port was still alive.
    InUse {
        /// The device.
        device: String,
        /// Queue handles still alive.
        handles: usize,
    },
}

impl std::fmt::Display for EthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotFound { device, reason } => {
                write!(f, "dpdk port {device:?} not found: {reason}")
            }
            Self::Step {
                device,
                step,
                reason,
            } => write!(f, "dpdk port {device:?}: cannot {step}: {reason}"),
            Self::InUse { device, handles } => write!(
                f,
                "dpdk port {device:?}: cannot close while {handles} queue handle(s) are in use"
            ),
        }
    }
}

impl std::error::Error for EthError {}

/// Link state as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Whether the link is up.
    pub up: bool,
    /// Speed in Mbit/s (0 when unknown).
    pub speed_mbps: u32,
}

/// Mempool fill level: `(available, size)`. Back to `(n, n)` once every mbuf is home.
pub(crate) type PoolLevel = (u32, u32);

/// A configured and started port (control thread only: it owns the mempool pointer).
#[derive(Debug)]
pub struct EthPort {
    id: u16,
    device: String,
    queues: u16,
    mac: MacAddr,
    pool: NonNull<ffi::rte_mempool>,
    rss: bool,
    /// Whether the NIC checks IPv4 header checksums on receive (RX checksum offload).
    rx_ip_checksum: bool,
    /// Whether copies for mirror pools share the payload (asked for, and the device sends
    /// multi-segment frames).
    share_copies: bool,
    started: bool,
    closed: bool,
    handles: Arc<()>,
}

/// `RTE_ETH_RX_OFFLOAD_IPV4_CKSUM` (`RTE_BIT64(1)` in rte_ethdev.h: a function-like macro
/// bindgen cannot evaluate; shim.c asserts the value at compile time).
const RX_OFFLOAD_IPV4_CKSUM: u64 = 1 << 1;
/// `RTE_ETH_TX_OFFLOAD_MULTI_SEGS` (`RTE_BIT64(15)`; asserted in shim.c like the above).
const TX_OFFLOAD_MULTI_SEGS: u64 = 1 << 15;

fn check(device: &str, step: impl Into<String>, r: c_int) -> Result<c_int, EthError> {
    if r < 0 {
        Err(EthError::Step {
            device: device.to_owned(),
            step: step.into(),
            reason: strerror(r),
        })
    } else {
        Ok(r)
    }
}

/// The mempool size for `s` (see the module docs).
pub(crate) fn mempool_size(s: &PortSettings) -> u32 {
    let q = u32::from(s.queues);
    let copies = u32::from(s.burst) * 2 * MIRRORS_PER_FRAME as u32;
    let need = q * (u32::from(s.rx_ring) + u32::from(s.tx_ring))
        + q * (u32::from(s.burst) + copies + s.mempool_cache);
    (need + 1).next_power_of_two() - 1
}

impl EthPort {
    /// Finds `device` (a PCI address on the allow-list or a vdev name such as `net_pcap0`),
    /// configures it per `s`, creates its mempool, sets up the queues and starts it.
    ///
    /// # Errors
    /// When the device is unknown or a step fails; the message names the step and quotes
    /// `rte_strerror`.
    pub fn open(eal: &Eal, device: &str, s: &PortSettings) -> Result<Self, EthError> {
        let dev = device.to_owned();
        let cname = CString::new(device).map_err(|_| EthError::NotFound {
            device: dev.clone(),
            reason: "the name contains a NUL byte".into(),
        })?;
        let mut id = 0u16;
        // SAFETY: cname is NUL-terminated; id is a valid out-pointer.
        let r = unsafe { ffi::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        if r < 0 {
            return Err(EthError::NotFound {
                device: dev,
                reason: format!(
                    "{} ({} port(s) probed: check [dpdk] allow and vdevs)",
                    strerror(r),
                    eal.port_count()
                ),
            });
        }
        // SAFETY: zeroed is a valid value of this plain C struct (integers and pointers).
        let mut info: ffi::rte_eth_dev_info = unsafe { std::mem::zeroed() };
        // SAFETY: id is a valid port; info is a valid out-pointer.
        check(&dev, "read device info", unsafe {
            ffi::rte_eth_dev_info_get(id, &mut info)
        })?;
        let q = s.queues.max(1);
        if q > info.max_rx_queues || q > info.max_tx_queues {
            return Err(EthError::Step {
                device: dev,
                step: format!("configure {q} rx/tx queues"),
                reason: format!(
                    "the device has at most {} rx and {} tx queues",
                    info.max_rx_queues, info.max_tx_queues
                ),
            });
        }
        // SAFETY: all-zero is the documented "defaults" value of rte_eth_conf.
        let mut conf: ffi::rte_eth_conf = unsafe { std::mem::zeroed() };
        let want = (1u64 << ffi::RTE_ETH_FLOW_NONFRAG_IPV4_UDP)
            | (1u64 << ffi::RTE_ETH_FLOW_NONFRAG_IPV6_UDP);
        let rss_hf = want & info.flow_type_rss_offloads;
        let rss = q > 1 && rss_hf != 0;
        if rss {
            conf.rxmode.mq_mode = ffi::rte_eth_rx_mq_mode::RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf; // NULL key: the driver's default
        }
        // Where the NIC can check IPv4 header checksums, let it: the worker then skips its
        // own check for frames the NIC marks good (as DPDK's l3fwd relies on the NIC).
        let rx_ip_checksum = info.rx_offload_capa & RX_OFFLOAD_IPV4_CKSUM != 0;
        if rx_ip_checksum {
            conf.rxmode.offloads |= RX_OFFLOAD_IPV4_CKSUM;
        }
        let share_copies = s.share_copies && info.tx_offload_capa & TX_OFFLOAD_MULTI_SEGS != 0;
        if share_copies {
            conf.txmode.offloads |= TX_OFFLOAD_MULTI_SEGS;
        }
        // SAFETY: id is valid; conf is a valid, initialised rte_eth_conf.
        check(&dev, format!("configure {q} rx/tx queues"), unsafe {
            ffi::rte_eth_dev_configure(id, q, q, &conf)
        })?;
        let (mut rx_ring, mut tx_ring) = (s.rx_ring, s.tx_ring);
        // SAFETY: id is a configured port; both are valid in/out pointers.
        check(&dev, "adjust ring sizes", unsafe {
            ffi::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut rx_ring, &mut tx_ring)
        })?;
        // SAFETY: id is valid.
        let socket = unsafe { ffi::rte_eth_dev_socket_id(id) };
        let socket = if socket < 0 {
            ffi::SOCKET_ID_ANY
        } else {
            socket
        };
        let sized = PortSettings {
            rx_ring,
            tx_ring,
            ..s.clone()
        };
        let n = mempool_size(&sized);
        let cache = s
            .mempool_cache
            .min(ffi::RTE_MEMPOOL_CACHE_MAX_SIZE)
            .min(n * 2 / 3);
        let pool_name = CString::new(format!("spray_p{id}")).expect("no NUL in a number");
        // SAFETY: the name is NUL-terminated; sizes are in range (cache <= n / 1.5 and
        // <= RTE_MEMPOOL_CACHE_MAX_SIZE); the data room is DPDK's default.
        let pool = unsafe {
            ffi::rte_pktmbuf_pool_create(
                pool_name.as_ptr(),
                n,
                cache,
                0,
                ffi::RTE_MBUF_DEFAULT_BUF_SIZE as u16,
                socket,
            )
        };
        let pool = NonNull::new(pool).ok_or_else(|| EthError::Step {
            device: dev.clone(),
            step: format!("create a mempool of {n} mbufs"),
            reason: last_error(),
        })?;
        let mut port = Self {
            id,
            device: dev.clone(),
            queues: q,
            mac: MacAddr::default(),
            pool,
            rss,
            rx_ip_checksum,
            share_copies,
            started: false,
            closed: false,
            handles: Arc::new(()),
        };
        let sock = u32::try_from(socket).unwrap_or(u32::MAX); // SOCKET_ID_ANY is -1
        for qi in 0..q {
            // SAFETY: port configured with q queues; NULL rxconf means the driver's
            // defaults; the pool is live and outlives the port (freed in close()).
            let r = unsafe {
                ffi::rte_eth_rx_queue_setup(id, qi, rx_ring, sock, std::ptr::null(), pool.as_ptr())
            };
            check(
                &dev,
                format!("set up rx queue {qi} ({rx_ring} descriptors)"),
                r,
            )?;
            // SAFETY: as above; NULL txconf means the driver's defaults.
            let r = unsafe { ffi::rte_eth_tx_queue_setup(id, qi, tx_ring, sock, std::ptr::null()) };
            check(
                &dev,
                format!("set up tx queue {qi} ({tx_ring} descriptors)"),
                r,
            )?;
        }
        // SAFETY: id is valid; a zeroed rte_ether_addr is a valid out-value.
        let mut addr: ffi::rte_ether_addr = unsafe { std::mem::zeroed() };
        // SAFETY: id is valid; addr is a valid out-pointer.
        check(&dev, "read the MAC address", unsafe {
            ffi::rte_eth_macaddr_get(id, &mut addr)
        })?;
        port.mac = s.mac.unwrap_or(MacAddr(addr.addr_bytes));
        // SAFETY: every queue is set up.
        check(&dev, "start", unsafe { ffi::rte_eth_dev_start(id) })?;
        port.started = true;
        if s.promiscuous {
            // Some vdevs (pcap, null) have no such mode; they receive everything anyway.
            // SAFETY: id is a started port.
            let _ = unsafe { ffi::rte_eth_promiscuous_enable(id) };
        }
        Ok(port)
    }

    /// The DPDK port id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The device as configured.
    pub fn device(&self) -> &str {
        &self.device
    }

    /// Queue pairs.
    pub fn queues(&self) -> u16 {
        self.queues
    }

    /// Whether RSS spreads flows over the queues.
    pub fn rss(&self) -> bool {
        self.rss
    }

    /// Whether the NIC checks IPv4 header checksums on receive (then the workers do not).
    pub fn rx_ip_checksum(&self) -> bool {
        self.rx_ip_checksum
    }

    /// Whether copies for mirror pools share the original's payload: asked for
    /// ([`PortSettings::share_copies`]) and the device sends multi-segment frames.
    pub fn shares_copies(&self) -> bool {
        self.share_copies
    }

    /// The source MAC of frames this port sends.
    pub fn mac(&self) -> MacAddr {
        self.mac
    }

    /// The port's mempool (for tests and benchmarks that allocate their own frames).
    pub fn mempool(&self) -> NonNull<ffi::rte_mempool> {
        self.pool
    }

    /// Link state, without waiting.
    pub fn link(&self) -> Link {
        // SAFETY: zeroed is a valid rte_eth_link.
        let mut l: ffi::rte_eth_link = unsafe { std::mem::zeroed() };
        // SAFETY: id is a valid port; l is a valid out-pointer.
        let r = unsafe { ffi::rte_eth_link_get_nowait(self.id, &mut l) };
        if r < 0 {
            return Link {
                up: false,
                speed_mbps: 0,
            };
        }
        Link {
            up: l.link_status() == ffi::RTE_ETH_LINK_UP as u16,
            speed_mbps: l.link_speed,
        }
    }

    /// Free mbufs and pool size.
    pub fn pool_level(&self) -> PoolLevel {
        let p = self.pool.as_ptr();
        // SAFETY: the pool is live until close(); both calls only read counters.
        unsafe { (ffi::rte_mempool_avail_count(p), ffi::spray_mempool_size(p)) }
    }

    /// Packets the device dropped for want of RX descriptors or mbufs (`imissed` + `rx_nombuf`).
    pub fn rx_missed(&self) -> u64 {
        // SAFETY: zeroed is a valid rte_eth_stats.
        let mut st: ffi::rte_eth_stats = unsafe { std::mem::zeroed() };
        // SAFETY: id is valid; st is a valid out-pointer.
        if unsafe { ffi::rte_eth_stats_get(self.id, &mut st) } < 0 {
            return 0;
        }
        st.imissed + st.rx_nombuf
    }

    /// Queue pair `queue` as a [`Port`] for one worker, or `None` past the last queue.
    pub fn queue(&self, queue: u16) -> Option<DpdkPort> {
        (queue < self.queues).then(|| DpdkPort {
            port: self.id,
            queue,
            mac: self.mac,
            rx_ip_checksum: self.rx_ip_checksum,
            share_copies: self.share_copies,
            pool: SharedPool(self.pool),
            _alive: Arc::clone(&self.handles),
        })
    }

    /// Stops the port (idempotent). No worker may poll it afterwards.
    ///
    /// # Errors
    /// When queue handles are alive, or the driver fails to stop.
    pub fn stop(&mut self) -> Result<(), EthError> {
        self.in_use()?;
        if self.started {
            self.started = false;
            // SAFETY: started port, and no DpdkPort is alive to poll it (checked above).
            check(&self.device, "stop", unsafe {
                ffi::rte_eth_dev_stop(self.id)
            })?;
        }
        Ok(())
    }

    fn in_use(&self) -> Result<(), EthError> {
        let handles = Arc::strong_count(&self.handles) - 1;
        if handles > 0 {
            return Err(EthError::InUse {
                device: self.device.clone(),
                handles,
            });
        }
        Ok(())
    }

    /// Stops and closes the port (its queues give their mbufs back) and returns the pool
    /// level just before the pool is freed: `(n, n)` when no mbuf leaked.
    ///
    /// # Errors
    /// When queue handles are alive (the port is then left as it was), or a step fails.
    pub fn close(mut self) -> Result<PoolLevel, EthError> {
        self.stop()?;
        self.closed = true;
        // SAFETY: stopped, and nothing polls it.
        check(&self.device, "close", unsafe {
            ffi::rte_eth_dev_close(self.id)
        })?;
        let level = self.pool_level();
        // SAFETY: the port that used the pool is closed and no Mbuf from it can be alive:
        // mbufs live only inside workers, which dropped their DpdkPort (checked by stop()).
        unsafe { ffi::rte_mempool_free(self.pool.as_ptr()) };
        Ok(level)
    }
}

impl Drop for EthPort {
    fn drop(&mut self) {
        if self.closed || self.in_use().is_err() {
            // Handles alive: stopping now could pull the port from under a worker; leave
            // it (EAL clean-up or process exit releases it).
            return;
        }
        // SAFETY: no DpdkPort is alive; stop and close are valid on a started or stopped
        // port. The pool is not freed: an Mbuf could only outlive its worker by a bug, and
        // leaking the pool is the safe side.
        unsafe {
            if self.started {
                ffi::rte_eth_dev_stop(self.id);
            }
            ffi::rte_eth_dev_close(self.id);
        }
    }
}

/// One queue pair of a started port: the [`Port`] a worker drives. Holds only ids, so it
/// moves to its worker's thread; the [`Mbuf`]s it hands out never leave that thread.
#[derive(Debug)]
pub struct DpdkPort {
    port: u16,
    queue: u16,
    mac: MacAddr,
    rx_ip_checksum: bool,
    share_copies: bool,
    pool: SharedPool,
    _alive: Arc<()>,
}

/// The port's mempool, as a [`DpdkPort`] carries it to its worker thread.
#[derive(Debug, Clone, Copy)]
struct SharedPool(NonNull<ffi::rte_mempool>);

// SAFETY: a packet mempool is built for concurrent use: its default ring ops are
// multi-producer/multi-consumer and each lcore has its own cache, so `rte_pktmbuf_alloc`
// from any registered worker thread is sound. The pool outlives every `DpdkPort`:
// `EthPort::close` frees it only after checking that no `DpdkPort` is alive, and
// `EthPort`'s `Drop` never frees it.
unsafe impl Send for SharedPool {}

impl DpdkPort {
    /// The DPDK port id.
    pub fn port_id(&self) -> u16 {
        self.port
    }

    /// The queue pair index.
    pub fn queue_id(&self) -> u16 {
        self.queue
    }
}

impl Port for DpdkPort {
    type Buf = Mbuf;

    /// Receives straight into `bufs`' spare capacity: no pointer array on the stack to copy
    /// from and no per-packet push (see docs/benchmarks.md).
    #[inline]
    fn rx_burst(&mut self, bufs: &mut Vec<Mbuf>, max: usize) -> usize {
        let want = max.min(MAX_BURST);
        bufs.reserve(want); // a no-op once the worker's burst Vec has its capacity
        let len = bufs.len();
        let dst = bufs
            .spare_capacity_mut()
            .as_mut_ptr()
            .cast::<*mut ffi::rte_mbuf>();
        // SAFETY: the port is started and this queue is polled by this thread only (one
        // DpdkPort per queue); `dst` has room for `want` pointers (reserved above), and
        // `Mbuf` is a `repr(transparent)` `NonNull<rte_mbuf>`, so the driver writes mbuf
        // pointers where `Mbuf`s belong.
        let n = usize::from(unsafe {
            ffi::spray_eth_rx_burst(self.port, self.queue, dst, want as u16)
        });
        // SAFETY: rx_burst initialised the first `n` slots with live, non-NULL mbufs that it
        // just gave us (refcount 1, nobody else refers to them): each is a valid `Mbuf`.
        unsafe { bufs.set_len(len + n) };
        #[cfg(debug_assertions)]
        for m in &bufs[len..] {
            // SAFETY: `m` is live and owned (see above).
            debug_assert_eq!(unsafe { ffi::spray_mbuf_refcnt_read(m.as_ptr()) }, 1);
        }
        n
    }

    /// Hands `bufs`' storage to the driver as it is (`Mbuf` is a `repr(transparent)`
    /// pointer); the accepted ones are then forgotten without touching each one.
    #[inline]
    fn tx_burst(&mut self, bufs: &mut Vec<Mbuf>) -> usize {
        let total = bufs.len();
        let base = bufs.as_mut_ptr().cast::<*mut ffi::rte_mbuf>();
        let mut sent = 0;
        // Bursts longer than a u16 go out in chunks; stop at the first refusal.
        while sent < total {
            let chunk = (total - sent).min(usize::from(u16::MAX));
            // SAFETY: started port, this thread's own queue; `base[sent..sent + chunk]` are
            // live mbufs owned by `bufs`. Ownership of the first `n` passes to the driver.
            let n = usize::from(unsafe {
                ffi::spray_eth_tx_burst(self.port, self.queue, base.add(sent), chunk as u16)
            });
            sent += n;
            if n < chunk {
                break;
            }
        }
        // SAFETY: the driver owns the first `sent` mbufs now, so their handles must not be
        // dropped: shrinking the length to 0 forgets them (and `Mbuf` has no other state).
        // The refused ones, `sent..total`, are still ours and initialised; they are moved out
        // one by one and free themselves when dropped (the worker counts them as TxFull).
        unsafe {
            bufs.set_len(0);
            for i in sent..total {
                drop(std::ptr::read(bufs.as_ptr().add(i)));
            }
        }
        sent
    }

    #[inline]
    fn free(&mut self, buf: Mbuf) {
        drop(buf);
    }

    fn mac(&self) -> MacAddr {
        self.mac
    }

    #[inline]
    fn rx_ip_checksum_offload(&self) -> bool {
        self.rx_ip_checksum
    }

    /// A fresh mbuf from the port's mempool with a copy of `frame` (ARP/NDP frames the
    /// control thread originates); `None` when the pool is empty.
    fn alloc_frame(&mut self, frame: &[u8]) -> Option<Mbuf> {
        // SAFETY: the pool is a live packet mempool (see `SharedPool`), and this runs on
        // the worker thread that owns this queue pair.
        unsafe { Mbuf::alloc_with(self.pool.0, frame) }
    }

    /// A copy that shares `original`'s payload where the port was set up so (module docs),
    /// else a full copy.
    fn copy_frame(&mut self, original: &Mbuf, headers: usize) -> Option<Mbuf> {
        if self.share_copies && original.len() > headers {
            // SAFETY: the pool is live (as in `alloc_frame`), the device sends multi-segment
            // frames (`share_copies`), and the worker writes no original after copying it
            // (the `Port::copy_frame` contract).
            unsafe { Mbuf::share_tail(self.pool.0, original, headers) }
        } else {
            self.alloc_frame(original.data())
        }
    }
}
