//! Neighbour resolution (ARP, IPv6 neighbour discovery) in the controller, for dataplanes
//! that own the wire.
//!
//! [`dataplane::neigh::Neighbours`] is the sans-I/O protocol logic, one per port; this
//! module makes it part of [`State`], so that every snapshot the controller builds — after
//! a health verdict, an operator's change, a reload or a resolution — carries the MACs
//! known at that moment:
//!
//! * backends without a static `mac` (and fallbacks) get the resolved one
//!   ([`Neighbours::fill_macs`]); the first port that knows an address wins;
//! * the snapshot's gateway MACs ([`Snapshot::with_gateway_macs`]) are the port's static
//!   `gateway_mac` when it has one, else the resolved gateway of each family.
//!
//! The table decides what is resolved: after every change [`Neighbours::handle_services`]
//! gets the enabled services, so new backends are solicited at once, removed ones are
//! forgotten, and a VIP that becomes active (new, or enabled again) is announced with
//! gratuitous ARP / an unsolicited neighbour advertisement. The I/O — frames from the
//! workers' bounded queues in, frames to one worker per port out, and the timers — is the
//! control thread's ([`super::Controller`]), through [`State::handle_neigh_frame`],
//! [`State::handle_neigh_timeout`], [`State::poll_neigh_transmit`] and
//! [`State::poll_neigh_snapshot`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use dataplane::neigh::{NeighConfig, NeighFrame, Neighbours};
use dataplane::service::{Health, MacAddr, ServiceSpec, Snapshot};

use super::{State, StateError};

/// Capacity of each port's queue of ARP/NDP frames toward the controller; beyond it
/// workers count `neigh_queue_full`.
pub const NEIGH_TO_CONTROL: usize = 1024;
/// Capacity of each port's queue of frames the controller wants sent.
pub const NEIGH_TO_WORKER: usize = 256;

/// The neighbour logic of one port, as the controller keeps it.
#[derive(Debug)]
pub struct PortNeighbours {
    device: String,
    neigh: Neighbours,
    gateway_mac: Option<MacAddr>,
    /// The gateways it resolves.
    gateways: Vec<IpAddr>,
    /// The MAC last published for each tracked address, to log what changes.
    known: BTreeMap<IpAddr, MacAddr>,
}

impl PortNeighbours {
    /// The logic for port `device` with `cfg`; `gateway_mac` is the static next hop that
    /// overrides resolved gateways.
    pub fn new(device: impl Into<String>, cfg: NeighConfig, gateway_mac: Option<MacAddr>) -> Self {
        let gateways = cfg
            .gateway_v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(cfg.gateway_v6.map(IpAddr::V6))
            .collect();
        Self {
            device: device.into(),
            gateways,
            neigh: Neighbours::new(cfg),
            gateway_mac,
            known: BTreeMap::new(),
        }
    }

    /// The protocol state (for tests and diagnostics).
    pub fn neighbours(&self) -> &Neighbours {
        &self.neigh
    }
}

/// The controller's ends of one port's neighbour queues.
#[derive(Debug)]
pub struct NeighLink {
    /// ARP/NDP frames the port's workers queued (`WorkerNeigh::to_control`'s other end).
    pub from_workers: Receiver<NeighFrame>,
    /// Frames to send, taken by one worker of the port (`WorkerNeigh::from_control`).
    pub to_worker: Sender<NeighFrame>,
}

/// The specs whose addresses need resolving: every enabled backend and fallback (the
/// latter as one more backend, so that [`Neighbours::handle_services`] tracks it).
fn wanted(mut specs: Vec<ServiceSpec>) -> Vec<ServiceSpec> {
    for s in &mut specs {
        if let Some(f) = s.fallback.take() {
            s.backends.push(f);
        }
    }
    specs
}

impl State {
    /// Makes the controller resolve neighbours on `ports` (in port order) from `now` on,
    /// and rebuilds the snapshot with what is static (gateway MACs).
    ///
    /// # Errors
    /// When the dataplane refuses the table (a Spray bug).
    pub fn set_neighbours(
        &mut self,
        ports: Vec<PortNeighbours>,
        now: Instant,
    ) -> Result<(), StateError> {
        self.neigh = ports;
        self.sync_neighbours(now);
        self.rebuild()?;
        Ok(())
    }

    /// The ports' neighbour logic.
    pub fn neighbours(&self) -> &[PortNeighbours] {
        &self.neigh
    }

    /// Tells each port's logic what the table now needs (see the module doc).
    pub(super) fn sync_neighbours(&mut self, now: Instant) {
        if self.neigh.is_empty() {
            return;
        }
        let specs = wanted(self.table.specs(|_| Health::Up));
        for p in &mut self.neigh {
            p.neigh.handle_services(now, &specs);
        }
    }

    /// Sum of the ports' generations: moves whenever a MAC to use changes.
    pub(super) fn neigh_generation(&self) -> u64 {
        self.neigh.iter().map(|p| p.neigh.generation()).sum()
    }

    /// Puts the known MACs into `specs` and returns the gateway MACs (IPv4, IPv6).
    pub(super) fn fill_neighbours(
        &self,
        specs: &mut [ServiceSpec],
    ) -> (Option<MacAddr>, Option<MacAddr>) {
        let (mut g4, mut g6) = (None, None);
        for p in &self.neigh {
            p.neigh.fill_macs(specs);
            // Behind a static gateway_mac nothing is resolved: routed backends take it.
            if let Some(g) = p.gateway_mac {
                let routed = specs
                    .iter_mut()
                    .flat_map(ServiceSpec::entries_mut)
                    .filter(|b| b.mac.is_none() && !p.neigh.on_link(b.addr.ip()));
                for b in routed {
                    b.mac = Some(g);
                }
            }
            for f in specs.iter_mut().filter_map(|s| s.fallback.as_mut()) {
                if f.mac.is_none() {
                    f.mac = p.neigh.lookup(f.addr.ip());
                }
            }
            let (r4, r6) = p.neigh.gateway_macs();
            g4 = g4.or(p.gateway_mac).or(r4);
            g6 = g6.or(p.gateway_mac).or(r6);
        }
        (g4, g6)
    }

    /// Takes an ARP/NDP frame that port `port`'s workers queued at `now`.
    pub fn handle_neigh_frame(&mut self, port: usize, now: Instant, frame: &[u8]) {
        if let Some(p) = self.neigh.get_mut(port) {
            p.neigh.handle_frame(now, frame);
        }
    }

    /// Runs the ports' timers: solicitations, re-probes, expiry, announcements.
    pub fn handle_neigh_timeout(&mut self, now: Instant) {
        for p in &mut self.neigh {
            p.neigh.handle_timeout(now);
        }
    }

    /// When [`State::handle_neigh_timeout`] is due next.
    pub fn poll_neigh_timeout(&self) -> Option<Instant> {
        self.neigh
            .iter()
            .filter_map(|p| p.neigh.poll_timeout())
            .min()
    }

    /// Writes the next frame port `port` must send into `buf` (at least
    /// [`dataplane::neigh::MAX_FRAME`] bytes) and returns its length.
    #[must_use]
    pub fn poll_neigh_transmit(&mut self, port: usize, buf: &mut [u8]) -> Option<usize> {
        self.neigh.get_mut(port)?.neigh.poll_transmit(buf)
    }

    /// The snapshot to publish when a MAC appeared, changed or was withdrawn since the last
    /// one was built; logs each change.
    ///
    /// # Errors
    /// When the dataplane refuses the table (a Spray bug).
    pub fn poll_neigh_snapshot(&mut self) -> Result<Option<Arc<Snapshot>>, StateError> {
        if self.neigh_generation() == self.neigh_seen {
            return Ok(None);
        }
        self.log_neighbours();
        self.rebuild().map(Some)
    }

    fn log_neighbours(&mut self) {
        let specs = wanted(self.table.specs(|_| Health::Up));
        for p in &mut self.neigh {
            let mut ips: BTreeSet<IpAddr> = specs
                .iter()
                .flat_map(ServiceSpec::entries)
                .filter(|b| b.mac.is_none())
                .map(|b| b.addr.ip())
                .collect();
            ips.extend(p.gateways.iter().copied());
            let now: BTreeMap<IpAddr, MacAddr> = ips
                .iter()
                .filter_map(|ip| Some((*ip, p.neigh.lookup(*ip)?)))
                .collect();
            for (ip, m) in &now {
                if p.known.get(ip) != Some(m) {
                    tracing::info!(device = %p.device, neighbour = %ip, mac = %m,
                        "neighbour resolved");
                }
            }
            for ip in p
                .known
                .keys()
                .filter(|ip| ips.contains(ip) && !now.contains_key(ip))
            {
                tracing::warn!(device = %p.device, neighbour = %ip,
                    "neighbour stopped answering: no MAC for it until it answers again");
            }
            p.known = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use dataplane::neigh::{arp_frame, sender_of, MAX_FRAME};
    use dataplane::service::BackendId;

    use super::*;
    use crate::api::{BackendRef, Change, Who};
    use crate::config::{Config, Machine};
    use crate::health::checker::Outcome;
    use crate::health::ProbeError;

    const SPRAY: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x10]);
    const SRC: &str = r#"
[services.a]
vip = "198.18.0.10:514"
fallback = "198.19.1.9:514"
backends = [
  { addr = "198.19.1.1:514" },
  { addr = "198.19.1.2:514", mac = "02:00:00:00:01:02" },
]
[services.a.check]
type = "udp"
interval_ms = 100
fall = 1
"#;

    fn mac(i: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 1, i])
    }

    fn state(now: Instant) -> State {
        let c = Config::parse("t.toml", SRC, &Machine { cores: vec![0] }).unwrap();
        let mut s = State::new(c, 1, now).unwrap();
        let mut cfg = NeighConfig::new(SPRAY);
        cfg.local_v4 = Some(Ipv4Addr::new(198, 18, 0, 2));
        cfg.gateway_v4 = Some(Ipv4Addr::new(198, 18, 0, 1));
        s.set_neighbours(vec![PortNeighbours::new("p0", cfg, None)], now)
            .unwrap();
        s
    }

    /// Every frame port 0 wants sent, as (sender, target) of ARP.
    fn sent(s: &mut State) -> Vec<(Ipv4Addr, Ipv4Addr)> {
        let mut buf = [0u8; MAX_FRAME];
        let mut out = Vec::new();
        while let Some(n) = s.poll_neigh_transmit(0, &mut buf) {
            let a = &buf[14..n];
            out.push((
                Ipv4Addr::new(a[14], a[15], a[16], a[17]),
                Ipv4Addr::new(a[24], a[25], a[26], a[27]),
            ));
        }
        out
    }

    fn reply(s: &mut State, now: Instant, from: &str, m: MacAddr) {
        let mut buf = [0u8; MAX_FRAME];
        let ip: Ipv4Addr = from.parse().unwrap();
        let n = arp_frame(
            &mut buf,
            None,
            SPRAY.0,
            2,
            m,
            ip,
            SPRAY.0,
            Ipv4Addr::new(198, 18, 0, 2),
        );
        assert_eq!(sender_of(&buf[..n]), Some((IpAddr::V4(ip), m)));
        s.handle_neigh_frame(0, now, &buf[..n]);
    }

    fn macs(snap: &Snapshot) -> Vec<Option<MacAddr>> {
        let a = snap.services().next().unwrap();
        a.spec
            .backends
            .iter()
            .chain(a.spec.fallback.as_ref())
            .map(|b| b.mac)
            .collect()
    }

    #[test]
    fn resolved_macs_reach_every_snapshot_and_static_ones_stay() {
        let t0 = Instant::now();
        let mut s = state(t0);
        // Requests for what has no static MAC (backend 1, the fallback, the gateway), from
        // the port's address, and the VIP's gratuitous ARP.
        let mut out = sent(&mut s);
        out.sort();
        let me = Ipv4Addr::new(198, 18, 0, 2);
        let vip = Ipv4Addr::new(198, 18, 0, 10);
        assert_eq!(
            out,
            [
                (me, Ipv4Addr::new(198, 18, 0, 1)),
                (me, Ipv4Addr::new(198, 19, 1, 1)),
                (me, Ipv4Addr::new(198, 19, 1, 9)),
                (vip, vip),
            ]
        );
        assert_eq!(macs(s.snapshot()), [None, Some(mac(2)), None]);
        assert!(
            s.poll_neigh_snapshot().unwrap().is_none(),
            "nothing learnt yet"
        );
        let t1 = t0 + Duration::from_millis(5);
        reply(&mut s, t1, "198.19.1.1", mac(1));
        reply(&mut s, t1, "198.19.1.9", mac(9));
        reply(&mut s, t1, "198.18.0.1", mac(0xfe));
        // Someone claiming the statically configured backend changes nothing.
        reply(&mut s, t1, "198.19.1.2", mac(0x66));
        let snap = s.poll_neigh_snapshot().unwrap().expect("macs learnt");
        assert_eq!(macs(&snap), [Some(mac(1)), Some(mac(2)), Some(mac(9))]);
        assert_eq!(snap.gateway_mac(false), Some(mac(0xfe)));
        assert!(s.poll_neigh_snapshot().unwrap().is_none(), "published once");
        // A health verdict's snapshot carries them...
        let jobs = s.poll_due(t1 + Duration::from_millis(200));
        let j = jobs
            .iter()
            .find(|j| j.target.addr.port() == 514 && j.target.addr.ip() == backend_ip(1))
            .unwrap();
        let down = s
            .handle_outcome(
                &Outcome {
                    index: j.index,
                    started: t1,
                    finished: t1,
                    result: Err(ProbeError("refused".into())),
                },
                t1,
            )
            .unwrap()
            .expect("down after one failure");
        assert_eq!(
            down.services().next().unwrap().spec.backends[0].health,
            Health::Down
        );
        assert_eq!(macs(&down), [Some(mac(1)), Some(mac(2)), Some(mac(9))]);
        assert_eq!(down.gateway_mac(false), Some(mac(0xfe)));
        // ...and so does an operator's.
        let (_, snap) = s
            .apply(
                &Change::Drain(BackendRef {
                    service: "a".into(),
                    backend: "198.19.1.2:514".parse().unwrap(),
                }),
                &Who::local("test"),
                t1,
            )
            .unwrap();
        let snap = snap.unwrap();
        assert_eq!(macs(&snap), [Some(mac(1)), Some(mac(2)), Some(mac(9))]);
        assert_eq!(
            snap.services().next().unwrap().spec.backends[0].id,
            BackendId(0)
        );
        // A backend that stops answering loses its MAC after the probes (and a snapshot
        // says so); reachable 30 s, then 3 unicast probes 1 s apart.
        let mut t = t1;
        for _ in 0..40 {
            t += Duration::from_secs(1);
            s.handle_neigh_timeout(t);
            let _ = sent(&mut s);
            reply(&mut s, t, "198.19.1.9", mac(9));
            reply(&mut s, t, "198.18.0.1", mac(0xfe));
        }
        let snap = s.poll_neigh_snapshot().unwrap().expect("withdrawn");
        assert_eq!(macs(&snap), [None, Some(mac(2)), Some(mac(9))]);
    }

    fn backend_ip(i: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(198, 19, 1, i))
    }

    #[test]
    fn a_static_gateway_mac_overrides_and_new_vips_are_announced() {
        let t0 = Instant::now();
        let c = Config::parse("t.toml", SRC, &Machine { cores: vec![0] }).unwrap();
        let mut s = State::new(c, 1, t0).unwrap();
        let mut cfg = NeighConfig::new(SPRAY);
        cfg.gateway_v4 = Some(Ipv4Addr::new(198, 18, 0, 1));
        s.set_neighbours(vec![PortNeighbours::new("p0", cfg, Some(mac(0xaa)))], t0)
            .unwrap();
        assert_eq!(s.snapshot().gateway_mac(false), Some(mac(0xaa)));
        assert_eq!(s.snapshot().gateway_mac(true), Some(mac(0xaa)));
        let _ = sent(&mut s);
        reply(&mut s, t0, "198.18.0.1", mac(0xfe));
        if let Some(snap) = s.poll_neigh_snapshot().unwrap() {
            assert_eq!(snap.gateway_mac(false), Some(mac(0xaa)), "static wins");
        }
        let add = Change::AddVip(crate::api::NewService {
            name: "b".into(),
            vip: "198.18.0.11:514".parse().unwrap(),
            scheduler: dataplane::sched::SchedulerKind::Rr,
            mode: crate::config::file::Method::Nat,
            backends: vec![],
        });
        s.apply(&add, &Who::local("test"), t0).unwrap();
        let vip = Ipv4Addr::new(198, 18, 0, 11);
        assert!(
            sent(&mut s).contains(&(vip, vip)),
            "gratuitous ARP for the new vip"
        );
    }
}
