//! STUB, DELETE AT MERGE: a stand-in for `dataplane::proxy` (socket mode), which another
//! engineer is writing on branch `proxy`.
//!
//! It has exactly the agreed public API (`ProxySettings`, `ProxyError`, `ProxyWorker::{new,
//! poll, run}`), so that `control` compiles, and enough behaviour (plain `std::net` sockets,
//! one `recv_from` per datagram, `libc::poll` to wait) for `spray run` and `spray demo` to
//! work end to end until the real worker lands. At merge time: delete this file and, in
//! `main.rs`, replace `mod proxy_stub; use proxy_stub as proxy;` by `use dataplane::proxy;`.
//!
//! Model: one listening socket per VIP (SO_REUSEPORT, so every worker binds each VIP and the
//! kernel spreads clients over them); per (VIP, client) a session socket that sends each
//! datagram to the backend the scheduler picks and receives the backends' replies, which go
//! back to the client from the VIP socket, so the client sees the VIP as source.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use dataplane::counters::{DropReason, SharedCounters};
use dataplane::flow::flow_hash;
use dataplane::service::{ReverseNat, Snapshot, VipId};
use socket2::{Domain, Socket, Type};

/// Socket-mode settings.
#[derive(Debug)]
pub struct ProxySettings {
    /// Most datagrams handled per socket and poll.
    pub batch: usize,
    /// IP_TRANSPARENT towards backends (not supported by the stub).
    pub transparent: bool,
    /// A session without traffic for this long is closed.
    pub session_idle: Duration,
    /// SO_RCVBUF of every socket; 0 keeps the kernel default.
    pub rcvbuf: usize,
    /// Most sessions per worker.
    pub max_sessions: usize,
}

impl Default for ProxySettings {
    fn default() -> Self {
        Self {
            batch: 32,
            transparent: false,
            session_idle: Duration::from_secs(60),
            rcvbuf: 4 << 20,
            max_sessions: 65_536,
        }
    }
}

/// Error from a socket-mode worker.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A VIP socket could not be bound.
    #[error("cannot bind vip {vip}")]
    Bind {
        /// The VIP.
        vip: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Any other socket error.
    #[error("socket error")]
    Io(#[from] io::Error),
}

struct Session {
    upstream: UdpSocket,
    vip: VipId,
    client: SocketAddr,
    last_seen: Instant,
}

/// A socket-mode worker (stub).
pub struct ProxyWorker {
    id: usize,
    snapshot: Arc<Snapshot>,
    updates: Receiver<Arc<Snapshot>>,
    settings: ProxySettings,
    counters: SharedCounters,
    listeners: Vec<(VipId, UdpSocket)>,
    sessions: HashMap<(VipId, SocketAddr), Session>,
    cursors: Vec<u32>,
    buf: Vec<u8>,
    last_expiry: Instant,
}

impl std::fmt::Debug for ProxyWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyWorker")
            .field("id", &self.id)
            .field("sessions", &self.sessions.len())
            .finish_non_exhaustive()
    }
}

fn udp_socket(bind: SocketAddr, rcvbuf: usize, reuse_port: bool) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(bind), Type::DGRAM, None)?;
    if reuse_port {
        s.set_reuse_port(true)?;
    }
    if rcvbuf > 0 {
        s.set_recv_buffer_size(rcvbuf)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&bind.into())?;
    Ok(s.into())
}

impl ProxyWorker {
    /// Binds every VIP of `snapshot`.
    ///
    /// # Errors
    /// When a VIP cannot be bound.
    pub fn new(
        id: usize,
        snapshot: Arc<Snapshot>,
        updates: Receiver<Arc<Snapshot>>,
        settings: ProxySettings,
        counters: SharedCounters,
    ) -> Result<Self, ProxyError> {
        if settings.transparent {
            tracing::warn!(
                worker = id,
                "transparent mode is not implemented by the stub"
            );
        }
        let mut listeners = Vec::new();
        for svc in snapshot.services() {
            let vip = svc.spec.vip.addr;
            let sock = udp_socket(vip, settings.rcvbuf, true)
                .map_err(|source| ProxyError::Bind { vip, source })?;
            listeners.push((svc.spec.id, sock));
        }
        Ok(Self {
            id,
            cursors: vec![0; snapshot.vip_slots()],
            snapshot,
            updates,
            settings,
            counters,
            listeners,
            sessions: HashMap::new(),
            buf: vec![0; 65_536],
            last_expiry: Instant::now(),
        })
    }

    /// Waits up to `timeout` for traffic and handles what arrived; returns the number of
    /// datagrams handled.
    ///
    /// # Errors
    /// On a socket error other than "would block".
    pub fn poll(&mut self, timeout: Duration) -> Result<usize, ProxyError> {
        while let Ok(s) = self.updates.try_recv() {
            self.cursors.resize(s.vip_slots(), 0);
            self.snapshot = s;
            self.counters.snapshots_applied.add(1);
        }
        let keys: Vec<(VipId, SocketAddr)> = self.sessions.keys().copied().collect();
        let mut fds: Vec<libc::pollfd> = self
            .listeners
            .iter()
            .map(|(_, s)| s.as_raw_fd())
            .chain(keys.iter().map(|k| self.sessions[k].upstream.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: `fds` is a valid, initialised array of `fds.len()` pollfds that lives
        // across the call; poll only writes `revents` inside it.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(e.into());
        }
        let mut handled = 0;
        for (i, fd) in fds.iter().enumerate() {
            if fd.revents == 0 {
                continue;
            }
            if i < self.listeners.len() {
                handled += self.handle_clients(i)?;
            } else {
                handled += self.handle_backends(keys[i - self.listeners.len()])?;
            }
        }
        let now = Instant::now();
        if now.duration_since(self.last_expiry) > Duration::from_secs(1) {
            let idle = self.settings.session_idle;
            self.sessions
                .retain(|_, s| now.duration_since(s.last_seen) < idle);
            self.last_expiry = now;
        }
        Ok(handled)
    }

    fn handle_clients(&mut self, i: usize) -> Result<usize, ProxyError> {
        let vip = self.listeners[i].0;
        let mut n = 0;
        while n < self.settings.batch {
            let (len, client) = match self.listeners[i].1.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            };
            n += 1;
            let c = &self.counters;
            c.rx_packets.add(1);
            c.rx_bytes.add(len as u64);
            c.vip_packet(vip, len);
            let Some(svc) = self.snapshot.service(vip) else {
                c.drop_packet(DropReason::NoVip);
                continue;
            };
            let cursor = &mut self.cursors[usize::from(vip.0)];
            let Some(backend) = svc.pick(cursor, flow_hash(&client, &svc.spec.vip.addr)) else {
                c.drop_packet(DropReason::NoHealthyBackend);
                continue;
            };
            if backend.addr.is_ipv4() != client.is_ipv4() {
                c.drop_packet(DropReason::FamilyMismatch);
                continue;
            }
            let (id, to) = (backend.id, backend.addr);
            if !self.sessions.contains_key(&(vip, client)) {
                if self.sessions.len() >= self.settings.max_sessions {
                    c.drop_packet(DropReason::TxFull);
                    continue;
                }
                let any: SocketAddr = if client.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let upstream = udp_socket(any, self.settings.rcvbuf, false)?;
                self.sessions.insert(
                    (vip, client),
                    Session {
                        upstream,
                        vip,
                        client,
                        last_seen: Instant::now(),
                    },
                );
            }
            let s = self
                .sessions
                .get_mut(&(vip, client))
                .expect("inserted above");
            s.last_seen = Instant::now();
            match s.upstream.send_to(&self.buf[..len], to) {
                Ok(_) => {
                    c.tx_packets.add(1);
                    c.tx_bytes.add(len as u64);
                    c.backend_packet(id, len);
                }
                Err(_) => c.drop_packet(DropReason::TxFull),
            }
        }
        Ok(n)
    }

    fn handle_backends(&mut self, key: (VipId, SocketAddr)) -> Result<usize, ProxyError> {
        let mut n = 0;
        while n < self.settings.batch {
            let Some(s) = self.sessions.get_mut(&key) else {
                break;
            };
            let (len, from) = match s.upstream.recv_from(&mut self.buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            };
            n += 1;
            s.last_seen = Instant::now();
            let (vip, client) = (s.vip, s.client);
            let c = &self.counters;
            c.rx_packets.add(1);
            c.rx_bytes.add(len as u64);
            let ours = match self.snapshot.reverse(&from) {
                Some(ReverseNat::One(v)) => *v == vip,
                Some(ReverseNat::Shared(vs)) => vs.contains(&vip),
                None => false,
            };
            if !ours {
                c.drop_packet(DropReason::NoVip);
                continue;
            }
            let Some((_, listener)) = self.listeners.iter().find(|(v, _)| *v == vip) else {
                c.drop_packet(DropReason::NoVip);
                continue;
            };
            match listener.send_to(&self.buf[..len], client) {
                Ok(_) => {
                    c.tx_packets.add(1);
                    c.tx_bytes.add(len as u64);
                    c.nat_replies.add(1);
                }
                Err(_) => c.drop_packet(DropReason::TxFull),
            }
        }
        Ok(n)
    }

    /// Polls until `stop` is set.
    ///
    /// # Errors
    /// The first error of [`ProxyWorker::poll`].
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), ProxyError> {
        while !stop.load(Ordering::Relaxed) {
            self.poll(Duration::from_millis(50))?;
        }
        Ok(())
    }
}
