//! Neighbour handling (ARP, IPv6 neighbour discovery) for ports that own the wire.
//!
//! A kernel-bypass port gets no help from the kernel: nobody answers "who has the VIP?",
//! nobody finds the backends' MAC addresses. This module does both, in two halves:
//!
//! * **In the worker, per frame, no allocation** ([`handle_arp`], [`handle_ndp`]): an ARP
//!   request or a neighbour solicitation for a VIP or the port's own address is turned into
//!   the reply in the buffer it arrived in and sent back on the same port (VLAN tag kept).
//!   ARP replies, gratuitous ARP and neighbour advertisements are copied into a fixed-size
//!   [`NeighFrame`] and pushed onto a bounded channel toward the control thread
//!   ([`WorkerNeigh::to_control`]); when it is full the frame is counted as
//!   [`DropReason::NeighQueueFull`]. Everything else ARP/NDP is [`DropReason::NeighNotForUs`].
//! * **In the control thread, sans-I/O** ([`Neighbours`], quinn's verbs): it tracks the
//!   addresses that need a MAC (backends without a configured `mac`, the gateways), sends ARP
//!   requests / neighbour solicitations with retries, keeps answers for a reachable time,
//!   re-probes (unicast) before expiry, withdraws a MAC that stops answering, and announces
//!   each VIP that becomes active with gratuitous ARP / an unsolicited neighbour
//!   advertisement. Frames it wants sent come out of [`Neighbours::poll_transmit`]; the
//!   control loop hands them to one worker ([`WorkerNeigh::from_control`]), which copies
//!   them into a port buffer ([`crate::port::Port::alloc_frame`]) between bursts.
//!
//! Resolved MACs reach workers in the snapshot: the control thread fills
//! [`crate::model::Backend::mac`] of every backend that has no static MAC with
//! [`Neighbours::fill_macs`], and the gateway MACs with
//! [`crate::model::Snapshot::with_gateway_macs`], whenever [`Neighbours::generation`]
//! moves. A worker never looks a MAC up on its own, so it can never pair a backend with a
//! MAC learnt for another address: a backend without a MAC is counted as
//! [`DropReason::NoBackendMac`] and dropped. Configured MACs are static entries and are never
//! replaced.
//!
//! Timers follow RFC 4861's defaults (retransmit 1 s, 3 solicitations, reachable 30 s);
//! announcements follow RFC 5227 (2 gratuitous ARP, 2 s apart).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::counters::DropReason;
use crate::model::{MacAddr, ServiceSpec, Snapshot};
use crate::wire::checksum;
use crate::wire::{classify, vlan, IpFrame, Packet, ETHERTYPE_IPV6};

/// Largest ARP/NDP frame carried between workers and the control thread.
pub const MAX_FRAME: usize = 128;
const ETHERTYPE_ARP: u16 = 0x0806;
const ICMPV6: u8 = 58;
const NS: u8 = 135;
const NA: u8 = 136;
const BROADCAST: [u8; 6] = [0xff; 6];

/// A copy of one ARP/NDP frame, fixed size so a bounded channel of them never allocates.
#[derive(Clone, Copy)]
pub struct NeighFrame {
    len: u8,
    bytes: [u8; MAX_FRAME],
}

impl NeighFrame {
    /// A copy of `frame`, truncated to [`MAX_FRAME`] bytes (ARP and NDP frames are shorter).
    pub fn new(frame: &[u8]) -> Self {
        let n = frame.len().min(MAX_FRAME);
        let mut bytes = [0u8; MAX_FRAME];
        bytes[..n].copy_from_slice(&frame[..n]);
        Self {
            len: n as u8,
            bytes,
        }
    }

    /// The frame.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for NeighFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NeighFrame({} bytes)", self.len)
    }
}

/// A worker's side of neighbour handling: its own addresses and its queues.
#[derive(Debug, Clone, Default)]
pub struct WorkerNeigh {
    /// The port's IPv4 address (answered like a VIP; the backends' NAT gateway).
    pub local_v4: Option<Ipv4Addr>,
    /// The port's IPv6 address.
    pub local_v6: Option<Ipv6Addr>,
    /// Bounded queue toward the control thread's [`Neighbours`]; `None`: replies are
    /// counted as [`DropReason::NeighNotForUs`].
    pub to_control: Option<Sender<NeighFrame>>,
    /// Frames the control thread wants sent through this worker's port.
    pub from_control: Option<Receiver<NeighFrame>>,
}

impl WorkerNeigh {
    /// Whether `ip` is answered for: a VIP of `snap` or one of the port's addresses.
    #[inline]
    fn ours(&self, snap: &Snapshot, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) if self.local_v4 == Some(a) => true,
            IpAddr::V6(a) if self.local_v6 == Some(a) => true,
            _ => snap.is_vip_addr(ip),
        }
    }

    #[inline]
    fn queue(&self, frame: &[u8]) -> Result<Verdict, DropReason> {
        let tx = self.to_control.as_ref().ok_or(DropReason::NeighNotForUs)?;
        match tx.try_send(NeighFrame::new(frame)) {
            Ok(()) => Ok(Verdict::Queued),
            Err(TrySendError::Full(_)) => Err(DropReason::NeighQueueFull),
            Err(TrySendError::Disconnected(_)) => Err(DropReason::NeighNotForUs),
        }
    }
}

/// What a worker does with an ARP/NDP frame that is not dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The buffer now holds the answer: transmit it.
    Answered,
    /// A copy went to the control thread: free the buffer.
    Queued,
}

#[inline]
fn rd16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// ARP in the worker: answers requests for our addresses in place, queues replies and
/// gratuitous ARP for the control thread.
///
/// # Errors
/// [`DropReason::Truncated`], [`DropReason::BadNeigh`] (not Ethernet/IPv4 ARP),
/// [`DropReason::NeighNotForUs`], [`DropReason::NeighQueueFull`].
pub fn handle_arp(
    frame: &mut [u8],
    l3: usize,
    snap: &Snapshot,
    port_mac: MacAddr,
    ctx: &WorkerNeigh,
) -> Result<Verdict, DropReason> {
    let a = frame.get(l3..l3 + 28).ok_or(DropReason::Truncated)?;
    if rd16(a, 0) != 1 || rd16(a, 2) != 0x0800 || a[4] != 6 || a[5] != 4 {
        return Err(DropReason::BadNeigh);
    }
    let spa = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
    let tpa = Ipv4Addr::new(a[24], a[25], a[26], a[27]);
    match rd16(a, 6) {
        1 if spa == tpa => ctx.queue(frame), // gratuitous: someone announces itself
        1 if ctx.ours(snap, IpAddr::V4(tpa)) => {
            // RFC 826: swap sender and target, fill in our hardware address, opcode reply.
            let mut sha = [0u8; 6];
            sha.copy_from_slice(&a[8..14]);
            let a = &mut frame[l3..l3 + 28];
            a[7] = 2;
            a[18..24].copy_from_slice(&sha);
            a[24..28].copy_from_slice(&spa.octets());
            a[8..14].copy_from_slice(&port_mac.0);
            a[14..18].copy_from_slice(&tpa.octets());
            frame[0..6].copy_from_slice(&sha);
            frame[6..12].copy_from_slice(&port_mac.0);
            Ok(Verdict::Answered)
        }
        1 => Err(DropReason::NeighNotForUs),
        2 => ctx.queue(frame),
        _ => Err(DropReason::BadNeigh),
    }
}

/// Whether an ICMPv6 type belongs to neighbour discovery (RFC 4861: 133 to 137).
#[inline]
pub fn is_ndp(icmp_type: u8) -> bool {
    (133..=137).contains(&icmp_type)
}

/// The ICMPv6 checksum of `msg` (checksum field included as it is) between `src` and `dst`:
/// 0 when a received message verifies (RFC 4443 section 2.3).
pub fn icmpv6_sum(src: &[u8; 16], dst: &[u8; 16], msg: &[u8]) -> u16 {
    let mut pseudo = [0u8; 40];
    pseudo[..16].copy_from_slice(src);
    pseudo[16..32].copy_from_slice(dst);
    pseudo[32..36].copy_from_slice(&(msg.len() as u32).to_be_bytes());
    pseudo[39] = ICMPV6;
    let s = u32::from(checksum::sum(&pseudo)) + u32::from(checksum::sum(msg));
    let s = (s & 0xffff) + (s >> 16);
    !(((s & 0xffff) + (s >> 16)) as u16)
}

/// NDP in the worker: answers neighbour solicitations for our addresses in place, queues
/// advertisements (and solicitations from hosts probing a VIP address, RFC 4862 DAD) for
/// the control thread.
///
/// # Errors
/// [`DropReason::BadNeigh`] (hop limit not 255, bad checksum, code not 0, too short),
/// [`DropReason::NeighNotForUs`], [`DropReason::NeighQueueFull`].
pub fn handle_ndp(
    frame: &mut [u8],
    ipf: &IpFrame,
    snap: &Snapshot,
    port_mac: MacAddr,
    ctx: &WorkerNeigh,
) -> Result<Verdict, DropReason> {
    let (l3, icmp, end) = (ipf.l3, ipf.l4, ipf.end.min(frame.len()));
    if icmp + 24 > end || frame[l3 + 7] != 255 || frame[icmp + 1] != 0 {
        return Err(DropReason::BadNeigh);
    }
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (ipf.src, ipf.dst) else {
        return Err(DropReason::BadNeigh);
    };
    if icmpv6_sum(&src.octets(), &dst.octets(), &frame[icmp..end]) != 0 {
        return Err(DropReason::BadNeigh);
    }
    let mut t = [0u8; 16];
    t.copy_from_slice(&frame[icmp + 8..icmp + 24]);
    let target = Ipv6Addr::from(t);
    match frame[icmp] {
        NS if !ctx.ours(snap, IpAddr::V6(target)) => Err(DropReason::NeighNotForUs),
        NS if src.is_unspecified() => ctx.queue(frame), // DAD probe for our address
        NS => {
            // RFC 4861 7.2.4: solicited advertisement to the soliciting address, with our
            // link-layer address when there is room (always, for a multicast solicitation:
            // it carried a source link-layer option of the same size).
            let with_opt = end - icmp >= 32;
            let len: u16 = if with_opt { 32 } else { 24 };
            let mut smac = [0u8; 6];
            smac.copy_from_slice(&frame[6..12]);
            frame[0..6].copy_from_slice(&smac);
            frame[6..12].copy_from_slice(&port_mac.0);
            frame[l3..l3 + 4].copy_from_slice(&[0x60, 0, 0, 0]);
            frame[l3 + 4..l3 + 6].copy_from_slice(&len.to_be_bytes());
            frame[l3 + 7] = 255;
            frame[l3 + 8..l3 + 24].copy_from_slice(&target.octets());
            frame[l3 + 24..l3 + 40].copy_from_slice(&src.octets());
            let m = &mut frame[icmp..icmp + usize::from(len)];
            m[0] = NA;
            m[1] = 0;
            m[2..4].copy_from_slice(&[0, 0]);
            m[4..8].copy_from_slice(&[0x60, 0, 0, 0]); // solicited, override
            if with_opt {
                m[24] = 2; // target link-layer address
                m[25] = 1;
                m[26..32].copy_from_slice(&port_mac.0);
            }
            let c = icmpv6_sum(&target.octets(), &src.octets(), m);
            m[2..4].copy_from_slice(&c.to_be_bytes());
            Ok(Verdict::Answered)
        }
        NA => ctx.queue(frame),
        _ => Err(DropReason::NeighNotForUs),
    }
}

// ---------------------------------------------------------------------------------------
// Control side.

/// Settings of the neighbour logic for one port.
#[derive(Debug, Clone)]
pub struct NeighConfig {
    /// The port's MAC (source of every frame sent).
    pub mac: MacAddr,
    /// 802.1Q TCI to tag frames with, when the port's segment is a VLAN.
    pub vlan: Option<u16>,
    /// The port's IPv4 address: the sender address of ARP requests (0.0.0.0 without it, an
    /// RFC 5227 probe, which hosts answer too).
    pub local_v4: Option<Ipv4Addr>,
    /// The port's IPv6 address: needed to resolve IPv6 neighbours (solicitations from `::`
    /// would be duplicate address detection).
    pub local_v6: Option<Ipv6Addr>,
    /// Next hop toward IPv4 clients (NAT replies).
    pub gateway_v4: Option<Ipv4Addr>,
    /// Next hop toward IPv6 clients.
    pub gateway_v6: Option<Ipv6Addr>,
    /// Time between two solicitations (RFC 4861 RETRANS_TIMER).
    pub retrans: Duration,
    /// Solicitations before giving up (RFC 4861 MAX_MULTICAST_SOLICIT).
    pub max_probes: u32,
    /// How long an answer is trusted before it is re-probed (RFC 4861 REACHABLE_TIME).
    pub reachable: Duration,
    /// How long a failed address rests before resolution starts again.
    pub failed_backoff: Duration,
    /// Gratuitous ARP / unsolicited NA sent when a VIP becomes active (RFC 5227
    /// ANNOUNCE_NUM).
    pub announcements: u32,
    /// Time between two announcements (RFC 5227 ANNOUNCE_INTERVAL).
    pub announce_interval: Duration,
}

impl NeighConfig {
    /// Defaults for a port with MAC `mac`.
    pub fn new(mac: MacAddr) -> Self {
        Self {
            mac,
            vlan: None,
            local_v4: None,
            local_v6: None,
            gateway_v4: None,
            gateway_v6: None,
            retrans: Duration::from_secs(1),
            max_probes: 3,
            reachable: Duration::from_secs(30),
            failed_backoff: Duration::from_secs(5),
            announcements: 2,
            announce_interval: Duration::from_secs(2),
        }
    }
}

/// Where resolution of one address stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NeighState {
    /// Soliciting; no MAC yet.
    Incomplete {
        /// Solicitations sent so far.
        sent: u32,
        /// When the next one is due.
        next: Instant,
    },
    /// Answered recently.
    Reachable {
        /// The answer.
        mac: MacAddr,
        /// When to start re-probing.
        until: Instant,
    },
    /// Re-probing with unicast requests; the MAC is still used meanwhile.
    Probe {
        /// The MAC being confirmed.
        mac: MacAddr,
        /// Probes sent so far.
        sent: u32,
        /// When the next one is due.
        next: Instant,
    },
    /// No answer: no MAC until resolution starts again.
    Failed {
        /// When it starts again.
        retry_at: Instant,
    },
}

impl NeighState {
    fn mac(&self) -> Option<MacAddr> {
        match *self {
            Self::Reachable { mac, .. } | Self::Probe { mac, .. } => Some(mac),
            _ => None,
        }
    }

    fn deadline(&self) -> Instant {
        match *self {
            Self::Incomplete { next, .. } | Self::Probe { next, .. } => next,
            Self::Reachable { until, .. } => until,
            Self::Failed { retry_at } => retry_at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tx {
    Solicit {
        target: IpAddr,
        unicast: Option<MacAddr>,
    },
    Announce(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Announcement {
    ip: IpAddr,
    left: u32,
    next: Instant,
}

/// The neighbour cache and its protocol machinery; see the module docs. Owned by the control
/// thread; never touched by workers.
#[derive(Debug)]
pub struct Neighbours {
    cfg: NeighConfig,
    entries: BTreeMap<IpAddr, NeighState>,
    vips: BTreeSet<IpAddr>,
    announce: Vec<Announcement>,
    pending: VecDeque<Tx>,
    generation: u64,
    /// Gratuitous ARP / advertisements from another MAC claiming one of our VIPs.
    pub conflicts: u64,
}

impl Neighbours {
    /// An empty cache.
    pub fn new(cfg: NeighConfig) -> Self {
        Self {
            cfg,
            entries: BTreeMap::new(),
            vips: BTreeSet::new(),
            announce: Vec::new(),
            pending: VecDeque::new(),
            generation: 0,
            conflicts: 0,
        }
    }

    /// Moves whenever a MAC the workers should use appears, changes or is withdrawn: the
    /// control thread then publishes a new snapshot.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The resolution state of `ip`, if it is tracked.
    pub fn state(&self, ip: IpAddr) -> Option<NeighState> {
        self.entries.get(&ip).copied()
    }

    /// The MAC to use for `ip` now, if known.
    pub fn lookup(&self, ip: IpAddr) -> Option<MacAddr> {
        self.entries.get(&ip).and_then(NeighState::mac)
    }

    /// The gateway MACs (IPv4, IPv6), for [`Snapshot::with_gateway_macs`].
    pub fn gateway_macs(&self) -> (Option<MacAddr>, Option<MacAddr>) {
        (
            self.cfg.gateway_v4.and_then(|g| self.lookup(g.into())),
            self.cfg.gateway_v6.and_then(|g| self.lookup(g.into())),
        )
    }

    /// Fills the MAC of every backend that has none (no static entry) with the resolved one.
    /// Call it on a copy of the configured specs: a MAC filled here is not static.
    pub fn fill_macs(&self, specs: &mut [ServiceSpec]) {
        for b in specs.iter_mut().flat_map(|s| s.backends.iter_mut()) {
            if b.mac.is_none() {
                b.mac = self.lookup(b.addr.ip());
            }
        }
    }

    /// Takes the configured services: starts resolving every backend without a static MAC
    /// (and the gateways), forgets addresses no longer needed, and announces every VIP
    /// address that was not active before.
    pub fn handle_services(&mut self, now: Instant, specs: &[ServiceSpec]) {
        let mut want: BTreeSet<IpAddr> = specs
            .iter()
            .flat_map(|s| s.backends.iter())
            .filter(|b| b.mac.is_none())
            .map(|b| b.addr.ip())
            .collect();
        want.extend(self.cfg.gateway_v4.map(IpAddr::V4));
        want.extend(self.cfg.gateway_v6.map(IpAddr::V6));
        let mut withdrawn = false;
        self.entries.retain(|ip, st| {
            let keep = want.contains(ip);
            withdrawn |= !keep && st.mac().is_some();
            keep
        });
        if withdrawn {
            self.generation += 1;
        }
        for ip in want {
            self.entries
                .entry(ip)
                .or_insert(NeighState::Incomplete { sent: 0, next: now });
        }
        let vips: BTreeSet<IpAddr> = specs.iter().map(|s| s.vip.addr.ip()).collect();
        for ip in vips.difference(&self.vips) {
            if self.cfg.announcements > 0 {
                self.announce.push(Announcement {
                    ip: *ip,
                    left: self.cfg.announcements,
                    next: now,
                });
            }
        }
        self.announce.retain(|a| vips.contains(&a.ip));
        self.vips = vips;
        self.handle_timeout(now);
    }

    /// Takes an ARP/NDP frame a worker queued (or any received frame: others are ignored).
    /// Learns only for addresses it tracks (RFC 826's merge rule: no entry is created by an
    /// unsolicited frame).
    pub fn handle_frame(&mut self, now: Instant, frame: &[u8]) {
        let Some((ip, mac)) = sender_of(frame) else {
            return;
        };
        if self.vips.contains(&ip) && mac != self.cfg.mac {
            self.conflicts += 1;
        }
        let reachable = self.cfg.reachable;
        if let Some(st) = self.entries.get_mut(&ip) {
            let old = st.mac();
            *st = NeighState::Reachable {
                mac,
                until: now + reachable,
            };
            if old != Some(mac) {
                self.generation += 1;
            }
        }
    }

    /// Advances timers: sends due solicitations and announcements, expires entries.
    pub fn handle_timeout(&mut self, now: Instant) {
        let cfg = &self.cfg;
        let mut changed = false;
        for (ip, st) in self.entries.iter_mut() {
            // At most two transitions per call (Reachable -> Probe -> first probe sent).
            for _ in 0..2 {
                if st.deadline() > now {
                    break;
                }
                *st = match *st {
                    NeighState::Incomplete { sent, .. } if sent < cfg.max_probes => {
                        self.pending.push_back(Tx::Solicit {
                            target: *ip,
                            unicast: None,
                        });
                        NeighState::Incomplete {
                            sent: sent + 1,
                            next: now + cfg.retrans,
                        }
                    }
                    NeighState::Reachable { mac, .. } => NeighState::Probe {
                        mac,
                        sent: 0,
                        next: now,
                    },
                    NeighState::Probe { mac, sent, .. } if sent < cfg.max_probes => {
                        self.pending.push_back(Tx::Solicit {
                            target: *ip,
                            unicast: Some(mac),
                        });
                        NeighState::Probe {
                            mac,
                            sent: sent + 1,
                            next: now + cfg.retrans,
                        }
                    }
                    NeighState::Incomplete { .. } | NeighState::Probe { .. } => {
                        changed |= st.mac().is_some();
                        NeighState::Failed {
                            retry_at: now + cfg.failed_backoff,
                        }
                    }
                    NeighState::Failed { .. } => NeighState::Incomplete { sent: 0, next: now },
                };
            }
        }
        if changed {
            self.generation += 1;
        }
        for a in &mut self.announce {
            if a.next <= now && a.left > 0 {
                self.pending.push_back(Tx::Announce(a.ip));
                a.left -= 1;
                a.next = now + cfg.announce_interval;
            }
        }
        self.announce.retain(|a| a.left > 0);
    }

    /// When [`Neighbours::handle_timeout`] should be called next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let e = self.entries.values().map(NeighState::deadline);
        let a = self.announce.iter().map(|a| a.next);
        e.chain(a).min()
    }

    /// Writes the next frame to send into `buf` and returns its length; `None` when there is
    /// nothing to send (or `buf` is shorter than [`MAX_FRAME`], which loses that frame).
    #[must_use]
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> Option<usize> {
        while let Some(tx) = self.pending.pop_front() {
            if buf.len() < MAX_FRAME {
                return None;
            }
            let c = &self.cfg;
            let n = match tx {
                Tx::Solicit {
                    target: IpAddr::V4(t),
                    unicast,
                } => arp_frame(
                    buf,
                    c.vlan,
                    unicast.map_or(BROADCAST, |m| m.0),
                    1,
                    c.mac,
                    c.local_v4.unwrap_or(Ipv4Addr::UNSPECIFIED),
                    [0; 6],
                    t,
                ),
                Tx::Solicit {
                    target: IpAddr::V6(t),
                    unicast,
                } => {
                    // Without an address of our own a solicitation would be DAD.
                    let Some(src) = c.local_v6 else { continue };
                    let (dst_ip, dst_mac) = match unicast {
                        Some(m) => (t, m.0),
                        None => {
                            let sn = solicited_node(t);
                            (sn, multicast_mac(sn))
                        }
                    };
                    ndp_frame(buf, c.vlan, c.mac, dst_mac, src, dst_ip, NS, 0, t, 1)
                }
                Tx::Announce(IpAddr::V4(v)) => {
                    // RFC 5227 announcement: a request with sender = target = the address.
                    arp_frame(buf, c.vlan, BROADCAST, 1, c.mac, v, [0; 6], v)
                }
                Tx::Announce(IpAddr::V6(v)) => {
                    let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
                    // Unsolicited: override set, solicited clear (RFC 4861 7.2.6).
                    ndp_frame(
                        buf,
                        c.vlan,
                        c.mac,
                        multicast_mac(all),
                        v,
                        all,
                        NA,
                        0x20,
                        v,
                        2,
                    )
                }
            };
            return Some(n);
        }
        None
    }

    /// One step of a control loop: takes every frame the workers queued, runs due timers,
    /// and hands what is to be sent to a worker (as many as `to_worker` takes). Returns
    /// whether [`Neighbours::generation`] moved (publish a new snapshot).
    pub fn step(
        &mut self,
        now: Instant,
        from_workers: &Receiver<NeighFrame>,
        to_worker: &Sender<NeighFrame>,
    ) -> bool {
        let g = self.generation;
        while let Ok(f) = from_workers.try_recv() {
            self.handle_frame(now, f.bytes());
        }
        self.handle_timeout(now);
        let mut buf = [0u8; MAX_FRAME];
        while let Some(n) = self.poll_transmit(&mut buf) {
            if to_worker.try_send(NeighFrame::new(&buf[..n])).is_err() {
                break;
            }
        }
        self.generation != g
    }
}

/// The sender (address, MAC) of an ARP frame (request or reply) or a neighbour
/// advertisement, if `frame` is one.
pub fn sender_of(frame: &[u8]) -> Option<(IpAddr, MacAddr)> {
    match classify(frame).ok()? {
        Packet::Arp { l3, .. } => {
            let a = frame.get(l3..l3 + 28)?;
            if rd16(a, 0) != 1 || rd16(a, 2) != 0x0800 || a[4] != 6 || a[5] != 4 {
                return None;
            }
            let mut m = [0u8; 6];
            m.copy_from_slice(&a[8..14]);
            let ip = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
            (!ip.is_unspecified()).then_some((IpAddr::V4(ip), MacAddr(m)))
        }
        Packet::Icmp(ipf) if ipf.is_ipv6() => {
            let m = frame.get(ipf.l4..ipf.end)?;
            if m.len() < 24 || m[0] != NA {
                return None;
            }
            let mut t = [0u8; 16];
            t.copy_from_slice(&m[8..24]);
            // The target link-layer option if present, else the Ethernet source.
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&frame[6..12]);
            let mut opts = &m[24..];
            while opts.len() >= 8 && opts[1] != 0 {
                let len = usize::from(opts[1]) * 8;
                if opts[0] == 2 {
                    mac.copy_from_slice(&opts[2..8]);
                }
                opts = opts.get(len..).unwrap_or(&[]);
            }
            Some((IpAddr::V6(Ipv6Addr::from(t)), MacAddr(mac)))
        }
        _ => None,
    }
}

/// The solicited-node multicast address of `a` (RFC 4291 2.7.1).
pub fn solicited_node(a: Ipv6Addr) -> Ipv6Addr {
    let o = a.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

/// The Ethernet address of IPv6 multicast group `a` (RFC 2464 7).
pub fn multicast_mac(a: Ipv6Addr) -> [u8; 6] {
    let o = a.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

fn eth_header(buf: &mut [u8], vlan: Option<u16>, dst: [u8; 6], src: MacAddr, ty: u16) -> usize {
    buf[0..6].copy_from_slice(&dst);
    buf[6..12].copy_from_slice(&src.0);
    match vlan {
        Some(tci) => {
            buf[12..14].copy_from_slice(&vlan::TPID_8021Q.to_be_bytes());
            buf[14..16].copy_from_slice(&tci.to_be_bytes());
            buf[16..18].copy_from_slice(&ty.to_be_bytes());
            18
        }
        None => {
            buf[12..14].copy_from_slice(&ty.to_be_bytes());
            14
        }
    }
}

/// Writes an Ethernet/ARP frame (padded with zeros to the 60-byte Ethernet minimum) into
/// `buf` (at least [`MAX_FRAME`] bytes) and returns its length.
#[allow(clippy::too_many_arguments)]
pub fn arp_frame(
    buf: &mut [u8],
    vlan: Option<u16>,
    eth_dst: [u8; 6],
    op: u16,
    sha: MacAddr,
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> usize {
    let l3 = eth_header(buf, vlan, eth_dst, sha, ETHERTYPE_ARP);
    let a = &mut buf[l3..l3 + 28];
    a[0..8].copy_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 0]);
    a[6..8].copy_from_slice(&op.to_be_bytes());
    a[8..14].copy_from_slice(&sha.0);
    a[14..18].copy_from_slice(&spa.octets());
    a[18..24].copy_from_slice(&tha);
    a[24..28].copy_from_slice(&tpa.octets());
    let end = l3 + 28;
    let n = end.max(60);
    buf[end..n].fill(0);
    n
}

/// Writes an Ethernet/IPv6/ICMPv6 neighbour solicitation or advertisement with one
/// link-layer address option (`opt` 1 = source, 2 = target) into `buf` and returns its
/// length.
#[allow(clippy::too_many_arguments)]
pub fn ndp_frame(
    buf: &mut [u8],
    vlan: Option<u16>,
    src_mac: MacAddr,
    dst_mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    icmp_type: u8,
    flags: u8,
    target: Ipv6Addr,
    opt: u8,
) -> usize {
    let l3 = eth_header(buf, vlan, dst_mac, src_mac, ETHERTYPE_IPV6);
    let ip = &mut buf[l3..l3 + 40];
    ip[0..8].copy_from_slice(&[0x60, 0, 0, 0, 0, 32, ICMPV6, 255]);
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    let m = &mut buf[l3 + 40..l3 + 72];
    m[0..8].copy_from_slice(&[icmp_type, 0, 0, 0, flags, 0, 0, 0]);
    m[8..24].copy_from_slice(&target.octets());
    m[24] = opt;
    m[25] = 1;
    m[26..32].copy_from_slice(&src_mac.0);
    let c = icmpv6_sum(&src.octets(), &dst.octets(), m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    l3 + 72
}
