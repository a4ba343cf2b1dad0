//! The control thread ([`Controller`]) that drives the sans-I/O [`State`]: it hands due
//! checks to the [`Checker`] pool, waits for outcomes, passive reports, neighbour frames
//! and operators' commands, and publishes each new snapshot to every worker's channel.
//! Its handle is the [`api::Controller`] of `spray run`; see the parent module for the
//! rules it keeps.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender};
use dataplane::counters::SharedCounters;
use dataplane::service::Snapshot;
use dataplane::socket::PassiveReport;

use super::{NeighLink, State, StateError};
use crate::api::{
    self, ApiError, Applied, BackendStats, Change, ErrorCode, MirrorStats, Reloaded, ServiceList,
    ServiceStats, Stats, VersionInfo, Who, WorkerStats,
};
use crate::config::{Config, Machine};
use crate::health::checker::Checker;
use crate::health::events::{HealthEvent, SharedEvents};

/// The entries of `ring` after `since`, as the control socket shows them.
fn api_events(ring: &SharedEvents, since: u64) -> Vec<api::Event> {
    crate::health::events::since(ring, since)
        .into_iter()
        .map(|e| api::Event {
            seq: e.seq,
            unix_ms: e
                .time
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            kind: e.kind.name().to_owned(),
            service: e.service,
            backend: e.backend,
            message: e.message,
        })
        .collect()
}

/// What the control thread is connected to.
#[derive(Debug, Default)]
pub struct Links {
    /// The sending half of each worker's update channel.
    pub updates: Vec<Sender<Arc<Snapshot>>>,
    /// Each worker's counters, by worker index (for `list`, `stats` and metrics).
    pub counters: Vec<SharedCounters>,
    /// Where workers report ICMP errors from backends (passive detection).
    pub passive: Option<Receiver<PassiveReport>>,
    /// The config file that `reload` reads again, and the machine to validate it for;
    /// without it `reload` is refused.
    pub source: Option<(PathBuf, Machine)>,
    /// Each wire-owning port's neighbour queues, in the order of
    /// [`State::set_neighbours`]'s ports (empty in socket mode).
    pub neigh: Vec<NeighLink>,
}

enum Command {
    Apply(Change, Who, Sender<Result<Applied, ApiError>>),
    Reload(
        Result<Box<Config>, String>,
        String,
        Who,
        Sender<Result<Reloaded, ApiError>>,
    ),
    List(Sender<ServiceList>),
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Apply(c, w, _) => write!(f, "Apply({c:?}, {w})"),
            Self::Reload(c, file, w, _) => write!(f, "Reload({}, {file}, {w})", c.is_ok()),
            Self::List(_) => f.write_str("List"),
        }
    }
}

/// The control thread: runs checks, applies their results and operators' commands,
/// publishes snapshots. Its handle is the [`api::Controller`] of `spray run`. Dropping it
/// (or [`Controller::stop`]) stops the thread (and the checkers) and waits for them.
#[derive(Debug)]
pub struct Controller {
    commands: Mutex<Option<Sender<Command>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    events: SharedEvents,
    current: Arc<Mutex<Arc<Snapshot>>>,
    counters: Vec<SharedCounters>,
    source: Option<(PathBuf, Machine)>,
    started: Instant,
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

fn stopped() -> ApiError {
    ApiError::new(ErrorCode::Internal, "the control thread has stopped")
}

/// Hands each port's pending neighbour frames to its worker; a frame that does not fit
/// in the worker's queue is lost (the protocol retries).
fn send_neigh_frames(state: &mut State, links: &[NeighLink]) {
    let mut buf = [0u8; dataplane::neigh::MAX_FRAME];
    for (port, l) in links.iter().enumerate() {
        while let Some(n) = state.poll_neigh_transmit(port, &mut buf) {
            let f = dataplane::neigh::NeighFrame::new(&buf[..n]);
            if l.to_worker.try_send(f).is_err() {
                tracing::debug!(port, "neighbour frame lost: the worker's queue is full");
            }
        }
    }
}

/// Carries out an operator's command on the control thread.
fn handle_command(
    state: &mut State,
    c: Command,
    workers: &[Sender<Arc<Snapshot>>],
    cur: &Mutex<Arc<Snapshot>>,
) {
    match c {
        Command::Apply(change, who, reply) => {
            let r = state.apply(&change, &who, Instant::now());
            let r = r.map(|(applied, snap)| {
                if let Some(s) = snap {
                    publish(workers, cur, &s);
                }
                applied
            });
            let _ = reply.send(r);
        }
        Command::Reload(config, file, who, reply) => {
            let config = config.map(|c| *c);
            let r = state.reload(config, &file, &who, Instant::now());
            let r = r.map(|(reloaded, s)| {
                publish(workers, cur, &s);
                reloaded
            });
            let _ = reply.send(r);
        }
        Command::List(reply) => {
            let _ = reply.send(state.list());
        }
    }
}

impl Controller {
    /// Starts the control thread for `state`, connected to `links`. The state's current
    /// snapshot is assumed to be what the workers started with.
    ///
    /// # Errors
    /// When a thread cannot be started.
    pub fn start(mut state: State, links: Links) -> Result<Self, StateError> {
        let Links {
            updates: workers,
            counters,
            passive,
            source,
            neigh,
        } = links;
        state.set_counters(counters.clone());
        let mut checker = Checker::start(state.check_threads())
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
                    neighbour_ports = neigh.len(),
                    "controller started"
                );
                // A port's queue is dropped from the selection once its workers are gone.
                let mut neigh_open = vec![true; neigh.len()];
                loop {
                    let now = Instant::now();
                    for job in state.poll_due(now) {
                        checker.submit(job);
                    }
                    if !neigh.is_empty() {
                        state.handle_neigh_timeout(now);
                        send_neigh_frames(&mut state, &neigh);
                        match state.poll_neigh_snapshot() {
                            Ok(Some(s)) => publish(&workers, &cur, &s),
                            Ok(None) => {}
                            Err(e) => tracing::error!(error = %e, "neighbour update not applied"),
                        }
                    }
                    // Wake up at the next due check or neighbour timer, at least once a second.
                    let wait = [state.poll_timeout(), state.poll_neigh_timeout()]
                        .into_iter()
                        .flatten()
                        .min()
                        .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now))
                        .min(Duration::from_secs(1));
                    let mut sel = crossbeam_channel::Select::new();
                    let outcomes = checker.outcomes().clone();
                    let i_outcome = sel.recv(&outcomes);
                    let i_passive = sel.recv(&passive);
                    let i_command = sel.recv(&cmd_rx);
                    let mut i_neigh = Vec::with_capacity(neigh.len());
                    for (port, l) in neigh.iter().enumerate() {
                        if neigh_open[port] {
                            i_neigh.push((sel.recv(&l.from_workers), port));
                        }
                    }
                    let Ok(op) = sel.select_timeout(wait) else {
                        continue;
                    };
                    let i = op.index();
                    if i == i_outcome {
                        let Ok(o) = op.recv(&outcomes) else { break };
                        match state.handle_outcome(&o, Instant::now()) {
                            Ok(Some(s)) => publish(&workers, &cur, &s),
                            Ok(None) => {}
                            Err(e) => tracing::error!(error = %e, "health update not applied"),
                        }
                    } else if i == i_passive {
                        let Ok(first) = op.recv(&passive) else {
                            continue;
                        };
                        // A dead backend's errors come in bursts: one snapshot for all queued.
                        let mut last = None;
                        for r in std::iter::once(first).chain(passive.try_iter()) {
                            match state.handle_passive(&r, Instant::now()) {
                                Ok(Some(s)) => last = Some(s),
                                Ok(None) => {}
                                Err(e) => tracing::error!(error = %e, "health update not applied"),
                            }
                        }
                        if let Some(s) = last {
                            publish(&workers, &cur, &s);
                        }
                    } else if i == i_command {
                        let Ok(c) = op.recv(&cmd_rx) else { break };
                        handle_command(&mut state, c, &workers, &cur);
                        // Checks added at run time may need more checker threads.
                        if let Err(e) = checker.grow(state.check_threads()) {
                            tracing::warn!(error = %e, "cannot start another checker thread");
                        }
                    } else if let Some(&(_, port)) = i_neigh.iter().find(|(k, _)| *k == i) {
                        let rx = &neigh[port].from_workers;
                        match op.recv(rx) {
                            Ok(f) => {
                                let now = Instant::now();
                                state.handle_neigh_frame(port, now, f.bytes());
                                for f in rx.try_iter() {
                                    state.handle_neigh_frame(port, now, f.bytes());
                                }
                            }
                            Err(_) => neigh_open[port] = false,
                        }
                    }
                }
                tracing::info!("controller stopped");
            })
            .map_err(|e| StateError::Spawn("control", e))?;
        Ok(Self {
            commands: Mutex::new(Some(cmd_tx)),
            thread: Mutex::new(Some(thread)),
            events,
            current,
            counters,
            source,
            started: Instant::now(),
        })
    }

    /// The recorded health transitions, oldest first (of the last 1024 events).
    pub fn health_events(&self) -> Vec<HealthEvent> {
        crate::health::events::events(&self.events)
    }

    /// The snapshot most recently published.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .lock()
            .map(|c| Arc::clone(&c))
            .unwrap_or_default()
    }

    /// Stops the control thread and the checkers and waits for them; later commands are
    /// answered `internal`. Idempotent.
    pub fn stop(&self) {
        // Closing the command channel ends the loop.
        if let Ok(mut c) = self.commands.lock() {
            *c = None;
        }
        let t = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = t {
            let _ = t.join();
        }
    }

    /// Sends the command `make` builds and waits for its reply.
    fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Command) -> Result<T, ApiError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let sent = self
            .commands
            .lock()
            .ok()
            .and_then(|c| c.as_ref().map(|c| c.send(make(tx)).is_ok()))
            .unwrap_or(false);
        if !sent {
            return Err(stopped());
        }
        rx.recv().map_err(|_| stopped())
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop();
    }
}

impl api::Controller for Controller {
    fn list(&self) -> ServiceList {
        self.ask(Command::List).unwrap_or_else(|_| ServiceList {
            generation: self.snapshot().generation,
            services: Vec::new(),
        })
    }

    fn stats(&self) -> Stats {
        let list = api::Controller::list(self);
        let all: Vec<&SharedCounters> = self.counters.iter().collect();
        Stats {
            generation: list.generation,
            uptime_secs: self.started.elapsed().as_secs_f64(),
            totals: WorkerStats::sum(None, &all),
            workers: self
                .counters
                .iter()
                .enumerate()
                .map(|(i, c)| WorkerStats::sum(Some(i), &[c]))
                .collect(),
            services: list
                .services
                .into_iter()
                .map(|s| ServiceStats {
                    name: s.name,
                    vip: s.vip,
                    packets: s.packets,
                    bytes: s.bytes,
                    backends: s.backends.iter().map(backend_stats).collect(),
                    mirrors: s
                        .mirrors
                        .iter()
                        .map(|m| MirrorStats {
                            name: m.name.clone(),
                            backends: m.backends.iter().map(backend_stats).collect(),
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    fn events(&self, since: u64) -> Vec<api::Event> {
        api_events(&self.events, since)
    }

    fn apply(&self, change: Change, who: &Who) -> Result<Applied, ApiError> {
        self.ask(|reply| Command::Apply(change, who.clone(), reply))?
    }

    fn reload(&self, who: &Who) -> Result<Reloaded, ApiError> {
        let Some((path, machine)) = &self.source else {
            return Err(ApiError::new(
                ErrorCode::Refused,
                "reload refused: spray was not started from a config file",
            ));
        };
        let file = path.display().to_string();
        // Read and validated here, on the caller's thread: the control thread only swaps.
        let config = Config::load(path, machine).map(Box::new).map_err(|e| {
            let mut message = format!("reload refused, the running config stays: {e}");
            if let Some(s) = std::error::Error::source(&e) {
                message.push_str(&format!(": {s}"));
            }
            message
        });
        self.ask(|reply| Command::Reload(config, file, who.clone(), reply))?
    }

    fn version(&self) -> VersionInfo {
        VersionInfo {
            name: "spray".to_owned(),
            version: crate::build_info::VERSION.to_owned(),
            build: crate::build_info::DESCRIPTION.to_owned(),
            protocol: api::PROTOCOL_VERSION,
            controller: "health".to_owned(),
        }
    }
}

fn backend_stats(b: &api::BackendInfo) -> BackendStats {
    BackendStats {
        addr: b.addr,
        packets: b.packets,
        bytes: b.bytes,
    }
}
