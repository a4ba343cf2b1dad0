//! The controller: the one owner of the service table (the config, the operator's changes
//! through the control socket, and the health of every checked backend), and the one
//! publisher of [`Snapshot`]s to the workers.
//!
//! Two layers, so the logic is testable without threads or sockets:
//!
//! * [`State`] is sans-I/O: it takes probe outcomes, passive reports, operator changes
//!   ([`Change`]) and reloaded configs with the time they happened, says which checks are
//!   due, and returns the snapshot to publish when something changed. It never reads a
//!   clock itself. The table it keeps is in `state/table.rs`: ids, validation, reload
//!   rules and the checks that backends added at run time inherit.
//! * [`Controller`] (`state/controller.rs`) is the control thread that drives it: it
//!   hands due checks to the [`Checker`](crate::health::checker::Checker) pool, waits for
//!   outcomes, passive reports and commands, and sends each new snapshot as an `Arc` to
//!   every worker's channel. Its handle implements
//!   [`api::Controller`] for the control socket, SIGHUP and metrics: commands travel to the
//!   thread over a channel and the reply comes back only after the snapshot has been sent
//!   to every worker.
//!
//! Each snapshot is built from the whole table, so a health verdict never undoes an
//! operator's weight or drain, and an operator's change never undoes a health verdict.
//! Nothing is deleted and recreated on a state change: a down or drained backend only gets
//! effective weight 0, and a service whose backends are all out of rotation stays in the
//! table (it drops and counts, or uses its fallback). Checks of the same address with the
//! same check are run once and decide for every service that lists that backend, so two
//! VIPs sharing a backend drop it in the same snapshot. A check's rise/fall machine lives
//! as long as some backend entry has that (address, check): changes and reloads that keep
//! it keep its health.
//!
//! On a dataplane that owns the wire the controller also resolves neighbours (ARP/NDP,
//! `state/neigh.rs`): the MACs it learns go into every snapshot it builds, whatever made it
//! build one.

mod controller;
mod neigh;
mod table;

pub use self::controller::{Controller, Links};
pub use self::neigh::{NeighLink, PortNeighbours, NEIGH_TO_CONTROL, NEIGH_TO_WORKER};

use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::Receiver;
use dataplane::counters::SharedCounters;
use dataplane::service::{BackendId, Health, Snapshot, SnapshotError, VipId};
use dataplane::socket::PassiveReport;

use self::table::Table;
use crate::api::{
    self, Admin, ApiError, Applied, BackendInfo, Change, ErrorCode, MirrorInfo, Reloaded,
    ServiceInfo, ServiceList, Who,
};
use crate::config::file::Method;
use crate::config::Config;
use crate::health::checker::{Job, Outcome};
use crate::health::events::{EventKind, EventRing, HealthEvent, LogKind, Logged, SharedEvents};
use crate::health::machine::{Machine as RiseFall, State as HealthState};
use crate::health::{Check, Evidence, Target};

/// Capacity of the passive-report channel: a burst of ICMP errors beyond it is only counted
/// by the workers (one report per backend is all the controller needs).
pub const PASSIVE_CHANNEL: usize = 1024;

/// The bounded channel workers report ICMP errors on (`ProxySettings::passive_reports`).
pub fn passive_channel() -> (dataplane::socket::PassiveSink, Receiver<PassiveReport>) {
    let (tx, rx) = crossbeam_channel::bounded(PASSIVE_CHANNEL);
    (dataplane::socket::PassiveSink(tx), rx)
}

/// Most checker threads.
pub const MAX_CHECK_THREADS: usize = 64;

/// Error of the controller.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The dataplane refused the table (a Spray bug for a validated config).
    #[error("cannot build the service table")]
    Snapshot(#[source] SnapshotError),
    /// A thread could not be started.
    #[error("cannot start the {0} thread")]
    Spawn(&'static str, #[source] std::io::Error),
}

/// A checked (address, check) pair and the backend entries it decides for.
#[derive(Debug)]
struct TargetState {
    /// Names it in jobs and outcomes ([`Job::index`]); never reused, so the outcome of a
    /// probe of a target removed meanwhile is recognised and dropped.
    key: usize,
    target: Arc<Target>,
    machine: RiseFall,
    entries: Vec<(VipId, BackendId)>,
    next_due: Instant,
    /// When the probe in flight started.
    in_flight: Option<Instant>,
    /// How long the last probe took.
    latency: Option<Duration>,
    /// Checks that failed, and transitions to up and to down, since the target started.
    tally: Tally,
}

/// What `list` and the metrics count of a target's checks.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    failures: u64,
    ups: u64,
    downs: u64,
}

/// A small xorshift generator for check jitter (no need for a crate, or for quality).
#[derive(Debug)]
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(0x0053_5052_4159);
        Self(h.finish() | 1)
    }

    /// A number in `0.0..1.0`.
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn internal(e: &StateError) -> ApiError {
    let mut message = e.to_string();
    if let Some(s) = std::error::Error::source(e) {
        message.push_str(&format!(": {s}"));
    }
    ApiError::new(ErrorCode::Internal, message)
}

/// The table, health and admin state; builds snapshots. Sans I/O: see the module doc.
#[derive(Debug)]
pub struct State {
    table: Table,
    targets: Vec<TargetState>,
    next_key: usize,
    events: SharedEvents,
    current: Arc<Snapshot>,
    jitter: Jitter,
    /// Neighbour resolution per wire-owning port (none in socket mode).
    neigh: Vec<PortNeighbours>,
    /// [`State::neigh_generation`] when the snapshot in force was built.
    neigh_seen: u64,
    /// Enabled services without a backend in rotation in the snapshot in force.
    empty: BTreeSet<String>,
}

impl State {
    /// The state for `config` at `now`: every backend up, first snapshot `generation`. The
    /// first check of each backend is spread over its first interval.
    ///
    /// # Errors
    /// When the dataplane refuses the table.
    pub fn new(config: Config, generation: u64, now: Instant) -> Result<Self, StateError> {
        let mut s = Self {
            table: Table::new(config),
            targets: Vec::new(),
            next_key: 0,
            events: Arc::new(Mutex::new(EventRing::default())),
            current: Arc::new(Snapshot::default()),
            jitter: Jitter::new(),
            neigh: Vec::new(),
            neigh_seen: 0,
            empty: BTreeSet::new(),
        };
        s.sync_targets(now);
        s.current = s.build(&s.table, generation)?;
        Ok(s)
    }

    /// Reads the workers' `counters` (by worker index) for `list` and the baselines of
    /// reused ids.
    pub fn set_counters(&mut self, counters: Vec<SharedCounters>) {
        self.table.ids.counters = counters;
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.current
    }

    /// The event ring, shared.
    pub fn event_ring(&self) -> &SharedEvents {
        &self.events
    }

    /// A copy of the recorded health transitions, oldest first.
    pub fn events(&self) -> Vec<HealthEvent> {
        crate::health::events::events(&self.events)
    }

    /// How many distinct checks run.
    pub fn targets(&self) -> usize {
        self.targets.len()
    }

    /// Checker threads worth starting: enough for every probe to wait its whole timeout
    /// (a UDP check of a silent backend does) without falling behind, plus one.
    pub fn check_threads(&self) -> usize {
        let busy: f64 = self
            .targets
            .iter()
            .map(|t| t.target.check.timeout.as_secs_f64() / t.target.check.interval.as_secs_f64())
            .sum();
        ((busy * 1.25).ceil() as usize + 1)
            .clamp(1, MAX_CHECK_THREADS.min(self.targets.len().max(1)))
    }

    /// Health of backend entry `id` (`Up` when it is not checked).
    pub fn health(&self, id: BackendId) -> Health {
        let down = self.targets.iter().any(|t| {
            t.machine.state() == HealthState::Down && t.entries.iter().any(|(_, b)| *b == id)
        });
        if down {
            Health::Down
        } else {
            Health::Up
        }
    }

    /// The target that checks `addr` with `check`, if one runs.
    fn target(&self, addr: SocketAddr, check: Option<&Check>) -> Option<&TargetState> {
        let check = check?;
        self.targets
            .iter()
            .find(|t| t.target.addr == addr && t.target.check == *check)
    }

    /// Health of `addr` checked with `check`: a backend entry that joins a running check
    /// gets its verdict at once.
    fn health_of(&self, addr: SocketAddr, check: Option<&Check>) -> Health {
        match self.target(addr, check) {
            Some(t) if t.machine.state() == HealthState::Down => Health::Down,
            _ => Health::Up,
        }
    }

    /// The snapshot of `table` with today's health and neighbours, as generation
    /// `generation`.
    fn build(&self, table: &Table, generation: u64) -> Result<Arc<Snapshot>, StateError> {
        let mut specs = table.specs(|b| self.health_of(b.addr, table.checks.get(&b.id)));
        let (g4, g6) = self.fill_neighbours(&mut specs);
        Snapshot::new(generation, specs)
            .map(|s| Arc::new(s.with_gateway_macs(g4, g6)))
            .map_err(StateError::Snapshot)
    }

    /// Installs `snap` as the snapshot in force.
    fn install(&mut self, snap: &Arc<Snapshot>) {
        self.note_empty_services(snap);
        self.current = Arc::clone(snap);
        self.neigh_seen = self.neigh_generation();
    }

    /// Logs each enabled service that `snap` leaves without a backend in rotation, and
    /// each that has one again: once per change, not once per snapshot.
    fn note_empty_services(&mut self, snap: &Snapshot) {
        let empty: BTreeSet<String> = snap
            .services()
            .filter(|s| !s.has_rotation())
            .map(|s| s.spec.name.clone())
            .filter(|name| {
                self.table
                    .services
                    .get(name)
                    .is_some_and(|s| s.admin == Admin::Enabled)
            })
            .collect();
        for name in empty.difference(&self.empty) {
            let fallback = snap
                .services()
                .find(|s| &s.spec.name == name)
                .and_then(|s| s.spec.fallback.as_ref())
                .map(|f| f.addr);
            match fallback {
                Some(f) => tracing::warn!(
                    service = %name,
                    "no healthy backend left: its datagrams go to the fallback {f}"
                ),
                None => tracing::warn!(
                    service = %name,
                    "no healthy backend left: its datagrams are dropped (no_healthy_backend)"
                ),
            }
        }
        for name in self.empty.difference(&empty) {
            if snap.services().any(|s| &s.spec.name == name) {
                tracing::info!(service = %name, "a backend is in rotation again");
            }
        }
        self.empty = empty;
    }

    /// Builds and installs the next snapshot from the table and health.
    fn rebuild(&mut self) -> Result<Arc<Snapshot>, StateError> {
        let snap = self.build(&self.table, self.current.generation + 1)?;
        self.install(&snap);
        Ok(snap)
    }

    /// Makes the running checks those of the table: an (address, check) that stays keeps
    /// its machine and schedule, a new one is first checked within its interval from
    /// `now`, one no backend entry uses any more stops (a probe in flight is ignored).
    fn sync_targets(&mut self, now: Instant) {
        let mut want: Vec<(Target, Vec<(VipId, BackendId)>)> = Vec::new();
        for svc in self.table.services.values() {
            for b in svc.entries() {
                let Some(check) = self.table.checks.get(&b.id) else {
                    continue;
                };
                let target = Target {
                    addr: b.addr,
                    check: check.clone(),
                };
                match want.iter_mut().find(|(t, _)| *t == target) {
                    Some((_, entries)) => entries.push((svc.id, b.id)),
                    None => want.push((target, vec![(svc.id, b.id)])),
                }
            }
        }
        let mut old = std::mem::take(&mut self.targets);
        for (target, entries) in want {
            if let Some(i) = old.iter().position(|t| *t.target == target) {
                let mut t = old.swap_remove(i);
                t.entries = entries;
                self.targets.push(t);
                continue;
            }
            let first = target.check.interval.mul_f64(self.jitter.next());
            self.targets.push(TargetState {
                key: self.next_key,
                machine: RiseFall::new(target.check.rise, target.check.fall),
                target: Arc::new(target),
                entries,
                next_due: now + first,
                in_flight: None,
                latency: None,
                tally: Tally::default(),
            });
            self.next_key += 1;
        }
        for t in old {
            tracing::info!(backend = %t.target.addr, check = t.target.check.probe.name(),
                "check stopped: no backend uses it any more");
        }
    }

    /// Probes due at `now`, marked in flight.
    pub fn poll_due(&mut self, now: Instant) -> Vec<Job> {
        let mut jobs = Vec::new();
        for t in &mut self.targets {
            if t.in_flight.is_none() && t.next_due <= now {
                t.in_flight = Some(now);
                jobs.push(Job {
                    index: t.key,
                    target: Arc::clone(&t.target),
                });
            }
        }
        jobs
    }

    /// When the next probe is due (`None` when nothing is checked or all are in flight).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.targets
            .iter()
            .filter(|t| t.in_flight.is_none())
            .map(|t| t.next_due)
            .min()
    }

    /// The services of `entries`, as `name (vip)`.
    fn services_of(&self, entries: &[(VipId, BackendId)]) -> Vec<String> {
        let mut v: Vec<String> = entries
            .iter()
            .filter_map(|(vip, _)| self.table.service_by_id(*vip))
            .map(|(name, s)| format!("{name} ({})", s.vip))
            .collect();
        v.dedup();
        v
    }

    fn log(
        &self,
        kind: LogKind,
        service: Option<String>,
        backend: Option<SocketAddr>,
        message: String,
    ) {
        self.push(Logged {
            seq: 0,
            time: SystemTime::now(),
            kind,
            service,
            backend,
            message,
            health: None,
        });
    }

    fn push(&self, e: Logged) {
        if let Ok(mut r) = self.events.lock() {
            r.push(e);
        }
    }

    fn record(&self, e: HealthEvent, entries: &[(VipId, BackendId)]) {
        let services = e.services.join(", ");
        let message = match e.kind {
            EventKind::Down => {
                tracing::warn!(
                    backend = %e.backend, services = ?e.services, check = %e.check,
                    reason = %e.reason, failures = e.failures, generation = e.generation,
                    "backend down"
                );
                format!(
                    "backend {} down for {services}: {} check failed {} time(s): {} (generation {})",
                    e.backend, e.check, e.failures, e.reason, e.generation
                )
            }
            EventKind::Up => {
                tracing::info!(
                    backend = %e.backend, services = ?e.services, check = %e.check,
                    reason = %e.reason, successes = e.successes, generation = e.generation,
                    "backend up"
                );
                format!(
                    "backend {} up for {services}: {} check passed {} time(s) (generation {})",
                    e.backend, e.check, e.successes, e.generation
                )
            }
        };
        // One service: name it, so `events` can be filtered by service.
        let mut names = entries
            .iter()
            .filter_map(|(vip, _)| self.table.service_by_id(*vip).map(|(n, _)| n.clone()));
        let service = match (names.next(), names.next()) {
            (Some(n), None) => Some(n),
            _ => None,
        };
        self.push(Logged {
            seq: 0,
            time: e.time,
            kind: LogKind::Health,
            service,
            backend: Some(e.backend),
            message,
            health: Some(e),
        });
    }

    /// Feeds a probe's outcome, handled at `now`; returns the snapshot to publish when the
    /// backend changed state.
    ///
    /// # Errors
    /// When the dataplane refuses the new table (a Spray bug).
    pub fn handle_outcome(
        &mut self,
        o: &Outcome,
        now: Instant,
    ) -> Result<Option<Arc<Snapshot>>, StateError> {
        let jitter = 0.9 + 0.2 * self.jitter.next();
        let Some(t) = self.targets.iter_mut().find(|t| t.key == o.index) else {
            // A check that was stopped while its probe ran.
            return Ok(None);
        };
        t.in_flight = None;
        t.latency = Some(o.finished.saturating_duration_since(o.started));
        let interval = t.target.check.interval;
        t.next_due = o.started + interval.mul_f64(jitter);
        // A success from a probe that started before the last failure (an unreachable for
        // data that came in while it ran) says nothing about the backend now.
        if o.result.is_ok() && t.machine.last_failure().is_some_and(|f| o.started < f) {
            return Ok(None);
        }
        let reason = match &o.result {
            Ok(Evidence::Answer) => "check passed".to_owned(),
            Ok(Evidence::Silence) => "check passed (no reply, no icmp error)".to_owned(),
            Err(e) => e.0.clone(),
        };
        let verdict = match &o.result {
            Ok(Evidence::Answer) => Some(true),
            Ok(Evidence::Silence) => t.machine.silence_counts(now).then_some(true),
            Err(_) => Some(false),
        };
        // Silence right after an ICMP error is no news (the kernel rate-limits the errors).
        let Some(ok) = verdict else {
            return Ok(None);
        };
        if !ok {
            t.tally.failures += 1;
        }
        let decided = t.machine.handle_result(now, ok, &reason);
        if !ok && t.machine.state() == HealthState::Up {
            // Confirm a failure fast: the next check starts as this one ends, at most twice
            // per interval, so `fall` failures take (fall - 1) * interval / 2 + timeout
            // rather than fall intervals (docs/config.md gives the bound).
            t.next_due = now.max(o.started + interval / 2);
        }
        let Some(tr) = decided else {
            if let Err(e) = &o.result {
                tracing::debug!(backend = %t.target.addr, check = t.target.check.probe.name(),
                    error = %e, failures = t.machine.counts().1, "check failed");
            }
            return Ok(None);
        };
        match tr.to {
            HealthState::Up => t.tally.ups += 1,
            HealthState::Down => t.tally.downs += 1,
        }
        let (addr, check, entries) = (
            t.target.addr,
            t.target.check.probe.name().to_owned(),
            t.entries.clone(),
        );
        let snap = self.rebuild()?;
        self.record(
            HealthEvent {
                time: SystemTime::now(),
                instant: tr.at,
                generation: snap.generation,
                kind: match tr.to {
                    HealthState::Up => EventKind::Up,
                    HealthState::Down => EventKind::Down,
                },
                backend: addr,
                services: self.services_of(&entries),
                check,
                reason: tr.reason,
                successes: tr.successes,
                failures: tr.failures,
            },
            &entries,
        );
        Ok(Some(snap))
    }

    /// A worker saw a destination unreachable come back for a datagram it sent to a
    /// backend: every target of that address that decides for the report's VIP goes down at
    /// once. Returns the snapshot to publish when one went down.
    ///
    /// # Errors
    /// When the dataplane refuses the new table (a Spray bug).
    pub fn handle_passive(
        &mut self,
        r: &PassiveReport,
        now: Instant,
    ) -> Result<Option<Arc<Snapshot>>, StateError> {
        // Only "nothing received it": port or host unreachable. Fragmentation needed, too
        // big or time exceeded say nothing about the receiver.
        if dataplane::icmp::passive_errno(r.backend.is_ipv6(), r.icmp).is_none() {
            return Ok(None);
        }
        let reason = format!(
            "icmp type {} code {} for a data datagram ({})",
            r.icmp.0,
            r.icmp.1,
            std::io::Error::from_raw_os_error(r.errno)
                .to_string()
                .to_lowercase()
        );
        let mut downs = Vec::new();
        for t in &mut self.targets {
            if t.target.addr != r.backend || !t.entries.iter().any(|(v, _)| *v == r.vip) {
                continue;
            }
            if let Some(tr) = t.machine.handle_unreachable(now, &reason) {
                t.tally.downs += 1;
                downs.push((tr, t.entries.clone()));
            }
        }
        if downs.is_empty() {
            return Ok(None);
        }
        let snap = self.rebuild()?;
        for (tr, entries) in downs {
            self.record(
                HealthEvent {
                    time: SystemTime::now(),
                    instant: tr.at,
                    generation: snap.generation,
                    kind: EventKind::Down,
                    backend: r.backend,
                    services: self.services_of(&entries),
                    check: "passive".into(),
                    reason: tr.reason,
                    successes: 0,
                    failures: tr.failures,
                },
                &entries,
            );
        }
        Ok(Some(snap))
    }

    /// Applies an operator's `change` at `now`; returns the reply and the snapshot to
    /// publish (`None` for a no-op). Backends it adds are checked from now on (see
    /// `docs/config.md` for the check they inherit); backends it removes stop being checked unless
    /// another entry shares their check.
    ///
    /// # Errors
    /// `not_found`, `conflict` or `bad_args` when the change does not fit the table;
    /// `internal` when the dataplane refuses the result. Nothing changes then.
    pub fn apply(
        &mut self,
        change: &Change,
        who: &Who,
        now: Instant,
    ) -> Result<(Applied, Option<Arc<Snapshot>>), ApiError> {
        let mut next = self.table.clone();
        let done = next.change(change)?;
        let Some(message) = done.message else {
            return Ok((
                Applied {
                    generation: self.current.generation,
                    message: "no change".to_owned(),
                },
                None,
            ));
        };
        let snap = self
            .build(&next, self.current.generation + 1)
            .map_err(|e| internal(&e))?;
        self.table = next;
        self.install(&snap);
        self.sync_targets(now);
        self.sync_neighbours(now);
        let generation = snap.generation;
        tracing::info!(%who, generation, "{message}");
        self.log(
            LogKind::Admin,
            Some(done.service),
            done.backend,
            format!("{message} (by {who})"),
        );
        Ok((
            Applied {
                generation,
                message,
            },
            Some(snap),
        ))
    }

    /// Makes the table the reloaded `config` (read from `file`) at `now`, or records its
    /// refusal (`Err` with the message); returns the reply and the snapshot to publish.
    /// Ids, health and marks of what remains are kept (see `docs/config.md`, Reload).
    ///
    /// # Errors
    /// `refused` with the message when the file did not load; `conflict` when ids run out;
    /// `internal` when the dataplane refuses the table. Nothing changes then.
    pub fn reload(
        &mut self,
        config: Result<Config, String>,
        file: &str,
        who: &Who,
        now: Instant,
    ) -> Result<(Reloaded, Arc<Snapshot>), ApiError> {
        let config = match config {
            Ok(c) => c,
            Err(message) => {
                tracing::warn!(%who, "{message}");
                self.log(LogKind::Reload, None, None, format!("{message} (by {who})"));
                return Err(ApiError::new(ErrorCode::Refused, message));
            }
        };
        let mut next = self.table.clone();
        let (summary, restart) = next.reload(config)?;
        let snap = self
            .build(&next, self.current.generation + 1)
            .map_err(|e| internal(&e))?;
        self.table = next;
        self.install(&snap);
        self.sync_targets(now);
        self.sync_neighbours(now);
        let generation = snap.generation;
        tracing::info!(%who, generation, file = %file, "reloaded: {summary}");
        if !restart.is_empty() {
            tracing::warn!(keys = ?restart, "changed keys take effect only at restart");
        }
        self.log(
            LogKind::Reload,
            None,
            None,
            format!("reloaded {file}: {summary} (by {who})"),
        );
        Ok((
            Reloaded {
                generation,
                file: file.to_owned(),
                summary,
                restart_needed: restart,
            },
            snap,
        ))
    }

    /// Every service with its backends, weights, health, check latency, admin state and
    /// counters (zero without counters, see [`State::set_counters`]).
    pub fn list(&self) -> ServiceList {
        let t = &self.table;
        let info = |s: &table::Svc, b: &table::Be| {
            let (packets, bytes) = t.ids.backend(b.id);
            let target = self.target(b.addr, t.checks.get(&b.id));
            let up = target.map_or(true, |t| t.machine.state() == HealthState::Up);
            let in_rotation = s.admin == Admin::Enabled && b.admin == Admin::Enabled && up;
            let method = match (b.tunnel, s.forwarding.method) {
                (Some(_), _) => Method::Tunnel,
                (None, Method::Tunnel) => Method::Dr,
                (None, m) => m,
            };
            BackendInfo {
                addr: b.addr,
                mode: method,
                weight: b.weight,
                effective_weight: if in_rotation { b.weight } else { 0 },
                health: if up {
                    api::HealthState::Up
                } else {
                    api::HealthState::Down
                },
                admin: b.admin,
                packets,
                bytes,
                check_latency_seconds: target.and_then(|t| t.latency).map(|d| d.as_secs_f64()),
                check_failures: target.map_or(0, |t| t.tally.failures),
                went_up: target.map_or(0, |t| t.tally.ups),
                went_down: target.map_or(0, |t| t.tally.downs),
            }
        };
        let services = t
            .services
            .iter()
            .map(|(name, s)| {
                let (packets, bytes) = t.ids.vip(s.id);
                ServiceInfo {
                    name: name.clone(),
                    vip: s.vip,
                    protocol: "udp".to_owned(),
                    scheduler: s.scheduler,
                    mode: s.forwarding.method,
                    admin: s.admin,
                    packets,
                    bytes,
                    in_rotation: 0,
                    backends: s.backends.iter().map(|b| info(s, b)).collect(),
                    mirrors: s
                        .mirrors
                        .iter()
                        .map(|p| {
                            let backends: Vec<BackendInfo> =
                                p.backends.iter().map(|b| info(s, b)).collect();
                            MirrorInfo {
                                name: p.name.clone(),
                                scheduler: p.scheduler,
                                sample: p.sample,
                                in_rotation: backends
                                    .iter()
                                    .filter(|b| b.effective_weight > 0)
                                    .count(),
                                backends,
                            }
                        })
                        .collect(),
                }
            })
            .map(|mut info: ServiceInfo| {
                info.in_rotation = info
                    .backends
                    .iter()
                    .filter(|b| b.effective_weight > 0)
                    .count();
                info
            })
            .collect();
        ServiceList {
            generation: self.current.generation,
            services,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{BackendRef, NewBackend, NewService};
    use crate::config::Machine;
    use crate::health::ProbeError;

    const SRC: &str = r#"
[services.a]
vip = "127.0.0.10:5514"
fallback = "127.0.0.1:7000"
passive = false
backends = [{ addr = "127.0.0.1:6001" }, { addr = "127.0.0.1:6002" }]
[services.a.check]
type = "udp"
interval_ms = 100
timeout_ms = 50
rise = 2
fall = 3

[services.b]
vip = "127.0.0.11:5514"
backends = [{ addr = "127.0.0.1:6001" }, { addr = "127.0.0.1:6002" }]
[services.b.check]
type = "udp"
interval_ms = 100
timeout_ms = 50
rise = 2
fall = 3
"#;

    fn state() -> (State, Instant) {
        let c = Config::parse("t.toml", SRC, &Machine { cores: vec![0] }).unwrap();
        let t0 = Instant::now();
        (State::new(c, 1, t0).unwrap(), t0)
    }

    fn outcome(index: usize, at: Instant, ok: bool) -> Outcome {
        Outcome {
            index,
            started: at,
            finished: at,
            result: if ok {
                Ok(Evidence::Answer)
            } else {
                Err(ProbeError(
                    "icmp port unreachable (connection refused)".into(),
                ))
            },
        }
    }

    /// Advances `now` in 10 ms steps, running every due check (target 0 with result `ok0`,
    /// all others fail when `all` is set, else pass) until target 0 has been checked `n`
    /// times (and, with `all`, every other target too: first checks are jittered, so
    /// another target may lag); returns the snapshots published.
    fn checks(
        s: &mut State,
        now: &mut Instant,
        n: usize,
        ok0: bool,
        all: bool,
    ) -> Vec<Arc<Snapshot>> {
        let mut out = Vec::new();
        let mut done = std::collections::HashMap::<usize, usize>::new();
        let finished = |done: &std::collections::HashMap<usize, usize>, targets: usize| {
            let n0 = done.get(&0).copied().unwrap_or(0);
            n0 >= n && (!all || (done.len() == targets && done.values().all(|&d| d >= n)))
        };
        while !finished(&done, s.targets()) {
            *now += Duration::from_millis(10);
            for j in s.poll_due(*now) {
                let ok = if j.index == 0 { ok0 } else { !all };
                *done.entry(j.index).or_default() += 1;
                if let Some(snap) = s.handle_outcome(&outcome(j.index, *now, ok), *now).unwrap() {
                    out.push(snap);
                }
            }
        }
        out
    }

    fn weights(snap: &Snapshot) -> Vec<Vec<u32>> {
        snap.services()
            .map(|s| {
                s.spec
                    .backends
                    .iter()
                    .map(|b| b.effective_weight())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn a_shared_backend_is_checked_once_and_leaves_both_vips_in_one_snapshot() {
        let (mut s, t0) = state();
        assert_eq!(s.targets(), 2, "two addresses, one check each");
        assert_eq!(s.snapshot().generation, 1);
        // First checks are spread over the first interval, never later.
        assert!(s.poll_timeout().unwrap() <= t0 + Duration::from_millis(100));
        let mut now = t0;
        let published = checks(&mut s, &mut now, 3, false, false);
        assert_eq!(published.len(), 1, "one decision, one snapshot");
        let snap = &published[0];
        assert_eq!(snap.generation, 2);
        assert_eq!(weights(snap), [vec![0, 1], vec![0, 1]]);
        // Nothing was removed: both services, both backends, the fallback.
        assert_eq!(snap.services().count(), 2);
        assert!(snap.services().next().unwrap().spec.fallback.is_some());
        let ev = s.events();
        assert_eq!(ev.len(), 1);
        let e = &ev[0];
        assert_eq!(e.kind, EventKind::Down);
        assert_eq!(e.backend, "127.0.0.1:6001".parse().unwrap());
        assert_eq!(e.services, ["a (127.0.0.10:5514)", "b (127.0.0.11:5514)"]);
        assert_eq!((e.check.as_str(), e.failures, e.generation), ("udp", 3, 2));
        assert_eq!(e.reason, "icmp port unreachable (connection refused)");
        // Back after `rise` successes.
        let back = checks(&mut s, &mut now, 2, true, false);
        assert_eq!(back.len(), 1);
        assert_eq!(weights(&back[0]), [vec![1, 1], vec![1, 1]]);
        assert_eq!(s.events()[1].kind, EventKind::Up);
    }

    #[test]
    fn all_down_keeps_the_service_and_its_fallback() {
        let (mut s, mut now) = state();
        checks(&mut s, &mut now, 3, false, true);
        let snap = s.snapshot();
        assert_eq!(weights(snap), [vec![0, 0], vec![0, 0]]);
        let a = snap.services().next().unwrap();
        let mut cursor = 0;
        assert_eq!(
            a.pick(&mut cursor, 0).map(|b| b.addr),
            Some("127.0.0.1:7000".parse().unwrap()),
            "no backend in rotation: the fallback"
        );
        let b = snap.services().nth(1).unwrap();
        assert!(
            b.pick(&mut cursor, 0).is_none(),
            "no fallback: drop and count"
        );
    }

    fn who() -> Who {
        Who::local("test")
    }

    /// Applies `c` at `now`; the snapshot it published.
    fn apply(s: &mut State, c: Change, now: Instant) -> Option<Arc<Snapshot>> {
        s.apply(&c, &who(), now).unwrap().1
    }

    fn backend(service: &str, addr: &str) -> BackendRef {
        BackendRef {
            service: service.to_owned(),
            backend: addr.parse().unwrap(),
        }
    }

    fn kinds(s: &State) -> Vec<(&'static str, String)> {
        crate::health::events::since(s.event_ring(), 0)
            .into_iter()
            .map(|e| (e.kind.name(), e.message))
            .collect()
    }

    #[test]
    fn drain_is_independent_of_health() {
        let (mut s, mut now) = state();
        let drain = Change::Drain(backend("a", "127.0.0.1:6001"));
        let snap = apply(&mut s, drain.clone(), now).unwrap();
        assert_eq!(
            weights(&snap),
            [vec![0, 1], vec![1, 1]],
            "drain is per service"
        );
        assert!(
            apply(&mut s, drain, now).is_none(),
            "no change, no snapshot"
        );
        // A drained backend is still checked: going down and up again does not undrain it.
        checks(&mut s, &mut now, 3, false, false);
        assert_eq!(weights(s.snapshot()), [vec![0, 1], vec![0, 1]]);
        checks(&mut s, &mut now, 2, true, false);
        assert_eq!(weights(s.snapshot()), [vec![0, 1], vec![1, 1]]);
        let snap = apply(&mut s, Change::Undrain(backend("a", "127.0.0.1:6001")), now).unwrap();
        assert_eq!(weights(&snap), [vec![1, 1], vec![1, 1]]);
        let w = Change::SetWeight {
            target: backend("b", "127.0.0.1:6001"),
            weight: 0,
        };
        let snap = apply(&mut s, w, now).unwrap();
        assert_eq!(weights(&snap), [vec![1, 1], vec![0, 1]]);
        // Admin changes and health transitions are one stream.
        let k: Vec<_> = kinds(&s).into_iter().map(|(k, _)| k).collect();
        assert_eq!(k, ["admin", "health", "health", "admin", "admin"]);
        let log = kinds(&s);
        assert_eq!(
            log[0].1,
            "backend 127.0.0.1:6001 of service a: enabled -> drained (by test)"
        );
        assert!(
            log[1].1.starts_with("backend 127.0.0.1:6001 down for a (127.0.0.10:5514), b (127.0.0.11:5514): udp check failed 3 time(s)"),
            "{}",
            log[1].1
        );
        let kinds: Vec<_> = s.events().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [EventKind::Down, EventKind::Up]);
        let e = s
            .apply(&Change::Drain(backend("c", "127.0.0.1:6001")), &who(), now)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::NotFound);
        let e = s
            .apply(&Change::Drain(backend("a", "127.0.0.1:1")), &who(), now)
            .unwrap_err();
        assert_eq!(e.message, "service a has no backend 127.0.0.1:1");
    }

    #[test]
    fn health_and_weight_changes_do_not_undo_each_other() {
        let (mut s, mut now) = state();
        let weight = |w| Change::SetWeight {
            target: backend("a", "127.0.0.1:6001"),
            weight: w,
        };
        apply(&mut s, weight(5), now).unwrap();
        assert_eq!(weights(s.snapshot()), [vec![5, 1], vec![1, 1]]);
        // A health verdict after the weight change keeps the weight.
        let down = checks(&mut s, &mut now, 3, false, false);
        assert_eq!(weights(&down[0]), [vec![0, 1], vec![0, 1]]);
        let a = down[0].services().next().unwrap();
        assert_eq!(a.spec.backends[0].weight, 5, "down, but still weight 5");
        // A weight change while down keeps it down...
        let snap = apply(&mut s, weight(7), now).unwrap();
        assert_eq!(weights(&snap), [vec![0, 1], vec![0, 1]]);
        assert_eq!(s.health(BackendId(0)), Health::Down);
        let list = s.list();
        let b = &list.services[0].backends[0];
        assert_eq!(
            (b.weight, b.effective_weight, b.health),
            (7, 0, api::HealthState::Down)
        );
        assert!(b.check_latency_seconds.is_some());
        // ...and coming back up brings the new weight, not the file's.
        let up = checks(&mut s, &mut now, 2, true, false);
        assert_eq!(weights(&up[0]), [vec![7, 1], vec![1, 1]]);
        // Fallback and passive settings survive every change.
        let a = s.snapshot().services().next().unwrap();
        assert!(a.spec.fallback.is_some());
    }

    const RELOADED: &str = r#"
[services.a]
vip = "127.0.0.10:5514"
fallback = "127.0.0.1:7000"
passive = true
backends = [{ addr = "127.0.0.1:6001" }, { addr = "127.0.0.1:6003", weight = 2 }]
[services.a.check]
type = "udp"
interval_ms = 100
timeout_ms = 50
rise = 2
fall = 3

[services.b]
vip = "127.0.0.11:5514"
backends = [{ addr = "127.0.0.1:6001" }, { addr = "127.0.0.1:6002" }]
[services.b.check]
type = "udp"
interval_ms = 200
timeout_ms = 50
rise = 2
fall = 3
"#;

    #[test]
    fn reload_keeps_ids_health_and_marks_of_what_stays() {
        let (mut s, mut now) = state();
        // 6001 down (one check, both services), 6002 drained in b.
        checks(&mut s, &mut now, 3, false, false);
        apply(&mut s, Change::Drain(backend("b", "127.0.0.1:6002")), now).unwrap();
        let ids = |snap: &Snapshot| -> Vec<(u16, Vec<(String, u16)>)> {
            snap.services()
                .map(|v| {
                    (
                        v.spec.id.0,
                        v.spec
                            .backends
                            .iter()
                            .map(|b| (b.addr.to_string(), b.id.0))
                            .collect(),
                    )
                })
                .collect()
        };
        let before = ids(s.snapshot());
        let c = Config::parse("t.toml", RELOADED, &Machine { cores: vec![0] }).unwrap();
        let (r, snap) = s.reload(Ok(c), "t.toml", &who(), now).unwrap();
        assert_eq!(
            r.summary,
            "services: 0 added, 0 removed, 1 changed; backends: 1 added, 1 removed, 0 re-weighted"
        );
        assert_eq!(snap.generation, r.generation);
        // Ids: a keeps 0 (6001 id 0), 6003 is new (after the fallback's id 4); b keeps 1
        // and its backends 2 and 3.
        assert_eq!(
            before,
            [
                (
                    0,
                    vec![("127.0.0.1:6001".into(), 0), ("127.0.0.1:6002".into(), 1)]
                ),
                (
                    1,
                    vec![("127.0.0.1:6001".into(), 2), ("127.0.0.1:6002".into(), 3)]
                )
            ]
        );
        assert_eq!(
            ids(&snap),
            [
                (
                    0,
                    vec![("127.0.0.1:6001".into(), 0), ("127.0.0.1:6003".into(), 5)]
                ),
                (
                    1,
                    vec![("127.0.0.1:6001".into(), 2), ("127.0.0.1:6002".into(), 3)]
                )
            ]
        );
        // a's check of 6001 did not change: still down. b's did (interval): a new check,
        // which starts up. 6002 stays drained in b; 6003 is new and up.
        assert_eq!(weights(&snap), [vec![0, 2], vec![1, 0]]);
        assert_eq!(s.health(BackendId(0)), Health::Down);
        assert_eq!(s.health(BackendId(2)), Health::Up);
        // Checks: 6001 (a), 6003 (a), 6001 (b, new interval), 6002 (b).
        assert_eq!(s.targets(), 4);
        let a = snap.services().next().unwrap();
        assert!(a.spec.passive && a.spec.fallback.is_some());
        assert_eq!(a.spec.fallback.as_ref().unwrap().id, BackendId(4), "kept");
        // A refused reload changes nothing and is logged.
        let gen = s.snapshot().generation;
        let e = s
            .reload(Err("reload refused: bad".into()), "t.toml", &who(), now)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Refused);
        assert_eq!(s.snapshot().generation, gen);
        let log = kinds(&s);
        assert_eq!(
            log.last().unwrap(),
            &("reload", "reload refused: bad (by test)".into())
        );
    }

    #[test]
    fn restart_warning_compares_with_the_running_config_not_the_last_file() {
        let machine = Machine { cores: vec![0, 1] };
        let with = |workers: usize| {
            let src = format!("{SRC}\n[runtime]\nworkers = {workers}\n");
            Config::parse("t.toml", &src, &machine).map_err(|e| e.to_string())
        };
        let now = Instant::now();
        let mut s = State::new(with(1).unwrap(), 1, now).unwrap();
        let mut restart = |workers| {
            s.reload(with(workers), "t.toml", &who(), now)
                .unwrap()
                .0
                .restart_needed
        };
        assert_eq!(restart(2), ["runtime.workers"]);
        // The process still runs one worker: the same file again still needs a restart.
        assert_eq!(restart(2), ["runtime.workers"]);
        assert!(restart(1).is_empty(), "back to what runs");
    }

    #[test]
    fn a_backend_added_at_run_time_inherits_the_service_check() {
        let (mut s, now) = state();
        let add = |service: &str, addr: &str| Change::AddBackend {
            service: service.to_owned(),
            backend: NewBackend {
                addr: addr.parse().unwrap(),
                weight: 1,
            },
        };
        let (r, _) = s.apply(&add("a", "127.0.0.1:6009"), &who(), now).unwrap();
        assert_eq!(
            r.message,
            "added backend 127.0.0.1:6009 weight 1 to service a, checked by udp"
        );
        assert_eq!(s.targets(), 3);
        // Its first check comes within one interval, on its own port.
        let later = now + Duration::from_millis(100);
        let jobs = s.poll_due(later);
        let j = jobs
            .iter()
            .find(|j| j.target.addr.port() == 6009)
            .expect("the new backend is checked");
        assert!(matches!(
            j.target.check.probe,
            crate::health::Probe::Udp { port: None, .. }
        ));
        // Fails `fall` times: down, and only it.
        let mut snap = None;
        for i in 0..3 {
            let at = later + Duration::from_millis(100 * i);
            snap = s
                .handle_outcome(&outcome(j.index, at, false), at)
                .unwrap()
                .or(snap);
        }
        assert_eq!(weights(&snap.unwrap()), [vec![1, 1, 0], vec![1, 1]]);
        // Removing it stops its check; an added vip has no check to inherit.
        apply(
            &mut s,
            Change::DelBackend(backend("a", "127.0.0.1:6009")),
            now,
        )
        .unwrap();
        assert_eq!(s.targets(), 2);
        let vip = Change::AddVip(NewService {
            name: "c".into(),
            vip: "127.0.0.12:5514".parse().unwrap(),
            scheduler: dataplane::sched::SchedulerKind::Rr,
            mode: crate::config::file::Method::Nat,
            backends: vec![],
        });
        apply(&mut s, vip, now).unwrap();
        let (r, _) = s.apply(&add("c", "127.0.0.1:6009"), &who(), now).unwrap();
        assert!(!r.message.contains("checked"), "{}", r.message);
        assert_eq!(s.targets(), 2);
        // The fallback is not a backend to add.
        let e = s
            .apply(&add("a", "127.0.0.1:7000"), &who(), now)
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Conflict);
    }

    /// A UDP port with nothing bound to it (the kernel answers ICMP port unreachable).
    fn closed_port() -> SocketAddr {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    }

    #[test]
    fn a_backend_added_through_the_controller_is_checked_and_goes_down() {
        use crate::api::Controller as _;
        let live = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let src = format!(
            "[services.s]\nvip = \"127.0.0.1:9\"\nbackends = [{{ addr = \"{}\" }}]\n\
             [services.s.check]\ntype = \"udp\"\ninterval_ms = 30\ntimeout_ms = 20\nfall = 2\n",
            live.local_addr().unwrap()
        );
        let c = Config::parse("t.toml", &src, &Machine { cores: vec![0] }).unwrap();
        let (tx, rx) = crossbeam_channel::unbounded();
        let ctrl = Controller::start(
            State::new(c, 1, Instant::now()).unwrap(),
            Links {
                updates: vec![tx],
                ..Links::default()
            },
        )
        .unwrap();
        let dead = closed_port();
        let r = ctrl
            .apply(
                Change::AddBackend {
                    service: "s".into(),
                    backend: NewBackend {
                        addr: dead,
                        weight: 1,
                    },
                },
                &who(),
            )
            .unwrap();
        // Published before the reply.
        assert_eq!(rx.try_recv().unwrap().generation, r.generation);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let l = ctrl.list();
            let b = &l.services[0].backends;
            if b[1].health == api::HealthState::Down {
                assert_eq!(b[1].effective_weight, 0);
                assert_eq!(b[0].health, api::HealthState::Up, "the live one stays up");
                assert!(b[1].check_latency_seconds.is_some());
                break;
            }
            assert!(Instant::now() < deadline, "{l:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        let snap = rx.try_iter().last().expect("the verdict was published");
        assert_eq!(weights(&snap), [vec![1, 0]]);
        let ev = ctrl.events(0);
        assert_eq!(ev[0].kind, "admin");
        let down = ev
            .iter()
            .find(|e| e.kind == "health")
            .expect("a health event");
        assert_eq!(down.backend, Some(dead));
        assert_eq!(down.service.as_deref(), Some("s"));
        assert!(ev.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        assert_eq!(ctrl.events(ev[0].seq).len(), ev.len() - 1);
        ctrl.stop();
        assert_eq!(
            ctrl.apply(
                Change::DelVip {
                    service: "s".into()
                },
                &who()
            )
            .unwrap_err()
            .code,
            ErrorCode::Internal
        );
    }

    #[test]
    fn an_unreachable_for_data_takes_the_backend_down_at_once_for_every_vip() {
        let (mut s, mut now) = state();
        // Run the first round so nothing is due for a while.
        checks(&mut s, &mut now, 1, true, false);
        let at = now + Duration::from_millis(1);
        let r = PassiveReport {
            vip: VipId(0),
            backend: "127.0.0.1:6001".parse().unwrap(),
            errno: libc::ECONNREFUSED,
            icmp: (3, 3),
            at,
        };
        let snap = s
            .handle_passive(&r, at)
            .unwrap()
            .expect("down on the first unreachable");
        // Both VIPs share the backend (and its check): both drop it in one snapshot.
        assert_eq!(weights(&snap), [vec![0, 1], vec![0, 1]]);
        assert!(s.handle_passive(&r, at).unwrap().is_none(), "already down");
        let ev = s.events();
        assert_eq!(ev.len(), 1);
        assert_eq!(
            (ev[0].kind, ev[0].check.as_str()),
            (EventKind::Down, "passive")
        );
        assert!(
            ev[0]
                .reason
                .starts_with("icmp type 3 code 3 for a data datagram"),
            "{}",
            ev[0].reason
        );
        // Silence right after it is no news: the backend stays down.
        let j = s.poll_due(at + Duration::from_secs(1));
        let silent = Outcome {
            index: j.iter().find(|j| j.index == 0).unwrap().index,
            started: at + Duration::from_millis(100),
            finished: at + Duration::from_millis(150),
            result: Ok(Evidence::Silence),
        };
        assert!(s
            .handle_outcome(&silent, at + Duration::from_millis(150))
            .unwrap()
            .is_none());
        assert_eq!(s.health(BackendId(0)), Health::Down);
    }

    #[test]
    fn a_report_about_another_vip_or_address_changes_nothing() {
        let (mut s, _) = state();
        let at = Instant::now();
        let mut r = PassiveReport {
            vip: VipId(0),
            backend: "127.0.0.1:6009".parse().unwrap(),
            errno: libc::ECONNREFUSED,
            icmp: (3, 3),
            at,
        };
        assert!(s.handle_passive(&r, at).unwrap().is_none());
        r.backend = "127.0.0.1:6001".parse().unwrap();
        r.vip = VipId(7);
        assert!(s.handle_passive(&r, at).unwrap().is_none());
        // Fragmentation needed (the path's MTU) is no sign of a dead receiver.
        r.vip = VipId(0);
        r.icmp = (3, 4);
        r.errno = libc::EMSGSIZE;
        assert!(s.handle_passive(&r, at).unwrap().is_none());
        assert!(s.events().is_empty());
    }

    #[test]
    fn a_success_from_a_probe_started_before_the_report_is_ignored() {
        let (mut s, t0) = state();
        let at = t0 + Duration::from_millis(100);
        let jobs = s.poll_due(at);
        let j = jobs.iter().find(|j| j.index == 0).unwrap();
        let r = PassiveReport {
            vip: VipId(1),
            backend: "127.0.0.1:6001".parse().unwrap(),
            errno: libc::ECONNREFUSED,
            icmp: (3, 3),
            at,
        };
        let later = at + Duration::from_millis(5);
        assert!(s.handle_passive(&r, later).unwrap().is_some());
        // Started before the report: not one of the `rise` successes.
        assert!(s
            .handle_outcome(&outcome(j.index, at, true), later)
            .unwrap()
            .is_none());
        assert_eq!(s.health(BackendId(0)), Health::Down);
        let t = s.targets.iter().find(|t| t.key == 0).unwrap();
        assert_eq!(t.machine.counts(), (0, 0), "no success counted");
    }

    #[test]
    fn a_failure_is_confirmed_at_half_the_interval() {
        let (mut s, mut now) = state();
        checks(&mut s, &mut now, 1, true, false);
        // Target 0 fails: its next check is due half an interval after this one started
        // (interval 100 ms in `state()`), not a whole one.
        let j = loop {
            now += Duration::from_millis(1);
            if let Some(j) = s.poll_due(now).into_iter().find(|j| j.index == 0) {
                break j;
            }
        };
        let started = now;
        let done = started + Duration::from_millis(20);
        assert!(s
            .handle_outcome(&outcome(j.index, started, false), done)
            .unwrap()
            .is_none());
        let t = s.targets.iter().find(|t| t.key == 0).unwrap();
        assert_eq!(t.next_due, started + Duration::from_millis(50));
        // A probe that took longer than that is followed at once.
        let j = s.poll_due(t.next_due);
        let j = j.iter().find(|j| j.index == 0).unwrap();
        let started = started + Duration::from_millis(50);
        let done = started + Duration::from_millis(80);
        assert!(s
            .handle_outcome(&outcome(j.index, started, false), done)
            .unwrap()
            .is_none());
        assert_eq!(
            s.targets.iter().find(|t| t.key == 0).unwrap().next_due,
            done
        );
    }
}

#[cfg(test)]
mod mirror_tests {
    use super::*;
    use crate::config::Machine;
    use crate::health::ProbeError;

    const SRC: &str = r#"
[services.a]
vip = "127.0.0.10:5514"
passive = false
backends = [{ addr = "127.0.0.1:6001" }]
[services.a.check]
type = "udp"
interval_ms = 100
timeout_ms = 50
rise = 2
fall = 3
[[services.a.mirror]]
name = "archive"
backends = [{ addr = "127.0.0.1:7001" }, { addr = "127.0.0.1:7002" }]
"#;

    fn config(src: &str) -> Config {
        Config::parse("t.toml", src, &Machine { cores: vec![0] }).unwrap()
    }

    fn mirror_health(snap: &Snapshot) -> Vec<(u16, Health)> {
        let svc = snap.services().next().unwrap();
        svc.spec.mirrors[0]
            .backends
            .iter()
            .map(|b| (b.id.0, b.health))
            .collect()
    }

    #[test]
    fn a_mirror_backend_is_checked_and_leaves_its_pool_when_down() {
        let t0 = Instant::now();
        let mut s = State::new(config(SRC), 1, t0).unwrap();
        assert_eq!(
            s.targets(),
            3,
            "the pool's backends inherit the service's check"
        );
        let mut now = t0;
        // The pool's first backend (target 1) fails, everything else passes.
        let mut last = None;
        for _ in 0..100 {
            now += Duration::from_millis(10);
            for j in s.poll_due(now) {
                let result = if j.index == 1 {
                    Err(ProbeError("icmp port unreachable".into()))
                } else {
                    Ok(Evidence::Answer)
                };
                let o = Outcome {
                    index: j.index,
                    started: now,
                    finished: now,
                    result,
                };
                if let Some(snap) = s.handle_outcome(&o, now).unwrap() {
                    last = Some(snap);
                }
            }
        }
        let snap = last.expect("the failure was published");
        assert_eq!(mirror_health(&snap), [(1, Health::Down), (2, Health::Up)]);
        assert_eq!(
            snap.services().next().unwrap().spec.backends[0].health,
            Health::Up
        );
        let list = s.list();
        let pool = &list.services[0].mirrors[0];
        assert_eq!(pool.name, "archive");
        assert_eq!(pool.in_rotation, 1);
        assert_eq!(pool.backends[0].health, api::HealthState::Down);
        assert_eq!(
            list.services[0].in_rotation, 1,
            "the primary pool is untouched"
        );
    }

    #[test]
    fn reloads_add_and_remove_pools_and_keep_the_ids_of_what_stays() {
        let t0 = Instant::now();
        let mut s = State::new(config(SRC), 1, t0).unwrap();
        let two_pools = format!(
            "{SRC}[[services.a.mirror]]\nname = \"siem\"\nbackends = [{{ addr = \"127.0.0.1:8001\" }}]\n"
        );
        let (r, snap) = s
            .reload(Ok(config(&two_pools)), "t.toml", &Who::local("test"), t0)
            .unwrap();
        assert!(r.summary.contains("backends: 1 added"), "{}", r.summary);
        let svc = snap.services().next().unwrap();
        let ids = |m: &dataplane::service::MirrorSpec| -> Vec<u16> {
            m.backends.iter().map(|b| b.id.0).collect()
        };
        assert_eq!(svc.spec.mirrors.len(), 2);
        assert_eq!(
            ids(&svc.spec.mirrors[0]),
            [1, 2],
            "the archive pool keeps its ids"
        );
        let siem = ids(&svc.spec.mirrors[1]);
        assert!(!siem.contains(&0) && !siem.contains(&1) && !siem.contains(&2));
        let none = SRC.split("[[services.a.mirror]]").next().unwrap();
        let (r, snap) = s
            .reload(Ok(config(none)), "t.toml", &Who::local("test"), t0)
            .unwrap();
        assert!(
            r.summary.contains("backends: 0 added, 3 removed"),
            "{}",
            r.summary
        );
        assert!(snap.services().next().unwrap().spec.mirrors.is_empty());
        assert_eq!(s.targets(), 1, "the pools' checks stopped with them");
        assert!(s.list().services[0].mirrors.is_empty());
    }
}
