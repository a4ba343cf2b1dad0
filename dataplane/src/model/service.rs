//! The service table: VIP -> service {scheduler, mode, backends}, as an immutable snapshot.
//!
//! The control thread owns all mutable configuration. Whenever anything changes (config,
//! health, weights) it builds a new [`Snapshot`] and sends an `Arc` of it to every worker,
//! which swaps its pointer between two bursts. A snapshot is never mutated after
//! [`Snapshot::new`], so workers read it without locks, and no cached route can outlive the
//! state it was built from.
//!
//! Identifiers ([`VipId`], [`BackendId`]) are assigned by the control plane and stay stable
//! across snapshots: they index the per-worker counters, so statistics survive a reload.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use rustc_hash::FxHashMap;

use super::addr_table::AddrTable;
pub use super::ids::{BackendId, BadMac, MacAddr, Protocol, VipId, VipKey, MAX_BACKENDS, MAX_VIPS};
use super::mirror::Mirror;
pub use super::mirror::{MirrorSpec, MIRRORS_PER_FRAME};
use super::sched::{Scheduler, SchedulerKind};
pub use super::tunnel::{Encap, Tunnel, DEFAULT_GUE_PORT, DEFAULT_TUNNEL_MTU};

/// How packets reach a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Direct routing: only the destination MAC changes; the backend holds the VIP on a
    /// loopback alias and answers the client directly.
    Dr,
    /// NAT: destination IP and port (and MACs) change; replies come back through Spray, which
    /// gives them the VIP as source.
    Nat,
}

/// Health as decided by the checker (or "up" when no check is configured).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Receives its share of traffic.
    Up,
    /// Receives nothing.
    Down,
}

/// What the operator asked for, independent of health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminState {
    /// In rotation (when healthy and weight > 0).
    Enabled,
    /// No new packets; kept in the table and its counters.
    Drained,
}

/// One real server behind a VIP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Counter index, stable across snapshots; unique per (VIP, backend) entry, so two VIPs
    /// sharing one backend address:port count it separately.
    pub id: BackendId,
    /// Where packets go (in DR mode only the address matters; the port is the VIP's).
    pub addr: SocketAddr,
    /// Link-layer address, when the port owns the wire and it is known.
    pub mac: Option<MacAddr>,
    /// Relative share of packets; 0 means none.
    pub weight: u32,
    /// Checker's verdict.
    pub health: Health,
    /// Operator's choice.
    pub admin: AdminState,
    /// Set when datagrams reach it encapsulated (tunnel mode, a form of direct server
    /// return): `mac` is then the next hop toward `addr`, its router when it is not on the
    /// port's segment.
    pub tunnel: Option<Tunnel>,
}

impl Backend {
    /// A healthy, enabled backend with the given weight.
    pub fn new(id: BackendId, addr: SocketAddr, weight: u32) -> Self {
        Self {
            id,
            addr,
            mac: None,
            weight,
            health: Health::Up,
            admin: AdminState::Enabled,
            tunnel: None,
        }
    }

    /// The weight the scheduler uses: 0 when down or drained.
    pub fn effective_weight(&self) -> u32 {
        match (self.health, self.admin) {
            (Health::Up, AdminState::Enabled) => self.weight,
            _ => 0,
        }
    }
}

/// Everything the control plane says about one VIP.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// Counter index and table slot.
    pub id: VipId,
    /// Operator's name for the service (the config key).
    pub name: String,
    /// What clients send to.
    pub vip: VipKey,
    /// DR or NAT.
    pub mode: Mode,
    /// Which scheduler picks backends.
    pub scheduler: SchedulerKind,
    /// All configured backends, healthy or not, in config order.
    pub backends: Vec<Backend>,
    /// The "sorry server" (keepalived's `sorry_server`): gets every packet while no backend
    /// is in rotation, and nothing otherwise. Its health and admin state are not consulted:
    /// it is the last resort. Its id must not be used by any other backend entry.
    pub fallback: Option<Backend>,
    /// Socket mode: watch the session sockets for ICMP errors from backends (passive
    /// detection, reported to the control plane).
    pub passive: bool,
    /// Further pools that each get a copy of every datagram the primary pool forwards.
    pub mirrors: Vec<MirrorSpec>,
}

impl ServiceSpec {
    /// A service with no fallback and no passive detection; set those fields afterwards.
    /// Code outside this crate should build specs with this, so that a new field does not
    /// break it.
    pub fn new(
        id: VipId,
        name: impl Into<String>,
        vip: VipKey,
        mode: Mode,
        scheduler: SchedulerKind,
        backends: Vec<Backend>,
    ) -> Self {
        Self {
            id,
            name: name.into(),
            vip,
            mode,
            scheduler,
            backends,
            fallback: None,
            passive: false,
            mirrors: Vec::new(),
        }
    }

    /// Every backend entry: the primary pool's, then the mirror pools' (not the fallback).
    pub fn entries(&self) -> impl Iterator<Item = &Backend> {
        self.backends
            .iter()
            .chain(self.mirrors.iter().flat_map(|m| &m.backends))
    }

    /// [`ServiceSpec::entries`], writable.
    pub fn entries_mut(&mut self) -> impl Iterator<Item = &mut Backend> {
        self.backends
            .iter_mut()
            .chain(self.mirrors.iter_mut().flat_map(|m| &mut m.backends))
    }
}

/// A service as workers see it: the spec plus its built scheduler.
#[derive(Debug, Clone)]
pub struct Service {
    /// The control plane's description.
    pub spec: ServiceSpec,
    /// Picks an index into `spec.backends`; only backends with non-zero effective weight
    /// are ever picked.
    pub(crate) sched: Scheduler,
    /// Per backend (same index, then one more for the fallback): whether NAT must record
    /// the flow because another VIP shares the backend's address:port. Precomputed so the
    /// packet path does not look the backend up in the reverse table for every datagram.
    shared: Box<[bool]>,
    /// The mirror pools of `spec.mirrors`, in the same order.
    pub(crate) mirrors: Box<[Mirror]>,
}

impl Service {
    /// Builds the scheduler for `spec`.
    pub fn new(spec: ServiceSpec) -> Self {
        let weights: Vec<u32> = spec
            .backends
            .iter()
            .map(Backend::effective_weight)
            .collect();
        let keys: Vec<SocketAddr> = spec.backends.iter().map(|b| b.addr).collect();
        let sched = Scheduler::build(spec.scheduler, &weights, &keys);
        let shared = vec![false; spec.backends.len() + 1].into();
        let mirrors = spec.mirrors.iter().map(|m| Mirror::new(&spec, m)).collect();
        Self {
            spec,
            sched,
            shared,
            mirrors,
        }
    }

    /// Whether replies from backend `i` need the NAT flow table (its address:port is shared
    /// with another NAT VIP).
    #[inline]
    pub(crate) fn backend_is_shared(&self, i: usize) -> bool {
        self.shared.get(i).copied().unwrap_or(false)
    }

    /// Like [`Service::pick`], also returning the backend's index in `spec.backends`
    /// (`spec.backends.len()` for the fallback).
    #[cfg(test)]
    #[inline]
    pub(crate) fn pick_indexed(
        &self,
        cursor: &mut u32,
        flow_hash: u64,
    ) -> Option<(usize, &Backend)> {
        self.pick_indexed_with(cursor, || flow_hash)
    }

    /// Like [`Service::pick_indexed`], computing the flow hash only for a scheduler that
    /// uses it (see [`Scheduler::pick_with`]).
    #[inline]
    pub(crate) fn pick_indexed_with(
        &self,
        cursor: &mut u32,
        flow_hash: impl FnOnce() -> u64,
    ) -> Option<(usize, &Backend)> {
        match self.sched.pick_with(cursor, flow_hash) {
            Some(i) => Some((i, self.spec.backends.get(i)?)),
            None => Some((self.spec.backends.len(), self.spec.fallback.as_ref()?)),
        }
    }

    /// Picks the backend for the next packet: one in rotation, else the fallback; `None`
    /// when there is neither. `cursor` is the calling worker's own position for this VIP;
    /// `flow_hash` is used only by consistent-hash schedulers. Allocation-free.
    #[inline]
    pub fn pick(&self, cursor: &mut u32, flow_hash: u64) -> Option<&Backend> {
        match self.sched.pick(cursor, flow_hash) {
            Some(i) => self.spec.backends.get(i),
            None => self.spec.fallback.as_ref(),
        }
    }

    /// Whether any backend is in rotation (healthy, enabled, weight above 0); without one,
    /// datagrams go to the fallback or are dropped.
    pub fn has_rotation(&self) -> bool {
        !self.sched.is_empty()
    }

    /// The backends and then the fallback, if any: every address the VIP may send to.
    pub(crate) fn all_backends(&self) -> impl Iterator<Item = &Backend> {
        self.spec.backends.iter().chain(self.spec.fallback.as_ref())
    }
}

/// One step of a VIP's rotation with everything the packet path needs to send a datagram
/// there, in one 16-byte record: the snapshot flattens Service → Scheduler → Backend →
/// `Option<MacAddr>` into these, so the common case costs one VIP-table read and one hop
/// read instead of five dependent loads with a bounds check each (see docs/benchmarks.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hop {
    /// Its MAC address in the low six bytes and its counter index ([`BackendId`]) in the top
    /// two, as one little-endian word: the destination MAC goes into a frame with one 8-byte
    /// store ([`Hop::mac_word`]).
    mac_backend: u64,
    /// The backend's IPv4 address (host order of its big-endian bytes); NAT only.
    pub ip4: u32,
    /// Its port; NAT only.
    pub port: u16,
    /// Whether replies from it need the NAT flow table ([`Service::backend_is_shared`]).
    pub shared: bool,
}

impl Hop {
    /// The hop to backend `backend`, at `mac` (and `ip4`:`port` for NAT).
    pub fn new(mac: MacAddr, backend: BackendId, ip4: u32, port: u16, shared: bool) -> Self {
        let [a, b, c, d, e, f] = mac.0;
        let [g, h] = backend.0.to_le_bytes();
        Self {
            mac_backend: u64::from_le_bytes([a, b, c, d, e, f, g, h]),
            ip4,
            port,
            shared,
        }
    }

    /// Its MAC address.
    #[cfg(test)]
    #[inline]
    pub(crate) fn mac(&self) -> MacAddr {
        let [a, b, c, d, e, f, _, _] = self.mac_backend.to_le_bytes();
        MacAddr([a, b, c, d, e, f])
    }

    /// Its counter index.
    #[inline]
    pub fn backend(&self) -> BackendId {
        BackendId((self.mac_backend >> 48) as u16)
    }

    /// Its MAC address as the first six bytes of `to_le_bytes` (the last two are not part of
    /// it).
    #[inline(always)]
    pub(crate) fn mac_word(&self) -> u64 {
        self.mac_backend
    }
}

/// How the packet path handles datagrams to a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Path {
    /// Through [`Service`]: a hashing scheduler, no backend in rotation (fallback or
    /// drop), a backend without a MAC, or an IPv6 VIP.
    #[default]
    General,
    /// DR over the route's hops.
    Dr,
    /// NAT to IPv4 backends over the route's hops.
    NatV4,
}

/// What the VIP table holds for a VIP: its id, and for rotation schedulers the slice of
/// [`Snapshot`]'s hops that is its rotation (the same order as [`Scheduler::rotation`], so a
/// cursor means the same on both paths).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct VipRoute {
    /// The VIP.
    pub id: VipId,
    /// How its datagrams are handled.
    pub path: Path,
    start: u32,
    len: u32,
}

/// The next hop of a rotation (`hops`, from [`Snapshot::hops`]) for a worker whose position
/// is `cursor`, which it advances exactly as [`Service::pick`] does; `None` when there are no
/// hops.
#[inline(always)]
pub(crate) fn next_hop<'h>(hops: &'h [Hop], cursor: &mut u32) -> Option<&'h Hop> {
    // Reset rather than `%`, as the schedulers do: a cursor from a longer rotation.
    let i = if (*cursor as usize) < hops.len() {
        *cursor
    } else {
        0
    };
    *cursor = i + 1;
    hops.get(i as usize)
}

/// Where a NAT reply from a backend address:port goes back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReverseNat {
    /// Only one VIP uses this backend address:port: replies take its address.
    One(VipId),
    /// Several VIPs share it; the flow table decides, the first one is the fallback.
    Shared(Vec<VipId>),
}

/// Longest rotation flattened into hops. A wrr table may hold up to 65536 entries; as hops
/// (16 bytes each) that would be 1 MiB per VIP and, over [`MAX_VIPS`] such VIPs, 1 GiB per
/// snapshot. Real rotations are the sum of gcd-reduced weights, far below this; a longer one
/// keeps the general path (2 bytes per entry).
pub(crate) const MAX_HOPS_PER_VIP: usize = 4096;

/// `svc`'s route, appending its hops to `hops` when the fast path can serve it.
fn route(id: VipId, svc: &Service, hops: &mut Vec<Hop>) -> VipRoute {
    let general = VipRoute {
        id,
        path: Path::General,
        start: 0,
        len: 0,
    };
    // Copies for mirror pools are made on the general path.
    if !svc.mirrors.is_empty() {
        return general;
    }
    let Some(rotation) = svc.sched.rotation() else {
        return general;
    };
    if rotation.len() > MAX_HOPS_PER_VIP {
        return general;
    }
    let path = match (svc.spec.mode, svc.spec.vip.addr) {
        (Mode::Dr, SocketAddr::V4(_)) => Path::Dr,
        (Mode::Nat, SocketAddr::V4(_)) => Path::NatV4,
        _ => return general,
    };
    let mut mine = Vec::with_capacity(rotation.len());
    for &i in rotation {
        let i = usize::from(i);
        let Some(b) = svc.spec.backends.get(i) else {
            return general;
        };
        // Unresolved MACs, and NAT to another family, keep their drop reasons on the
        // general path; tunnelled backends need their headers grown there.
        let (Some(mac), SocketAddr::V4(a), None) = (b.mac, b.addr, b.tunnel) else {
            return general;
        };
        mine.push(Hop::new(
            mac,
            b.id,
            a.ip().to_bits(),
            a.port(),
            svc.backend_is_shared(i),
        ));
    }
    // Zero hops: no backend in rotation, so the fallback (or a drop) decides.
    if mine.is_empty() {
        return general;
    }
    let start = hops.len() as u32;
    hops.extend_from_slice(&mine);
    VipRoute {
        id,
        path,
        start,
        len: mine.len() as u32,
    }
}

/// Error from [`Snapshot::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// Two services claim the same VIP.
    DuplicateVip(VipKey),
    /// A VIP id is beyond [`MAX_VIPS`].
    TooManyVips(VipId),
    /// A backend id is beyond [`MAX_BACKENDS`].
    TooManyBackends(BackendId),
    /// A tunnelled backend whose outer source is not of its address's family (the outer
    /// header would not fit the room made for it), or a tunnel in a NAT service.
    BadTunnel(BackendId),
    /// A tunnelled backend in a mirror pool, or in a service with mirror pools: both forward
    /// by DR or NAT only.
    TunnelledMirror(BackendId),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateVip(k) => write!(f, "{k} is used by two services"),
            Self::TooManyVips(id) => write!(f, "vip id {} is beyond the limit {MAX_VIPS}", id.0),
            Self::TooManyBackends(id) => {
                write!(f, "backend id {} is beyond the limit {MAX_BACKENDS}", id.0)
            }
            Self::BadTunnel(id) => write!(
                f,
                "backend id {}: a tunnel needs a dr service and an outer source of the \
                 backend's family",
                id.0
            ),
            Self::TunnelledMirror(id) => write!(
                f,
                "backend id {}: a service with mirror pools, and the pools, reach their backends \
                 by dr or nat, not by tunnel",
                id.0
            ),
        }
    }
}

impl std::error::Error for SnapshotError {}

/// The immutable service table every worker reads.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Increases with each snapshot the control plane publishes.
    pub generation: u64,
    services: Vec<Option<Service>>,
    by_vip: AddrTable<VipRoute>,
    /// Every rotation's hops, back to back; [`VipRoute`] says which are whose.
    hops: Box<[Hop]>,
    reverse: AddrTable<u32>,
    reverse_entries: Vec<ReverseNat>,
    /// The addresses of NAT mirror pools' backends (the value is unused): their replies are
    /// dropped and counted, never relayed to a client.
    mirror_sources: AddrTable<u32>,
    /// Length of a worker's cursor array: a slot per VIP id, then two per mirror pool.
    cursor_slots: usize,
    /// Next-hop MACs toward clients (IPv4, IPv6), from neighbour resolution.
    gateway_macs: [Option<MacAddr>; 2],
}

impl Snapshot {
    /// Builds a snapshot from service specs.
    ///
    /// # Errors
    /// When two services share a VIP or an id is out of range.
    pub fn new(generation: u64, specs: Vec<ServiceSpec>) -> Result<Self, SnapshotError> {
        let mut services: Vec<Option<Service>> = Vec::new();
        let mut by_vip: FxHashMap<SocketAddr, VipId> = FxHashMap::default();
        let mut reverse: FxHashMap<SocketAddr, ReverseNat> = FxHashMap::default();
        let mut mirror_sources: Vec<(SocketAddr, u32)> = Vec::new();
        for spec in specs {
            let id = spec.id;
            if usize::from(id.0) >= MAX_VIPS {
                return Err(SnapshotError::TooManyVips(id));
            }
            let mirror_backends = || spec.mirrors.iter().flat_map(|m| &m.backends);
            if let Some(b) = spec
                .backends
                .iter()
                .chain(spec.fallback.as_ref())
                .chain(mirror_backends())
                .find(|b| usize::from(b.id.0) >= MAX_BACKENDS)
            {
                return Err(SnapshotError::TooManyBackends(b.id));
            }
            // Copies are made from the original as it leaves, which a tunnel has wrapped.
            let tunnelled = spec.backends.iter().filter(|_| !spec.mirrors.is_empty());
            if let Some(b) = mirror_backends()
                .chain(tunnelled)
                .find(|b| b.tunnel.is_some())
            {
                return Err(SnapshotError::TunnelledMirror(b.id));
            }
            if spec.mode == Mode::Nat {
                mirror_sources.extend(mirror_backends().map(|b| (b.addr, 0)));
            }
            let bad_tunnel = |b: &&Backend| {
                b.tunnel.is_some_and(|t| {
                    spec.mode == Mode::Nat || t.source.is_ipv4() != b.addr.is_ipv4()
                })
            };
            if let Some(b) = spec.backends.iter().find(bad_tunnel) {
                return Err(SnapshotError::BadTunnel(b.id));
            }
            if by_vip.insert(spec.vip.addr, id).is_some() {
                return Err(SnapshotError::DuplicateVip(spec.vip));
            }
            if spec.mode == Mode::Nat {
                // The fallback's replies must find their way back too.
                for b in spec.backends.iter().chain(spec.fallback.as_ref()) {
                    reverse
                        .entry(b.addr)
                        .and_modify(|r| match r {
                            ReverseNat::One(first) if *first != id => {
                                *r = ReverseNat::Shared(vec![*first, id]);
                            }
                            ReverseNat::Shared(v) if !v.contains(&id) => v.push(id),
                            _ => {}
                        })
                        .or_insert(ReverseNat::One(id));
                }
            }
            let slot = usize::from(id.0);
            if services.len() <= slot {
                services.resize(slot + 1, None);
            }
            services[slot] = Some(Service::new(spec));
        }
        let mut cursor_slots = services.len();
        for svc in services.iter_mut().flatten() {
            for m in svc.mirrors.iter_mut() {
                m.slot = cursor_slots;
                cursor_slots += 2;
            }
            if svc.spec.mode == Mode::Nat {
                svc.shared = svc
                    .all_backends()
                    .map(|b| matches!(reverse.get(&b.addr), Some(ReverseNat::Shared(_))))
                    .collect();
            }
        }
        let mut hops = Vec::new();
        let routes: Vec<(SocketAddr, VipRoute)> = by_vip
            .into_iter()
            .map(|(addr, id)| {
                let svc = services[usize::from(id.0)].as_ref();
                (
                    addr,
                    svc.map_or_else(VipRoute::default, |s| route(id, s, &mut hops)),
                )
            })
            .collect();
        let mut reverse_entries = Vec::with_capacity(reverse.len());
        let reverse_index = AddrTable::build(reverse.into_iter().map(|(addr, r)| {
            reverse_entries.push(r);
            (addr, (reverse_entries.len() - 1) as u32)
        }));
        Ok(Snapshot {
            generation,
            services,
            by_vip: AddrTable::build(routes),
            hops: hops.into(),
            reverse: reverse_index,
            reverse_entries,
            mirror_sources: AddrTable::build(mirror_sources),
            cursor_slots,
            gateway_macs: [None; 2],
        })
    }

    /// The service listening on `key`, if any.
    #[inline]
    pub fn lookup(&self, key: &VipKey) -> Option<(VipId, &Service)> {
        self.lookup_addr(&key.addr)
    }

    /// The UDP service listening on `addr`, if any.
    #[inline]
    pub fn lookup_addr(&self, addr: &SocketAddr) -> Option<(VipId, &Service)> {
        let id = self.by_vip.get(addr)?.id;
        Some((id, self.service(id)?))
    }

    /// The route to the UDP service on IPv4 `ip` (host order of its big-endian bytes) and
    /// `port`, if any: the packet path's first step.
    #[inline]
    pub(crate) fn route_v4(&self, ip: u32, port: u16) -> Option<VipRoute> {
        self.by_vip.get_v4(ip, port)
    }

    /// `route`'s rotation as hops, in the scheduler's order; empty for [`Path::General`].
    #[inline]
    pub(crate) fn hops(&self, route: VipRoute) -> &[Hop] {
        let start = route.start as usize;
        self.hops
            .get(start..start + route.len as usize)
            .unwrap_or(&[])
    }

    /// The service with id `id`, if any.
    #[inline]
    pub fn service(&self, id: VipId) -> Option<&Service> {
        self.services.get(usize::from(id.0))?.as_ref()
    }

    /// Which VIP(s) a reply from backend `from` belongs to (NAT services only).
    #[inline]
    pub(crate) fn reverse(&self, from: &SocketAddr) -> Option<&ReverseNat> {
        let i = self.reverse.get(from)?;
        self.reverse_entries.get(i as usize)
    }

    /// All services, in VIP id order.
    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.iter().flatten()
    }

    /// How many cursors a worker keeps for this snapshot: one per VIP id (its position in
    /// the rotation), then two per mirror pool ([`Mirror::slot`]).
    pub(crate) fn cursor_slots(&self) -> usize {
        self.cursor_slots
    }

    /// Whether `from` is a backend of a NAT service's mirror pool (and of no NAT service's
    /// primary pool, whose replies [`Snapshot::reverse`] finds first).
    #[inline]
    pub(crate) fn is_mirror_source(&self, from: &SocketAddr) -> bool {
        self.mirror_sources.get(from).is_some()
    }

    /// The snapshot with resolved next-hop MACs toward IPv4 and IPv6 clients (NAT replies);
    /// see [`crate::neigh`].
    pub fn with_gateway_macs(mut self, v4: Option<MacAddr>, v6: Option<MacAddr>) -> Self {
        self.gateway_macs = [v4, v6];
        self
    }

    /// The resolved next-hop MAC toward clients of the given family, if any.
    #[inline]
    pub fn gateway_mac(&self, ipv6: bool) -> Option<MacAddr> {
        self.gateway_macs[usize::from(ipv6)]
    }

    /// Whether `ip` is the address of any VIP.
    pub(crate) fn is_vip_addr(&self, ip: IpAddr) -> bool {
        self.services().any(|s| s.spec.vip.addr.ip() == ip)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: u16, vip: &str, mode: Mode, sched: SchedulerKind, weights: &[u32]) -> ServiceSpec {
        let backends = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let addr = SocketAddr::from(([198, 19, 1, i as u8 + 1], 514));
                let mut b = Backend::new(BackendId(id * 8 + i as u16), addr, w);
                b.mac = Some(MacAddr([2, 0, 0, 0, 1, i as u8 + 1]));
                b
            })
            .collect();
        ServiceSpec::new(
            VipId(id),
            format!("s{id}"),
            VipKey::udp(vip.parse().unwrap()),
            mode,
            sched,
            backends,
        )
    }

    fn route_of(snap: &Snapshot, vip: &str) -> VipRoute {
        let SocketAddr::V4(a) = vip.parse().unwrap() else {
            unreachable!()
        };
        snap.route_v4(a.ip().to_bits(), a.port()).unwrap()
    }

    /// Which VIPs the fast path serves from hops, and that their hops deal exactly the
    /// scheduler's sequence from the same cursor.
    #[test]
    fn routes_flatten_short_rotations_only() {
        let mut no_mac = spec(3, "198.18.0.13:514", Mode::Dr, SchedulerKind::Rr, &[1, 1]);
        no_mac.backends[1].mac = None;
        let snap = Snapshot::new(
            1,
            vec![
                spec(
                    0,
                    "198.18.0.10:514",
                    Mode::Dr,
                    SchedulerKind::Wrr,
                    &[3, 1, 2],
                ),
                spec(
                    1,
                    "198.18.0.11:514",
                    Mode::Nat,
                    SchedulerKind::Maglev,
                    &[1, 1],
                ),
                // 5000 + 4999: a rotation of 9999 entries, beyond MAX_HOPS_PER_VIP.
                spec(
                    2,
                    "198.18.0.12:514",
                    Mode::Nat,
                    SchedulerKind::Wrr,
                    &[5000, 4999],
                ),
                no_mac,
                spec(4, "198.18.0.14:514", Mode::Nat, SchedulerKind::Rr, &[0, 0]),
            ],
        )
        .unwrap();
        let r = route_of(&snap, "198.18.0.10:514");
        assert_eq!(r.path, Path::Dr);
        let svc = snap.service(VipId(0)).unwrap();
        let (mut a, mut b) = (0, 0);
        for _ in 0..20 {
            let hop = next_hop(snap.hops(r), &mut a).unwrap();
            let (_, backend) = svc.pick_indexed(&mut b, 0).unwrap();
            assert_eq!((hop.backend(), Some(hop.mac())), (backend.id, backend.mac));
            assert_eq!(a, b);
        }
        for vip in [
            "198.18.0.11:514",
            "198.18.0.12:514",
            "198.18.0.13:514",
            "198.18.0.14:514",
        ] {
            assert_eq!(route_of(&snap, vip).path, Path::General, "{vip}");
        }
    }
}
