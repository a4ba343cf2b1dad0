//! The control socket: a Unix stream socket speaking [`super::proto`], one thread per
//! connection.
//!
//! * The socket file is created mode 0600 (bound under a temporary name, chmod-ed, then
//!   renamed into place, so it is never reachable with wider permissions). A stale file
//!   left by a dead Spray is replaced; a live one (something answers a connect) is an
//!   error, so two Sprays never steal each other's socket.
//! * Each peer's uid is read with `SO_PEERCRED` and checked against the allowed uids
//!   before anything else; a refused peer gets one `forbidden` response and is closed.
//! * At most [`MAX_CONNECTIONS`] connections are served at once. A connection idle for
//!   [`IDLE_TIMEOUT`] is closed, or after [`PRESSURE_IDLE_TIMEOUT`] while every slot is
//!   taken. A slow or stuck client holds only its own thread; the dataplane never waits
//!   for the control socket.
//! * A connection beyond the cap is triaged: if its first line, within [`TRIAGE_WAIT`],
//!   is a `version` request (the keepalived track script's liveness question) it is
//!   answered, anything else gets `busy`. Idle connections therefore cannot make the
//!   track script fail and trigger a VRRP failover.
//! * One file descriptor is held in reserve: when `accept` fails for lack of descriptors,
//!   the reserve is released so that one connection can still be accepted and triaged.
//! * The accept loop polls with a timeout, so stopping never waits on `accept`.
//! * A line longer than [`super::proto::MAX_REQUEST`] is answered with `too_large` and
//!   skipped up to its newline; the connection stays usable.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::proto::{self, MAX_REQUEST};
use super::{ApiError, Controller, ErrorCode, Who};

/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection without a request for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The idle limit while all [`MAX_CONNECTIONS`] slots are taken: idle clients make room.
pub const PRESSURE_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection beyond the cap has to send its first line.
pub const TRIAGE_WAIT: Duration = Duration::from_millis(300);
/// Most connections triaged at once; one more evicts the oldest with `busy`.
const MAX_TRIAGE: usize = 64;
/// How often a blocked connection thread looks at the stop flag.
const TICK: Duration = Duration::from_millis(250);

/// Error from starting the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another process answers on the socket.
    #[error("{0}: another spray is listening on this control socket")]
    InUse(PathBuf),
    /// Creating, binding or configuring the socket failed.
    #[error("{path}: cannot {what}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// What failed.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Credentials of a connected peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Process id.
    pub pid: i32,
}

/// Reads the peer's credentials with `SO_PEERCRED`.
///
/// # Errors
/// When `getsockopt` fails.
pub fn peer_cred(s: &UnixStream) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: the fd is a valid socket owned by `s`; `cred` and `len` are valid for writes
    // and `len` holds the size of `cred`; the return value is checked.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        uid: cred.uid,
        gid: cred.gid,
        pid: cred.pid,
    })
}

/// Whether `peer` may use the socket; the error is the response to send.
///
/// # Errors
/// `forbidden` when the peer's uid is not in `allowed`.
pub fn authorize(peer: &PeerCred, allowed: &[u32]) -> Result<(), ApiError> {
    if allowed.contains(&peer.uid) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "uid {} may not use this control socket (control.allow_uids)",
                peer.uid
            ),
        ))
    }
}

/// What [`LineReader::next_line`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line (newline stripped), in the reader's buffer.
    Complete,
    /// A line longer than the limit was skipped up to its newline.
    TooLong,
    /// The peer closed the connection.
    Eof,
}

/// Reads newline-terminated lines of at most `max` bytes from a `BufRead` whose reads may
/// time out: a partial line survives a timeout and is completed by the next call.
#[derive(Debug)]
pub struct LineReader {
    /// The line read so far.
    pub buf: Vec<u8>,
    max: usize,
    skipping: bool,
}

impl LineReader {
    /// A reader for lines of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
            skipping: false,
        }
    }

    /// Reads until a full line, an over-long line or end of file.
    ///
    /// # Errors
    /// Read errors, including `WouldBlock`/`TimedOut` from a read timeout, after which the
    /// call may be repeated.
    pub fn next_line(&mut self, r: &mut impl BufRead) -> io::Result<Line> {
        if !self.skipping && self.buf.last() == Some(&b'\n') {
            self.buf.clear();
        }
        loop {
            let avail = r.fill_buf()?;
            if avail.is_empty() {
                self.buf.clear();
                return Ok(Line::Eof);
            }
            let (chunk, done) = match avail.iter().position(|&b| b == b'\n') {
                Some(i) => (&avail[..i], Some(i + 1)),
                None => (avail, None),
            };
            if !self.skipping {
                if self.buf.len() + chunk.len() > self.max {
                    self.skipping = true;
                    self.buf.clear();
                } else {
                    self.buf.extend_from_slice(chunk);
                }
            }
            let used = done.unwrap_or(avail.len());
            r.consume(used);
            if done.is_some() {
                if std::mem::take(&mut self.skipping) {
                    return Ok(Line::TooLong);
                }
                // Marks the line as complete; cleared on the next call.
                self.buf.push(b'\n');
                return Ok(Line::Complete);
            }
        }
    }

    /// The complete line, without its newline.
    pub fn line(&self) -> &[u8] {
        self.buf.strip_suffix(b"\n").unwrap_or(&self.buf)
    }
}

/// Serves one connection until EOF, `stop`, a write error, or no request for
/// `idle_limit()` (asked again at each read timeout, so it may shrink under pressure).
pub fn serve<R: BufRead, W: Write>(
    ctrl: &dyn Controller,
    who: &Who,
    mut reader: R,
    mut writer: W,
    stop: &AtomicBool,
    idle_limit: &dyn Fn() -> Duration,
) -> io::Result<()> {
    let mut lines = LineReader::new(MAX_REQUEST);
    let mut last = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let reply = match lines.next_line(&mut reader) {
            Ok(Line::Eof) => return Ok(()),
            Ok(Line::TooLong) => {
                tracing::info!(%who, "control request longer than {MAX_REQUEST} bytes refused");
                proto::too_large()
            }
            Ok(Line::Complete) => {
                let line = lines.line();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                proto::handle_line(ctrl, who, line).0
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if last.elapsed() >= idle_limit() {
                    tracing::debug!(%who, "idle control connection closed");
                    return Ok(());
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        last = Instant::now();
        writer.write_all(reply.as_bytes())?;
        writer.write_all(b"\n")?;
        writer.flush()?;
    }
}

/// The running control socket; dropping it stops the listener and removes the file.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn io_err<'p>(path: &'p Path, what: &'static str) -> impl FnOnce(io::Error) -> ServerError + 'p {
    move |source| ServerError::Io {
        path: path.to_owned(),
        what,
        source,
    }
}

/// Binds `path` mode 0600, replacing a stale socket file.
fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() && !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io_err(path, "create the socket's directory"))?;
        }
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(io_err(path, "remove the stale socket file"))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".{}.tmp", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let l = UnixListener::bind(&tmp).map_err(io_err(path, "bind the control socket"))?;
    let done = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err(path, "set the socket's mode to 0600"))
        .and_then(|()| {
            std::fs::rename(&tmp, path).map_err(io_err(path, "move the socket into place"))
        });
    if let Err(e) = done {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(l)
}

impl Server {
    /// Listens on `path` for peers whose uid is in `allowed`, answering with `ctrl`.
    ///
    /// # Errors
    /// When the socket cannot be created, or another process listens on it.
    pub fn start(
        path: &Path,
        allowed: Vec<u32>,
        ctrl: Arc<dyn Controller>,
    ) -> Result<Self, ServerError> {
        let listener = bind(path)?;
        listener
            .set_nonblocking(true)
            .map_err(io_err(path, "make the control socket non-blocking"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut acceptor = Acceptor {
            listener,
            allowed,
            ctrl,
            stop: Arc::clone(&stop),
            served: Arc::new(AtomicUsize::new(0)),
            triaged: VecDeque::new(),
            reserve: None,
            starved: false,
        };
        let thread = std::thread::Builder::new()
            .name("spray-control".to_owned())
            .spawn(move || acceptor.run())
            .map_err(io_err(path, "start the control thread"))?;
        tracing::info!(socket = %path.display(), "control socket listening");
        Ok(Self {
            path: path.to_owned(),
            stop,
            thread: Some(thread),
        })
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends `e` and closes, on a short-lived thread of its own so the accept loop never waits
/// for a refused peer. What the peer already sent is read and dropped first: closing with
/// unread data would reset the connection and lose the response.
fn refuse(s: UnixStream, e: ApiError) {
    let _ = std::thread::Builder::new()
        .name("spray-ctl-refuse".to_owned())
        .spawn(move || {
            let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
            let line = proto::response(&serde_json::Value::Null, &Err(e));
            let _ = (&s).write_all(format!("{line}\n").as_bytes());
            let _ = s.shutdown(std::net::Shutdown::Write);
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let mut sink = [0u8; 4096];
            let mut left = MAX_REQUEST;
            while left > 0 {
                match io::Read::read(&mut &s, &mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n),
                }
            }
        });
}

fn busy() -> ApiError {
    ApiError::new(
        ErrorCode::Busy,
        format!("{MAX_CONNECTIONS} control connections are open; try again"),
    )
}

/// One taken serving slot, given back when dropped (also when its thread could not start).
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(count: &Arc<AtomicUsize>) -> Option<Self> {
        if count.fetch_add(1, Ordering::AcqRel) >= MAX_CONNECTIONS {
            count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self(Arc::clone(count)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A connection without a slot, waiting (non-blocking) for its first line.
struct Triaged {
    s: UnixStream,
    who: Who,
    since: Instant,
    buf: Vec<u8>,
}

/// The accept loop's state, owned by the control thread. It polls the listener and the
/// triaged connections together, so neither idle clients nor a flood can hold it.
struct Acceptor {
    listener: UnixListener,
    allowed: Vec<u32>,
    ctrl: Arc<dyn Controller>,
    stop: Arc<AtomicBool>,
    /// Connections with a serving thread (at most [`MAX_CONNECTIONS`]).
    served: Arc<AtomicUsize>,
    /// Connections beyond the cap, oldest first (at most [`MAX_TRIAGE`]).
    triaged: VecDeque<Triaged>,
    /// A descriptor kept open so that one `accept` can succeed when the process has none.
    reserve: Option<std::fs::File>,
    /// Whether the last accept failed for lack of descriptors (logged once per episode).
    starved: bool,
}

impl Acceptor {
    fn run(&mut self) {
        while !self.stop.load(Ordering::Relaxed) {
            if self.reserve.is_none() {
                self.reserve = std::fs::File::open("/dev/null").ok();
            }
            let ready = self.poll();
            if ready.first() == Some(&true) {
                self.accept_pending();
            }
            // Served back to front so that removing one keeps the other indices valid.
            for i in (0..self.triaged.len()).rev() {
                if ready.get(i + 1) == Some(&true) {
                    self.read_triaged(i);
                }
            }
            while self
                .triaged
                .front()
                .is_some_and(|t| t.since.elapsed() >= TRIAGE_WAIT)
            {
                if let Some(t) = self.triaged.pop_front() {
                    reply_and_close(&t.s, &serde_json::Value::Null, Err(busy()));
                }
            }
        }
    }

    /// Waits up to [`TICK`], or until the oldest triaged connection's wait ends, for the
    /// listener or a triaged connection to be readable; element 0 is the listener.
    fn poll(&self) -> Vec<bool> {
        let mut fds: Vec<libc::pollfd> = std::iter::once(self.listener.as_raw_fd())
            .chain(self.triaged.iter().map(|t| t.s.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let wait = self.triaged.front().map_or(TICK, |t| {
            TRIAGE_WAIT.saturating_sub(t.since.elapsed()).min(TICK)
        });
        let wait = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `fds` holds `fds.len()` valid pollfds for descriptors this struct keeps
        // open for the whole call; poll only writes their `revents`.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait) };
        if n <= 0 {
            return Vec::new();
        }
        fds.iter().map(|p| p.revents != 0).collect()
    }

    /// Accepts what the listener has queued.
    fn accept_pending(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((s, _)) => {
                    self.starved = false;
                    self.admit(s);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    if !self.starved {
                        tracing::warn!(
                            "control socket: out of file descriptors ({e}); answering with the reserve"
                        );
                        self.starved = true;
                    }
                    // The oldest silent client, then the reserve, make room for one more.
                    if let Some(t) = self.triaged.pop_front() {
                        reply_and_close(&t.s, &serde_json::Value::Null, Err(busy()));
                    } else if self.reserve.take().is_none() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!("control socket accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Checks the peer, then serves `s` in a slot if one is free, or triages it.
    fn admit(&mut self, s: UnixStream) {
        // Accepted sockets do not inherit O_NONBLOCK on Linux; this makes it explicit.
        let _ = s.set_nonblocking(false);
        let peer = match peer_cred(&s) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("control peer without credentials refused: {e}");
                return;
            }
        };
        if let Err(e) = authorize(&peer, &self.allowed) {
            tracing::warn!(
                uid = peer.uid,
                pid = peer.pid,
                "control peer refused: {}",
                e.message
            );
            refuse(s, e);
            return;
        }
        let who = Who::peer(peer.uid, peer.pid);
        let Some(slot) = Slot::take(&self.served) else {
            tracing::debug!(%who, "control connection beyond {MAX_CONNECTIONS}: triaged");
            if self.triaged.len() >= MAX_TRIAGE {
                if let Some(t) = self.triaged.pop_front() {
                    reply_and_close(&t.s, &serde_json::Value::Null, Err(busy()));
                }
            }
            if s.set_nonblocking(true).is_ok() {
                self.triaged.push_back(Triaged {
                    s,
                    who,
                    since: Instant::now(),
                    buf: Vec::new(),
                });
            }
            return;
        };
        let (ctrl, stop, served) = (
            Arc::clone(&self.ctrl),
            Arc::clone(&self.stop),
            Arc::clone(&self.served),
        );
        let _ = std::thread::Builder::new()
            .name("spray-ctl-conn".to_owned())
            .spawn(move || {
                let _slot = slot;
                tracing::debug!(%who, "control connection");
                let idle_limit = || {
                    if served.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                        PRESSURE_IDLE_TIMEOUT
                    } else {
                        IDLE_TIMEOUT
                    }
                };
                let r = s
                    .set_read_timeout(Some(TICK))
                    .and_then(|()| s.set_write_timeout(Some(Duration::from_secs(5))))
                    .and_then(|()| serve(&*ctrl, &who, BufReader::new(&s), &s, &stop, &idle_limit));
                if let Err(e) = r {
                    tracing::debug!(%who, "control connection ended: {e}");
                }
            });
    }

    /// Reads what triaged connection `i` sent; a first line that asks for `version` is
    /// answered, any other line gets `busy`, and either way the connection is closed.
    fn read_triaged(&mut self, i: usize) {
        let t = &mut self.triaged[i];
        let mut chunk = [0u8; 1024];
        let line = loop {
            match io::Read::read(&mut &t.s, &mut chunk) {
                Ok(0) => break None,
                Ok(n) => {
                    t.buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = t.buf.iter().position(|&b| b == b'\n') {
                        t.buf.truncate(end);
                        break Some(std::mem::take(&mut t.buf));
                    }
                    if t.buf.len() > MAX_REQUEST {
                        break Some(Vec::new());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => break None,
            }
        };
        let Some(t) = self.triaged.remove(i) else {
            return;
        };
        let Some(line) = line else {
            return;
        };
        let request: Option<serde_json::Value> = serde_json::from_slice(&line).ok();
        let id = request
            .as_ref()
            .and_then(|v| v.get("id").cloned())
            .unwrap_or(serde_json::Value::Null);
        let asks_version = request
            .as_ref()
            .and_then(|v| v.get("cmd"))
            .and_then(serde_json::Value::as_str)
            == Some("version");
        if asks_version {
            let (reply, _) = proto::handle_line(&*self.ctrl, &t.who, &line);
            write_line_and_close(&t.s, &reply);
        } else {
            reply_and_close(&t.s, &id, Err(busy()));
        }
    }
}

/// Writes one response line without waiting (it fits the socket buffer) and closes.
fn reply_and_close(s: &UnixStream, id: &serde_json::Value, r: Result<serde_json::Value, ApiError>) {
    write_line_and_close(s, &proto::response(id, &r));
}

fn write_line_and_close(s: &UnixStream, line: &str) {
    let _ = s.set_nonblocking(true);
    let _ = (&*s).write_all(format!("{line}\n").as_bytes());
    let _ = s.shutdown(std::net::Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Cursor, Read};

    use super::*;
    use crate::api::proto::tests::{controller, CONFIG};

    fn lines_of(input: &[u8], max: usize) -> Vec<Result<Vec<u8>, Line>> {
        let mut r = BufReader::with_capacity(7, Cursor::new(input.to_vec()));
        let mut lr = LineReader::new(max);
        let mut out = Vec::new();
        loop {
            match lr.next_line(&mut r).unwrap() {
                Line::Complete => out.push(Ok(lr.line().to_vec())),
                Line::Eof => return out,
                other => out.push(Err(other)),
            }
        }
    }

    #[test]
    fn line_reader_skips_overlong_lines_and_goes_on() {
        let mut input = b"short\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 40));
        input.extend(b"\n0123456789\nlast\n");
        let got = lines_of(&input, 10);
        assert_eq!(
            got,
            [
                Ok(b"short".to_vec()),
                Err(Line::TooLong),
                Ok(b"0123456789".to_vec()),
                Ok(b"last".to_vec()),
            ]
        );
        // A last line without newline is not a request.
        assert_eq!(lines_of(b"a\nb", 10), [Ok(b"a".to_vec())]);
    }

    #[test]
    fn serve_answers_every_line_including_oversized_ones() {
        let (c, _rx, _d) = controller(CONFIG);
        let mut input = b"{\"id\":1,\"cmd\":\"version\"}\n\n".to_vec();
        input.extend(std::iter::repeat_n(b' ', MAX_REQUEST + 1));
        input.extend(b"\n{\"id\":2,\"cmd\":\"list\"}\n");
        let mut out = Vec::new();
        serve(
            &c,
            &Who::local("test"),
            Cursor::new(input),
            &mut out,
            &AtomicBool::new(false),
            &|| IDLE_TIMEOUT,
        )
        .unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect();
        assert_eq!(lines.len(), 3, "{lines:?}");
        assert_eq!(lines[0]["id"], 1);
        assert_eq!(lines[1]["error"]["code"], "too_large");
        assert_eq!(lines[2]["id"], 2);
        assert!(lines[2]["ok"]["services"].is_array());
    }

    #[test]
    fn authorize_checks_the_uid() {
        let peer = PeerCred {
            uid: 1000,
            gid: 1000,
            pid: 42,
        };
        assert!(authorize(&peer, &[1000, 0]).is_ok());
        let e = authorize(&peer, &[0]).unwrap_err();
        assert_eq!(e.code, ErrorCode::Forbidden);
        assert_eq!(
            e.message,
            "uid 1000 may not use this control socket (control.allow_uids)"
        );
    }

    fn ask(path: &Path, line: &str) -> String {
        let mut s = UnixStream::connect(path).unwrap();
        s.write_all(line.as_bytes()).unwrap();
        let mut r = BufReader::new(s);
        let mut resp = String::new();
        r.read_line(&mut resp).unwrap();
        resp
    }

    #[test]
    fn socket_is_0600_replaces_a_stale_file_and_refuses_other_uids() {
        let (c, _rx, dir) = controller(CONFIG);
        let c: Arc<dyn Controller> = Arc::new(c);
        let path = dir.path().join("run/ctl.sock");
        // A stale socket: bound, then its listener gone.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        drop(UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        // SAFETY: getuid has no preconditions.
        let own = unsafe { libc::getuid() };
        let server = Server::start(&path, vec![own], Arc::clone(&c)).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let resp = ask(&path, "{\"id\":9,\"cmd\":\"version\"}\n");
        assert!(
            resp.contains("\"id\":9") && resp.contains("\"ok\""),
            "{resp}"
        );
        // A second server on the same path is refused while the first one lives.
        match Server::start(&path, vec![own], Arc::clone(&c)) {
            Err(ServerError::InUse(p)) => assert_eq!(p, path),
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(server);
        assert!(!path.exists(), "the socket file is removed on drop");
        // Our uid not allowed: one forbidden response, then the connection is closed.
        let server = Server::start(&path, vec![own.wrapping_add(4242)], Arc::clone(&c)).unwrap();
        let mut s = UnixStream::connect(&path).unwrap();
        let _ = s.write_all(b"{\"id\":1,\"cmd\":\"list\"}\n");
        let mut all = String::new();
        s.read_to_string(&mut all).unwrap();
        let v: serde_json::Value = serde_json::from_str(all.trim()).unwrap();
        assert_eq!(v["error"]["code"], "forbidden", "{all}");
        assert_eq!(all.lines().count(), 1);
        drop(server);
    }

    #[test]
    fn connections_beyond_the_cap_get_busy_but_version_is_answered() {
        let (c, _rx, dir) = controller(CONFIG);
        let path = dir.path().join("ctl.sock");
        // SAFETY: getuid has no preconditions.
        let own = unsafe { libc::getuid() };
        let _server = Server::start(&path, vec![own], Arc::new(c)).unwrap();
        // MAX_CONNECTIONS idle clients, each sending half a request and stalling.
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            let mut s = UnixStream::connect(&path).unwrap();
            s.write_all(b"{\"id\":1,").unwrap();
            idle.push(s);
        }
        // Wait until every one has its thread.
        std::thread::sleep(Duration::from_millis(300));
        // The track script's question is answered, anything else is busy.
        let resp = ask(&path, "{\"id\":2,\"cmd\":\"version\"}\n");
        assert!(
            resp.contains("\"ok\"") && resp.contains("\"id\":2"),
            "{resp}"
        );
        let resp = ask(&path, "{\"id\":3,\"cmd\":\"list\"}\n");
        assert!(
            resp.contains("\"busy\"") && resp.contains("\"id\":3"),
            "{resp}"
        );
        // A client beyond the cap that says nothing gets busy after the triage wait.
        let t0 = Instant::now();
        let mut silent = BufReader::new(UnixStream::connect(&path).unwrap());
        let mut line = String::new();
        silent.read_line(&mut line).unwrap();
        assert!(line.contains("\"busy\""), "{line}");
        assert!(t0.elapsed() >= TRIAGE_WAIT, "{:?}", t0.elapsed());
        // Finishing one stalled request answers it; closing one frees a slot.
        idle[0].write_all(b"\"cmd\":\"version\"}\n").unwrap();
        let mut r = BufReader::new(idle[0].try_clone().unwrap());
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.contains("\"ok\""), "{line}");
        drop(r);
        idle.remove(0);
        std::thread::sleep(Duration::from_millis(300));
        let resp = ask(&path, "{\"id\":4,\"cmd\":\"list\"}\n");
        assert!(resp.contains("\"ok\""), "{resp}");
    }

    #[test]
    fn idle_connections_are_closed_early_when_every_slot_is_taken() {
        let served = AtomicUsize::new(MAX_CONNECTIONS);
        let (c, _rx, _d) = controller(CONFIG);
        // A reader that never delivers a line: each read times out.
        struct Silent;
        impl io::Read for Silent {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                std::thread::sleep(Duration::from_millis(5));
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
        let limit = || {
            if served.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                Duration::from_millis(50)
            } else {
                IDLE_TIMEOUT
            }
        };
        let t0 = Instant::now();
        let mut out = Vec::new();
        serve(
            &c,
            &Who::local("test"),
            BufReader::new(Silent),
            &mut out,
            &AtomicBool::new(false),
            &limit,
        )
        .unwrap();
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        assert!(out.is_empty());
    }

    #[test]
    fn dropping_the_server_never_waits_on_accept() {
        let (c, _rx, dir) = controller(CONFIG);
        let path = dir.path().join("ctl.sock");
        // SAFETY: getuid has no preconditions.
        let own = unsafe { libc::getuid() };
        let server = Server::start(&path, vec![own], Arc::new(c)).unwrap();
        // Remove the file: a wake-up connect (the old way to unblock accept) now fails.
        std::fs::remove_file(&path).unwrap();
        let t0 = Instant::now();
        drop(server);
        assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    }
}
