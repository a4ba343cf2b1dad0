//! `spray run`: the workers that move the packets, and the one control plane beside them.
//!
//! * [`socket`]: the socket dataplane's worker threads ([`Workers`]) and [`run`] for
//!   `runtime.dataplane = "socket"`.
//! * `dpdk`: EAL, ports, queues and pinned workers for `runtime.dataplane = "dpdk"`
//!   (built with the `dpdk` feature).
//! * [`listeners`]: the control socket, the metrics endpoint and SIGHUP, all answered by
//!   the controller.
//!
//! [`serve`] is the control plane both dataplanes share: one controller
//! ([`crate::state::Controller`]), the listeners and the stats line, whatever moves the
//! packets. [`RunError`] is what can go wrong in either.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dataplane::service::{Snapshot, SnapshotError};
use dataplane::socket::ProxyError;

use crate::config::Config;
use crate::report;

#[cfg(spray_dpdk)]
pub mod dpdk;
pub mod listeners;
pub mod socket;

pub use self::socket::{proxy_settings, run, Workers};

/// Error from running the workers.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The service table was refused by the dataplane.
    #[error("cannot build the service table")]
    Snapshot(#[source] SnapshotError),
    /// The OS would not start a thread.
    #[error("cannot start worker {worker}")]
    Spawn {
        /// Worker index.
        worker: usize,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Pinning a worker to its core failed.
    #[error("cannot pin worker {worker} to core {core}")]
    Pin {
        /// Worker index.
        worker: usize,
        /// Core id from `runtime.cores`.
        core: usize,
    },
    /// A worker failed to start or stopped with an error.
    #[error("worker {worker} failed")]
    Worker {
        /// Worker index.
        worker: usize,
        /// Why.
        #[source]
        source: ProxyError,
    },
    /// A worker panicked (a Spray bug).
    #[error("worker {worker} panicked")]
    Panicked {
        /// Worker index.
        worker: usize,
    },
    /// Signal handlers could not be installed.
    #[error("cannot install the SIGINT/SIGTERM handlers")]
    Signals(#[source] std::io::Error),
    /// The controller (health checks) could not start.
    #[error("cannot start the controller")]
    Controller(#[source] crate::state::StateError),
    /// The control socket or the metrics endpoint could not start.
    #[error(transparent)]
    Ops(#[from] listeners::OpsError),
}

/// Makes SIGINT and SIGTERM set `stop`; a second one while stopping exits at once with
/// status 1.
///
/// # Errors
/// When a handler cannot be installed.
pub fn stop_on_signals(stop: &Arc<AtomicBool>) -> Result<(), RunError> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    for sig in [SIGINT, SIGTERM] {
        // Order matters: the conditional exit must see the flag as it was before this
        // signal set it.
        signal_hook::flag::register_conditional_shutdown(sig, 1, Arc::clone(stop))
            .map_err(RunError::Signals)?;
        signal_hook::flag::register(sig, Arc::clone(stop)).map_err(RunError::Signals)?;
    }
    Ok(())
}

/// The control plane of `spray run`, whatever the dataplane: starts the controller over
/// `state` connected to the running workers through `links` (health checks, neighbours,
/// the only publisher of snapshots), the control socket, metrics and SIGHUP ([`listeners`]);
/// prints the start-up line (`workers` says what serves) and a stats line every
/// `stats_interval` until `stop` is set or `finished` says a worker ended. Stops the
/// controller (nothing is published after this) and returns the snapshot in force, for the
/// summary.
///
/// # Errors
/// When the controller, the control socket or metrics cannot start.
pub fn serve(
    config: &Config,
    state: crate::state::State,
    links: crate::state::Links,
    workers: &str,
    stop: &AtomicBool,
    finished: &dyn Fn() -> bool,
    stats_interval: Option<Duration>,
) -> Result<Arc<Snapshot>, RunError> {
    let counters = links.counters.clone();
    let snapshot = Arc::clone(state.snapshot());
    let controller = crate::state::Controller::start(state, links).map_err(RunError::Controller)?;
    let ops = listeners::Ops::start(config, Arc::new(controller))?;
    for svc in snapshot.services() {
        tracing::info!(
            service = %svc.spec.name,
            vip = %svc.spec.vip,
            scheduler = %svc.spec.scheduler,
            backends = svc.spec.backends.len(),
            "serving"
        );
    }
    println!(
        "spray: serving {} service(s) on {workers}{}; Ctrl-C to stop",
        snapshot.services().count(),
        ops.describe()
    );
    crate::notify::ready(&format!(
        "serving {} service(s) on {workers}",
        snapshot.services().count()
    ));
    let mut prev = report::Totals::default();
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) && !finished() {
        std::thread::sleep(Duration::from_millis(50));
        ops.tick();
        if let Some(every) = stats_interval {
            if last.elapsed() >= every {
                let now = report::Totals::collect(&counters);
                println!("{}", report::progress_line(&prev, &now, last.elapsed()));
                prev = now;
                last = Instant::now();
            }
        }
    }
    crate::notify::stopping();
    ops.stop();
    Ok(ops.snapshot())
}
