//! `spray run` in socket mode: start the workers, watch them, stop them.
//!
//! Everything fallible happens before the first packet, as in DPDK's l3fwd: each worker
//! thread pins itself, builds its [`ProxyWorker`] and reports back on a channel; only when
//! every worker is ready does [`Workers::start`] return. A worker that fails to start stops
//! the others and the error names it.
//!
//! The control thread keeps the sending half of each worker's update channel (reloads and
//! health changes will publish new snapshots through it), and reads the per-worker counters
//! without locks for the periodic stats line and the summary on exit. [`serve`] is that
//! control plane, shared with the DPDK dataplane (`run::dpdk`): one controller, the
//! control socket, metrics, SIGHUP and the stats line, whatever moves the packets.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use dataplane::counters::{SharedCounters, WorkerCounters};
use dataplane::service::Snapshot;

use super::{serve, stop_on_signals, RunError};
use crate::config::Config;
use crate::report;
use dataplane::socket::{ProxySettings, ProxyWorker};

/// Running worker threads and what the control thread keeps of them.
#[derive(Debug)]
pub struct Workers {
    stop: Arc<AtomicBool>,
    counters: Vec<SharedCounters>,
    // Kept for reloads and health updates; dropping them would disconnect the workers.
    updates: Vec<Sender<Arc<Snapshot>>>,
    handles: Vec<JoinHandle<Result<(), RunError>>>,
    started: Instant,
}

impl Workers {
    /// Starts `workers` threads over `snapshot`, worker `i` pinned to `cores[i]` when given,
    /// and waits until each has bound its sockets. `stop` ends them. `settings` makes each
    /// worker's settings (the agreed `ProxySettings` API promises `Default`, not `Clone`).
    ///
    /// # Errors
    /// When a thread cannot be started or pinned, or a worker cannot be built; the workers
    /// already started are stopped first.
    pub fn start(
        snapshot: Arc<Snapshot>,
        workers: usize,
        cores: Option<&[usize]>,
        settings: &(dyn Fn() -> ProxySettings + Sync),
        stop: Arc<AtomicBool>,
    ) -> Result<Self, RunError> {
        let mut this = Workers {
            stop: Arc::clone(&stop),
            counters: Vec::with_capacity(workers),
            updates: Vec::with_capacity(workers),
            handles: Vec::with_capacity(workers),
            started: Instant::now(),
        };
        let (ready_tx, ready_rx) =
            crossbeam_channel::bounded::<(usize, Result<(), RunError>)>(workers);
        for id in 0..workers {
            let (tx, rx) = crossbeam_channel::unbounded();
            let counters = WorkerCounters::shared();
            let core = cores.and_then(|c| c.get(id).copied());
            let (snap, wc, stop, settings, ready) = (
                Arc::clone(&snapshot),
                Arc::clone(&counters),
                Arc::clone(&stop),
                settings(),
                ready_tx.clone(),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("spray-worker-{id}"))
                .spawn(move || -> Result<(), RunError> {
                    if let Some(core) = core {
                        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                            let _ = ready.send((id, Err(RunError::Pin { worker: id, core })));
                            return Ok(());
                        }
                    }
                    let mut worker = match ProxyWorker::new(id, snap, rx, settings, wc) {
                        Ok(w) => w,
                        Err(source) => {
                            let _ = ready.send((id, Err(RunError::Worker { worker: id, source })));
                            return Ok(());
                        }
                    };
                    tracing::info!(worker = id, ?core, "worker started");
                    let _ = ready.send((id, Ok(())));
                    drop(ready);
                    let r = worker.run(&stop);
                    tracing::info!(worker = id, "worker stopped");
                    r.map_err(|source| RunError::Worker { worker: id, source })
                });
            match spawned {
                Ok(h) => {
                    this.handles.push(h);
                    this.counters.push(counters);
                    this.updates.push(tx);
                }
                Err(source) => {
                    let _ = this.stop_and_join();
                    return Err(RunError::Spawn { worker: id, source });
                }
            }
        }
        drop(ready_tx);
        let mut failure = None;
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok((_, Ok(()))) => {}
                Ok((_, Err(e))) => {
                    failure.get_or_insert(e);
                }
                // A worker died before reporting: it panicked; join reports it.
                Err(_) => break,
            }
        }
        if let Some(e) = failure {
            let _ = this.stop_and_join();
            return Err(e);
        }
        this.started = Instant::now();
        Ok(this)
    }

    /// The sending half of each worker's update channel, for the controller.
    pub fn update_senders(&self) -> Vec<Sender<Arc<Snapshot>>> {
        self.updates.clone()
    }

    /// The counters of each worker, by worker index.
    pub fn counters(&self) -> &[SharedCounters] {
        &self.counters
    }

    /// The sending half of each worker's update channel, by worker index.
    pub fn updates(&self) -> &[Sender<Arc<Snapshot>>] {
        &self.updates
    }

    /// Time since every worker was ready.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether some worker has ended (with an error, or a panic).
    pub fn any_finished(&self) -> bool {
        self.handles.iter().any(JoinHandle::is_finished)
    }

    /// Sets the stop flag and joins every worker.
    ///
    /// # Errors
    /// The first worker error or panic.
    pub fn stop_and_join(&mut self) -> Result<(), RunError> {
        self.stop.store(true, Ordering::Relaxed);
        let mut first = Ok(());
        for (worker, h) in self.handles.drain(..).enumerate() {
            let r = h.join().unwrap_or(Err(RunError::Panicked { worker }));
            if first.is_ok() {
                first = r;
            }
        }
        self.updates.clear();
        first
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

/// Settings of the socket dataplane from the config.
pub fn proxy_settings(config: &Config) -> ProxySettings {
    ProxySettings {
        socket: config.socket.clone(),
        ..ProxySettings::default()
    }
}

/// `spray run` in socket mode: starts the workers for `config` (read from `path`), then
/// the control plane ([`serve`]) until SIGINT/SIGTERM or a worker fails, then the summary.
///
/// # Errors
/// When the workers cannot start, or one of them fails.
pub fn run(config: &Config, path: &Path, stats_interval: Option<Duration>) -> Result<(), RunError> {
    let state = crate::state::State::new(config.clone(), 1, Instant::now())
        .map_err(RunError::Controller)?;
    let stop = Arc::new(AtomicBool::new(false));
    stop_on_signals(&stop)?;
    let (passive_tx, passive_rx) = crate::state::passive_channel();
    let mut workers = Workers::start(
        Arc::clone(state.snapshot()),
        config.runtime.workers,
        config.runtime.cores.as_deref(),
        &|| ProxySettings {
            passive_reports: Some(passive_tx.clone()),
            ..proxy_settings(config)
        },
        Arc::clone(&stop),
    )?;
    let links = crate::state::Links {
        updates: workers.update_senders(),
        counters: workers.counters().to_vec(),
        passive: Some(passive_rx),
        source: Some((path.to_owned(), crate::config::Machine::current())),
        neigh: Vec::new(),
    };
    let served = serve(
        config,
        state,
        links,
        &format!("{} worker(s)", config.runtime.workers),
        &stop,
        &|| workers.any_finished(),
        stats_interval,
    );
    let result = workers.stop_and_join();
    let snapshot = served?;
    print!(
        "{}",
        report::summary(&snapshot, workers.counters(), workers.elapsed())
    );
    result
}
