//! The configuration file: one TOML document, deserialised, then validated into the
//! dataplane's [`ServiceSpec`]s.
//!
//! Contract: [`Config::parse`] either returns a configuration that the dataplane accepts
//! as it is ([`Config::snapshot`] cannot fail on it), or an error that names the file, the
//! line where the TOML parser knows it, the key path and the problem, in the form
//! `spray.toml:14: services.syslog.backends[2].weight: 70000 is out of range 0..=65535`.
//! Every problem in the file is reported, not just the first.
//!
//! Two stages, so that both kinds of mistake point at the offending key:
//!
//! 1. Deserialisation into the file model ([`file::RawConfig`], shared with the keepalived
//!    importer, which serialises it) with `deny_unknown_fields` (a misspelt key is an
//!    error, never silently ignored). Values are wrapped in [`Spanned`] so validation can
//!    say on which line they are; numbers are read as `i64` so that an out-of-range value
//!    gets our message rather than a type error. `serde_path_to_error` supplies the key
//!    path of a deserialisation error, toml supplies its span.
//! 2. Validation, which collects every problem and builds the specs: VIP ids are the index
//!    of the service in name order (a `BTreeMap` iterates sorted), backend ids count up
//!    over all (service, backend) entries in that order.
//!
//! Health checks are a `[services.NAME.check]` table and a per-backend `check` override,
//! validated and merged by [`crate::health::config`]; the result is [`Config::checks`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::{Range, RangeInclusive};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use dataplane::sched::SchedulerKind;
use dataplane::service::{
    AdminState, Backend, BackendId, MacAddr, MirrorSpec, Mode, ServiceSpec, Snapshot,
    SnapshotError, VipId, VipKey, MAX_BACKENDS, MAX_VIPS,
};
use toml::Spanned;

use self::file::{Method, RawBackend, RawConfig, RawMirror, RawRuntime, RawService, RawSocket};
use crate::health::config::{CheckProblem, Fields};
use crate::health::Check;
pub mod file;
pub mod loops;
mod ops;
pub mod traps;
pub use self::ops::{default_socket_path, ControlSettings, MetricsSettings};
pub mod dpdk;
pub use dataplane::socket::SocketSettings;
pub use dpdk::DpdkSettings;
pub mod tunnel;
pub use tunnel::TunnelSettings;

/// Most worker threads a config may ask for.
pub const MAX_WORKERS: usize = 64;
/// Largest receive batch.
pub const MAX_BATCH: usize = 1024;
/// Longest idle time of a socket-mode session, one day.
pub const MAX_SESSION_IDLE_SECS: u64 = 86_400;

/// Which packet I/O the workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataplaneKind {
    /// Kernel UDP sockets; no root, no dedicated NIC.
    Socket,
    /// DPDK ethdev ports (the `dpdk` cargo feature).
    Dpdk,
}

impl DataplaneKind {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Socket => "socket",
            Self::Dpdk => "dpdk",
        }
    }
}

/// `[runtime]`: threads, pinning, logging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// Packet I/O.
    pub dataplane: DataplaneKind,
    /// Number of worker threads.
    pub workers: usize,
    /// Core of worker `i` is `cores[i]`; `None` leaves placement to the kernel.
    pub cores: Option<Vec<usize>>,
    /// A `tracing` filter: a level (`info`) or directives (`spray=debug,warn`).
    pub log: String,
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            dataplane: DataplaneKind::Socket,
            workers: 1,
            cores: None,
            log: "info".to_owned(),
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[runtime]`.
    pub runtime: Runtime,
    /// `[socket]`.
    pub socket: SocketSettings,
    /// `[dpdk]`.
    pub dpdk: DpdkSettings,
    /// `[services.*]` in name order; `services[i].id == VipId(i)`.
    pub services: Vec<ServiceSpec>,
    /// The health check of each checked backend entry (unchecked ones are always up).
    pub checks: BTreeMap<BackendId, Check>,
    /// How each service forwards, by name (every service has an entry).
    pub forwarding: BTreeMap<String, Forwarding>,
    /// `[control]`.
    pub control: ControlSettings,
    /// `[metrics]`.
    pub metrics: MetricsSettings,
}

/// How a service forwards, beyond the rewrite its [`ServiceSpec::mode`] gives the
/// dataplane: what a backend added at run time takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Forwarding {
    /// The service's `mode`, the method of every backend without its own.
    pub method: Method,
    /// Its tunnel (the defaults when it has no `tunnel` table); used by tunnelled backends.
    pub tunnel: TunnelSettings,
}

/// Largest N of a mirror pool's `sample = "1/N"`.
pub const MAX_SAMPLE: u32 = 1_000_000;

/// What the mirror pools of a service take from it.
struct PoolCtx<'a> {
    /// `services.NAME`.
    key: &'a str,
    vip: Option<SocketAddr>,
    method: Method,
    /// The service's `check` table, which a pool without its own inherits.
    service_check: &'a Fields,
    service_checked: bool,
}

/// What validation needs to know about the machine it runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// Ids of the cores this process may run on.
    pub cores: Vec<usize>,
}

impl Machine {
    /// The machine this process runs on.
    pub fn current() -> Self {
        let cores = core_affinity::get_core_ids()
            .unwrap_or_default()
            .into_iter()
            .map(|c| c.id)
            .collect();
        Self { cores }
    }
}

/// Where a problem is: the file, and the line when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line number.
    pub line: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}", self.file),
            None => f.write_str(&self.file),
        }
    }
}

/// One thing wrong with the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// File and line.
    pub at: Location,
    /// Key path, like `services.syslog.backends[2].weight`; empty for plain TOML syntax
    /// errors.
    pub key: String,
    /// What is wrong, lowercase, no trailing period.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.at, self.message)
        } else {
            write!(f, "{}: {}: {}", self.at, self.key, self.message)
        }
    }
}

/// Every problem found by validation, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Error from loading a config file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read the config file")]
    Read {
        /// The file as the user named it.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key or a value of the wrong type.
    #[error("{0}")]
    Parse(Problem),
    /// Well-formed, but some values are not acceptable.
    #[error("{0}")]
    Invalid(Problems),
}

impl ConfigError {
    /// The problems found in the file (empty for [`ConfigError::Read`]).
    pub fn problems(&self) -> &[Problem] {
        match self {
            Self::Read { .. } => &[],
            Self::Parse(p) => std::slice::from_ref(p),
            Self::Invalid(ps) => &ps.0,
        }
    }
}

impl Config {
    /// Worker threads the configured dataplane runs: `runtime.workers` for sockets, one per
    /// queue pair for DPDK.
    pub fn workers(&self) -> usize {
        match self.runtime.dataplane {
            DataplaneKind::Socket => self.runtime.workers,
            DataplaneKind::Dpdk => self.dpdk.workers(),
        }
    }

    /// Reads and validates the file at `path`.
    ///
    /// # Errors
    /// When the file cannot be read, is not valid TOML, or does not validate.
    pub fn load(path: &Path, machine: &Machine) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&file, &src, machine)
    }

    /// Parses and validates `src`; `file` names it in messages.
    ///
    /// # Errors
    /// When `src` is not valid TOML or does not validate.
    pub fn parse(file: &str, src: &str, machine: &Machine) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_path_to_error::deserialize(toml::de::Deserializer::new(src))
            .map_err(|e| {
                // Spanned<T> shows up in the path as a private field name: drop it.
                let path = e
                    .path()
                    .to_string()
                    .replace(".$__serde_spanned_private_value", "");
                let inner = e.into_inner();
                ConfigError::Parse(Problem {
                    at: Location {
                        file: file.to_owned(),
                        line: inner.span().map(|s| line_of(src, s.start)),
                    },
                    key: if path == "." { String::new() } else { path },
                    message: did_you_mean(inner.message().trim_end().trim_end_matches('.')),
                })
            })?;
        let mut v = Validator {
            file,
            src,
            problems: Vec::new(),
            checks: BTreeMap::new(),
        };
        let config = v.config(raw, machine);
        if v.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(Problems(v.problems)))
        }
    }

    /// The service table as generation `generation`.
    ///
    /// # Errors
    /// Never for a validated config; the dataplane's own checks are kept as a backstop.
    pub fn snapshot(&self, generation: u64) -> Result<Snapshot, SnapshotError> {
        Snapshot::new(generation, self.services.clone())
    }
}

/// `message` with the closest expected name put after the unknown one, when serde's
/// message is about an unknown field or variant (`unknown field `wieght`, expected one of
/// `addr`, `weight`` gets `(did you mean `weight`?)`); other messages come back as they are.
pub fn did_you_mean(message: &str) -> String {
    let Some((head, rest)) = ["unknown field `", "unknown variant `"]
        .iter()
        .find_map(|p| message.find(p).map(|i| message.split_at(i + p.len())))
    else {
        return message.to_owned();
    };
    let Some((typed, tail)) = rest.split_once('`') else {
        return message.to_owned();
    };
    let Some(expected) = tail.find("expected").map(|i| &tail[i..]) else {
        return message.to_owned();
    };
    // Names are backquoted: every other piece between backquotes is one.
    let candidates = expected.split('`').skip(1).step_by(2);
    match closest(typed, candidates) {
        Some(c) => format!("{head}{typed}` (did you mean `{c}`?){tail}"),
        None => message.to_owned(),
    }
}

/// The candidate closest to `typed`: within an edit distance (transpositions count once)
/// of a third of its length, or one that starts with it (a missing `_ms` suffix).
fn closest<'a>(typed: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let len = typed.chars().count();
    candidates
        .filter_map(|c| {
            let d = strsim::osa_distance(typed, c);
            let prefix = len >= 3 && c.starts_with(typed);
            (d > 0 && (d <= (len / 3).max(1) || prefix)).then_some((d, c))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// 1-based line of byte `offset` in `src`.
fn line_of(src: &str, offset: usize) -> usize {
    let end = offset.min(src.len());
    src.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

struct Validator<'a> {
    file: &'a str,
    src: &'a str,
    problems: Vec<Problem>,
    checks: BTreeMap<BackendId, Check>,
}

/// The services as the loop search sees them: each VIP and where it sends datagrams.
pub fn loop_nodes(specs: &[ServiceSpec]) -> Vec<loops::Node<'_>> {
    specs
        .iter()
        .map(|s| {
            let backends = s.backends.iter().map(|b| b.addr);
            let mut node = loops::Node::new(
                &s.name,
                s.vip.addr,
                backends,
                s.fallback.as_ref().map(|f| f.addr),
            );
            // A copy sent back into a VIP would be copied again, for ever.
            for (i, m) in s.mirrors.iter().enumerate() {
                for (j, b) in m.backends.iter().enumerate() {
                    node.targets
                        .push((format!("mirror[{i}].backends[{j}]"), b.addr));
                }
            }
            node
        })
        .collect()
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

impl Validator<'_> {
    fn report(&mut self, span: Option<Range<usize>>, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            at: Location {
                file: self.file.to_owned(),
                line: span.map(|s| line_of(self.src, s.start)),
            },
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// The value of an optional integer key in `range`, or `default`.
    fn int(
        &mut self,
        key: &str,
        v: &Option<Spanned<i64>>,
        range: RangeInclusive<i64>,
        default: i64,
    ) -> i64 {
        match v {
            None => default,
            Some(v) if range.contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                self.report(
                    Some(v.span()),
                    key,
                    format!(
                        "{} is out of range {}..={}",
                        v.get_ref(),
                        range.start(),
                        range.end()
                    ),
                );
                default
            }
        }
    }

    fn config(&mut self, raw: RawConfig, machine: &Machine) -> Config {
        let runtime = self.runtime(&raw.runtime, machine);
        let socket = self.socket(&raw.socket);
        let (mut services, mut forwarding) = self.services(&raw.services, runtime.dataplane);
        let control = self.control(raw.control.as_ref());
        let metrics = self.metrics(raw.metrics.as_ref());
        let dpdk = self.dpdk(&raw.dpdk, runtime.dataplane, &services, machine);
        if runtime.dataplane == DataplaneKind::Dpdk {
            self.tunnel_sources(&mut services, &mut forwarding, &dpdk);
        }
        Config {
            runtime,
            socket,
            dpdk,
            services,
            checks: std::mem::take(&mut self.checks),
            forwarding,
            control,
            metrics,
        }
    }

    /// Reports health-check problems, each once (a service's table is merged into every
    /// backend's check, so the same cross-key problem can come up once per backend).
    fn report_checks(&mut self, problems: Vec<CheckProblem>) {
        for (span, key, message) in problems {
            let line = span.clone().map(|s| line_of(self.src, s.start));
            if !self
                .problems
                .iter()
                .any(|p| p.key == key && p.message == message && p.at.line == line)
            {
                self.report(span, &key, message);
            }
        }
    }

    fn runtime(&mut self, raw: &RawRuntime, machine: &Machine) -> Runtime {
        let mut rt = Runtime::default();
        if let Some(d) = &raw.dataplane {
            match d.get_ref().as_str() {
                "socket" => rt.dataplane = DataplaneKind::Socket,
                "dpdk" => {
                    rt.dataplane = DataplaneKind::Dpdk;
                    if !cfg!(spray_dpdk) {
                        self.report(
                            Some(d.span()),
                            "runtime.dataplane",
                            "\"dpdk\": this spray was built without the dpdk feature: \
                             cargo build --features dataplane/dpdk",
                        );
                    }
                }
                other => self.report(
                    Some(d.span()),
                    "runtime.dataplane",
                    format!("unknown dataplane {other:?}: expected socket or dpdk"),
                ),
            }
        }
        let workers = self.int("runtime.workers", &raw.workers, 1..=MAX_WORKERS as i64, 1);
        rt.workers = workers as usize;
        if let Some(cores) = &raw.cores {
            let mut ids = Vec::with_capacity(cores.get_ref().len());
            if cores.get_ref().len() != rt.workers {
                self.report(
                    Some(cores.span()),
                    "runtime.cores",
                    format!(
                        "has {} entries but runtime.workers is {}: give one core per worker",
                        cores.get_ref().len(),
                        rt.workers
                    ),
                );
            }
            for (i, c) in cores.get_ref().iter().enumerate() {
                let key = format!("runtime.cores[{i}]");
                let id = *c.get_ref();
                let known = usize::try_from(id)
                    .ok()
                    .filter(|id| machine.cores.contains(id));
                match known {
                    None => self.report(
                        Some(c.span()),
                        &key,
                        format!(
                            "core {id} does not exist on this machine (available: {})",
                            list(&machine.cores)
                        ),
                    ),
                    Some(id) if ids.contains(&id) => self.report(
                        Some(c.span()),
                        &key,
                        format!("core {id} is given to two workers"),
                    ),
                    Some(id) => ids.push(id),
                }
            }
            rt.cores = Some(ids);
        }
        if let Some(log) = &raw.log {
            match log_filter(log.get_ref()) {
                Ok(_) => rt.log.clone_from(log.get_ref()),
                Err(e) => self.report(Some(log.span()), "runtime.log", e),
            }
        }
        rt
    }

    fn socket(&mut self, raw: &RawSocket) -> SocketSettings {
        let d = SocketSettings::default();
        SocketSettings {
            batch: self.int("socket.batch", &raw.batch, 1..=MAX_BATCH as i64, 32) as usize,
            transparent: raw.transparent.unwrap_or(d.transparent),
            session_idle: Duration::from_secs(self.int(
                "socket.session_idle_secs",
                &raw.session_idle_secs,
                1..=MAX_SESSION_IDLE_SECS as i64,
                60,
            ) as u64),
            rcvbuf: self.int(
                "socket.rcvbuf",
                &raw.rcvbuf,
                0..=i64::from(i32::MAX),
                d.rcvbuf as i64,
            ) as usize,
        }
    }

    fn services(
        &mut self,
        raw: &BTreeMap<String, Spanned<RawService>>,
        dataplane: DataplaneKind,
    ) -> (Vec<ServiceSpec>, BTreeMap<String, Forwarding>) {
        let mut forwarding = BTreeMap::new();
        if raw.is_empty() {
            self.report(
                None,
                "services",
                "no service is defined: add a [services.NAME] table with a vip and backends",
            );
        }
        if raw.len() > MAX_VIPS {
            self.report(
                None,
                "services",
                format!("{} services is more than the limit {MAX_VIPS}", raw.len()),
            );
            return (Vec::new(), forwarding);
        }
        let mut specs: Vec<ServiceSpec> = Vec::with_capacity(raw.len());
        let mut next_backend = 0usize;
        let mut vips: std::collections::HashMap<VipKey, (&str, SocketAddr)> =
            std::collections::HashMap::new();
        for (i, (name, svc)) in raw.iter().enumerate() {
            let key = format!("services.{name}");
            let svc_span = svc.span();
            let svc = svc.get_ref();
            let method = match &svc.mode {
                None => Method::Nat,
                Some(m) => self.method(&format!("{key}.mode"), m, dataplane),
            };
            let mode = method.mode();
            let tunnel = self.tunnel(&key, svc.tunnel.as_ref());
            let vip = self.vip(&key, &svc.vip);
            if let Some(p) = &svc.protocol {
                if p.get_ref() != "udp" {
                    self.report(
                        Some(p.span()),
                        &format!("{key}.protocol"),
                        format!(
                            "{:?} is not supported: spray balances udp only",
                            p.get_ref()
                        ),
                    );
                }
            }
            let scheduler = match &svc.scheduler {
                None => SchedulerKind::Rr,
                Some(s) => match SchedulerKind::from_str(s.get_ref()) {
                    Ok(k) => k,
                    Err(e) => {
                        self.report(Some(s.span()), &format!("{key}.scheduler"), e.to_string());
                        SchedulerKind::Rr
                    }
                },
            };
            if let Some(vip) = vip {
                // `[::ffff:a.b.c.d]:p` is `a.b.c.d:p` written as IPv6: the same VIP.
                let k = VipKey::udp(SocketAddr::new(vip.ip().to_canonical(), vip.port()));
                if let Some((other, first)) = vips.get(&k) {
                    let message = if *first == vip {
                        format!("{vip} is already the vip of services.{other}")
                    } else {
                        format!("{vip} is the same address as {first}, the vip of services.{other}")
                    };
                    self.report(Some(svc.vip.span()), &format!("{key}.vip"), message);
                } else {
                    vips.insert(k, (name, vip));
                }
            }
            let mut backends = Vec::new();
            let mut check_problems = Vec::new();
            let service_check = svc
                .check
                .as_ref()
                .map(|c| Fields::parse(&format!("{key}.check"), c.get_ref(), &mut check_problems))
                .unwrap_or_default();
            match &svc.backends {
                None => self.report(
                    Some(svc_span),
                    &format!("{key}.backends"),
                    "no backend is defined: add backends = [{ addr = \"ip:port\" }]",
                ),
                Some(list) if list.get_ref().is_empty() => self.report(
                    Some(list.span()),
                    &format!("{key}.backends"),
                    "is empty: a service needs at least one backend",
                ),
                Some(list) => {
                    for (j, b) in list.get_ref().iter().enumerate() {
                        let bkey = format!("{key}.backends[{j}]");
                        let id = next_backend;
                        next_backend += 1;
                        let own = match &b.get_ref().mode {
                            None => method,
                            Some(m) => {
                                let mkey = format!("{bkey}.mode");
                                let own = self.method(&mkey, m, dataplane);
                                if (own == Method::Nat) != (method == Method::Nat) {
                                    self.report(
                                        Some(m.span()),
                                        &mkey,
                                        format!(
                                            "{:?} cannot mix with the service's {:?}: a nat \
                                             service rewrites its replies, dr and tunnel \
                                             backends answer the client themselves; only dr \
                                             and tunnel mix",
                                            own.name(),
                                            method.name()
                                        ),
                                    );
                                }
                                own
                            }
                        };
                        if let Some(mut be) = self.backend(&bkey, b, id, vip, own) {
                            if own == Method::Tunnel {
                                be.tunnel = Some(self.backend_tunnel(
                                    &key,
                                    svc.tunnel.as_ref(),
                                    &tunnel,
                                    vip,
                                    be.addr.ip(),
                                ));
                            }
                            if b.get_ref().drain == Some(true) {
                                be.admin = AdminState::Drained;
                            }
                            let (ckey, fields) = match &b.get_ref().check {
                                Some(c) => {
                                    let ckey = format!("{bkey}.check");
                                    let own =
                                        Fields::parse(&ckey, c.get_ref(), &mut check_problems);
                                    (ckey, own.over(&service_check))
                                }
                                None => (format!("{key}.check"), service_check.clone()),
                            };
                            if svc.check.is_some() || b.get_ref().check.is_some() {
                                if let Some(c) = fields.build(&ckey, be.addr, &mut check_problems) {
                                    self.checks.insert(be.id, c);
                                }
                            }
                            if let Some(k) =
                                backends.iter().position(|o: &Backend| o.addr == be.addr)
                            {
                                self.report(
                                    Some(b.get_ref().addr.span()),
                                    &format!("{bkey}.addr"),
                                    format!("{} is already backends[{k}]", be.addr),
                                );
                            }
                            backends.push(be);
                        }
                    }
                }
            }
            let mirrors = match &svc.mirror {
                Some(list) => {
                    let tunnelled = backends.iter().any(|b| b.tunnel.is_some());
                    if method == Method::Tunnel || tunnelled {
                        self.report(
                            Some(list.span()),
                            &format!("{key}.mirror"),
                            "a service with mirror pools forwards by nat or dr: copies are made                              of the datagram as it leaves, which a tunnel has wrapped",
                        );
                    }
                    let ctx = PoolCtx {
                        key: &key,
                        vip,
                        method,
                        service_check: &service_check,
                        service_checked: svc.check.is_some(),
                    };
                    self.mirrors(&ctx, list, &mut next_backend, &mut check_problems)
                }
                None => Vec::new(),
            };
            self.report_checks(check_problems);
            let fallback = svc
                .fallback
                .as_ref()
                .and_then(|f| self.fallback(&key, f, vip, &backends));
            forwarding.insert(name.clone(), Forwarding { method, tunnel });
            if let Some(vip) = vip {
                specs.push(ServiceSpec {
                    id: VipId(i as u16),
                    name: name.clone(),
                    vip: VipKey::udp(vip),
                    mode,
                    scheduler,
                    backends,
                    fallback,
                    passive: svc.passive.unwrap_or(true),
                    mirrors,
                });
            }
        }
        // Fallbacks are numbered after every backend entry, so adding one does not move the
        // ids (and counters) of the backends.
        for spec in &mut specs {
            if let Some(f) = &mut spec.fallback {
                f.id = BackendId(next_backend.min(usize::from(u16::MAX)) as u16);
                next_backend += 1;
            }
        }
        if next_backend > MAX_BACKENDS {
            self.report(
                None,
                "services",
                format!("{next_backend} backends in all is more than the limit {MAX_BACKENDS}"),
            );
        }
        let nodes = loop_nodes(&specs);
        if let Some(hops) = loops::find(&nodes) {
            let first = &hops[0];
            let name = nodes[first.from].name;
            let span = raw.get(name).and_then(|svc| {
                let svc = svc.get_ref();
                match first.label.strip_prefix("backends[") {
                    Some(_) => svc.backends.as_ref().and_then(|list| {
                        list.get_ref()
                            .iter()
                            .find(|b| b.get_ref().addr.get_ref().parse() == Ok(first.addr))
                            .map(|b| b.get_ref().addr.span())
                    }),
                    None if first.label == "fallback" => svc.fallback.as_ref().map(Spanned::span),
                    None => None,
                }
            });
            self.report(
                span,
                &format!("services.{name}.{}", first.label),
                loops::describe(&nodes, &hops, "services."),
            );
        }
        (specs, forwarding)
    }

    /// The mirror pools of one service (`[[KEY.mirror]]`), their backends numbered from
    /// `*next_backend` on and their checks recorded like the service's own.
    fn mirrors(
        &mut self,
        ctx: &PoolCtx<'_>,
        list: &Spanned<Vec<Spanned<RawMirror>>>,
        next_backend: &mut usize,
        check_problems: &mut Vec<CheckProblem>,
    ) -> Vec<MirrorSpec> {
        let key = ctx.key;
        let mut pools: Vec<MirrorSpec> = Vec::new();
        for (i, m) in list.get_ref().iter().enumerate() {
            let mkey = format!("{key}.mirror[{i}]");
            let m = m.get_ref();
            let name = match &m.name {
                None => format!("mirror{i}"),
                Some(n) => {
                    let text = n.get_ref();
                    let ok = !text.is_empty()
                        && text
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                    if !ok {
                        self.report(
                            Some(n.span()),
                            &format!("{mkey}.name"),
                            format!("{text:?} is not a pool name: use letters, digits, - and _"),
                        );
                    }
                    text.clone()
                }
            };
            if let Some(k) = pools.iter().position(|p| p.name == name) {
                let span = m.name.as_ref().map(Spanned::span);
                let message = format!("{name:?} is already the name of {key}.mirror[{k}]");
                self.report(span, &format!("{mkey}.name"), message);
            }
            let scheduler = match &m.scheduler {
                None => SchedulerKind::Rr,
                Some(s) => SchedulerKind::from_str(s.get_ref()).unwrap_or_else(|e| {
                    self.report(Some(s.span()), &format!("{mkey}.scheduler"), e.to_string());
                    SchedulerKind::Rr
                }),
            };
            let sample = m.sample.as_ref().map_or(1, |s| self.sample(&mkey, s));
            // A pool without its own check takes the service's, as a backend does.
            let own_check = m
                .check
                .as_ref()
                .map(|c| Fields::parse(&format!("{mkey}.check"), c.get_ref(), check_problems));
            let checked = own_check.is_some() || ctx.service_checked;
            let pool_check = match own_check {
                Some(f) => f.over(ctx.service_check),
                None => ctx.service_check.clone(),
            };
            let check_key = match &m.check {
                Some(_) => format!("{mkey}.check"),
                None => format!("{key}.check"),
            };
            if m.backends.get_ref().is_empty() {
                self.report(
                    Some(m.backends.span()),
                    &format!("{mkey}.backends"),
                    "is empty: a mirror pool needs at least one backend",
                );
            }
            let mut backends: Vec<Backend> = Vec::new();
            for (j, b) in m.backends.get_ref().iter().enumerate() {
                let bkey = format!("{mkey}.backends[{j}]");
                let id = *next_backend;
                *next_backend += 1;
                if let Some(mode) = &b.get_ref().mode {
                    self.report(
                        Some(mode.span()),
                        &format!("{bkey}.mode"),
                        "a mirror pool's backends forward as their service does: remove mode",
                    );
                }
                let Some(mut be) = self.backend(&bkey, b, id, ctx.vip, ctx.method) else {
                    continue;
                };
                if b.get_ref().drain == Some(true) {
                    be.admin = AdminState::Drained;
                }
                let (ckey, fields) = match &b.get_ref().check {
                    Some(c) => {
                        let ckey = format!("{bkey}.check");
                        let own = Fields::parse(&ckey, c.get_ref(), check_problems);
                        (ckey, own.over(&pool_check))
                    }
                    None => (check_key.clone(), pool_check.clone()),
                };
                if checked || b.get_ref().check.is_some() {
                    if let Some(c) = fields.build(&ckey, be.addr, check_problems) {
                        self.checks.insert(be.id, c);
                    }
                }
                if let Some(k) = backends.iter().position(|o| o.addr == be.addr) {
                    self.report(
                        Some(b.get_ref().addr.span()),
                        &format!("{bkey}.addr"),
                        format!("{} is already backends[{k}] of this pool", be.addr),
                    );
                }
                backends.push(be);
            }
            let mut pool = MirrorSpec::new(name, scheduler, backends);
            pool.sample = sample;
            pools.push(pool);
        }
        pools
    }

    /// `KEY.sample`: `"1/N"`, one datagram in N.
    fn sample(&mut self, key: &str, raw: &Spanned<String>) -> u32 {
        let text = raw.get_ref();
        let n = text
            .strip_prefix("1/")
            .and_then(|n| n.trim().parse::<u32>().ok())
            .filter(|n| (1..=MAX_SAMPLE).contains(n));
        n.unwrap_or_else(|| {
            self.report(
                Some(raw.span()),
                &format!("{key}.sample"),
                format!(
                    "{text:?} is not a sample: write \"1/N\" for one datagram in N \
                     (N from 1 to {MAX_SAMPLE})"
                ),
            );
            1
        })
    }

    /// The method named at `key`; a method the dataplane cannot do is reported.
    fn method(&mut self, key: &str, raw: &Spanned<String>, dataplane: DataplaneKind) -> Method {
        let Some(method) = Method::from_name(raw.get_ref()) else {
            self.report(
                Some(raw.span()),
                key,
                format!(
                    "unknown mode {:?}: expected nat, dr or tunnel",
                    raw.get_ref()
                ),
            );
            return Method::Nat;
        };
        let why = match method {
            Method::Nat => None,
            Method::Dr => Some(
                "the socket dataplane hands datagrams to the kernel, which cannot keep the \
                 vip as destination and rewrite only the MAC address",
            ),
            Method::Tunnel => Some(
                "the socket dataplane sends through the kernel's UDP sockets, which cannot \
                 put an outer IPIP or GUE header around the client's datagram",
            ),
        };
        if let (Some(why), DataplaneKind::Socket) = (why, dataplane) {
            self.report(
                Some(raw.span()),
                key,
                format!(
                    "{:?} needs a dataplane that owns the wire (dpdk): {why}",
                    method.name()
                ),
            );
        }
        method
    }

    /// The tunnel of a backend at `ip` of service `key`. Its source may be the DPDK port's,
    /// known only later: until [`Self::tunnel_sources`] settles it, it is unspecified.
    fn backend_tunnel(
        &mut self,
        key: &str,
        raw: Option<&Spanned<file::RawTunnel>>,
        t: &TunnelSettings,
        vip: Option<SocketAddr>,
        ip: IpAddr,
    ) -> dataplane::service::Tunnel {
        if vip.is_some_and(|v| v.is_ipv6()) {
            self.tunnel_fits_ipv6(key, raw, t, ip);
        }
        let unspecified = match ip {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        t.toward(ip).unwrap_or(dataplane::service::Tunnel {
            encap: t.encap,
            source: unspecified,
            mtu: t.mtu,
        })
    }

    /// The sorry server of service `key`: an address:port of the vip's family that is not
    /// one of its backends (its id is set by the caller).
    fn fallback(
        &mut self,
        key: &str,
        raw: &Spanned<String>,
        vip: Option<SocketAddr>,
        backends: &[Backend],
    ) -> Option<Backend> {
        let fkey = format!("{key}.fallback");
        let a = match raw.get_ref().parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => a,
            _ => {
                self.report(
                    Some(raw.span()),
                    &fkey,
                    format!(
                        "{:?} is not an address:port (like 198.18.1.99:514)",
                        raw.get_ref()
                    ),
                );
                return None;
            }
        };
        if let Some(v) = vip {
            if a.is_ipv4() != v.is_ipv4() {
                self.report(
                    Some(raw.span()),
                    &fkey,
                    format!(
                        "{a} is {} but the vip {v} is {}: nat cannot translate between \
                         address families",
                        family(a.ip()),
                        family(v.ip())
                    ),
                );
                return None;
            }
        }
        if let Some(k) = backends.iter().position(|b| b.addr == a) {
            self.report(
                Some(raw.span()),
                &fkey,
                format!("{a} is already backends[{k}]: a fallback must be another server"),
            );
            return None;
        }
        Some(Backend::new(BackendId(0), a, 1))
    }

    fn vip(&mut self, key: &str, raw: &Spanned<String>) -> Option<SocketAddr> {
        let key = format!("{key}.vip");
        match raw.get_ref().parse::<SocketAddr>() {
            Ok(a) if a.port() == 0 => {
                self.report(
                    Some(raw.span()),
                    &key,
                    format!("port 0 is out of range 1..=65535 in {:?}", raw.get_ref()),
                );
                None
            }
            Ok(a) => Some(a),
            Err(_) => {
                self.report(
                    Some(raw.span()),
                    &key,
                    format!(
                        "{:?} is not an address:port (like 198.18.0.10:514 or [2001:db8::10]:514)",
                        raw.get_ref()
                    ),
                );
                None
            }
        }
    }

    fn backend(
        &mut self,
        key: &str,
        raw: &Spanned<RawBackend>,
        id: usize,
        vip: Option<SocketAddr>,
        method: Method,
    ) -> Option<Backend> {
        let raw = raw.get_ref();
        let akey = format!("{key}.addr");
        let text = raw.addr.get_ref();
        let addr = match (
            text.parse::<SocketAddr>(),
            text.parse::<IpAddr>(),
            vip,
            method.mode(),
        ) {
            (Ok(a), ..) if a.port() == 0 => {
                self.report(
                    Some(raw.addr.span()),
                    &akey,
                    format!("port 0 is out of range 1..=65535 in {text:?}"),
                );
                None
            }
            (Ok(a), ..) => Some(a),
            // In DR and tunnel modes the port is the VIP's, so a bare address will do.
            (_, Ok(ip), Some(vip), Mode::Dr) => Some(SocketAddr::new(ip, vip.port())),
            _ => {
                self.report(
                    Some(raw.addr.span()),
                    &akey,
                    format!(
                        "{text:?} is not an address:port (like 198.18.1.1:514 or [2001:db8::1]:514)"
                    ),
                );
                None
            }
        };
        if let (Some(a), Some(v)) = (addr, vip) {
            // A tunnel carries either family over either family (RFC 2473, RFC 4213).
            if a.is_ipv4() != v.is_ipv4() && method != Method::Tunnel {
                let why = match method {
                    Method::Nat => "nat cannot translate between address families",
                    Method::Dr | Method::Tunnel => {
                        "dr sends the vip's own packets, which a backend of another \
                         family cannot receive: a tunnel can (mode = \"tunnel\")"
                    }
                };
                self.report(
                    Some(raw.addr.span()),
                    &akey,
                    format!(
                        "{a} is {} but the vip {v} is {}: {why}",
                        family(a.ip()),
                        family(v.ip())
                    ),
                );
            }
        }
        let weight = self.int(
            &format!("{key}.weight"),
            &raw.weight,
            0..=i64::from(u16::MAX),
            1,
        ) as u32;
        let mac = match &raw.mac {
            None => None,
            Some(m) => match MacAddr::from_str(m.get_ref()) {
                Ok(mac) => Some(mac),
                Err(e) => {
                    self.report(
                        Some(m.span()),
                        &format!("{key}.mac"),
                        format!("{:?} is not a MAC address: {e}", m.get_ref()),
                    );
                    None
                }
            },
        };
        let mut b = Backend::new(
            BackendId(id.min(usize::from(u16::MAX)) as u16),
            addr?,
            weight,
        );
        b.mac = mac;
        Some(b)
    }
}

/// Levels a log filter may name on its own.
const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Builds the `tracing` filter for `runtime.log` or `--log-level`: a level, or
/// `EnvFilter` directives such as `spray=debug,warn`. A lone word must be a level, because
/// `EnvFilter` would take a misspelt level (`inof`) for a target name and log nothing.
///
/// # Errors
/// A message saying what is wrong with `s`.
pub fn log_filter(s: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    let lone_word = !s.contains(['=', ',', '[', ':']);
    if lone_word && !LEVELS.contains(&s.to_ascii_lowercase().as_str()) {
        return Err(format!(
            "{s:?} is not a log level: expected off, error, warn, info, debug or trace, \
             or directives like \"spray=debug,warn\""
        ));
    }
    tracing_subscriber::EnvFilter::try_new(s).map_err(|e| format!("{s:?} is not a log filter: {e}"))
}

fn list(ids: &[usize]) -> String {
    if ids.is_empty() {
        return "none".to_owned();
    }
    ids.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            cores: vec![0, 1, 2, 3],
        }
    }

    fn parse(src: &str) -> Result<Config, ConfigError> {
        Config::parse("spray.toml", src, &machine())
    }

    /// Parses `src`, expects exactly one problem and returns its text.
    fn error(src: &str) -> String {
        let e = parse(src).expect_err("config should be refused");
        assert_eq!(e.problems().len(), 1, "{e}");
        e.to_string()
    }

    const GOOD: &str = r#"
[runtime]
workers = 2
cores = [0, 1]
log = "debug"

[socket]
batch = 64
session_idle_secs = 30

[services.syslog]
vip = "198.18.0.10:514"
scheduler = "wrr"
backends = [
  { addr = "198.18.1.1:514", weight = 3, mac = "02:00:00:00:01:01" },
  { addr = "198.18.1.2:514" },
]

[services.netflow]
vip = "[2001:db8::10]:2055"
backends = [{ addr = "[2001:db8::1:1]:2055", weight = 0 }]
"#;

    #[test]
    fn good_config_builds_specs_in_name_order() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.runtime.workers, 2);
        assert_eq!(c.runtime.cores, Some(vec![0, 1]));
        assert_eq!(c.runtime.log, "debug");
        assert_eq!(c.socket.batch, 64);
        assert_eq!(c.socket.session_idle, Duration::from_secs(30));
        assert_eq!(c.socket.rcvbuf, 4 << 20);
        let names: Vec<_> = c.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["netflow", "syslog"]);
        assert_eq!(c.services[0].id, VipId(0));
        assert_eq!(c.services[1].id, VipId(1));
        let ids: Vec<_> = c
            .services
            .iter()
            .flat_map(|s| s.backends.iter().map(|b| b.id.0))
            .collect();
        assert_eq!(ids, [0, 1, 2]);
        let syslog = &c.services[1];
        assert_eq!(syslog.scheduler, SchedulerKind::Wrr);
        assert_eq!(syslog.mode, Mode::Nat);
        assert_eq!(syslog.backends[0].weight, 3);
        assert_eq!(syslog.backends[1].weight, 1);
        assert_eq!(syslog.backends[0].mac, Some(MacAddr([2, 0, 0, 0, 1, 1])));
        assert_eq!(c.services[0].backends[0].weight, 0);
        let snap = c.snapshot(1).unwrap();
        assert_eq!(snap.services().count(), 2);
    }

    #[test]
    fn defaults() {
        let c = parse(
            "[services.a]\nvip = \"127.0.0.1:9\"\nbackends = [{ addr = \"127.0.0.1:10\" }]\n",
        )
        .unwrap();
        assert_eq!(c.runtime, Runtime::default());
        assert_eq!(c.socket, SocketSettings::default());
        assert_eq!(c.services[0].scheduler, SchedulerKind::Rr);
    }

    #[test]
    fn backends_as_array_of_tables() {
        let src = "[services.a]\nvip = \"127.0.0.1:9\"\n\n[[services.a.backends]]\n\
                   addr = \"127.0.0.1:10\"\n\n[[services.a.backends]]\naddr = \"127.0.0.1:11\"\n\
                   weight = 70000\n";
        assert_eq!(
            error(src),
            "spray.toml:9: services.a.backends[1].weight: 70000 is out of range 0..=65535"
        );
        let c = parse(&src.replace("70000", "2")).unwrap();
        assert_eq!(c.services[0].backends.len(), 2);
    }

    #[test]
    fn weight_out_of_range_names_line_and_key() {
        let src = GOOD.replace("weight = 3", "weight = 70000");
        assert_eq!(
            error(&src),
            "spray.toml:15: services.syslog.backends[0].weight: 70000 is out of range 0..=65535"
        );
        let src = GOOD.replace("weight = 3", "weight = -1");
        assert!(error(&src).contains("-1 is out of range 0..=65535"));
    }

    #[test]
    fn unknown_key_is_refused_with_its_path() {
        let src = GOOD.replace("weight = 3", "wieght = 3");
        let e = error(&src);
        assert!(
            e.starts_with("spray.toml:15: services.syslog.backends[0]"),
            "{e}"
        );
        assert!(
            e.contains("unknown field `wieght` (did you mean `weight`?), expected one of `addr`"),
            "{e}"
        );
        let e = error(&format!("{GOOD}\n[runtime2]\n"));
        assert!(
            e.contains("unknown field `runtime2` (did you mean `runtime`?)"),
            "{e}"
        );
        let e = error(&GOOD.replace("batch = 64", "bach = 64"));
        assert!(e.starts_with("spray.toml:8: socket"), "{e}");
        assert!(e.contains("(did you mean `batch`?)"), "{e}");
        let e = error(&GOOD.replace("batch = 64", "qqqq = 64"));
        assert!(!e.contains("did you mean"), "{e}");
    }

    #[test]
    fn did_you_mean_picks_the_closest_expected_name_or_none() {
        let m = "unknown field `intervall_ms`, expected one of `type`, `interval_ms`, `timeout_ms`";
        assert_eq!(
            did_you_mean(m),
            "unknown field `intervall_ms` (did you mean `interval_ms`?), expected one of \
             `type`, `interval_ms`, `timeout_ms`"
        );
        assert!(
            did_you_mean("unknown field `timeout`, expected `type` or `timeout_ms`")
                .contains("(did you mean `timeout_ms`?)")
        );
        assert!(
            did_you_mean("unknown variant `maglve`, expected one of `rr`, `wrr`, `maglev`")
                .contains("(did you mean `maglev`?)")
        );
        for unchanged in [
            "unknown field `all`, there are no fields",
            "unknown field `zzzzzz`, expected `addr` or `weight`",
            "invalid type: string \"3\", expected u16",
            "unknown field `x",
        ] {
            assert_eq!(did_you_mean(unchanged), unchanged);
        }
    }

    #[test]
    fn wrong_type_names_key() {
        let e = error(&GOOD.replace("workers = 2", "workers = \"two\""));
        assert!(e.starts_with("spray.toml:3: runtime.workers: "), "{e}");
    }

    #[test]
    fn toml_syntax_error_names_line() {
        let e = error(&GOOD.replace("batch = 64", "batch = = 64"));
        assert!(e.starts_with("spray.toml:8: "), "{e}");
    }

    #[test]
    fn dataplane() {
        let src = GOOD.replace("workers = 2", "dataplane = \"dpdk\"\nworkers = 2");
        let e = parse(&src).unwrap_err().to_string();
        if cfg!(spray_dpdk) {
            assert!(e.contains("dpdk.ports: no port is defined"), "{e}");
        } else {
            assert!(
                e.starts_with(
                    "spray.toml:3: runtime.dataplane: \"dpdk\": this spray was built without \
                     the dpdk feature: cargo build --features dataplane/dpdk"
                ),
                "{e}"
            );
        }
        let e = error(&GOOD.replace("workers = 2", "dataplane = \"xdp\"\nworkers = 2"));
        assert!(
            e.contains("runtime.dataplane: unknown dataplane \"xdp\""),
            "{e}"
        );
    }

    #[test]
    fn workers_and_cores() {
        let e = error(
            &GOOD
                .replace("workers = 2", "workers = 65")
                .replace("cores = [0, 1]\n", ""),
        );
        assert_eq!(
            e,
            "spray.toml:3: runtime.workers: 65 is out of range 1..=64"
        );
        let e = error(
            &GOOD
                .replace("workers = 2", "workers = 0")
                .replace("cores = [0, 1]\n", ""),
        );
        assert!(
            e.contains("runtime.workers: 0 is out of range 1..=64"),
            "{e}"
        );
        let e = error(&GOOD.replace("cores = [0, 1]", "cores = [0]"));
        assert_eq!(
            e,
            "spray.toml:4: runtime.cores: has 1 entries but runtime.workers is 2: \
             give one core per worker"
        );
        let e = error(&GOOD.replace("cores = [0, 1]", "cores = [0, 9]"));
        assert!(
            e.starts_with("spray.toml:4: runtime.cores[1]: core 9 does not exist on this machine"),
            "{e}"
        );
        let e = error(&GOOD.replace("cores = [0, 1]", "cores = [1, 1]"));
        assert!(
            e.contains("runtime.cores[1]: core 1 is given to two workers"),
            "{e}"
        );
    }

    #[test]
    fn log_filter_validation() {
        let e = error(&GOOD.replace("log = \"debug\"", "log = \"loud=[\""));
        assert!(e.starts_with("spray.toml:5: runtime.log: "), "{e}");
        let e = error(&GOOD.replace("log = \"debug\"", "log = \"inof\""));
        assert!(
            e.starts_with("spray.toml:5: runtime.log: \"inof\" is not a log level"),
            "{e}"
        );
        for ok in ["WARN", "spray=debug,warn", "trace"] {
            assert!(log_filter(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn socket_ranges() {
        let e = error(&GOOD.replace("batch = 64", "batch = 0"));
        assert_eq!(e, "spray.toml:8: socket.batch: 0 is out of range 1..=1024");
        let e = error(&GOOD.replace("batch = 64", "batch = 2048"));
        assert!(e.contains("socket.batch: 2048 is out of range"), "{e}");
        let e = error(&GOOD.replace("session_idle_secs = 30", "session_idle_secs = 0"));
        assert!(e.starts_with("spray.toml:9: socket.session_idle_secs: 0 is out of range"));
        let e = error(&GOOD.replace("batch = 64", "rcvbuf = -5"));
        assert!(e.contains("socket.rcvbuf: -5 is out of range"), "{e}");
    }

    #[test]
    fn no_services() {
        let e = error("[runtime]\nworkers = 1\n");
        assert!(
            e.starts_with("spray.toml: services: no service is defined"),
            "{e}"
        );
    }

    #[test]
    fn backends_missing_or_empty() {
        let e = error("[services.a]\nvip = \"127.0.0.1:9\"\n");
        assert!(
            e.contains("services.a.backends: no backend is defined"),
            "{e}"
        );
        let e = error("[services.a]\nvip = \"127.0.0.1:9\"\nbackends = []\n");
        assert_eq!(
            e,
            "spray.toml:3: services.a.backends: is empty: a service needs at least one backend"
        );
    }

    #[test]
    fn missing_vip() {
        let e = error("[services.a]\nbackends = [{ addr = \"127.0.0.1:10\" }]\n");
        assert!(e.contains("services.a: missing field `vip`"), "{e}");
    }

    #[test]
    fn bad_vip() {
        let e = error(&GOOD.replace("198.18.0.10:514", "198.18.0.10"));
        assert!(
            e.starts_with(
                "spray.toml:12: services.syslog.vip: \"198.18.0.10\" is not an address:port"
            ),
            "{e}"
        );
        let e = error(&GOOD.replace("198.18.0.10:514", "198.18.0.10:0"));
        assert!(
            e.contains("services.syslog.vip: port 0 is out of range 1..=65535"),
            "{e}"
        );
        let e = error(&GOOD.replace("198.18.0.10:514", "198.18.0.10:70000"));
        assert!(
            e.contains("services.syslog.vip: \"198.18.0.10:70000\" is not"),
            "{e}"
        );
    }

    #[test]
    fn protocol_scheduler_mode() {
        let e = error(&GOOD.replace("scheduler = \"wrr\"", "protocol = \"tcp\""));
        assert_eq!(
            e,
            "spray.toml:13: services.syslog.protocol: \"tcp\" is not supported: spray balances udp only"
        );
        let e = error(&GOOD.replace("scheduler = \"wrr\"", "scheduler = \"lc\""));
        assert!(
            e.starts_with("spray.toml:13: services.syslog.scheduler: unknown scheduler \"lc\""),
            "{e}"
        );
        let e = error(&GOOD.replace("scheduler = \"wrr\"", "mode = \"tun\""));
        assert!(
            e.contains("services.syslog.mode: unknown mode \"tun\""),
            "{e}"
        );
        let e = error(&GOOD.replace("scheduler = \"wrr\"", "mode = \"dr\""));
        assert!(
            e.starts_with("spray.toml:13: services.syslog.mode: \"dr\" needs a dataplane that owns the wire (dpdk)"),
            "{e}"
        );
    }

    #[test]
    fn bad_backend_addr_and_mac() {
        let e = error(&GOOD.replace("198.18.1.2:514", "198.18.1.2"));
        assert!(
            e.starts_with("spray.toml:16: services.syslog.backends[1].addr: \"198.18.1.2\" is not"),
            "{e}"
        );
        let e = error(&GOOD.replace("198.18.1.2:514", "198.18.1.2:0"));
        assert!(
            e.contains("backends[1].addr: port 0 is out of range"),
            "{e}"
        );
        let e = error(&GOOD.replace("02:00:00:00:01:01", "02:00:00:00:01"));
        assert!(
            e.starts_with("spray.toml:15: services.syslog.backends[0].mac: \"02:00:00:00:01\" is not a MAC address"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_backend() {
        let e = error(&GOOD.replace("198.18.1.2:514", "198.18.1.1:514"));
        assert_eq!(
            e,
            "spray.toml:16: services.syslog.backends[1].addr: 198.18.1.1:514 is already backends[0]"
        );
    }

    #[test]
    fn a_loop_through_two_vips_is_refused_with_its_path() {
        let src = format!(
            "{GOOD}\n[services.relay]\nvip = \"198.18.0.11:514\"\nbackends = [{{ addr = \"198.18.0.10:514\" }}]\n"
        );
        // A chain (relay -> syslog -> servers) is refused: the dataplane drops it as a loop.
        let e = error(&src);
        assert!(
            e.contains("services.relay.backends[0] 198.18.0.10:514 reaches the vip 198.18.0.10:514 of services.syslog: datagrams would come back"),
            "{e}"
        );
        let e = error(&src.replace("198.18.1.2:514", "198.18.0.11:514"));
        assert!(
            e.contains(
                "services.relay.backends[0]: services.relay.backends[0] 198.18.0.10:514 reaches \
                 the vip 198.18.0.10:514 of services.syslog, services.syslog.backends[1] \
                 198.18.0.11:514 reaches the vip 198.18.0.11:514 of services.relay: a \
                 forwarding loop"
            ),
            "{e}"
        );
        assert!(e.starts_with("spray.toml:25: "), "{e}");
    }

    #[test]
    fn a_mapped_ipv6_vip_is_the_ipv4_vip_it_maps() {
        let src = format!(
            "{GOOD}\n[services.mapped]\nvip = \"[::ffff:198.18.0.10]:514\"\nbackends = [{{ addr = \"[2001:db8::9]:514\" }}]\n"
        );
        let e = error(&src);
        assert!(
            e.ends_with("services.syslog.vip: 198.18.0.10:514 is the same address as [::ffff:198.18.0.10]:514, the vip of services.mapped"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_vip() {
        let src = format!(
            "{GOOD}\n[services.syslog2]\nvip = \"198.18.0.10:514\"\nbackends = [{{ addr = \"198.18.1.9:514\" }}]\n"
        );
        let e = error(&src);
        assert!(
            e.ends_with(
                "services.syslog2.vip: 198.18.0.10:514 is already the vip of services.syslog"
            ),
            "{e}"
        );
        assert!(e.starts_with("spray.toml:24: "), "{e}");
    }

    #[test]
    fn mixed_families() {
        let e = error(&GOOD.replace("198.18.1.2:514", "[2001:db8::2]:514"));
        assert_eq!(
            e,
            "spray.toml:16: services.syslog.backends[1].addr: [2001:db8::2]:514 is IPv6 but the \
             vip 198.18.0.10:514 is IPv4: nat cannot translate between address families"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let src = GOOD
            .replace("weight = 3", "weight = 70000")
            .replace("batch = 64", "batch = 0");
        let e = parse(&src).unwrap_err();
        assert_eq!(e.problems().len(), 2, "{e}");
        assert_eq!(e.to_string().lines().count(), 2);
    }

    #[test]
    fn docs_examples_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                // Examples may pin to core 0 only, which every machine has.
                let c = Config::load(&path, &Machine { cores: vec![0] });
                let c = c.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                c.snapshot(1).unwrap();
                seen += 1;
            }
        }
        assert!(seen >= 2, "no examples found in {}", dir.display());
    }
}

#[cfg(test)]
mod mirror_tests {
    use super::*;

    fn parse(src: &str) -> Result<Config, ConfigError> {
        Config::parse("spray.toml", src, &Machine { cores: vec![0] })
    }

    fn error(src: &str) -> String {
        let e = parse(src).expect_err("config should be refused");
        assert_eq!(e.problems().len(), 1, "{e}");
        e.to_string()
    }

    const HEAD: &str = r#"
[services.syslog]
vip = "198.18.0.10:514"
backends = [{ addr = "198.18.2.11:514" }]
"#;

    #[test]
    fn the_example_builds_pools_with_their_schedulers_samples_and_checks() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/examples/mirror.toml");
        let c = Config::load(&path, &Machine { cores: vec![0] }).unwrap();
        let s = &c.services[0];
        assert_eq!(s.mirrors.len(), 2);
        let (archive, analyser) = (&s.mirrors[0], &s.mirrors[1]);
        assert_eq!((archive.name.as_str(), archive.sample), ("archive", 1));
        assert_eq!((analyser.name.as_str(), analyser.sample), ("analyser", 10));
        assert_eq!(archive.backends.len(), 2);
        // Ids follow the service's own backends and are unique.
        let ids: Vec<u16> = s
            .backends
            .iter()
            .chain(s.mirrors.iter().flat_map(|m| &m.backends))
            .map(|b| b.id.0)
            .collect();
        assert_eq!(ids, [0, 1, 2, 3, 4]);
        // The archive pool inherits the service's check; the analyser has its own.
        let archive_check = &c.checks[&archive.backends[0].id];
        assert_eq!(archive_check.interval, Duration::from_millis(100));
        let analyser_check = &c.checks[&analyser.backends[0].id];
        assert_eq!(analyser_check.interval, Duration::from_millis(200));
        let snap = c.snapshot(1).unwrap();
        assert_eq!(snap.services().next().unwrap().spec.mirrors.len(), 2);
    }

    #[test]
    fn a_pool_without_a_name_is_named_by_its_place() {
        let c = parse(&format!(
            "{HEAD}[[services.syslog.mirror]]\nbackends = [{{ addr = \"198.18.2.21:514\" }}]\n"
        ))
        .unwrap();
        assert_eq!(c.services[0].mirrors[0].name, "mirror0");
        assert!(c.checks.is_empty(), "no check anywhere, none built");
    }

    #[test]
    fn bad_pools_name_the_key() {
        let pool = |body: &str| format!("{HEAD}[[services.syslog.mirror]]\n{body}\n");
        let e = error(&pool(
            "sample = \"1/0\"\nbackends = [{ addr = \"198.18.2.21:514\" }]",
        ));
        assert!(
            e.contains("services.syslog.mirror[0].sample: \"1/0\" is not a sample"),
            "{e}"
        );
        let e = error(&pool(
            "sample = \"10%\"\nbackends = [{ addr = \"198.18.2.21:514\" }]",
        ));
        assert!(e.contains("write \"1/N\""), "{e}");
        let e = error(&pool("backends = []"));
        assert!(
            e.contains("services.syslog.mirror[0].backends: is empty"),
            "{e}"
        );
        let e = error(&pool(
            "backends = [{ addr = \"198.18.2.21:514\", mode = \"dr\" }]",
        ));
        assert!(
            e.contains("mirror[0].backends[0].mode: a mirror pool's backends"),
            "{e}"
        );
        let e = error(&pool(
            "scheduler = \"lc\"\nbackends = [{ addr = \"198.18.2.21:514\" }]",
        ));
        assert!(e.contains("services.syslog.mirror[0].scheduler"), "{e}");
        let e = error(&pool(
            "name = \"a b\"\nbackends = [{ addr = \"198.18.2.21:514\" }]",
        ));
        assert!(
            e.contains("mirror[0].name: \"a b\" is not a pool name"),
            "{e}"
        );
        let e = error(&pool("backends = [{ addr = \"[2001:db8::1]:514\" }]"));
        assert!(e.contains("mirror[0].backends[0].addr"), "{e}");
        let twice = format!(
            "{HEAD}[[services.syslog.mirror]]\nname = \"x\"\nbackends = [{{ addr = \"198.18.2.21:514\" }}]\n\
             [[services.syslog.mirror]]\nname = \"x\"\nbackends = [{{ addr = \"198.18.2.22:514\" }}]\n"
        );
        let e = error(&twice);
        assert!(
            e.contains("mirror[1].name: \"x\" is already the name of"),
            "{e}"
        );
        let e = error(&pool(
            "backends = [{ addr = \"198.18.2.21:514\" }]\nweight = 3",
        ));
        assert!(e.contains("weight"), "{e}");
    }

    #[test]
    fn a_mirror_backend_that_is_a_vip_is_a_loop() {
        let src = format!(
            "{HEAD}[[services.syslog.mirror]]\nbackends = [{{ addr = \"198.18.0.10:514\" }}]\n"
        );
        let e = error(&src);
        assert!(e.contains("services.syslog.mirror[0].backends[0]"), "{e}");
    }

    #[test]
    fn a_tunnel_service_cannot_have_mirror_pools() {
        let src = r#"
[services.syslog]
vip = "198.18.0.10:514"
mode = "tunnel"
backends = [{ addr = "198.18.2.11" }]
[services.syslog.tunnel]
sources = ["198.18.0.2"]
[[services.syslog.mirror]]
backends = [{ addr = "198.18.2.21:514" }]
"#;
        let e = parse(src).expect_err("refused").to_string();
        assert!(
            e.contains("services.syslog.mirror: a service with mirror pools forwards by nat or dr"),
            "{e}"
        );
    }
}
