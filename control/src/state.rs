//! The controller: owns the configuration, the health of every checked backend and the
//! operator's overrides (drain, weight), and publishes a new [`Snapshot`] to every worker
//! whenever any of them changes.
//!
//! Two layers, so the logic is testable without threads or sockets:
//!
//! * [`State`] is sans-I/O: it takes probe outcomes, passive reports and admin requests
//!   with the time they happened, says which checks are due, and returns the snapshot to
//!   publish when something changed. It never reads a clock itself.
//! * [`Controller`] is the control thread that drives it: it hands due checks to the
//!   [`Checker`] pool, waits for outcomes, passive reports and commands, and sends each new
//!   snapshot as an `Arc` to every worker's channel.
//!
//! Nothing is deleted and recreated on a state change: every snapshot has every service
//! and every backend of the config; a down or drained backend only gets effective weight 0,
//! and a service whose backends are all out of rotation stays in the table (it drops and
//! counts, or uses its fallback). Checks of the same address with the same check are run
//! once and decide for every service that lists that backend, so two VIPs sharing a backend
//! drop it in the same snapshot.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, Sender};
use dataplane::proxy::PassiveReport;
use dataplane::service::{AdminState, BackendId, Health, Snapshot, SnapshotError, VipId};

use crate::config::Config;
use crate::health::checker::{Checker, Job, Outcome};
use crate::health::events::{EventKind, EventRing, HealthEvent, SharedEvents};
use crate::health::machine::{Machine, State as HealthState};
use crate::health::Target;

/// Capacity of the passive-report channel: a burst of ICMP errors beyond it is only counted
/// by the workers (one report per backend is all the controller needs).
pub const PASSIVE_CHANNEL: usize = 1024;

/// The bounded channel workers report ICMP errors on (`ProxySettings::passive_reports`).
pub fn passive_channel() -> (dataplane::proxy::PassiveSink, Receiver<PassiveReport>) {
    let (tx, rx) = crossbeam_channel::bounded(PASSIVE_CHANNEL);
    (dataplane::proxy::PassiveSink(tx), rx)
}

/// Most checker threads.
pub const MAX_CHECK_THREADS: usize = 64;

/// Error of the controller.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// No service has that name.
    #[error("services.{0}: no such service")]
    UnknownService(String),
    /// The service has no backend at that address.
    #[error("services.{service}: no backend {addr}")]
    UnknownBackend {
        /// Service name.
        service: String,
        /// Backend address:port.
        addr: SocketAddr,
    },
    /// The dataplane refused the table (a Spray bug for a validated config).
    #[error("cannot build the service table")]
    Snapshot(#[source] SnapshotError),
    /// A thread could not be started.
    #[error("cannot start the {0} thread")]
    Spawn(&'static str, #[source] std::io::Error),
    /// The control thread has ended.
    #[error("the control thread has stopped")]
    Stopped,
}

/// A checked (address, check) pair and the backend entries it decides for.
#[derive(Debug)]
struct TargetState {
    target: Arc<Target>,
    machine: Machine,
    entries: Vec<(VipId, BackendId)>,
    next_due: Instant,
    /// When the probe in flight started.
    in_flight: Option<Instant>,
    /// Check again as soon as the probe in flight returns.
    recheck: bool,
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

/// Health, admin state and configuration; builds snapshots. Sans I/O: see the module doc.
#[derive(Debug)]
pub struct State {
    config: Config,
    generation: u64,
    admin: BTreeMap<BackendId, AdminState>,
    weights: BTreeMap<BackendId, u32>,
    targets: Vec<TargetState>,
    events: SharedEvents,
    current: Arc<Snapshot>,
    jitter: Jitter,
}

impl State {
    /// The state for `config` at `now`: every backend up, first snapshot `generation`. The
    /// first check of each backend is spread over its first interval.
    ///
    /// # Errors
    /// When the dataplane refuses the table.
    pub fn new(config: Config, generation: u64, now: Instant) -> Result<Self, StateError> {
        let mut jitter = Jitter::new();
        let mut targets: Vec<TargetState> = Vec::new();
        for svc in &config.services {
            for b in &svc.backends {
                let Some(check) = config.checks.get(&b.id) else {
                    continue;
                };
                let target = Target {
                    addr: b.addr,
                    check: check.clone(),
                };
                match targets.iter_mut().find(|t| *t.target == target) {
                    Some(t) => t.entries.push((svc.id, b.id)),
                    None => {
                        let first = check.interval.mul_f64(jitter.next());
                        targets.push(TargetState {
                            machine: Machine::new(check.rise, check.fall),
                            target: Arc::new(target),
                            entries: vec![(svc.id, b.id)],
                            next_due: now + first,
                            in_flight: None,
                            recheck: false,
                        });
                    }
                }
            }
        }
        let mut admin = BTreeMap::new();
        let mut weights = BTreeMap::new();
        for svc in &config.services {
            for b in &svc.backends {
                admin.insert(b.id, b.admin);
                weights.insert(b.id, b.weight);
            }
        }
        let mut s = Self {
            config,
            generation: generation.saturating_sub(1),
            admin,
            weights,
            targets,
            events: Arc::new(Mutex::new(EventRing::default())),
            current: Arc::new(Snapshot::default()),
            jitter,
        };
        s.rebuild()?;
        Ok(s)
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.current
    }

    /// The event ring, shared.
    pub fn event_ring(&self) -> &SharedEvents {
        &self.events
    }

    /// A copy of the recorded events, oldest first.
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

    /// Builds and installs the next snapshot from config, health and admin state.
    fn rebuild(&mut self) -> Result<Arc<Snapshot>, StateError> {
        let mut specs = self.config.services.clone();
        for svc in &mut specs {
            for b in &mut svc.backends {
                b.health = self.health(b.id);
                b.admin = self.admin.get(&b.id).copied().unwrap_or(b.admin);
                b.weight = self.weights.get(&b.id).copied().unwrap_or(b.weight);
            }
        }
        let snap =
            Arc::new(Snapshot::new(self.generation + 1, specs).map_err(StateError::Snapshot)?);
        self.generation += 1;
        self.current = Arc::clone(&snap);
        Ok(snap)
    }

    /// Probes due at `now`, marked in flight.
    pub fn poll_due(&mut self, now: Instant) -> Vec<Job> {
        let mut jobs = Vec::new();
        for (index, t) in self.targets.iter_mut().enumerate() {
            if t.in_flight.is_none() && t.next_due <= now {
                t.in_flight = Some(now);
                jobs.push(Job {
                    index,
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

    fn services_of(&self, entries: &[(VipId, BackendId)]) -> Vec<String> {
        let mut v: Vec<String> = entries
            .iter()
            .filter_map(|(vip, _)| self.config.services.get(usize::from(vip.0)))
            .map(|s| format!("{} ({})", s.name, s.vip.addr))
            .collect();
        v.dedup();
        v
    }

    fn record(&self, e: HealthEvent) {
        match e.kind {
            EventKind::Down => tracing::warn!(
                backend = %e.backend, services = ?e.services, check = %e.check,
                reason = %e.reason, failures = e.failures, generation = e.generation,
                "backend down"
            ),
            EventKind::Suspect => tracing::warn!(
                backend = %e.backend, services = ?e.services, reason = %e.reason,
                "backend suspect: checking now"
            ),
            _ => tracing::info!(
                backend = %e.backend, services = ?e.services, check = %e.check,
                reason = %e.reason, successes = e.successes, generation = e.generation,
                event = e.kind.name(), "backend state changed"
            ),
        }
        if let Ok(mut r) = self.events.lock() {
            r.push(e);
        }
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
        let Some(t) = self.targets.get_mut(o.index) else {
            return Ok(None);
        };
        t.in_flight = None;
        let interval = t.target.check.interval;
        t.next_due = o.started + interval.mul_f64(jitter);
        if std::mem::take(&mut t.recheck) {
            t.next_due = now;
        }
        // A probe that started before the ICMP error that made the backend suspect says
        // nothing about it: check again instead.
        if t.machine.suspect_since().is_some_and(|s| o.started < s) {
            t.next_due = now;
            return Ok(None);
        }
        let reason = match &o.result {
            Ok(()) => "check passed".to_owned(),
            Err(e) => e.0.clone(),
        };
        let Some(tr) = t.machine.handle_result(now, o.result.is_ok(), &reason) else {
            if let Err(e) = &o.result {
                tracing::debug!(backend = %t.target.addr, check = t.target.check.probe.name(),
                    error = %e, failures = t.machine.counts().1, "check failed");
            }
            return Ok(None);
        };
        let (addr, check, entries) = (
            t.target.addr,
            t.target.check.probe.name().to_owned(),
            t.entries.clone(),
        );
        let snap = self.rebuild()?;
        let check = if tr.suspected {
            format!("{check} (after a passive report)")
        } else {
            check
        };
        self.record(HealthEvent {
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
        });
        Ok(Some(snap))
    }

    /// A worker saw an ICMP error from a backend: each up target of that address becomes
    /// suspect and is checked at once (or as soon as its probe in flight returns).
    pub fn handle_passive(&mut self, r: &PassiveReport, now: Instant) {
        let mut newly = Vec::new();
        for t in &mut self.targets {
            if t.target.addr != r.backend || !t.entries.iter().any(|(v, _)| *v == r.vip) {
                continue;
            }
            if t.machine.handle_suspect(now) {
                if t.in_flight.is_some() {
                    t.recheck = true;
                } else {
                    t.next_due = now;
                }
                newly.push(t.entries.clone());
            }
        }
        for entries in newly {
            self.record(HealthEvent {
                time: SystemTime::now(),
                instant: now,
                generation: 0,
                kind: EventKind::Suspect,
                backend: r.backend,
                services: self.services_of(&entries),
                check: "passive".into(),
                reason: format!(
                    "icmp type {} code {} ({})",
                    r.icmp.0,
                    r.icmp.1,
                    std::io::Error::from_raw_os_error(r.errno)
                        .to_string()
                        .to_lowercase()
                ),
                successes: 0,
                failures: 0,
            });
        }
    }

    fn entry(&self, service: &str, addr: SocketAddr) -> Result<BackendId, StateError> {
        let svc = self
            .config
            .services
            .iter()
            .find(|s| s.name == service)
            .ok_or_else(|| StateError::UnknownService(service.to_owned()))?;
        svc.backends
            .iter()
            .find(|b| b.addr == addr)
            .map(|b| b.id)
            .ok_or_else(|| StateError::UnknownBackend {
                service: service.to_owned(),
                addr,
            })
    }

    fn admin_event(&self, id: BackendId, addr: SocketAddr, kind: EventKind, reason: String) {
        let entries: Vec<_> = self
            .config
            .services
            .iter()
            .filter(|s| s.backends.iter().any(|b| b.id == id))
            .map(|s| (s.id, id))
            .collect();
        self.record(HealthEvent {
            time: SystemTime::now(),
            instant: Instant::now(),
            generation: self.generation,
            kind,
            backend: addr,
            services: self.services_of(&entries),
            check: "admin".into(),
            reason,
            successes: 0,
            failures: 0,
        });
    }

    /// Drains (no new packets; still checked and counted) or re-enables backend `addr` of
    /// `service`; returns the snapshot to publish when that changed anything.
    ///
    /// # Errors
    /// Unknown service or backend.
    pub fn set_drain(
        &mut self,
        service: &str,
        addr: SocketAddr,
        drained: bool,
    ) -> Result<Option<Arc<Snapshot>>, StateError> {
        let id = self.entry(service, addr)?;
        let want = if drained {
            AdminState::Drained
        } else {
            AdminState::Enabled
        };
        if self.admin.insert(id, want) == Some(want) {
            return Ok(None);
        }
        let snap = self.rebuild()?;
        let (kind, why) = if drained {
            (EventKind::Drained, "drained by the operator")
        } else {
            (EventKind::Enabled, "enabled by the operator")
        };
        self.admin_event(id, addr, kind, why.into());
        Ok(Some(snap))
    }

    /// Sets the weight of backend `addr` of `service` (0: no new packets); returns the
    /// snapshot to publish when that changed anything.
    ///
    /// # Errors
    /// Unknown service or backend.
    pub fn set_weight(
        &mut self,
        service: &str,
        addr: SocketAddr,
        weight: u16,
    ) -> Result<Option<Arc<Snapshot>>, StateError> {
        let id = self.entry(service, addr)?;
        let old = self.weights.insert(id, u32::from(weight));
        if old == Some(u32::from(weight)) {
            return Ok(None);
        }
        let snap = self.rebuild()?;
        self.admin_event(
            id,
            addr,
            EventKind::Weight,
            format!("weight {} -> {weight}", old.unwrap_or(0)),
        );
        Ok(Some(snap))
    }
}

enum Command {
    Drain(String, SocketAddr, bool, Sender<Result<(), StateError>>),
    Weight(String, SocketAddr, u16, Sender<Result<(), StateError>>),
}

/// The control thread: runs checks, applies their results and admin requests, publishes
/// snapshots. Dropping it stops the thread (and the checkers) and waits for them.
#[derive(Debug)]
pub struct Controller {
    commands: Option<Sender<Command>>,
    events: SharedEvents,
    current: Arc<Mutex<Arc<Snapshot>>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Drain(s, a, d, _) => write!(f, "Drain({s}, {a}, {d})"),
            Self::Weight(s, a, w, _) => write!(f, "Weight({s}, {a}, {w})"),
        }
    }
}

fn publish(to: &[Sender<Arc<Snapshot>>], current: &Mutex<Arc<Snapshot>>, snap: &Arc<Snapshot>) {
    // Workers first: they are what the change is for.
    for tx in to {
        // A worker that has ended has dropped its receiver; nothing to tell it.
        let _ = tx.send(Arc::clone(snap));
    }
    if let Ok(mut c) = current.lock() {
        *c = Arc::clone(snap);
    }
}

impl Controller {
    /// Starts the control thread for `state`, which publishes to `workers` (one channel per
    /// worker) and listens to `passive` reports when given. The state's current snapshot is
    /// assumed to be what the workers started with.
    ///
    /// # Errors
    /// When a thread cannot be started.
    pub fn start(
        mut state: State,
        workers: Vec<Sender<Arc<Snapshot>>>,
        passive: Option<Receiver<PassiveReport>>,
    ) -> Result<Self, StateError> {
        let checker = Checker::start(state.check_threads())
            .map_err(|e| StateError::Spawn("health checker", e))?;
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded::<Command>();
        let events = Arc::clone(state.event_ring());
        let current = Arc::new(Mutex::new(Arc::clone(state.snapshot())));
        let cur = Arc::clone(&current);
        let passive = passive.unwrap_or_else(crossbeam_channel::never);
        let thread = std::thread::Builder::new()
            .name("spray-control".into())
            .spawn(move || {
                tracing::info!(
                    checks = state.targets(),
                    threads = state.check_threads(),
                    "health checker started"
                );
                loop {
                    let now = Instant::now();
                    for job in state.poll_due(now) {
                        checker.submit(job);
                    }
                    // Wake up at the next due check, and at least once a second.
                    let wait = state
                        .poll_timeout()
                        .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now))
                        .min(Duration::from_secs(1));
                    crossbeam_channel::select! {
                        recv(checker.outcomes()) -> o => {
                            let Ok(o) = o else { break };
                            match state.handle_outcome(&o, Instant::now()) {
                                Ok(Some(s)) => publish(&workers, &cur, &s),
                                Ok(None) => {}
                                Err(e) => tracing::error!(error = %e, "health update not applied"),
                            }
                        }
                        recv(passive) -> r => {
                            if let Ok(r) = r {
                                state.handle_passive(&r, Instant::now());
                            }
                        }
                        recv(cmd_rx) -> c => {
                            let Ok(c) = c else { break };
                            let (r, reply) = match c {
                                Command::Drain(s, a, d, reply) => (state.set_drain(&s, a, d), reply),
                                Command::Weight(s, a, w, reply) => (state.set_weight(&s, a, w), reply),
                            };
                            let r = r.map(|snap| {
                                if let Some(s) = snap {
                                    publish(&workers, &cur, &s);
                                }
                            });
                            let _ = reply.send(r);
                        }
                        default(wait) => {}
                    }
                }
                tracing::info!("health checker stopped");
            })
            .map_err(|e| StateError::Spawn("control", e))?;
        Ok(Self {
            commands: Some(cmd_tx),
            events,
            current,
            thread: Some(thread),
        })
    }

    /// The recorded state changes, oldest first (the last 1024).
    pub fn events(&self) -> Vec<HealthEvent> {
        crate::health::events::events(&self.events)
    }

    /// The snapshot most recently published.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .lock()
            .map(|c| Arc::clone(&c))
            .unwrap_or_default()
    }

    fn ask(
        &self,
        make: impl FnOnce(Sender<Result<(), StateError>>) -> Command,
    ) -> Result<(), StateError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.commands
            .as_ref()
            .ok_or(StateError::Stopped)?
            .send(make(tx))
            .map_err(|_| StateError::Stopped)?;
        rx.recv().map_err(|_| StateError::Stopped)?
    }

    /// Drains or re-enables backend `addr` of `service`, and waits until the snapshot is
    /// published.
    ///
    /// # Errors
    /// Unknown service or backend, or the control thread has stopped.
    pub fn set_drain(
        &self,
        service: &str,
        addr: SocketAddr,
        drained: bool,
    ) -> Result<(), StateError> {
        self.ask(|tx| Command::Drain(service.to_owned(), addr, drained, tx))
    }

    /// Sets the weight of backend `addr` of `service`, and waits until the snapshot is
    /// published.
    ///
    /// # Errors
    /// Unknown service or backend, or the control thread has stopped.
    pub fn set_weight(
        &self,
        service: &str,
        addr: SocketAddr,
        weight: u16,
    ) -> Result<(), StateError> {
        self.ask(|tx| Command::Weight(service.to_owned(), addr, weight, tx))
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // Closing the command channel ends the loop.
        self.commands = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Machine;
    use crate::health::ProbeError;

    const SRC: &str = r#"
[services.a]
vip = "127.0.0.10:5514"
fallback = "127.0.0.1:7000"
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
                Ok(())
            } else {
                Err(ProbeError(
                    "icmp port unreachable (connection refused)".into(),
                ))
            },
        }
    }

    /// Advances `now` in 10 ms steps, running every due check (target 0 with result `ok0`,
    /// all others fail when `all` is set, else pass) until target 0 (every target, with
    /// `all`) has been checked `n` times; returns the snapshots published.
    fn checks(
        s: &mut State,
        now: &mut Instant,
        n: usize,
        ok0: bool,
        all: bool,
    ) -> Vec<Arc<Snapshot>> {
        let mut out = Vec::new();
        // With `all`, every target must reach `n` checks: first checks are jittered, so
        // target 0 may get its n-th check before the others do.
        let mut done = vec![0usize; s.targets()];
        let finished = |d: &[usize]| {
            if all {
                d.iter().all(|&c| c >= n)
            } else {
                d.first().is_some_and(|&c| c >= n)
            }
        };
        while !finished(&done) {
            *now += Duration::from_millis(10);
            for j in s.poll_due(*now) {
                let ok = if j.index == 0 { ok0 } else { !all };
                if let Some(c) = done.get_mut(j.index) {
                    *c += 1;
                }
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

    #[test]
    fn drain_is_independent_of_health() {
        let (mut s, mut now) = state();
        let b1: SocketAddr = "127.0.0.1:6001".parse().unwrap();
        let snap = s.set_drain("a", b1, true).unwrap().unwrap();
        assert_eq!(
            weights(&snap),
            [vec![0, 1], vec![1, 1]],
            "drain is per service"
        );
        assert!(
            s.set_drain("a", b1, true).unwrap().is_none(),
            "no change, no snapshot"
        );
        // A drained backend is still checked: going down and up again does not undrain it.
        checks(&mut s, &mut now, 3, false, false);
        assert_eq!(weights(s.snapshot()), [vec![0, 1], vec![0, 1]]);
        checks(&mut s, &mut now, 2, true, false);
        assert_eq!(weights(s.snapshot()), [vec![0, 1], vec![1, 1]]);
        let snap = s.set_drain("a", b1, false).unwrap().unwrap();
        assert_eq!(weights(&snap), [vec![1, 1], vec![1, 1]]);
        let snap = s.set_weight("b", b1, 0).unwrap().unwrap();
        assert_eq!(weights(&snap), [vec![1, 1], vec![0, 1]]);
        let kinds: Vec<_> = s.events().iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Drained,
                EventKind::Down,
                EventKind::Up,
                EventKind::Enabled,
                EventKind::Weight
            ]
        );
        assert!(matches!(
            s.set_drain("c", b1, true),
            Err(StateError::UnknownService(_))
        ));
        let e = s
            .set_drain("a", "127.0.0.1:1".parse().unwrap(), true)
            .unwrap_err();
        assert_eq!(e.to_string(), "services.a: no backend 127.0.0.1:1");
    }

    #[test]
    fn a_passive_report_triggers_a_check_and_one_failure_decides() {
        let (mut s, mut now) = state();
        // Run the first round so nothing is due for a while.
        checks(&mut s, &mut now, 1, true, false);
        let at = now + Duration::from_millis(1);
        assert!(!s.poll_due(at).iter().any(|j| j.index == 0));
        let r = PassiveReport {
            vip: VipId(0),
            backend: "127.0.0.1:6001".parse().unwrap(),
            errno: libc::ECONNREFUSED,
            icmp: (3, 3),
            at,
        };
        s.handle_passive(&r, at);
        s.handle_passive(&r, at);
        let jobs = s.poll_due(at);
        assert_eq!(jobs.len(), 1, "an immediate check of the suspect only");
        let snap = s
            .handle_outcome(&outcome(jobs[0].index, at, false), at)
            .unwrap()
            .expect("down after one failed check");
        assert_eq!(weights(&snap), [vec![0, 1], vec![0, 1]]);
        let ev = s.events();
        assert_eq!(ev.len(), 2);
        assert_eq!(ev[0].kind, EventKind::Suspect);
        assert_eq!(ev[0].check, "passive");
        assert!(
            ev[0].reason.starts_with("icmp type 3 code 3"),
            "{}",
            ev[0].reason
        );
        assert_eq!(ev[1].kind, EventKind::Down);
        assert_eq!(ev[1].check, "udp (after a passive report)");
        assert_eq!(ev[1].failures, 1);
    }

    #[test]
    fn a_probe_started_before_the_report_does_not_clear_it() {
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
        s.handle_passive(&r, later);
        // The stale success is ignored, and the target is due again at once.
        assert!(s
            .handle_outcome(&outcome(j.index, at, true), later)
            .unwrap()
            .is_none());
        let again = s.poll_due(later);
        assert!(again.iter().any(|j| j.index == 0));
        assert!(s
            .handle_outcome(&outcome(0, later, false), later)
            .unwrap()
            .is_some());
    }
}
