//! Socket mode: Spray as a UDP proxy over kernel sockets, runnable on any Linux box without
//! root.
//!
//! The same [`Snapshot`], schedulers and [`WorkerCounters`] as the wire ports, but the kernel
//! does L2–L4: a [`ProxyWorker`] binds one `SO_REUSEPORT` socket per VIP (so N workers on N
//! cores share each VIP's load), reads datagrams in batches with `recvmmsg`, deals each one to
//! the backend its VIP's scheduler picks, and sends them with `sendmmsg`
//! ([`crate::socket::sys`] holds all the system calls).
//!
//! # Contract
//!
//! * Per-packet scheduling: every datagram is dealt on its own (`rr` and `wrr` spread one
//!   client address:port over all backends; `maglev` keeps a flow on one backend, hashed with
//!   `flow_hash``(client, vip)`). Each worker keeps its own cursor per VIP.
//! * The newest snapshot waiting on the update channel is applied after every batch read
//!   from a VIP socket and before that batch is dealt (and once more after each
//!   `epoll_wait`), so a snapshot sent before a datagram arrives is in force for that
//!   datagram: a backend whose effective weight drops to
//!   0 gets nothing from the next datagram on. VIPs added by a snapshot get sockets; removed
//!   VIPs lose theirs and their sessions. A VIP that cannot be bound on update is counted
//!   ([`WorkerCounters::bind_errors`]) and reported by [`ProxyWorker::take_errors`], never
//!   fatal; in [`ProxyWorker::new`] it is an error.
//! * The per-datagram path allocates nothing and formats nothing: batch arrays and buffers
//!   are preallocated, the session table is an `FxHashMap` probe, and datagrams are sent
//!   straight from the receive buffers. Only a new client (a session) may allocate.
//! * A datagram that cannot be forwarded is dropped and counted under a [`DropReason`].
//!
//! # Replies: the nginx model
//!
//! A session per (VIP, client address:port) owns an upstream UDP socket (nonblocking, in the
//! worker's epoll set) through which that client's datagrams go to whichever backends the
//! scheduler picks. A datagram arriving on it from an address:port that is a backend of the
//! session's VIP is a reply: it is sent to the client from the VIP socket, so the client sees
//! the VIP address:port as the source. Because each session knows its VIP, two VIPs sharing
//! one backend address:port get their replies right. Datagrams from anything that is not a
//! backend of the VIP are dropped as [`DropReason::NoVip`].
//!
//! Sessions expire after [`SocketSettings::session_idle`] without traffic in either direction
//! (swept every `session_idle / 4`, between 10 ms and 1 s). At
//! [`ProxySettings::max_sessions`] a new client's datagrams are dropped as
//! [`DropReason::SessionTableFull`]; known clients are still served. Each session holds a file
//! descriptor: raise `RLIMIT_NOFILE` (systemd `LimitNOFILE=`) above `max_sessions` times the
//! number of workers, or new sessions fail as [`DropReason::SessionSocket`].
//!
//! # Counters
//!
//! `rx_packets`/`rx_bytes` count datagrams read from VIP sockets (payload bytes),
//! `vip_packet` those of each VIP, `tx_packets`/`tx_bytes` and `backend_packet` the datagrams
//! the kernel accepted toward backends, `nat_replies` the replies relayed to clients.
//!
//! # `transparent = true`: backends see the client's address
//!
//! Each session socket gets `IP_TRANSPARENT` (IPv4) or `IPV6_TRANSPARENT` (IPv6) and binds,
//! with `SO_REUSEADDR`, to the client's own address:port, so backends see the client as the
//! source. That needs CAP_NET_ADMIN (checked once in [`ProxyWorker::new`]) and two things of
//! the network:
//!
//! 1. Backends route client addresses back through the Spray host (their default gateway,
//!    or a route per client network).
//! 2. The Spray host delivers those replies locally instead of forwarding them, with policy
//!    routing: a rule selects the replies (here by the interface and network they come from;
//!    an `iptables -t mangle ... -j MARK --set-mark 1` plus `ip rule add fwmark 1 lookup 100`
//!    works as well) and table 100 makes every destination local:
//!
//! ```text
//! ip rule add iif eth1 from 198.19.0.0/24 lookup 100
//! ip route add local 0.0.0.0/0 dev lo table 100
//! ip -6 rule add iif eth1 from 2001:db8:19::/64 lookup 100
//! ip -6 route add local ::/0 dev lo table 100
//! ```
//!
//! The socket bound to the client's address:port then receives the reply, which leaves from
//! the VIP socket as usual. One client address:port talking to two VIPs that share a backend
//! cannot be told apart in this mode (both sessions bind the same address:port).
//!
//! # Passive detection (`ServiceSpec::passive`)
//!
//! Session sockets of a passive VIP get `IP_RECVERR` (`IPV6_RECVERR`): an ICMP destination
//! unreachable that a backend (or a router before it) sends back about one of our datagrams
//! is queued on the socket's error queue, and epoll reports the socket. The worker drains
//! the queue and sends a [`PassiveReport`] naming the VIP and the backend address:port (the
//! original destination, from `msg_name`) to the control plane over a bounded channel with
//! `try_send`: no allocation, and a full channel only loses the report (counted), never
//! blocks the worker. The control plane then checks that backend at once. The pending
//! socket error that `IP_RECVERR` also leaves is absorbed: a send or receive failing with it
//! is retried, so no datagram to a healthy backend is lost to it.
//!
//! # Limits
//!
//! A VIP bound to a wildcard address (`0.0.0.0`, `::`) answers from whatever source address
//! the kernel's routing picks, not necessarily the address the client sent to; bind VIPs to
//! their own addresses. A VIP and its backends must be of the same IP family
//! ([`DropReason::FamilyMismatch`] otherwise).

mod session;
pub mod sys;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use rustc_hash::{FxHashMap, FxHashSet};
use socket2::Socket;

use crate::counters::{Counter, DropReason, SharedCounters, WorkerCounters};
use crate::model::flow::flow_hash;
use crate::model::{BackendId, Snapshot, VipId, VipKey, MIRRORS_PER_FRAME};
use crate::socket::sys::{self as sock, Batch, Epoll, Outgoing, MAX_BATCH, MAX_DATAGRAM};

pub use crate::model::passive::{PassiveReport, PassiveSink};

use self::session::{InsertError, SessionKey, Sessions, Token};

/// `[socket]`: what an operator configures for socket mode; the config loader builds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSettings {
    /// Datagrams per `recvmmsg`/`sendmmsg` call (1..=1024; default 32).
    pub batch: usize,
    /// Session sockets bind to the client's address (`IP_TRANSPARENT`), so backends see the
    /// client as the source; needs CAP_NET_ADMIN and policy routing (see the module doc).
    /// Default false.
    pub transparent: bool,
    /// A session (and its upstream socket) closes after this long without traffic in either
    /// direction. Default 60 s.
    pub session_idle: Duration,
    /// Receive buffer of each VIP socket in bytes; `SO_RCVBUFFORCE` when permitted, else
    /// `SO_RCVBUF` (capped by `net.core.rmem_max`); 0 keeps the kernel's default. Default 4 MiB.
    pub rcvbuf: usize,
}

impl Default for SocketSettings {
    fn default() -> Self {
        Self {
            batch: 32,
            transparent: false,
            session_idle: Duration::from_secs(60),
            rcvbuf: 4 << 20,
        }
    }
}

/// Socket-mode settings of one worker: the configured ones and what the process wires up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// The `[socket]` settings.
    pub socket: SocketSettings,
    /// Most sessions (clients) per worker; datagrams of further clients are dropped and
    /// counted. Default 65536.
    pub max_sessions: usize,
    /// Where ICMP errors seen on the sessions of passive VIPs are reported; `None` (the
    /// default) turns passive detection off whatever the snapshot says. Make it bounded.
    pub passive_reports: Option<PassiveSink>,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            socket: SocketSettings::default(),
            max_sessions: 65536,
            passive_reports: None,
        }
    }
}

/// Error of socket mode.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProxyError {
    /// A setting is out of range.
    InvalidSettings(&'static str),
    /// A VIP socket could not be created or bound.
    BindVip {
        /// The VIP.
        vip: SocketAddr,
        /// Why.
        cause: io::Error,
    },
    /// `transparent = true`, but the process may not set `IP_TRANSPARENT`.
    Transparent {
        /// Why (normally `EPERM`).
        cause: io::Error,
    },
    /// The epoll set could not be created or waited on.
    Epoll {
        /// What failed.
        what: &'static str,
        /// Why.
        cause: io::Error,
    },
    /// A VIP socket could not be added to the epoll set.
    Watch {
        /// The VIP.
        vip: SocketAddr,
        /// Why.
        cause: io::Error,
    },
    /// The upstream socket of a new session could not be opened (reported by
    /// [`ProxyWorker::take_errors`]; the datagram is counted as [`DropReason::SessionSocket`]).
    Session {
        /// The VIP the client sent to.
        vip: SocketAddr,
        /// The client.
        client: SocketAddr,
        /// Why.
        cause: io::Error,
    },
    /// Receiving on a socket failed with something other than "nothing queued".
    Recv {
        /// The socket's local address (the VIP, or the session's client).
        addr: SocketAddr,
        /// Why.
        cause: io::Error,
    },
}

/// An OS error's text without std's " (os error N)" suffix, as `strerror` says it.
struct Cause<'a>(&'a io::Error);

impl fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        match self.0.raw_os_error() {
            Some(code) => {
                let suffix = format!(" (os error {code})");
                f.write_str(text.strip_suffix(&suffix).unwrap_or(&text))
            }
            None => f.write_str(&text),
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidSettings(what) => write!(f, "invalid proxy settings: {what}"),
            Self::BindVip { vip, cause } => write!(f, "cannot bind VIP {vip}: {}", Cause(cause)),
            Self::Transparent { cause } => write!(
                f,
                "transparent = true needs CAP_NET_ADMIN (IP_TRANSPARENT): {}",
                Cause(cause)
            ),
            Self::Epoll { what, cause } => write!(f, "{what}: {}", Cause(cause)),
            Self::Watch { vip, cause } => {
                write!(f, "cannot watch VIP {vip} for readiness: {}", Cause(cause))
            }
            Self::Session { vip, client, cause } => write!(
                f,
                "cannot open the session socket of client {client} on VIP {vip}: {}",
                Cause(cause)
            ),
            Self::Recv { addr, cause } => {
                write!(f, "receiving on {addr} failed: {}", Cause(cause))
            }
        }
    }
}

/// The cause is part of each message (operators read one line), so it is not repeated as a
/// `source`; [`ProxyError::io_error`] gives it to code.
impl std::error::Error for ProxyError {}

impl ProxyError {
    /// The underlying OS error, if any.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Self::InvalidSettings(_) => None,
            Self::BindVip { cause, .. }
            | Self::Transparent { cause }
            | Self::Epoll { cause, .. }
            | Self::Watch { cause, .. }
            | Self::Session { cause, .. }
            | Self::Recv { cause, .. } => Some(cause),
        }
    }
}

/// Whether `ip` is this host's as far as a loop goes: loopback, a VIP's address, or the
/// address the datagram was sent to (`to`, on a wildcard VIP): what the kernel picks as
/// source when a local socket sends to a local address.
fn is_own_address(ip: IpAddr, to: Option<IpAddr>, vips: &FxHashMap<SocketAddr, usize>) -> bool {
    ip.is_loopback() || to == Some(ip) || vips.keys().any(|v| v.ip() == ip)
}

/// Batches read from one ready socket per poll before moving on (fairness between sockets).
const BUDGET: usize = 8;

/// Largest receive buffer of a session socket: sessions can be many, so they get at most
/// this much of [`ProxySettings::rcvbuf`].
const SESSION_RCVBUF_MAX: usize = 1 << 20;

/// Errors kept for [`ProxyWorker::take_errors`]; later ones are only counted.
const MAX_ERRORS: usize = 16;
/// Epoll tokens of VIP sockets have this bit set; session tokens never do.
const VIP_TOKEN: u64 = 1 << 63;

#[derive(Debug)]
struct VipSocket {
    key: VipKey,
    id: VipId,
    sock: Socket,
    /// Declared after `sock`, so it is released once the socket is closed.
    _claim: sock::VipClaim,
    /// This worker's scheduler position for the VIP; survives snapshots.
    cursor: u32,
}

#[derive(Debug)]
struct VipSlot {
    generation: u32,
    vip: Option<VipSocket>,
}

impl VipSlot {
    fn token(&self, index: usize) -> u64 {
        VIP_TOKEN | u64::from(self.generation) << 32 | index as u64
    }
}

/// A session's state: the socket its client's datagrams leave through.
#[derive(Debug)]
struct Upstream {
    sock: Socket,
    /// `IP_RECVERR` is on: drain the error queue when the socket is reported.
    passive: bool,
    /// The socket's local port, marked so that a datagram coming back from it into a VIP
    /// is seen as a loop (`None` in transparent mode, where it is the client's port).
    /// Declared after `sock`, so it is released once the socket is closed.
    _port: Option<sock::SessionPort>,
}

/// A datagram on its way to a backend.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// A copy for a mirror pool: sent after every original of the batch.
    mirror: bool,
    session: Token,
    index: usize,
    to: SocketAddr,
    backend: BackendId,
    len: usize,
}

/// One socket-mode worker: VIP sockets, sessions and counters of one thread.
#[derive(Debug)]
pub struct ProxyWorker {
    id: usize,
    snapshot: Arc<Snapshot>,
    updates: Receiver<Arc<Snapshot>>,
    settings: ProxySettings,
    counters: SharedCounters,
    epoll: Epoll,
    batch: Batch,
    vips: Vec<VipSlot>,
    vip_by_addr: FxHashMap<SocketAddr, usize>,
    /// (VIP, backend address:port) pairs replies may come from.
    reply_sources: FxHashSet<(VipId, SocketAddr)>,
    /// (VIP, mirror backend address:port) pairs whose replies are dropped and counted.
    mirror_sources: FxHashSet<(VipId, SocketAddr)>,
    /// This worker's positions in the mirror pools' rotations (see
    /// [`Snapshot::cursor_slots`]); VIPs keep theirs in [`VipSocket::cursor`].
    mirror_cursors: Vec<u32>,
    sessions: Sessions<Upstream>,
    pending: Vec<Pending>,
    out: Vec<Outgoing>,
    errors: Vec<ProxyError>,
    sweep_every: Duration,
    next_sweep: Instant,
}

impl ProxyWorker {
    /// A worker serving `snapshot`: binds one `SO_REUSEPORT` socket per VIP (so N workers
    /// share the load) and watches `updates` for newer snapshots.
    ///
    /// # Errors
    /// Invalid settings, a VIP that cannot be bound, `transparent = true` without
    /// CAP_NET_ADMIN, or no epoll instance.
    pub fn new(
        id: usize,
        snapshot: Arc<Snapshot>,
        updates: Receiver<Arc<Snapshot>>,
        settings: ProxySettings,
        counters: SharedCounters,
    ) -> Result<Self, ProxyError> {
        if settings.socket.batch == 0 || settings.socket.batch > MAX_BATCH {
            return Err(ProxyError::InvalidSettings("batch must be in 1..=1024"));
        }
        if settings.max_sessions == 0 {
            return Err(ProxyError::InvalidSettings(
                "max_sessions must be at least 1",
            ));
        }
        if settings.socket.session_idle.is_zero() {
            return Err(ProxyError::InvalidSettings(
                "session_idle must be longer than zero",
            ));
        }
        if settings.socket.transparent {
            // Fail at start-up, not at the first client: probe each family the VIPs use
            // (IPv4 when there are no VIPs yet).
            let v4 = snapshot.services().find(|s| s.spec.vip.addr.is_ipv4());
            let v6 = snapshot.services().find(|s| s.spec.vip.addr.is_ipv6());
            let mut probes = Vec::with_capacity(2);
            if v4.is_some() || v6.is_none() {
                probes.push(SocketAddr::from(([0, 0, 0, 0], 0)));
            }
            if let Some(s) = v6 {
                probes.push(s.spec.vip.addr);
            }
            for p in &probes {
                sock::probe_transparent(p).map_err(|cause| ProxyError::Transparent { cause })?;
            }
        }
        let epoll =
            Epoll::new(settings.socket.batch.max(64)).map_err(|cause| ProxyError::Epoll {
                what: "cannot create the epoll set",
                cause,
            })?;
        let sweep_every = (settings.socket.session_idle / 4)
            .clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut w = Self {
            id,
            snapshot: Arc::new(Snapshot::default()),
            updates,
            counters,
            epoll,
            batch: Batch::new(settings.socket.batch, MAX_DATAGRAM),
            vips: Vec::new(),
            vip_by_addr: FxHashMap::default(),
            reply_sources: FxHashSet::default(),
            mirror_sources: FxHashSet::default(),
            mirror_cursors: Vec::new(),
            sessions: Sessions::new(settings.max_sessions, settings.socket.session_idle),
            pending: Vec::with_capacity(settings.socket.batch * (1 + MIRRORS_PER_FRAME)),
            out: Vec::with_capacity(settings.socket.batch * (1 + MIRRORS_PER_FRAME)),
            errors: Vec::with_capacity(MAX_ERRORS),
            sweep_every,
            next_sweep: Instant::now() + sweep_every,
            settings,
        };
        w.install(snapshot, true)?;
        Ok(w)
    }

    /// This worker's id.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> &Arc<Snapshot> {
        &self.snapshot
    }

    /// Client sessions open.
    pub fn sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Errors met since the last call that did not stop the worker (VIPs that could not be
    /// bound on update, session sockets that could not be opened), oldest first; at most 16
    /// are kept, the rest are only counted.
    pub fn take_errors(&mut self) -> Vec<ProxyError> {
        std::mem::replace(&mut self.errors, Vec::with_capacity(MAX_ERRORS))
    }

    /// Applies the newest pending snapshot, waits up to `timeout` for a socket to be
    /// readable, processes what is ready and returns how many datagrams were forwarded
    /// (toward backends plus replies relayed to clients).
    ///
    /// # Errors
    /// Only when epoll itself fails; per-datagram trouble is counted instead.
    pub fn poll(&mut self, timeout: Duration) -> Result<usize, ProxyError> {
        self.apply_pending();
        let ready = self
            .epoll
            .wait(timeout)
            .map_err(|cause| ProxyError::Epoll {
                what: "epoll_wait failed",
                cause,
            })?;
        // A snapshot that arrived while we slept is in force before anything is read.
        self.apply_pending();
        let now = Instant::now();
        let mut forwarded = 0;
        for e in 0..ready {
            let token = self.epoll.token(e);
            forwarded += if token & VIP_TOKEN != 0 {
                self.vip_ready(token, now)
            } else {
                self.session_ready(Token(token), now)
            };
        }
        if now >= self.next_sweep {
            let epoll = &self.epoll;
            self.sessions.expire(now, |s| {
                // Closing the socket removes it from the set anyway; be explicit.
                let _ = epoll.delete(s.io.sock.as_fd());
            });
            self.next_sweep = now + self.sweep_every;
        }
        Ok(forwarded)
    }

    /// Calls [`ProxyWorker::poll`] with a 50 ms timeout until `stop` is set.
    ///
    /// # Errors
    /// As [`ProxyWorker::poll`].
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), ProxyError> {
        while !stop.load(Ordering::Relaxed) {
            self.poll(Duration::from_millis(50))?;
        }
        Ok(())
    }

    /// Swaps in the newest snapshot waiting on the channel, if any.
    fn apply_pending(&mut self) {
        let mut latest = None;
        while let Ok(s) = self.updates.try_recv() {
            latest = Some(s);
        }
        if let Some(s) = latest {
            // Not strict: update errors are counted and kept, never fatal.
            let _ = self.install(s, false);
        }
    }

    fn note_error(&mut self, e: ProxyError) {
        note_error(&mut self.errors, e);
    }

    /// Makes `snap` the snapshot in force: binds sockets for new VIPs, closes those of
    /// removed VIPs (and their sessions). With `strict`, the first bind error is returned.
    fn install(&mut self, snap: Arc<Snapshot>, strict: bool) -> Result<(), ProxyError> {
        // Close VIPs the snapshot no longer has; follow id changes of the ones it keeps.
        for i in 0..self.vips.len() {
            let Some(v) = self.vips[i].vip.as_mut() else {
                continue;
            };
            match snap.lookup(&v.key) {
                Some((id, _)) => v.id = id,
                None => self.close_vip(i),
            }
        }
        for svc in snap.services() {
            let key = svc.spec.vip;
            if self.vip_by_addr.contains_key(&key.addr) {
                continue;
            }
            if let Err(e) = self.open_vip(key, svc.spec.id) {
                if strict {
                    return Err(e);
                }
                self.counters.bind_errors.add(1);
                self.note_error(e);
            }
        }
        self.reply_sources.clear();
        self.mirror_sources.clear();
        for svc in snap.services() {
            for b in svc.all_backends() {
                self.reply_sources.insert((svc.spec.id, b.addr));
            }
            for b in svc.spec.mirrors.iter().flat_map(|m| &m.backends) {
                self.mirror_sources.insert((svc.spec.id, b.addr));
            }
        }
        if self.mirror_cursors.len() < snap.cursor_slots() {
            self.mirror_cursors.resize(snap.cursor_slots(), 0);
        }
        self.snapshot = snap;
        self.counters.snapshots_applied.add(1);
        Ok(())
    }

    fn open_vip(&mut self, key: VipKey, id: VipId) -> Result<(), ProxyError> {
        let vip = key.addr;
        let (s, claim) = sock::bind_vip(vip, self.settings.socket.rcvbuf)
            .map_err(|cause| ProxyError::BindVip { vip, cause })?;
        let index = match self.vips.iter().position(|v| v.vip.is_none()) {
            Some(i) => i,
            None => {
                self.vips.push(VipSlot {
                    generation: 0,
                    vip: None,
                });
                self.vips.len() - 1
            }
        };
        let slot = &mut self.vips[index];
        self.epoll
            .add(s.as_fd(), slot.token(index))
            .map_err(|cause| ProxyError::Watch { vip, cause })?;
        slot.vip = Some(VipSocket {
            key,
            id,
            sock: s,
            _claim: claim,
            cursor: 0,
        });
        self.vip_by_addr.insert(vip, index);
        Ok(())
    }

    fn close_vip(&mut self, index: usize) {
        let Some(slot) = self.vips.get_mut(index) else {
            return;
        };
        let Some(v) = slot.vip.take() else {
            return;
        };
        // Events already returned for the old socket stop matching.
        slot.generation = slot.generation.wrapping_add(1) & 0x7fff_ffff;
        let _ = self.epoll.delete(v.sock.as_fd());
        self.vip_by_addr.remove(&v.key.addr);
        let epoll = &self.epoll;
        self.sessions.remove_where(
            |s| s.key.vip_slot as usize == index,
            |s| {
                let _ = epoll.delete(s.io.sock.as_fd());
            },
        );
    }

    /// Reads and forwards batches from the VIP socket named by `token`.
    fn vip_ready(&mut self, token: u64, now: Instant) -> usize {
        let index = (token & 0xffff_ffff) as usize;
        let generation = ((token >> 32) & 0x7fff_ffff) as u32;
        let mut forwarded = 0;
        for _ in 0..BUDGET {
            let n = {
                let Self {
                    batch,
                    vips,
                    errors,
                    ..
                } = &mut *self;
                let Some(v) = vips
                    .get_mut(index)
                    .filter(|s| s.generation == generation)
                    .and_then(|s| s.vip.as_mut())
                else {
                    break;
                };
                match batch.recv(v.sock.as_fd()) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(cause) => {
                        note_error(
                            errors,
                            ProxyError::Recv {
                                addr: v.key.addr,
                                cause,
                            },
                        );
                        0
                    }
                }
            };
            if n == 0 {
                break;
            }
            // The newest snapshot takes over between the receive and the dealing: applied
            // before the receive instead, a datagram that arrived after a change (a backend
            // taken out of rotation) could still be dealt with the state from before it.
            self.apply_pending();
            let Self {
                snapshot,
                settings,
                counters,
                epoll,
                batch,
                vips,
                sessions,
                pending,
                out,
                errors,
                vip_by_addr,
                mirror_cursors,
                ..
            } = self;
            let c: &WorkerCounters = counters;
            let Some(v) = vips
                .get_mut(index)
                .filter(|s| s.generation == generation)
                .and_then(|s| s.vip.as_mut())
            else {
                // The snapshot just applied removed this VIP: its datagrams go nowhere.
                c.rx_packets.add(n as u64);
                for _ in 0..n {
                    c.drop_packet(DropReason::NoVip);
                }
                break;
            };
            c.rx_packets.add(n as u64);
            c.rx_bursts.add(1);
            let vip = v.key.addr;
            let service = snapshot.service(v.id).filter(|s| s.spec.vip == v.key);
            let needs_hash = service.is_some_and(|s| s.spec.scheduler.needs_flow_hash());
            let passive =
                settings.passive_reports.is_some() && service.is_some_and(|s| s.spec.passive);
            pending.clear();
            for i in 0..n {
                let Some(d) = batch.datagram(i) else {
                    continue;
                };
                let len = d.data.len();
                c.rx_bytes.add(len as u64);
                if d.truncated {
                    c.drop_packet(DropReason::Truncated);
                    continue;
                }
                let Some(client) = d.from else {
                    c.drop_packet(DropReason::NotIp);
                    continue;
                };
                if sock::is_session_port(&client) && is_own_address(client.ip(), d.to, vip_by_addr)
                {
                    c.drop_packet(DropReason::Loop);
                    continue;
                }
                c.vip_packet(v.id, len);
                let Some(service) = service else {
                    c.drop_packet(DropReason::NoVip);
                    continue;
                };
                let hash = if needs_hash {
                    flow_hash(&client, &vip)
                } else {
                    0
                };
                let Some(b) = service.pick(&mut v.cursor, hash) else {
                    c.drop_packet(DropReason::NoHealthyBackend);
                    continue;
                };
                if b.addr.is_ipv4() != vip.is_ipv4() {
                    c.drop_packet(DropReason::FamilyMismatch);
                    continue;
                }
                let key = SessionKey {
                    vip_slot: index as u32,
                    client,
                    local: if vip.ip().is_unspecified() {
                        d.to
                    } else {
                        None
                    },
                };
                let transparent = settings.socket.transparent.then_some(client);
                let session = match sessions.get_or_insert_with(key, now, |t| {
                    let s = sock::session_socket(&vip, transparent)?;
                    // Replies from every backend of the VIP land on this one socket; the
                    // kernel default (~208 KiB, ~200 small datagrams) overflowed under load
                    // in the demo test. A cap, not an allocation.
                    if settings.socket.rcvbuf > 0 {
                        sock::set_rcvbuf(&s, settings.socket.rcvbuf.min(SESSION_RCVBUF_MAX))?;
                    }
                    if passive {
                        sock::set_recverr(&s, vip.is_ipv6())?;
                    }
                    let port = match transparent {
                        None => Some(sock::SessionPort::claim(&s)?),
                        Some(_) => None,
                    };
                    epoll.add(s.as_fd(), t.0)?;
                    Ok::<_, io::Error>(Upstream {
                        sock: s,
                        passive,
                        _port: port,
                    })
                }) {
                    Ok(t) => t,
                    Err(InsertError::Full) => {
                        c.drop_packet(DropReason::SessionTableFull);
                        continue;
                    }
                    Err(InsertError::Open(cause)) => {
                        c.drop_packet(DropReason::SessionSocket);
                        note_error(errors, ProxyError::Session { vip, client, cause });
                        continue;
                    }
                };
                pending.push(Pending {
                    mirror: false,
                    session,
                    index: i,
                    to: b.addr,
                    backend: b.id,
                    len,
                });
                // The copies leave through the same session socket: the same buffer, one
                // more `sendmmsg` entry each.
                for m in service.mirrors.iter() {
                    let Some(mb) = m.pick(mirror_cursors, || flow_hash(&client, &vip)) else {
                        continue;
                    };
                    if mb.addr.is_ipv4() != vip.is_ipv4() {
                        c.mirror_unsent.add(1);
                        continue;
                    }
                    // Room is kept for the originals still to come.
                    if pending.len() + (n - i) >= pending.capacity() {
                        c.mirror_no_buffer.add(1);
                        continue;
                    }
                    pending.push(Pending {
                        mirror: true,
                        session,
                        index: i,
                        to: mb.addr,
                        backend: mb.id,
                        len,
                    });
                }
            }
            // One sendmmsg per session, originals first, then one per session for the
            // copies; sorting by (copy, session, index) keeps each client's datagrams in
            // order toward every pool. `sort_unstable` does not allocate.
            pending.sort_unstable_by_key(|p| (p.mirror, p.session, p.index));
            let mut start = 0;
            while start < pending.len() {
                let (mirror, session) = (pending[start].mirror, pending[start].session);
                let end = pending[start..]
                    .iter()
                    .position(|p| (p.mirror, p.session) != (mirror, session))
                    .map_or(pending.len(), |k| start + k);
                let run = &pending[start..end];
                start = end;
                // What is refused is an original's drop or a copy's loss.
                let refused = if mirror {
                    &c.mirror_tx_full
                } else {
                    &c.drops[DropReason::TxFull as usize]
                };
                let Some(s) = sessions.get(session) else {
                    refused.add(run.len() as u64);
                    continue;
                };
                out.clear();
                out.extend(run.iter().map(|p| Outgoing {
                    index: p.index,
                    to: p.to,
                    from: None,
                }));
                let sent = send_all(batch, s.io.sock.as_fd(), out, refused, |k| {
                    let p = &run[k];
                    c.tx_packets.add(1);
                    c.tx_bytes.add(p.len as u64);
                    c.backend_packet(p.backend, p.len);
                });
                if mirror {
                    c.mirror_copies.add(sent as u64);
                } else {
                    forwarded += sent;
                }
            }
            if n < batch.capacity() {
                break;
            }
        }
        forwarded
    }

    /// Relays replies waiting on the session socket named by `token` to its client.
    fn session_ready(&mut self, token: Token, now: Instant) -> usize {
        let Self {
            counters,
            batch,
            vips,
            sessions,
            out,
            errors,
            reply_sources,
            mirror_sources,
            settings,
            ..
        } = self;
        let c: &WorkerCounters = counters;
        let mut forwarded = 0;
        if let Some(s) = sessions.get(token).filter(|s| s.io.passive) {
            let vip = vips
                .get(s.key.vip_slot as usize)
                .and_then(|slot| slot.vip.as_ref())
                .map(|v| v.id);
            drain_errors(&s.io.sock, vip, settings.passive_reports.as_ref(), c);
        }
        for _ in 0..BUDGET {
            let Some(s) = sessions.get_mut(token) else {
                break;
            };
            let n = match batch.recv(s.io.sock.as_fd()) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // The pending error IP_RECVERR leaves behind: consumed now, read again.
                Err(e) if s.io.passive && sock::is_icmp_errno(&e) => continue,
                Err(cause) => {
                    note_error(
                        errors,
                        ProxyError::Recv {
                            addr: s.key.client,
                            cause,
                        },
                    );
                    0
                }
            };
            if n == 0 {
                break;
            }
            s.last_seen = now;
            let (client, local) = (s.key.client, s.key.local);
            let Some(v) = vips
                .get(s.key.vip_slot as usize)
                .and_then(|slot| slot.vip.as_ref())
            else {
                for _ in 0..n {
                    c.drop_packet(DropReason::NoVip);
                }
                break;
            };
            out.clear();
            for i in 0..n {
                let Some(d) = batch.datagram(i) else {
                    continue;
                };
                if d.truncated {
                    c.drop_packet(DropReason::Truncated);
                    continue;
                }
                match d.from {
                    Some(from) if reply_sources.contains(&(v.id, from)) => out.push(Outgoing {
                        index: i,
                        to: client,
                        from: local,
                    }),
                    // Only the primary pool answers clients.
                    Some(from) if mirror_sources.contains(&(v.id, from)) => {
                        c.drop_packet(DropReason::MirrorReply);
                    }
                    _ => c.drop_packet(DropReason::NoVip),
                }
            }
            let refused = &c.drops[DropReason::TxFull as usize];
            let sent = send_all(batch, v.sock.as_fd(), out, refused, |_| {});
            c.nat_replies.add(sent as u64);
            forwarded += sent;
            if n < batch.capacity() {
                break;
            }
        }
        forwarded
    }
}

/// Most error-queue entries read per readiness report (the rest wait for the next one).
const MAX_QUEUED_ERRORS: usize = 64;

/// Reads the error queue of a passive session socket and reports ICMP errors about
/// datagrams sent to backends. No allocation: the entry is decoded on the stack and the
/// report goes through a bounded channel's `try_send`.
fn drain_errors(sock: &Socket, vip: Option<VipId>, sink: Option<&PassiveSink>, c: &WorkerCounters) {
    for _ in 0..MAX_QUEUED_ERRORS {
        let e = match sock::recv_error(sock.as_fd()) {
            Ok(Some(e)) => e,
            Ok(None) | Err(_) => break,
        };
        c.icmp_errors.add(1);
        if let (true, Some(backend), Some(vip), Some(sink)) = (e.is_icmp(), e.dest, vip, sink) {
            let report = PassiveReport {
                vip,
                backend,
                errno: e.errno,
                icmp: (e.icmp_type, e.icmp_code),
                at: Instant::now(),
            };
            if sink.0.try_send(report).is_err() {
                c.passive_reports_lost.add(1);
            }
        }
    }
}

fn note_error(errors: &mut Vec<ProxyError>, e: ProxyError) {
    if errors.len() < MAX_ERRORS {
        errors.push(e);
    }
}

/// Sends all of `out` from `fd`, calling `sent(k)` for each datagram the kernel accepted and
/// counting the others under `refused`; returns how many were accepted. A full send
/// buffer drops the rest of the run; any other error drops only the datagram it names (one
/// unreachable backend must not stall the others).
fn send_all(
    batch: &mut Batch,
    fd: std::os::fd::BorrowedFd<'_>,
    out: &[Outgoing],
    refused: &Counter,
    mut sent: impl FnMut(usize),
) -> usize {
    let mut k = 0;
    let mut total = 0;
    // An ICMP error left pending by IP_RECVERR fails the next send once without sending
    // anything; a retry sends the datagram. Bounded, since a new error may arrive meanwhile.
    let mut icmp_retries = 0;
    while k < out.len() {
        match batch.send(fd, &out[k..]) {
            Ok(m) if m > 0 => {
                for j in k..k + m {
                    sent(j);
                }
                k += m;
                total += m;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if sock::is_icmp_errno(&e) && icmp_retries < 4 => icmp_retries += 1,
            Ok(_) => break,
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock
                    || e.raw_os_error() == Some(libc::ENOBUFS) =>
            {
                break
            }
            Err(_) => {
                refused.add(1);
                k += 1;
            }
        }
    }
    for _ in k..out.len() {
        refused.add(1);
    }
    total
}
