//! What `spray run` serves beside the workers: the control socket, the metrics endpoint,
//! and SIGHUP, all three answered by the one controller ([`crate::state::Controller`]) that
//! also runs the health checks and publishes every snapshot.
//!
//! Started once every worker and the controller are ready; dropped (socket file removed,
//! listeners stopped) when `spray run` ends, after [`Ops::stop`] has stopped the controller.
//! A control socket at the default path that cannot be opened (say, another Spray holds it)
//! is only a warning; at a configured path it is fatal, as is a metrics address that cannot
//! be bound.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dataplane::service::Snapshot;

use crate::api::server::{Server, ServerError};
use crate::api::{Controller as _, Who};
use crate::config::Config;
use crate::metrics::{MetricsError, MetricsServer};
use crate::state::Controller;

/// Error from starting the operations side.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The control socket could not be opened.
    #[error("cannot open the control socket")]
    Control(#[source] ServerError),
    /// The metrics endpoint could not be opened.
    #[error("cannot serve metrics")]
    Metrics(#[source] MetricsError),
    /// SIGHUP could not be caught.
    #[error("cannot install the SIGHUP handler")]
    Signal(#[source] std::io::Error),
}

/// The controller's listeners.
#[derive(Debug)]
pub struct Ops {
    ctrl: Arc<Controller>,
    hup: Arc<AtomicBool>,
    control: Option<Server>,
    metrics: Option<MetricsServer>,
}

impl Ops {
    /// Serves `ctrl` on the control socket and the metrics endpoint as `config` says, and
    /// reloads it on SIGHUP ([`Ops::tick`]).
    ///
    /// # Errors
    /// See the module doc.
    pub fn start(config: &Config, ctrl: Arc<Controller>) -> Result<Self, OpsError> {
        let hup = Arc::new(AtomicBool::new(false));
        signal_hook::flag::register(signal_hook::consts::SIGHUP, Arc::clone(&hup))
            .map_err(OpsError::Signal)?;
        let dyn_ctrl: Arc<dyn crate::api::Controller> = ctrl.clone();
        let control = if config.control.enabled {
            let sock = config.control.socket_path();
            match Server::start(&sock, config.control.allowed_uids(), Arc::clone(&dyn_ctrl)) {
                Ok(s) => Some(s),
                Err(e) if config.control.socket.is_none() => {
                    tracing::warn!(
                        "no control socket: {e} (set [control] socket to choose another path)"
                    );
                    None
                }
                Err(e) => return Err(OpsError::Control(e)),
            }
        } else {
            None
        };
        let metrics = if config.metrics.enabled {
            Some(MetricsServer::start(config.metrics.listen, dyn_ctrl).map_err(OpsError::Metrics)?)
        } else {
            None
        };
        Ok(Self {
            ctrl,
            hup,
            control,
            metrics,
        })
    }

    /// Reloads the config when SIGHUP came since the last call.
    pub fn tick(&self) {
        if self.hup.swap(false, Ordering::Relaxed) {
            // The controller logs the outcome, success or refusal.
            let _ = self.ctrl.reload(&Who::local("SIGHUP"));
        }
    }

    /// Where the control socket and metrics are, for the start-up line.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(c) = &self.control {
            s.push_str(&format!("; control socket {}", c.path().display()));
        }
        if let Some(m) = &self.metrics {
            s.push_str(&format!("; metrics http://{}/metrics", m.addr()));
        }
        s
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.ctrl.snapshot()
    }

    /// Stops the controller (its checks and the control thread): nothing is published
    /// after this. The listeners answer `internal` until they are dropped.
    pub fn stop(&self) {
        self.ctrl.stop();
    }
}
