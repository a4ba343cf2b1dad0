//! The control thread's half of neighbour handling, sans-I/O: the neighbour cache, its
//! timers (resolution, re-probing, expiry) and the announcements of active VIPs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

#[cfg(doc)]
use crate::model::Snapshot;
use crate::model::{MacAddr, ServiceSpec};

use super::frames::{arp_frame, multicast_mac, ndp_frame, sender_of, solicited_node};
use super::{NeighFrame, BROADCAST, MAX_FRAME, NA, NS};

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
    /// Prefix length of the port's IPv4 network: backends outside it are reached through
    /// the IPv4 gateway. `None`: every IPv4 address is on the link.
    pub prefix_v4: Option<u8>,
    /// Prefix length of the port's IPv6 network, likewise.
    pub prefix_v6: Option<u8>,
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
            prefix_v4: None,
            prefix_v6: None,
            retrans: Duration::from_secs(1),
            max_probes: 3,
            reachable: Duration::from_secs(30),
            failed_backoff: Duration::from_secs(5),
            announcements: 2,
            announce_interval: Duration::from_secs(2),
        }
    }
}

/// Whether the first `len` bits of `a` and `b` are the same.
fn same_prefix(a: &[u8], b: &[u8], len: u8) -> bool {
    let len = usize::from(len).min(a.len() * 8);
    let (bytes, bits) = (len / 8, len % 8);
    a[..bytes] == b[..bytes] && (bits == 0 || (a[bytes] ^ b[bytes]) >> (8 - bits) == 0)
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

    /// Whether `ip` is on the port's link: inside its network, or anywhere when the port's
    /// address of that family has no prefix length.
    pub fn on_link(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => match (self.cfg.local_v4, self.cfg.prefix_v4) {
                (Some(l), Some(p)) => same_prefix(&a.octets(), &l.octets(), p),
                _ => true,
            },
            IpAddr::V6(a) => match (self.cfg.local_v6, self.cfg.prefix_v6) {
                (Some(l), Some(p)) => same_prefix(&a.octets(), &l.octets(), p),
                _ => true,
            },
        }
    }

    /// The address whose MAC frames to `ip` carry: `ip` itself on the link, else the
    /// gateway of its family (`ip` itself when there is none, which then goes unresolved).
    pub fn next_hop(&self, ip: IpAddr) -> IpAddr {
        if self.on_link(ip) {
            return ip;
        }
        match ip {
            IpAddr::V4(_) => self.cfg.gateway_v4.map_or(ip, IpAddr::V4),
            IpAddr::V6(_) => self.cfg.gateway_v6.map_or(ip, IpAddr::V6),
        }
    }

    /// Fills the MAC of every backend that has none (no static entry) with the resolved one
    /// of its next hop. Call it on a copy of the configured specs: a MAC filled here is not
    /// static.
    pub fn fill_macs(&self, specs: &mut [ServiceSpec]) {
        for b in specs.iter_mut().flat_map(ServiceSpec::entries_mut) {
            if b.mac.is_none() {
                b.mac = self.lookup(self.next_hop(b.addr.ip()));
            }
        }
    }

    /// Takes the configured services: starts resolving every backend without a static MAC
    /// (and the gateways), forgets addresses no longer needed, and announces every VIP
    /// address that was not active before.
    pub fn handle_services(&mut self, now: Instant, specs: &[ServiceSpec]) {
        let mut want: BTreeSet<IpAddr> = specs
            .iter()
            .flat_map(ServiceSpec::entries)
            .filter(|b| b.mac.is_none())
            .map(|b| self.next_hop(b.addr.ip()))
            .filter(|ip| self.on_link(*ip))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backend, BackendId, Mode, VipId, VipKey};
    use crate::sched::SchedulerKind;

    const PORT: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const GW: MacAddr = MacAddr([2, 0, 0, 0, 0, 0xfe]);
    const NEAR: MacAddr = MacAddr([2, 0, 0, 0, 0, 7]);

    fn specs(addrs: &[&str]) -> Vec<ServiceSpec> {
        let backends = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| Backend::new(BackendId(i as u16), a.parse().unwrap(), 1))
            .collect();
        vec![ServiceSpec::new(
            VipId(0),
            "s",
            VipKey::udp("198.18.0.10:514".parse().unwrap()),
            Mode::Dr,
            SchedulerKind::Rr,
            backends,
        )]
    }

    fn answer(n: &mut Neighbours, now: Instant, mac: MacAddr, ip: &str) {
        let mut buf = [0u8; MAX_FRAME];
        let len = arp_frame(
            &mut buf,
            None,
            PORT.0,
            2,
            mac,
            ip.parse().unwrap(),
            PORT.0,
            "198.18.0.2".parse().unwrap(),
        );
        n.handle_frame(now, &buf[..len]);
    }

    #[test]
    fn prefixes_compare_whole_bytes_and_the_bits_left() {
        assert!(same_prefix(&[198, 18, 0, 7], &[198, 18, 0, 2], 24));
        assert!(!same_prefix(&[198, 19, 0, 7], &[198, 18, 0, 2], 24));
        assert!(same_prefix(&[198, 19, 0, 7], &[198, 18, 0, 2], 15));
        assert!(!same_prefix(&[198, 19, 0, 7], &[198, 18, 0, 2], 16));
        assert!(same_prefix(&[1, 2, 3, 4], &[9, 9, 9, 9], 0));
        assert!(!same_prefix(&[1, 2, 3, 4], &[1, 2, 3, 5], 32));
    }

    /// A backend behind the router gets the router's MAC and is never solicited itself.
    #[test]
    fn a_backend_outside_the_ports_network_is_reached_through_the_gateway() {
        let mut cfg = NeighConfig::new(PORT);
        cfg.local_v4 = Some("198.18.0.2".parse().unwrap());
        cfg.prefix_v4 = Some(24);
        cfg.gateway_v4 = Some("198.18.0.254".parse().unwrap());
        let mut n = Neighbours::new(cfg);
        let now = Instant::now();
        let specs = specs(&["198.19.2.1:514", "198.18.0.7:514"]);
        n.handle_services(now, &specs);
        let tracked: Vec<IpAddr> = n.entries.keys().copied().collect();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(tracked, [ip("198.18.0.7"), ip("198.18.0.254")]);

        answer(&mut n, now, GW, "198.18.0.254");
        answer(&mut n, now, NEAR, "198.18.0.7");
        let mut filled = specs.clone();
        n.fill_macs(&mut filled);
        let macs: Vec<Option<MacAddr>> = filled[0].backends.iter().map(|b| b.mac).collect();
        assert_eq!(macs, [Some(GW), Some(NEAR)]);

        // Without a prefix length every address is on the link, as before.
        let mut cfg = NeighConfig::new(PORT);
        cfg.local_v4 = Some("198.18.0.2".parse().unwrap());
        cfg.gateway_v4 = Some("198.18.0.254".parse().unwrap());
        let n = Neighbours::new(cfg);
        assert_eq!(n.next_hop(ip("198.19.2.1")), ip("198.19.2.1"));
    }
}
