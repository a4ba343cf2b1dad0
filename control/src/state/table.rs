//! The table behind every snapshot: services by name with their backends, weights, the
//! operator's marks, fallbacks, passive detection and the check of each backend, as the
//! config file and the control socket ([`Change`]) make it. Sans I/O: [`super::State`]
//! owns it, adds health and turns it into snapshots; only id allocation reads the workers'
//! counters (to set baselines, below).
//!
//! Every change is made on a copy ([`Table::change`], [`Table::reload`]); the caller
//! commits the copy only when the dataplane has accepted the snapshot built from it, so a
//! refused change leaves everything as it was.
//!
//! # Ids and counters
//!
//! [`VipId`]s and [`BackendId`]s index the workers' counter arrays, which only the workers
//! write. Services keep their id as long as their name stays; backends as long as their
//! address stays within their service (a fallback as long as its address stays), across
//! changes and reloads. New objects take the next free id after the last one handed out
//! (wrapping), so a straggling packet a worker counted for a just-removed backend does not
//! land on a new one; when an id is reused, the counters read at that moment become its
//! baseline and are subtracted from what is shown.
//!
//! # Checks of backends added at run time
//!
//! A backend added with `add_backend` inherits its service's check: the check of the
//! service's first backend (in file order) that has one, as the file was last loaded. A
//! check without an explicit `port` probes the new backend's own port; one with a `port`
//! keeps it. The inherited check stays when the backend it came from is removed; services
//! added with `add_vip` and services whose backends have no check give new backends none.
//!
//! # Reload
//!
//! The table becomes the file's: services and backends that are not in it go, new ones
//! come; weights, schedulers, modes, fallbacks, passive detection and checks follow the
//! file. Drain and disable marks stay on the services and backends that remain (a reload
//! does not bring back a box taken out for maintenance), unless the file's own `drain` of
//! that backend changed since the last load: then the file's value wins. Keys that only take
//! effect at start (`[runtime]`, `[socket]`, `[dpdk]`, `[control]`, `[metrics]`) are reported in
//! [`Reloaded::restart_needed`] as long as they differ from the config the process started
//! with, not from the file last read: a second reload of the same change still warns.
//!
//! [`Reloaded::restart_needed`]: crate::api::Reloaded::restart_needed

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use dataplane::counters::SharedCounters;
use dataplane::sched::SchedulerKind;
use dataplane::service::{
    AdminState, Backend, BackendId, Health, MacAddr, MirrorSpec, ServiceSpec, Tunnel, VipId,
    VipKey, MAX_BACKENDS, MAX_VIPS,
};

use crate::api::{Admin, ApiError, BackendRef, Change, ErrorCode, NewBackend};
use crate::config::file::Method;
use crate::config::{loops, Config, DataplaneKind, Forwarding, TunnelSettings};
use crate::health::Check;

/// A backend entry of a service.
#[derive(Debug, Clone)]
pub(super) struct Be {
    pub id: BackendId,
    pub addr: SocketAddr,
    pub mac: Option<MacAddr>,
    /// Set when it is reached through the service's tunnel.
    pub tunnel: Option<Tunnel>,
    pub weight: u32,
    pub admin: Admin,
}

/// A service.
#[derive(Debug, Clone)]
pub(super) struct Svc {
    pub id: VipId,
    pub vip: SocketAddr,
    pub scheduler: SchedulerKind,
    /// Its method and tunnel, which backends added at run time take.
    pub forwarding: Forwarding,
    pub admin: Admin,
    pub backends: Vec<Be>,
    /// The sorry server, with its own id.
    pub fallback: Option<Backend>,
    pub passive: bool,
    /// What a backend added at run time inherits (see the module doc).
    pub check: Option<Check>,
    /// Pools that each get a copy of every datagram, in file order.
    pub mirrors: Vec<Pool>,
}

/// A mirror pool of a service. Its backends keep their ids as long as their address stays
/// within the pool (by name), across reloads.
#[derive(Debug, Clone)]
pub(super) struct Pool {
    pub name: String,
    pub scheduler: SchedulerKind,
    /// One datagram in `sample` is copied.
    pub sample: u32,
    pub backends: Vec<Be>,
}

impl Svc {
    /// Every backend entry: the service's, then its mirror pools'.
    pub fn entries(&self) -> impl Iterator<Item = &Be> {
        self.backends
            .iter()
            .chain(self.mirrors.iter().flat_map(|p| &p.backends))
    }
}

fn be_of(b: &Backend) -> Be {
    Be {
        id: b.id,
        addr: b.addr,
        mac: b.mac,
        tunnel: b.tunnel,
        weight: b.weight,
        admin: admin_of(b.admin),
    }
}

/// Services by name.
pub(super) type Services = BTreeMap<String, Svc>;

/// Id allocation and the counter baselines of reused ids.
#[derive(Debug, Clone, Default)]
pub(super) struct Ids {
    next_vip: usize,
    next_backend: usize,
    vip_base: HashMap<u16, (u64, u64)>,
    backend_base: HashMap<u16, (u64, u64)>,
    /// The workers' counters, by worker index.
    pub counters: Vec<SharedCounters>,
}

/// What a [`Change`] did.
#[derive(Debug)]
pub(super) struct Changed {
    /// What was done; `None` for a no-op.
    pub message: Option<String>,
    /// The service's name.
    pub service: String,
    /// The backend, when the change was about one.
    pub backend: Option<SocketAddr>,
}

/// The table; see the module doc.
#[derive(Debug, Clone)]
pub(super) struct Table {
    pub services: Services,
    /// The check of each checked backend entry.
    pub checks: BTreeMap<BackendId, Check>,
    /// The file as last loaded: for `drain` on reload.
    pub config: Config,
    /// The config the process started with: keys that apply only at start keep these values
    /// until a restart, so `restart_needed` and `dr` on `add_vip` compare with it.
    pub started: Arc<Config>,
    pub ids: Ids,
}

fn err(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

fn admin_of(a: AdminState) -> Admin {
    match a {
        AdminState::Enabled => Admin::Enabled,
        AdminState::Drained => Admin::Drained,
    }
}

/// The services of `config`, with the file's ids.
fn services_of(config: &Config) -> Services {
    config
        .services
        .iter()
        .map(|s| {
            let svc = Svc {
                id: s.id,
                vip: s.vip.addr,
                scheduler: s.scheduler,
                // A config built in code may leave it out: the rewrite then says it all.
                forwarding: config
                    .forwarding
                    .get(&s.name)
                    .copied()
                    .unwrap_or(Forwarding {
                        method: if s.mode == dataplane::service::Mode::Nat {
                            Method::Nat
                        } else {
                            Method::Dr
                        },
                        tunnel: TunnelSettings::default(),
                    }),
                admin: Admin::Enabled,
                backends: s.backends.iter().map(be_of).collect(),
                fallback: s.fallback.clone(),
                passive: s.passive,
                check: s
                    .backends
                    .iter()
                    .find_map(|b| config.checks.get(&b.id).cloned()),
                mirrors: s
                    .mirrors
                    .iter()
                    .map(|m| Pool {
                        name: m.name.clone(),
                        scheduler: m.scheduler,
                        sample: m.sample,
                        backends: m.backends.iter().map(be_of).collect(),
                    })
                    .collect(),
            };
            (s.name.clone(), svc)
        })
        .collect()
}

/// The entry at `addr` of `svc`'s mirror pool `pool`, if any.
fn old_pool_entry<'s>(svc: &'s Svc, pool: &str, addr: SocketAddr) -> Option<&'s Be> {
    svc.mirrors
        .iter()
        .find(|p| p.name == pool)?
        .backends
        .iter()
        .find(|b| b.addr == addr)
}

/// The file's `drain` of backend `addr` of service `name` (enabled when not in the file).
fn file_admin(config: &Config, name: &str, addr: SocketAddr) -> Admin {
    config
        .services
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| s.backends.iter().find(|b| b.addr == addr))
        .map_or(Admin::Enabled, |b| admin_of(b.admin))
}

fn find<'t>(table: &'t mut Services, service: &str) -> Result<(String, &'t mut Svc), ApiError> {
    let name = if table.contains_key(service) {
        Some(service.to_owned())
    } else {
        service.parse::<SocketAddr>().ok().and_then(|a| {
            table
                .iter()
                .find(|(_, s)| s.vip == a)
                .map(|(n, _)| n.clone())
        })
    };
    match name {
        Some(n) => {
            let svc = table.get_mut(&n).expect("name was just found");
            Ok((n, svc))
        }
        None => Err(err(
            ErrorCode::NotFound,
            format!("no service is named {service:?} or has it as vip"),
        )),
    }
}

fn find_backend<'s>(
    name: &str,
    svc: &'s mut Svc,
    addr: SocketAddr,
) -> Result<&'s mut Be, ApiError> {
    svc.backends
        .iter_mut()
        .find(|b| b.addr == addr)
        .ok_or_else(|| {
            err(
                ErrorCode::NotFound,
                format!("service {name} has no backend {addr}"),
            )
        })
}

/// The tunnel of a new backend at `addr` of a service forwarding by `f` (`None` unless it
/// tunnels); a backend that cannot be reached that way is refused.
fn new_backend_tunnel(
    f: &Forwarding,
    vip: SocketAddr,
    addr: SocketAddr,
) -> Result<Option<Tunnel>, ApiError> {
    if f.method != Method::Tunnel {
        return if vip.is_ipv4() == addr.is_ipv4() {
            Ok(None)
        } else {
            Err(err(
                ErrorCode::BadArgs,
                format!(
                    "backend {addr} and vip {vip} are of different address families: {} cannot \
                     forward between them (a tunnel can)",
                    f.method.name()
                ),
            ))
        };
    }
    match f.tunnel.toward(addr.ip()) {
        Some(t) => Ok(Some(t)),
        None => Err(err(
            ErrorCode::BadArgs,
            format!(
                "backend {addr} would be reached through the tunnel, which has no outer source \
                 of its family: give the service's tunnel.sources (or the dpdk port) an \
                 address of that family and reload"
            ),
        )),
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(err(
            ErrorCode::BadArgs,
            format!("{name:?} is not a service name: use 1 to 64 letters, digits, '-', '_' or '.'"),
        ))
    }
}

/// Ids in use: services, and backend entries with fallbacks.
fn in_use(table: &Services) -> (HashSet<u16>, HashSet<u16>) {
    let vips = table.values().map(|s| s.id.0).collect();
    let backends = table
        .values()
        .flat_map(|s| {
            s.entries()
                .map(|b| b.id.0)
                .chain(s.fallback.as_ref().map(|f| f.id.0))
        })
        .collect();
    (vips, backends)
}

/// The next id at or after `*next` that is in none of `used`, wrapping below `max`.
fn alloc(next: &mut usize, max: usize, used: &[&HashSet<u16>]) -> Option<u16> {
    for k in 0..max {
        let id = ((*next + k) % max) as u16;
        if used.iter().all(|u| !u.contains(&id)) {
            *next = usize::from(id) + 1;
            return Some(id);
        }
    }
    None
}

/// Keys that only take effect at start whose value in `new` differs from the running one
/// in `old` (the config the process started with).
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut v = Vec::new();
    let r = (&old.runtime, &new.runtime);
    if r.0.dataplane != r.1.dataplane {
        v.push("runtime.dataplane".to_owned());
    }
    if r.0.workers != r.1.workers {
        v.push("runtime.workers".to_owned());
    }
    if r.0.cores != r.1.cores {
        v.push("runtime.cores".to_owned());
    }
    if r.0.log != r.1.log {
        v.push("runtime.log".to_owned());
    }
    if old.socket != new.socket {
        v.push("socket".to_owned());
    }
    if old.dpdk != new.dpdk {
        v.push("dpdk".to_owned());
    }
    if old.control != new.control {
        v.push("control".to_owned());
    }
    if old.metrics != new.metrics {
        v.push("metrics".to_owned());
    }
    v
}

impl Ids {
    /// Allocation after the ids `services` use.
    fn new(services: &Services) -> Self {
        let (vips, backends) = in_use(services);
        Self {
            next_vip: vips.iter().max().map_or(0, |m| usize::from(*m) + 1),
            next_backend: backends.iter().max().map_or(0, |m| usize::from(*m) + 1),
            ..Self::default()
        }
    }

    /// Packets and bytes counted for service `id` by every worker.
    fn vip_counts(&self, id: VipId) -> (u64, u64) {
        self.counters.iter().fold((0, 0), |(p, b), c| {
            let (cp, cb) = c.vip(id);
            (p + cp, b + cb)
        })
    }

    /// Packets and bytes counted for backend entry `id` by every worker.
    fn backend_counts(&self, id: BackendId) -> (u64, u64) {
        self.counters.iter().fold((0, 0), |(p, b), c| {
            let (cp, cb) = c.backend(id);
            (p + cp, b + cb)
        })
    }

    fn since_base(now: (u64, u64), base: Option<&(u64, u64)>) -> (u64, u64) {
        let (bp, bb) = base.copied().unwrap_or((0, 0));
        (now.0.saturating_sub(bp), now.1.saturating_sub(bb))
    }

    /// Packets and bytes of service `id` since it got that id.
    pub fn vip(&self, id: VipId) -> (u64, u64) {
        Self::since_base(self.vip_counts(id), self.vip_base.get(&id.0))
    }

    /// Packets and bytes of backend entry `id` since it got that id.
    pub fn backend(&self, id: BackendId) -> (u64, u64) {
        Self::since_base(self.backend_counts(id), self.backend_base.get(&id.0))
    }

    fn new_vip(&mut self, used: &[&HashSet<u16>]) -> Result<VipId, ApiError> {
        let id = alloc(&mut self.next_vip, MAX_VIPS, used).ok_or_else(|| {
            err(
                ErrorCode::Conflict,
                format!("no free vip id: {MAX_VIPS} services is the limit"),
            )
        })?;
        self.vip_base.insert(id, self.vip_counts(VipId(id)));
        Ok(VipId(id))
    }

    fn new_backend(&mut self, used: &[&HashSet<u16>]) -> Result<BackendId, ApiError> {
        let id = alloc(&mut self.next_backend, MAX_BACKENDS, used).ok_or_else(|| {
            err(
                ErrorCode::Conflict,
                format!("no free backend id: {MAX_BACKENDS} backends is the limit"),
            )
        })?;
        self.backend_base
            .insert(id, self.backend_counts(BackendId(id)));
        Ok(BackendId(id))
    }
}

impl Table {
    /// The table of `config`, with the file's ids.
    pub fn new(config: Config) -> Self {
        let services = services_of(&config);
        let ids = Ids::new(&services);
        Self {
            services,
            checks: config.checks.clone(),
            started: Arc::new(config.clone()),
            config,
            ids,
        }
    }

    /// The service with id `id`, and its name.
    pub fn service_by_id(&self, id: VipId) -> Option<(&String, &Svc)> {
        self.services.iter().find(|(_, s)| s.id == id)
    }

    /// The specs of what is in the dataplane: enabled services, their backends that are not
    /// disabled, each with the health `health` gives it.
    pub fn specs(&self, health: impl Fn(&Be) -> Health) -> Vec<ServiceSpec> {
        self.services
            .iter()
            .filter(|(_, s)| s.admin != Admin::Disabled)
            .map(|(name, s)| {
                let backend = |b: &Be| {
                    if b.admin == Admin::Disabled {
                        return None;
                    }
                    let mut be = Backend::new(b.id, b.addr, b.weight);
                    be.mac = b.mac;
                    be.tunnel = b.tunnel;
                    be.health = health(b);
                    if b.admin == Admin::Drained {
                        be.admin = AdminState::Drained;
                    }
                    Some(be)
                };
                let backends = s.backends.iter().filter_map(&backend).collect();
                let mut spec = ServiceSpec::new(
                    s.id,
                    name.clone(),
                    VipKey::udp(s.vip),
                    s.forwarding.method.mode(),
                    s.scheduler,
                    backends,
                );
                spec.fallback = s.fallback.clone();
                spec.passive = s.passive;
                spec.mirrors = s
                    .mirrors
                    .iter()
                    .map(|p| {
                        let backends = p.backends.iter().filter_map(&backend).collect();
                        let mut m = MirrorSpec::new(p.name.clone(), p.scheduler, backends);
                        m.sample = p.sample;
                        m
                    })
                    .collect();
                spec
            })
            .collect()
    }

    /// A `conflict` when a service's backend or fallback leads back to a VIP of this table.
    fn refuse_loops(&self) -> Result<(), ApiError> {
        let nodes: Vec<loops::Node<'_>> = self
            .services
            .iter()
            .map(|(name, s)| {
                let backends = s.backends.iter().map(|b| b.addr);
                loops::Node::new(name, s.vip, backends, s.fallback.as_ref().map(|f| f.addr))
            })
            .collect();
        match loops::find(&nodes) {
            Some(hops) => Err(err(
                ErrorCode::Conflict,
                loops::describe(&nodes, &hops, "service "),
            )),
            None => Ok(()),
        }
    }

    /// Applies `change`; says what it did (`message` is `None` for a no-op).
    ///
    /// # Errors
    /// `not_found`, `conflict` or `bad_args` when the change does not fit; `self` may then
    /// be half changed: work on a copy.
    pub fn change(&mut self, change: &Change) -> Result<Changed, ApiError> {
        let (vips_used, backends_used) = in_use(&self.services);
        let done = |message: Option<String>, service: String, backend: Option<SocketAddr>| {
            Ok(Changed {
                message,
                service,
                backend,
            })
        };
        match change {
            Change::AddVip(new) => {
                check_name(&new.name)?;
                if self.services.contains_key(&new.name) {
                    return Err(err(
                        ErrorCode::Conflict,
                        format!("service {} already exists", new.name),
                    ));
                }
                let canonical = |a: SocketAddr| (a.ip().to_canonical(), a.port());
                if let Some((other, _)) = self
                    .services
                    .iter()
                    .find(|(_, s)| canonical(s.vip) == canonical(new.vip))
                {
                    return Err(err(
                        ErrorCode::Conflict,
                        format!("{} is already the vip of service {other}", new.vip),
                    ));
                }
                if new.mode != Method::Nat
                    && self.started.runtime.dataplane == DataplaneKind::Socket
                {
                    return Err(err(
                        ErrorCode::BadArgs,
                        format!(
                            "mode {} needs a dataplane that owns the wire (dpdk)",
                            new.mode.name()
                        ),
                    ));
                }
                // A tunnel made at run time has the defaults, with the ports' addresses as
                // outer sources: the file's `tunnel` table is where to set anything else.
                let ports = &self.started.dpdk.ports;
                let forwarding = Forwarding {
                    method: new.mode,
                    tunnel: TunnelSettings {
                        source_v4: ports.iter().find_map(|p| p.ipv4),
                        source_v6: ports.iter().find_map(|p| p.ipv6),
                        ..TunnelSettings::default()
                    },
                };
                let mut backends: Vec<Be> = Vec::with_capacity(new.backends.len());
                let mut taken = backends_used.clone();
                for b in &new.backends {
                    let tunnel = new_backend_tunnel(&forwarding, new.vip, b.addr)?;
                    if backends.iter().any(|o| o.addr == b.addr) {
                        return Err(err(
                            ErrorCode::BadArgs,
                            format!("backend {} is given twice", b.addr),
                        ));
                    }
                    let id = self.ids.new_backend(&[&taken])?;
                    taken.insert(id.0);
                    backends.push(Be {
                        id,
                        addr: b.addr,
                        mac: None,
                        tunnel,
                        weight: u32::from(b.weight),
                        admin: Admin::Enabled,
                    });
                }
                let id = self.ids.new_vip(&[&vips_used])?;
                let msg = format!(
                    "added service {} vip {} ({}, {} backend(s))",
                    new.name,
                    new.vip,
                    new.scheduler,
                    backends.len()
                );
                self.services.insert(
                    new.name.clone(),
                    Svc {
                        id,
                        vip: new.vip,
                        scheduler: new.scheduler,
                        forwarding,
                        admin: Admin::Enabled,
                        backends,
                        fallback: None,
                        passive: false,
                        check: None,
                        mirrors: Vec::new(),
                    },
                );
                self.refuse_loops()?;
                done(Some(msg), new.name.clone(), None)
            }
            Change::DelVip { service } => {
                let (name, svc) = find(&mut self.services, service)?;
                let msg = format!("removed service {name} vip {}", svc.vip);
                for b in svc.entries() {
                    self.checks.remove(&b.id);
                }
                self.services.remove(&name);
                done(Some(msg), name, None)
            }
            Change::AddBackend {
                service,
                backend: NewBackend { addr, weight },
            } => {
                let (name, svc) = find(&mut self.services, service)?;
                let tunnel = new_backend_tunnel(&svc.forwarding, svc.vip, *addr)?;
                if svc.backends.iter().any(|b| b.addr == *addr) {
                    return Err(err(
                        ErrorCode::Conflict,
                        format!("service {name} already has backend {addr}"),
                    ));
                }
                if svc.fallback.as_ref().is_some_and(|f| f.addr == *addr) {
                    return Err(err(
                        ErrorCode::Conflict,
                        format!("{addr} is the fallback of service {name}: a fallback must be another server"),
                    ));
                }
                let (addr, weight) = (*addr, *weight);
                let id = self.ids.new_backend(&[&backends_used])?;
                svc.backends.push(Be {
                    id,
                    addr,
                    mac: None,
                    tunnel,
                    weight: u32::from(weight),
                    admin: Admin::Enabled,
                });
                let mut msg = format!("added backend {addr} weight {weight} to service {name}");
                if let Some(c) = &svc.check {
                    msg.push_str(&format!(", checked by {}", c.probe.name()));
                    self.checks.insert(id, c.clone());
                }
                self.refuse_loops()?;
                done(Some(msg), name, Some(addr))
            }
            Change::DelBackend(BackendRef { service, backend }) => {
                let (name, svc) = find(&mut self.services, service)?;
                let id = find_backend(&name, svc, *backend)?.id;
                svc.backends.retain(|b| b.addr != *backend);
                self.checks.remove(&id);
                done(
                    Some(format!("removed backend {backend} from service {name}")),
                    name,
                    Some(*backend),
                )
            }
            Change::SetWeight {
                target: BackendRef { service, backend },
                weight,
            } => {
                let (name, svc) = find(&mut self.services, service)?;
                let b = find_backend(&name, svc, *backend)?;
                let old = b.weight;
                b.weight = u32::from(*weight);
                let msg = (old != b.weight).then(|| {
                    format!(
                        "set weight of backend {backend} of service {name} from {old} to {weight}"
                    )
                });
                done(msg, name, Some(*backend))
            }
            Change::Drain(BackendRef { service, backend })
            | Change::Undrain(BackendRef { service, backend }) => {
                let to = if matches!(change, Change::Drain(_)) {
                    Admin::Drained
                } else {
                    Admin::Enabled
                };
                let (name, svc) = find(&mut self.services, service)?;
                let b = find_backend(&name, svc, *backend)?;
                let old = b.admin;
                b.admin = to;
                let msg = (old != to).then(|| {
                    format!(
                        "backend {backend} of service {name}: {} -> {}",
                        old.name(),
                        to.name()
                    )
                });
                done(msg, name, Some(*backend))
            }
            Change::Enable { service, backend } | Change::Disable { service, backend } => {
                let to = if matches!(change, Change::Enable { .. }) {
                    Admin::Enabled
                } else {
                    Admin::Disabled
                };
                let (name, svc) = find(&mut self.services, service)?;
                let (old, what) = match backend {
                    None => {
                        let old = svc.admin;
                        svc.admin = to;
                        (old, format!("service {name}"))
                    }
                    Some(addr) => {
                        let b = find_backend(&name, svc, *addr)?;
                        let old = b.admin;
                        b.admin = to;
                        (old, format!("backend {addr} of service {name}"))
                    }
                };
                let msg = (old != to).then(|| format!("{what}: {} -> {}", old.name(), to.name()));
                done(msg, name, *backend)
            }
        }
    }

    /// Makes the table the file `config` describes, keeping ids and marks of what remains
    /// (see the module doc); returns a summary and the keys that need a restart.
    ///
    /// # Errors
    /// `conflict` when ids run out; `self` may then be half changed: work on a copy.
    pub fn reload(&mut self, config: Config) -> Result<(String, Vec<String>), ApiError> {
        let old = std::mem::take(&mut self.services);
        let (old_vips, old_backends) = in_use(&old);
        let mut new_vips = HashSet::new();
        let mut new_backends = HashSet::new();
        // Ids of what remains first, so new objects never take them.
        for spec in &config.services {
            if let Some(o) = old.get(&spec.name) {
                new_vips.insert(o.id.0);
                for b in &spec.backends {
                    if let Some(ob) = o.backends.iter().find(|x| x.addr == b.addr) {
                        new_backends.insert(ob.id.0);
                    }
                }
                if let (Some(f), Some(of)) = (&spec.fallback, &o.fallback) {
                    if f.addr == of.addr {
                        new_backends.insert(of.id.0);
                    }
                }
                for m in &spec.mirrors {
                    for b in &m.backends {
                        if let Some(ob) = old_pool_entry(o, &m.name, b.addr) {
                            new_backends.insert(ob.id.0);
                        }
                    }
                }
            }
        }
        let mut table = services_of(&config);
        let mut checks = BTreeMap::new();
        let (mut added, mut changed, mut b_added, mut b_removed, mut b_changed) = (0, 0, 0, 0, 0);
        let removed = old.keys().filter(|k| !table.contains_key(*k)).count();
        for (name, svc) in &mut table {
            let o = old.get(name);
            match o {
                Some(o) => {
                    svc.id = o.id;
                    svc.admin = o.admin;
                    let fallback = |s: &Svc| s.fallback.as_ref().map(|f| f.addr);
                    if (o.vip, o.scheduler, o.forwarding, o.passive, fallback(o))
                        != (
                            svc.vip,
                            svc.scheduler,
                            svc.forwarding,
                            svc.passive,
                            fallback(svc),
                        )
                    {
                        changed += 1;
                    }
                    b_removed += o
                        .backends
                        .iter()
                        .filter(|x| !svc.backends.iter().any(|b| b.addr == x.addr))
                        .count();
                    b_removed += o
                        .mirrors
                        .iter()
                        .flat_map(|p| p.backends.iter().map(move |x| (&p.name, x.addr)))
                        .filter(|(pool, addr)| {
                            !svc.mirrors.iter().any(|p| {
                                &p.name == *pool && p.backends.iter().any(|b| b.addr == *addr)
                            })
                        })
                        .count();
                }
                None => {
                    svc.id = self.ids.new_vip(&[&old_vips, &new_vips])?;
                    new_vips.insert(svc.id.0);
                    added += 1;
                }
            }
            for b in &mut svc.backends {
                let file_id = b.id;
                match o.and_then(|o| o.backends.iter().find(|x| x.addr == b.addr)) {
                    Some(ob) => {
                        b.id = ob.id;
                        if file_admin(&self.config, name, b.addr) == b.admin {
                            b.admin = ob.admin;
                        }
                        if ob.weight != b.weight {
                            b_changed += 1;
                        }
                    }
                    None => {
                        b.id = self.ids.new_backend(&[&old_backends, &new_backends])?;
                        new_backends.insert(b.id.0);
                        b_added += 1;
                    }
                }
                if let Some(c) = config.checks.get(&file_id) {
                    checks.insert(b.id, c.clone());
                }
            }
            for pool in &mut svc.mirrors {
                for b in &mut pool.backends {
                    let file_id = b.id;
                    match o.and_then(|o| old_pool_entry(o, &pool.name, b.addr)) {
                        // No command marks a pool's backends: the file's `drain` holds.
                        Some(ob) => b.id = ob.id,
                        None => {
                            b.id = self.ids.new_backend(&[&old_backends, &new_backends])?;
                            new_backends.insert(b.id.0);
                            b_added += 1;
                        }
                    }
                    if let Some(c) = config.checks.get(&file_id) {
                        checks.insert(b.id, c.clone());
                    }
                }
            }
            if let Some(f) = &mut svc.fallback {
                match o
                    .and_then(|o| o.fallback.as_ref())
                    .filter(|of| of.addr == f.addr)
                {
                    Some(of) => f.id = of.id,
                    None => {
                        f.id = self.ids.new_backend(&[&old_backends, &new_backends])?;
                        new_backends.insert(f.id.0);
                    }
                }
            }
        }
        let summary = format!(
            "services: {added} added, {removed} removed, {changed} changed; backends: {b_added} added, {b_removed} removed, {b_changed} re-weighted"
        );
        let restart = restart_needed(&self.started, &config);
        self.services = table;
        self.checks = checks;
        self.config = config;
        Ok((summary, restart))
    }
}
