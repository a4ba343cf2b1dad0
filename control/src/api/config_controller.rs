//! [`ConfigController`]: the [`Controller`] of a Spray without health checks.
//!
//! It owns the validated [`Config`], the operator's changes on top of it (added and removed
//! services and backends, weights, drain and disable marks), the per-worker counters and the
//! sending half of every worker's update channel. Each accepted change is made on a copy of
//! the table, turned into a [`Snapshot`] of the next generation and, only when that
//! succeeds, committed and sent to every worker before the call returns; a refused change
//! leaves everything as it was.
//!
//! # Ids and counters
//!
//! [`VipId`]s and [`BackendId`]s index the workers' counter arrays, which only the workers
//! write. Services keep their id as long as their name stays; backends as long as their
//! address stays within their service, across changes and reloads. New objects take the
//! next free id after the last one handed out (wrapping), so a straggling packet a worker
//! counted for a just-removed backend does not land on a new one; when an id is reused, the
//! counters read at that moment become its baseline and are subtracted from what is shown.
//!
//! # Reload
//!
//! The table becomes the file's: services and backends that are not in it go, new ones
//! come, weights, schedulers and modes follow the file. Drain and disable marks stay on the
//! services and backends that remain (a reload does not bring back a box taken out for
//! maintenance). Keys that only take effect at start (`[runtime]`, `[socket]`,
//! `[control]`, `[metrics]`) are reported in [`Reloaded::restart_needed`].

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::Sender;
use dataplane::counters::{DropReason, SharedCounters};
use dataplane::sched::SchedulerKind;
use dataplane::service::{
    AdminState, Backend, BackendId, MacAddr, Mode, ServiceSpec, Snapshot, VipId, VipKey,
    MAX_BACKENDS, MAX_VIPS,
};

use super::{
    Admin, ApiError, Applied, BackendInfo, BackendRef, BackendStats, Change, Controller, ErrorCode,
    Event, HealthState, NewBackend, Reloaded, ServiceInfo, ServiceList, ServiceStats, Stats,
    VersionInfo, Who, WorkerStats,
};
use crate::config::{Config, DataplaneKind, Machine};

/// Events kept for `events`.
pub const EVENT_RING: usize = 256;

#[derive(Debug, Clone)]
struct Be {
    id: BackendId,
    addr: SocketAddr,
    mac: Option<MacAddr>,
    weight: u32,
    admin: Admin,
}

#[derive(Debug, Clone)]
struct Svc {
    id: VipId,
    vip: SocketAddr,
    scheduler: SchedulerKind,
    mode: Mode,
    admin: Admin,
    backends: Vec<Be>,
}

/// Services by name.
type Table = BTreeMap<String, Svc>;

#[derive(Debug)]
struct Inner {
    config: Config,
    table: Table,
    snapshot: Arc<Snapshot>,
    events: VecDeque<Event>,
    next_seq: u64,
    vip_base: HashMap<u16, (u64, u64)>,
    backend_base: HashMap<u16, (u64, u64)>,
    next_vip: usize,
    next_backend: usize,
}

/// The controller of a Spray without health checks; see the module doc.
#[derive(Debug)]
pub struct ConfigController {
    inner: Mutex<Inner>,
    path: PathBuf,
    machine: Machine,
    counters: Vec<SharedCounters>,
    senders: Vec<Sender<Arc<Snapshot>>>,
    started: Instant,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn err(code: ErrorCode, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

fn table_of(config: &Config) -> Table {
    config
        .services
        .iter()
        .map(|s| {
            let svc = Svc {
                id: s.id,
                vip: s.vip.addr,
                scheduler: s.scheduler,
                mode: s.mode,
                admin: Admin::Enabled,
                backends: s
                    .backends
                    .iter()
                    .map(|b| Be {
                        id: b.id,
                        addr: b.addr,
                        mac: b.mac,
                        weight: b.weight,
                        admin: Admin::Enabled,
                    })
                    .collect(),
            };
            (s.name.clone(), svc)
        })
        .collect()
}

/// The specs of what is in the dataplane: enabled services, their non-disabled backends.
fn specs_of(table: &Table) -> Vec<ServiceSpec> {
    table
        .iter()
        .filter(|(_, s)| s.admin != Admin::Disabled)
        .map(|(name, s)| ServiceSpec {
            id: s.id,
            name: name.clone(),
            vip: VipKey::udp(s.vip),
            mode: s.mode,
            scheduler: s.scheduler,
            backends: s
                .backends
                .iter()
                .filter(|b| b.admin != Admin::Disabled)
                .map(|b| {
                    let mut be = Backend::new(b.id, b.addr, b.weight);
                    be.mac = b.mac;
                    if b.admin == Admin::Drained {
                        be.admin = AdminState::Drained;
                    }
                    be
                })
                .collect(),
            fallback: None,
            passive: false,
        })
        .collect()
}

fn find<'t>(table: &'t mut Table, service: &str) -> Result<(String, &'t mut Svc), ApiError> {
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

fn check_family(vip: SocketAddr, addr: SocketAddr) -> Result<(), ApiError> {
    if vip.is_ipv4() == addr.is_ipv4() {
        Ok(())
    } else {
        Err(err(
            ErrorCode::BadArgs,
            format!("backend {addr} and vip {vip} are of different address families: nat cannot translate between them"),
        ))
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

fn in_use(table: &Table) -> (HashSet<u16>, HashSet<u16>) {
    let vips = table.values().map(|s| s.id.0).collect();
    let backends = table
        .values()
        .flat_map(|s| s.backends.iter().map(|b| b.id.0))
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

impl Inner {
    fn push_event(
        &mut self,
        kind: &str,
        service: Option<&str>,
        backend: Option<SocketAddr>,
        message: String,
    ) {
        self.next_seq += 1;
        if self.events.len() == EVENT_RING {
            self.events.pop_front();
        }
        self.events.push_back(Event {
            seq: self.next_seq,
            unix_ms: unix_ms(),
            kind: kind.to_owned(),
            service: service.map(str::to_owned),
            backend,
            message,
        });
    }
}

impl ConfigController {
    /// A controller for `config` (read from `path`, which `reload` reads again), whose
    /// snapshot in force is `snapshot` and whose workers have `counters` and listen on
    /// `senders`.
    pub fn new(
        config: Config,
        path: &Path,
        machine: Machine,
        snapshot: Arc<Snapshot>,
        counters: Vec<SharedCounters>,
        senders: Vec<Sender<Arc<Snapshot>>>,
    ) -> Self {
        let table = table_of(&config);
        let (vips, backends) = in_use(&table);
        let next_vip = vips.iter().max().map_or(0, |m| usize::from(*m) + 1);
        let next_backend = backends.iter().max().map_or(0, |m| usize::from(*m) + 1);
        Self {
            inner: Mutex::new(Inner {
                config,
                table,
                snapshot,
                events: VecDeque::with_capacity(EVENT_RING),
                next_seq: 0,
                vip_base: HashMap::new(),
                backend_base: HashMap::new(),
                next_vip,
                next_backend,
            }),
            path: path.to_owned(),
            machine,
            counters,
            senders,
            started: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock is a bug; the data is still consistent because
        // changes are committed in one assignment.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.lock().snapshot)
    }

    fn vip_counts(&self, id: VipId) -> (u64, u64) {
        self.counters.iter().fold((0, 0), |(p, b), c| {
            let (cp, cb) = c.vip(id);
            (p + cp, b + cb)
        })
    }

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

    fn new_vip_id(&self, inner: &mut Inner, used: &[&HashSet<u16>]) -> Result<VipId, ApiError> {
        let id = alloc(&mut inner.next_vip, MAX_VIPS, used).ok_or_else(|| {
            err(
                ErrorCode::Conflict,
                format!("no free vip id: {MAX_VIPS} services is the limit"),
            )
        })?;
        inner.vip_base.insert(id, self.vip_counts(VipId(id)));
        Ok(VipId(id))
    }

    fn new_backend_id(
        &self,
        inner: &mut Inner,
        used: &[&HashSet<u16>],
    ) -> Result<BackendId, ApiError> {
        let id = alloc(&mut inner.next_backend, MAX_BACKENDS, used).ok_or_else(|| {
            err(
                ErrorCode::Conflict,
                format!("no free backend id: {MAX_BACKENDS} backends is the limit"),
            )
        })?;
        inner
            .backend_base
            .insert(id, self.backend_counts(BackendId(id)));
        Ok(BackendId(id))
    }

    /// Builds the snapshot of `table`, commits it and sends it to every worker.
    fn publish(&self, inner: &mut Inner, table: Table) -> Result<u64, ApiError> {
        let generation = inner.snapshot.generation + 1;
        let snap = Snapshot::new(generation, specs_of(&table)).map_err(|e| {
            err(
                ErrorCode::Internal,
                format!("the dataplane refused the table: {e}"),
            )
        })?;
        let snap = Arc::new(snap);
        inner.table = table;
        inner.snapshot = Arc::clone(&snap);
        for tx in &self.senders {
            // A worker that has stopped has dropped its receiver; nothing to tell it.
            let _ = tx.send(Arc::clone(&snap));
        }
        Ok(generation)
    }

    /// Applies `change` to `table`; returns the message, or `None` for a no-op.
    fn change_table(
        &self,
        inner: &mut Inner,
        table: &mut Table,
        change: &Change,
    ) -> Result<(Option<String>, String, Option<SocketAddr>), ApiError> {
        let (vips_used, backends_used) = in_use(table);
        match change {
            Change::AddVip(new) => {
                check_name(&new.name)?;
                if table.contains_key(&new.name) {
                    return Err(err(
                        ErrorCode::Conflict,
                        format!("service {} already exists", new.name),
                    ));
                }
                if let Some((other, _)) = table.iter().find(|(_, s)| s.vip == new.vip) {
                    return Err(err(
                        ErrorCode::Conflict,
                        format!("{} is already the vip of service {other}", new.vip),
                    ));
                }
                if new.mode == Mode::Dr && inner.config.runtime.dataplane == DataplaneKind::Socket {
                    return Err(err(
                        ErrorCode::BadArgs,
                        "mode dr needs a dataplane that owns the wire (dpdk)",
                    ));
                }
                let mut backends: Vec<Be> = Vec::with_capacity(new.backends.len());
                let mut taken = backends_used.clone();
                for b in &new.backends {
                    check_family(new.vip, b.addr)?;
                    if backends.iter().any(|o| o.addr == b.addr) {
                        return Err(err(
                            ErrorCode::BadArgs,
                            format!("backend {} is given twice", b.addr),
                        ));
                    }
                    let id = self.new_backend_id(inner, &[&taken])?;
                    taken.insert(id.0);
                    backends.push(Be {
                        id,
                        addr: b.addr,
                        mac: None,
                        weight: u32::from(b.weight),
                        admin: Admin::Enabled,
                    });
                }
                let id = self.new_vip_id(inner, &[&vips_used])?;
                let msg = format!(
                    "added service {} vip {} ({}, {} backend(s))",
                    new.name,
                    new.vip,
                    new.scheduler,
                    backends.len()
                );
                table.insert(
                    new.name.clone(),
                    Svc {
                        id,
                        vip: new.vip,
                        scheduler: new.scheduler,
                        mode: new.mode,
                        admin: Admin::Enabled,
                        backends,
                    },
                );
                Ok((Some(msg), new.name.clone(), None))
            }
            Change::DelVip { service } => {
                let (name, svc) = find(table, service)?;
                let msg = format!("removed service {name} vip {}", svc.vip);
                table.remove(&name);
                Ok((Some(msg), name, None))
            }
            Change::AddBackend {
                service,
                backend: NewBackend { addr, weight },
            } => {
                let (name, svc) = find(table, service)?;
                check_family(svc.vip, *addr)?;
                if svc.backends.iter().any(|b| b.addr == *addr) {
                    return Err(err(
                        ErrorCode::Conflict,
                        format!("service {name} already has backend {addr}"),
                    ));
                }
                let (name, addr, weight) = (name, *addr, *weight);
                let id = self.new_backend_id(inner, &[&backends_used])?;
                let (_, svc) = find(table, &name)?;
                svc.backends.push(Be {
                    id,
                    addr,
                    mac: None,
                    weight: u32::from(weight),
                    admin: Admin::Enabled,
                });
                Ok((
                    Some(format!(
                        "added backend {addr} weight {weight} to service {name}"
                    )),
                    name,
                    Some(addr),
                ))
            }
            Change::DelBackend(BackendRef { service, backend }) => {
                let (name, svc) = find(table, service)?;
                find_backend(&name, svc, *backend)?;
                svc.backends.retain(|b| b.addr != *backend);
                Ok((
                    Some(format!("removed backend {backend} from service {name}")),
                    name,
                    Some(*backend),
                ))
            }
            Change::SetWeight {
                target: BackendRef { service, backend },
                weight,
            } => {
                let (name, svc) = find(table, service)?;
                let b = find_backend(&name, svc, *backend)?;
                let old = b.weight;
                b.weight = u32::from(*weight);
                let msg = (old != b.weight).then(|| {
                    format!(
                        "set weight of backend {backend} of service {name} from {old} to {weight}"
                    )
                });
                Ok((msg, name, Some(*backend)))
            }
            Change::Drain(BackendRef { service, backend })
            | Change::Undrain(BackendRef { service, backend }) => {
                let to = if matches!(change, Change::Drain(_)) {
                    Admin::Drained
                } else {
                    Admin::Enabled
                };
                let (name, svc) = find(table, service)?;
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
                Ok((msg, name, Some(*backend)))
            }
            Change::Enable { service, backend } | Change::Disable { service, backend } => {
                let to = if matches!(change, Change::Enable { .. }) {
                    Admin::Enabled
                } else {
                    Admin::Disabled
                };
                let (name, svc) = find(table, service)?;
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
                Ok((msg, name, *backend))
            }
        }
    }

    /// Builds the table the file `config` describes, keeping ids and admin marks of what
    /// remains; returns it with a summary.
    fn reload_table(
        &self,
        inner: &mut Inner,
        config: &Config,
    ) -> Result<(Table, String), ApiError> {
        let old = &inner.table;
        let (old_vips, old_backends) = in_use(old);
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
            }
        }
        let mut table = table_of(config);
        let (mut added, mut changed, mut b_added, mut b_removed, mut b_changed) = (0, 0, 0, 0, 0);
        let removed = old.keys().filter(|k| !table.contains_key(*k)).count();
        let old = old.clone();
        for (name, svc) in &mut table {
            match old.get(name) {
                Some(o) => {
                    svc.id = o.id;
                    svc.admin = o.admin;
                    if (o.vip, o.scheduler, o.mode) != (svc.vip, svc.scheduler, svc.mode) {
                        changed += 1;
                    }
                    b_removed += o
                        .backends
                        .iter()
                        .filter(|x| !svc.backends.iter().any(|b| b.addr == x.addr))
                        .count();
                }
                None => {
                    svc.id = self.new_vip_id(inner, &[&old_vips, &new_vips])?;
                    new_vips.insert(svc.id.0);
                    added += 1;
                }
            }
            for b in &mut svc.backends {
                match old
                    .get(name)
                    .and_then(|o| o.backends.iter().find(|x| x.addr == b.addr))
                {
                    Some(ob) => {
                        b.id = ob.id;
                        b.admin = ob.admin;
                        if ob.weight != b.weight {
                            b_changed += 1;
                        }
                    }
                    None => {
                        b.id = self.new_backend_id(inner, &[&old_backends, &new_backends])?;
                        new_backends.insert(b.id.0);
                        b_added += 1;
                    }
                }
            }
        }
        let summary = format!(
            "services: {added} added, {removed} removed, {changed} changed; backends: {b_added} added, {b_removed} removed, {b_changed} re-weighted"
        );
        Ok((table, summary))
    }
}

/// Keys of `old` whose new value in `new` only takes effect at start.
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
    if old.control != new.control {
        v.push("control".to_owned());
    }
    if old.metrics != new.metrics {
        v.push("metrics".to_owned());
    }
    v
}

fn worker_stats(worker: Option<usize>, c: &[&SharedCounters]) -> WorkerStats {
    let mut w = WorkerStats {
        worker,
        ..WorkerStats::default()
    };
    for r in DropReason::ALL {
        w.drops.insert(r.name().to_owned(), 0);
    }
    for c in c {
        w.rx_packets += c.rx_packets.get();
        w.rx_bytes += c.rx_bytes.get();
        w.tx_packets += c.tx_packets.get();
        w.tx_bytes += c.tx_bytes.get();
        w.nat_replies += c.nat_replies.get();
        w.snapshots_applied += c.snapshots_applied.get();
        w.bind_errors += c.bind_errors.get();
        for r in DropReason::ALL {
            *w.drops.entry(r.name().to_owned()).or_default() += c.dropped(r);
        }
    }
    w
}

impl Controller for ConfigController {
    fn list(&self) -> ServiceList {
        let inner = self.lock();
        let services = inner
            .table
            .iter()
            .map(|(name, s)| {
                let (packets, bytes) =
                    Self::since_base(self.vip_counts(s.id), inner.vip_base.get(&s.id.0));
                ServiceInfo {
                    name: name.clone(),
                    vip: s.vip,
                    protocol: "udp".to_owned(),
                    scheduler: s.scheduler.name().to_owned(),
                    mode: match s.mode {
                        Mode::Nat => "nat",
                        Mode::Dr => "dr",
                    }
                    .to_owned(),
                    admin: s.admin,
                    packets,
                    bytes,
                    backends: s
                        .backends
                        .iter()
                        .map(|b| {
                            let (packets, bytes) = Self::since_base(
                                self.backend_counts(b.id),
                                inner.backend_base.get(&b.id.0),
                            );
                            let in_rotation =
                                s.admin == Admin::Enabled && b.admin == Admin::Enabled;
                            BackendInfo {
                                addr: b.addr,
                                weight: b.weight,
                                effective_weight: if in_rotation { b.weight } else { 0 },
                                health: HealthState::Up,
                                admin: b.admin,
                                packets,
                                bytes,
                                check_latency_seconds: None,
                            }
                        })
                        .collect(),
                }
            })
            .collect();
        ServiceList {
            generation: inner.snapshot.generation,
            services,
        }
    }

    fn stats(&self) -> Stats {
        let list = self.list();
        let all: Vec<&SharedCounters> = self.counters.iter().collect();
        Stats {
            generation: list.generation,
            uptime_secs: self.started.elapsed().as_secs_f64(),
            totals: worker_stats(None, &all),
            workers: self
                .counters
                .iter()
                .enumerate()
                .map(|(i, c)| worker_stats(Some(i), &[c]))
                .collect(),
            services: list
                .services
                .into_iter()
                .map(|s| ServiceStats {
                    name: s.name,
                    vip: s.vip,
                    packets: s.packets,
                    bytes: s.bytes,
                    backends: s
                        .backends
                        .into_iter()
                        .map(|b| BackendStats {
                            addr: b.addr,
                            packets: b.packets,
                            bytes: b.bytes,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn events(&self, since: u64) -> Vec<Event> {
        self.lock()
            .events
            .iter()
            .filter(|e| e.seq > since)
            .cloned()
            .collect()
    }

    fn apply(&self, change: Change, who: &Who) -> Result<Applied, ApiError> {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let mut table = inner.table.clone();
        let (msg, service, backend) = self.change_table(inner, &mut table, &change)?;
        let Some(msg) = msg else {
            return Ok(Applied {
                generation: inner.snapshot.generation,
                message: "no change".to_owned(),
            });
        };
        let generation = self.publish(inner, table)?;
        tracing::info!(%who, generation, "{msg}");
        inner.push_event(
            "admin",
            Some(&service),
            backend,
            format!("{msg} (by {who})"),
        );
        Ok(Applied {
            generation,
            message: msg,
        })
    }

    fn reload(&self, who: &Who) -> Result<Reloaded, ApiError> {
        let file = self.path.display().to_string();
        let config = match Config::load(&self.path, &self.machine) {
            Ok(c) => c,
            Err(e) => {
                let mut message = format!("reload refused, the running config stays: {e}");
                if let Some(s) = std::error::Error::source(&e) {
                    message.push_str(&format!(": {s}"));
                }
                tracing::warn!(%who, "{message}");
                let mut inner = self.lock();
                inner.push_event("reload", None, None, format!("{message} (by {who})"));
                return Err(err(ErrorCode::Refused, message));
            }
        };
        let mut guard = self.lock();
        let inner = &mut *guard;
        let (table, summary) = self.reload_table(inner, &config)?;
        let restart = restart_needed(&inner.config, &config);
        let generation = self.publish(inner, table)?;
        inner.config = config;
        tracing::info!(%who, generation, file = %file, "reloaded: {summary}");
        if !restart.is_empty() {
            tracing::warn!(keys = ?restart, "changed keys take effect only at restart");
        }
        inner.push_event(
            "reload",
            None,
            None,
            format!("reloaded {file}: {summary} (by {who})"),
        );
        Ok(Reloaded {
            generation,
            file,
            summary,
            restart_needed: restart,
        })
    }

    fn version(&self) -> VersionInfo {
        VersionInfo {
            name: "spray".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            protocol: super::PROTOCOL_VERSION,
            controller: "config".to_owned(),
        }
    }
}
