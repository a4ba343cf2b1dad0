//! The control API: what an operator (through the control socket, `spray ctl`, SIGHUP or
//! the metrics endpoint) can ask of a running Spray, independent of who implements it.
//!
//! # Contract
//!
//! [`Controller`] is the one seam between the control socket and the state it controls.
//! Every type it takes or returns is plain data that serialises with serde, so the socket
//! ([`server`], [`proto`]) and the metrics endpoint ([`crate::metrics`]) never see how the
//! state is kept. `spray run` has exactly one implementation: [`crate::state::Controller`],
//! the control thread that also runs the health checks, so the table that operators change
//! and the one that health verdicts change are the same, and it alone publishes snapshots.
//!
//! Implementations must publish every accepted change as a new `Arc<Snapshot>` (the next
//! generation) to every worker **before** returning from [`Controller::apply`] or
//! [`Controller::reload`]: a client that got `ok` may rely on the change being in force for
//! every datagram a worker reads afterwards. They must keep [`VipId`]s and [`BackendId`]s
//! of unchanged services and backends across changes, so counters survive, and never let a
//! request disturb the dataplane: a refused change leaves the snapshot in force untouched.
//!
//! [`VipId`]: dataplane::service::VipId
//! [`BackendId`]: dataplane::service::BackendId

pub mod client;
pub mod proto;
pub mod server;

#[cfg(test)]
mod live_test;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use dataplane::counters::{DropReason, SharedCounters};
use dataplane::sched::SchedulerKind;
use serde::{Deserialize, Serialize};

use crate::config::file::Method;

/// Who asked for something: logged with every applied change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Who {
    /// Peer uid (socket), when known.
    pub uid: Option<u32>,
    /// Peer pid (socket), when known.
    pub pid: Option<i32>,
    /// How the request came: `socket`, `SIGHUP`, `test`.
    pub via: String,
}

impl Who {
    /// A request from a control-socket peer.
    pub fn peer(uid: u32, pid: i32) -> Self {
        Self {
            uid: Some(uid),
            pid: Some(pid),
            via: "socket".to_owned(),
        }
    }

    /// A request with no peer (a signal, a test).
    pub fn local(via: &str) -> Self {
        Self {
            uid: None,
            pid: None,
            via: via.to_owned(),
        }
    }
}

impl fmt::Display for Who {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.uid, self.pid) {
            (Some(u), Some(p)) => write!(f, "uid {u} pid {p} ({})", self.via),
            _ => f.write_str(&self.via),
        }
    }
}

/// What an error response says went wrong; the wire form is snake_case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The line is not JSON.
    ParseError,
    /// JSON, but not a request object (`cmd` missing or not a string, ...).
    BadRequest,
    /// The line is longer than [`proto::MAX_REQUEST`] bytes.
    TooLarge,
    /// `cmd` names no command.
    UnknownCmd,
    /// The arguments are missing, of the wrong type or out of range.
    BadArgs,
    /// The service or backend named does not exist.
    NotFound,
    /// The change contradicts the table (a VIP or backend that already exists, ...).
    Conflict,
    /// The change was refused (an invalid config file on reload, ...); nothing changed.
    Refused,
    /// The peer's uid may not use the socket.
    Forbidden,
    /// Too many connections at once; try again.
    Busy,
    /// A Spray bug.
    Internal,
}

/// An error response: a code for scripts, a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What kind of problem.
    pub code: ErrorCode,
    /// What was wrong, lowercase, naming the command, object and value.
    pub message: String,
}

impl ApiError {
    /// An error of kind `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Operator's state of a service or backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admin {
    /// In rotation (a backend: when healthy and its weight is not 0).
    Enabled,
    /// A backend: gets no new datagrams; replies from it are still relayed.
    Drained,
    /// Out of the dataplane's table: a service's socket is closed, a backend gets nothing
    /// and its replies are dropped. Kept in the listing and its counters.
    Disabled,
}

impl Admin {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Enabled => "enabled",
            Self::Drained => "drained",
            Self::Disabled => "disabled",
        }
    }
}

/// Checker's verdict on a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Passing (or no check configured).
    Up,
    /// Failing: gets nothing.
    Down,
}

/// Serde of the config model's schedulers by the names the file uses: `list` carries the
/// model's own types, and its JSON the file's words.
mod scheduler_name {
    use dataplane::sched::SchedulerKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(k: &SchedulerKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(k.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SchedulerKind, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// The same for forwarding methods (`mode`).
mod method_name {
    use crate::config::file::Method;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(m: &Method, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(m.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Method, D::Error> {
        let name = String::deserialize(d)?;
        Method::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown mode {name:?}: expected nat, dr or tunnel"))
        })
    }
}

/// One backend of a service, as `list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendInfo {
    /// Address and port.
    pub addr: SocketAddr,
    /// How datagrams reach it: `nat`, `dr` or `tunnel` (the service's mode unless the
    /// backend has its own).
    #[serde(with = "method_name")]
    pub mode: Method,
    /// Configured weight.
    pub weight: u32,
    /// The weight the dataplane uses: 0 when down, drained or disabled.
    pub effective_weight: u32,
    /// Checker's verdict.
    pub health: HealthState,
    /// Operator's state.
    pub admin: Admin,
    /// Datagrams sent to it (all workers, since it was added).
    pub packets: u64,
    /// Payload bytes sent to it.
    pub bytes: u64,
    /// Duration of the last health check, when a checker runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_latency_seconds: Option<f64>,
    /// Health checks of it that failed, since its check started.
    #[serde(default)]
    pub check_failures: u64,
    /// Times its health went from down to up.
    #[serde(default)]
    pub went_up: u64,
    /// Times its health went from up to down (checks or passive reports).
    #[serde(default)]
    pub went_down: u64,
}

/// One service, as `list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Operator's name (the config key).
    pub name: String,
    /// Address and port clients send to.
    pub vip: SocketAddr,
    /// Always `udp`.
    pub protocol: String,
    /// `rr`, `wrr` or `maglev`.
    #[serde(with = "scheduler_name")]
    pub scheduler: SchedulerKind,
    /// `nat`, `dr` or `tunnel`.
    #[serde(with = "method_name")]
    pub mode: Method,
    /// `enabled` or `disabled`.
    pub admin: Admin,
    /// Datagrams received for it.
    pub packets: u64,
    /// Payload bytes received for it.
    pub bytes: u64,
    /// Backends in rotation (effective weight above 0); 0 on an enabled service means
    /// every datagram goes to the fallback or is dropped.
    #[serde(default)]
    pub in_rotation: usize,
    /// Backends in config order.
    pub backends: Vec<BackendInfo>,
    /// Mirror pools in config order: each gets a copy of every datagram.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorInfo>,
}

/// A mirror pool of a service, as `list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MirrorInfo {
    /// Operator's name, unique within the service.
    pub name: String,
    /// `rr`, `wrr` or `maglev`.
    #[serde(with = "scheduler_name")]
    pub scheduler: SchedulerKind,
    /// One datagram in `sample` is copied.
    pub sample: u32,
    /// Backends in rotation (effective weight above 0); 0 means no copies.
    pub in_rotation: usize,
    /// Backends in config order; `packets` and `bytes` count the copies each received.
    pub backends: Vec<BackendInfo>,
}

/// Reply to `list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceList {
    /// Generation of the snapshot in force.
    pub generation: u64,
    /// Services in name order.
    pub services: Vec<ServiceInfo>,
}

/// Counters of one worker (or of all, added up).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerStats {
    /// Worker index; `None` for the totals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<usize>,
    /// Datagrams read from VIP sockets.
    pub rx_packets: u64,
    /// Their payload bytes.
    pub rx_bytes: u64,
    /// Datagrams sent toward backends.
    pub tx_packets: u64,
    /// Their payload bytes.
    pub tx_bytes: u64,
    /// Replies relayed to clients.
    pub nat_replies: u64,
    /// Snapshots the worker has applied.
    pub snapshots_applied: u64,
    /// VIP sockets a snapshot update could not bind.
    pub bind_errors: u64,
    /// Copies sent to mirror pools (also in `tx_packets`).
    #[serde(default)]
    pub mirror_copies: u64,
    /// Copies for mirror pools not made for lack of a buffer.
    #[serde(default)]
    pub mirror_no_buffer: u64,
    /// Copies for mirror pools refused by a full TX ring or send buffer.
    #[serde(default)]
    pub mirror_tx_full: u64,
    /// Copies for mirror pools whose backend could not be reached (no MAC address yet,
    /// another address family).
    #[serde(default)]
    pub mirror_unsent: u64,
    /// Drops by reason (every reason, zeros included), by `DropReason::name`.
    pub drops: BTreeMap<String, u64>,
}

impl WorkerStats {
    /// The counters of `counters` added up, as worker `worker` (`None` for the totals).
    pub fn sum(worker: Option<usize>, counters: &[&SharedCounters]) -> Self {
        let mut w = Self {
            worker,
            ..Self::default()
        };
        for r in DropReason::ALL {
            w.drops.insert(r.name().to_owned(), 0);
        }
        for c in counters {
            w.rx_packets += c.rx_packets.get();
            w.rx_bytes += c.rx_bytes.get();
            w.tx_packets += c.tx_packets.get();
            w.tx_bytes += c.tx_bytes.get();
            w.nat_replies += c.nat_replies.get();
            w.snapshots_applied += c.snapshots_applied.get();
            w.bind_errors += c.bind_errors.get();
            w.mirror_copies += c.mirror_copies.get();
            w.mirror_no_buffer += c.mirror_no_buffer.get();
            w.mirror_tx_full += c.mirror_tx_full.get();
            w.mirror_unsent += c.mirror_unsent.get();
            for r in DropReason::ALL {
                *w.drops.entry(r.name().to_owned()).or_default() += c.dropped(r);
            }
        }
        w
    }
}

/// Packets and bytes of one backend of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStats {
    /// Address and port.
    pub addr: SocketAddr,
    /// Datagrams sent to it.
    pub packets: u64,
    /// Payload bytes sent to it.
    pub bytes: u64,
}

/// Packets and bytes of one service and its backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStats {
    /// Operator's name.
    pub name: String,
    /// Address and port.
    pub vip: SocketAddr,
    /// Datagrams received for it.
    pub packets: u64,
    /// Payload bytes received for it.
    pub bytes: u64,
    /// Per backend.
    pub backends: Vec<BackendStats>,
    /// Per mirror pool: the copies each of its backends received.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrors: Vec<MirrorStats>,
}

/// The copies one mirror pool's backends received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorStats {
    /// The pool's name.
    pub name: String,
    /// Per backend.
    pub backends: Vec<BackendStats>,
}

/// Reply to `stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// Generation of the snapshot in force.
    pub generation: u64,
    /// Seconds since the workers started.
    pub uptime_secs: f64,
    /// All workers added up.
    pub totals: WorkerStats,
    /// Per worker, by index.
    pub workers: Vec<WorkerStats>,
    /// Per service and backend.
    pub services: Vec<ServiceStats>,
}

/// Something that happened to the table: an admin change, a reload, a health transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Increases by one per event; `events` with `since` returns newer ones.
    pub seq: u64,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// `admin`, `reload` or `health`.
    pub kind: String,
    /// The service concerned, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// The backend concerned, if one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<SocketAddr>,
    /// What happened, and who did it.
    pub message: String,
}

/// A backend named by its service and address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendRef {
    /// Service name, or its VIP address:port.
    pub service: String,
    /// Backend address:port.
    pub backend: SocketAddr,
}

/// A new backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBackend {
    /// Address and port.
    pub addr: SocketAddr,
    /// Weight, 0..=65535.
    pub weight: u16,
}

/// A new service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewService {
    /// Operator's name.
    pub name: String,
    /// Address and port clients send to.
    pub vip: SocketAddr,
    /// Scheduler.
    pub scheduler: dataplane::sched::SchedulerKind,
    /// NAT, DR or tunnel (socket mode takes only NAT).
    pub mode: crate::config::file::Method,
    /// Backends; may be empty (the VIP then drops and counts).
    pub backends: Vec<NewBackend>,
}

/// A change of the table that the operator asks for; arguments are already checked for
/// type and range by [`proto`], the controller checks them against the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Add a service.
    AddVip(NewService),
    /// Remove a service (name or VIP address).
    DelVip {
        /// Service name or VIP address:port.
        service: String,
    },
    /// Add a backend to a service.
    AddBackend {
        /// Service name or VIP address:port.
        service: String,
        /// The backend.
        backend: NewBackend,
    },
    /// Remove a backend.
    DelBackend(BackendRef),
    /// Change a backend's weight.
    SetWeight {
        /// Which backend.
        target: BackendRef,
        /// New weight.
        weight: u16,
    },
    /// Stop sending new datagrams to a backend.
    Drain(BackendRef),
    /// Undo [`Change::Drain`] (or [`Change::Disable`] of a backend).
    Undrain(BackendRef),
    /// Put a service, or one backend, back into the table.
    Enable {
        /// Service name or VIP address:port.
        service: String,
        /// A backend of it, or the whole service.
        backend: Option<SocketAddr>,
    },
    /// Take a service, or one backend, out of the table (kept in the listing).
    Disable {
        /// Service name or VIP address:port.
        service: String,
        /// A backend of it, or the whole service.
        backend: Option<SocketAddr>,
    },
}

/// Reply to a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// Generation of the snapshot now in force (unchanged when the change was a no-op).
    pub generation: u64,
    /// What was done.
    pub message: String,
}

/// Reply to `reload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// Generation now in force.
    pub generation: u64,
    /// The file read.
    pub file: String,
    /// Services added, removed, changed; backends added, removed, changed.
    pub summary: String,
    /// Keys that differ from the running config but only take effect on restart.
    pub restart_needed: Vec<String>,
}

/// Reply to `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// `spray`.
    pub name: String,
    /// Crate version.
    pub version: String,
    /// The features built in and the DPDK version ([`crate::build_info::DESCRIPTION`]).
    #[serde(default)]
    pub build: String,
    /// Version of this protocol; bumped on incompatible changes.
    pub protocol: u32,
    /// Which controller answers (`health`: the control thread that also runs the checks).
    pub controller: String,
}

/// The protocol version [`VersionInfo::protocol`] reports.
pub const PROTOCOL_VERSION: u32 = 1;

/// What the control socket and the metrics endpoint need of the state owner.
///
/// Implementations are shared between connection threads (`Send + Sync`, `&self`) and
/// serialise changes internally. Read-only calls must not block the dataplane and should be
/// cheap enough for a scrape every second.
pub trait Controller: Send + Sync {
    /// Every service with its backends, weights, health, admin state and counters.
    fn list(&self) -> ServiceList;

    /// Counters per worker, service and backend, drops by reason.
    fn stats(&self) -> Stats;

    /// Events with `seq > since`, oldest first (the ring keeps the latest 1024): admin
    /// changes, reloads and health transitions in one sequence.
    fn events(&self, since: u64) -> Vec<Event>;

    /// Applies `change` and publishes the new snapshot to every worker before returning.
    ///
    /// # Errors
    /// `not_found`, `conflict` or `bad_args` when the change does not fit the table; the
    /// snapshot in force is then untouched.
    fn apply(&self, change: Change, who: &Who) -> Result<Applied, ApiError>;

    /// Re-reads the config file and makes the table equal to it, keeping ids (and so
    /// counters) of unchanged services and backends.
    ///
    /// # Errors
    /// `refused` with every problem of the file when it does not validate; the running
    /// config stays.
    fn reload(&self, who: &Who) -> Result<Reloaded, ApiError>;

    /// Name and version.
    fn version(&self) -> VersionInfo {
        VersionInfo {
            name: "spray".to_owned(),
            version: crate::build_info::VERSION.to_owned(),
            build: crate::build_info::DESCRIPTION.to_owned(),
            protocol: PROTOCOL_VERSION,
            controller: "unknown".to_owned(),
        }
    }
}
