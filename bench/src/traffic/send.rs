//! The generator: numbered, timestamped datagrams in `sendmmsg` batches.
//!
//! Every slot of one [`Batch`] is staged once with the payload ([`PREFIX`], then letters);
//! before each `sendmmsg` the header of every slot is rewritten in place with the next sequence number and the current
//! `CLOCK_MONOTONIC` time, so the loop neither allocates nor copies payloads.
//!
//! Pacing (fixed-rate mode) is per batch: batch `k` is due at `start + k * batch / rate`.
//! The generator sleeps until the next batch is due (yielding for the last 20 µs) rather
//! than spinning, so on a small machine it leaves the balancer under test as much CPU as it
//! can; timer slack makes it oversleep by tens of microseconds, after which it sends the
//! batches that fell due back to back. A generator that falls behind sends as fast as it can until it has
//! caught up, and its report says what it achieved.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use dataplane::socket::sys::{Batch, Outgoing};
use serde::{Deserialize, Serialize};
use socket2::{Domain, Socket, Type};

use super::{monotonic_ns, Header, Timeline, MIN_PAYLOAD, PREFIX};

/// Settings of one sender run.
#[derive(Debug, Clone)]
pub struct SendSettings {
    /// Where datagrams go (the VIP).
    pub target: SocketAddr,
    /// Local address to send from; `None` picks the unspecified address of the target's
    /// family and an ephemeral port.
    pub bind: Option<SocketAddr>,
    /// Datagrams per second; 0 sends as fast as the socket accepts (saturation).
    pub rate: u64,
    /// How long to send.
    pub duration: Duration,
    /// Payload bytes per datagram (at least [`MIN_PAYLOAD`]).
    pub size: usize,
    /// Datagrams per `sendmmsg`.
    pub batch: usize,
    /// Stream id written in every header.
    pub stream: u32,
    /// Interval of the send timeline in milliseconds; 0 records none.
    pub timeline_ms: u64,
    /// Print one progress line per second on standard error.
    pub progress: bool,
}

impl Default for SendSettings {
    fn default() -> Self {
        Self {
            target: SocketAddr::from((Ipv4Addr::LOCALHOST, 514)),
            bind: None,
            rate: 0,
            duration: Duration::from_secs(2),
            size: 200,
            batch: 32,
            stream: std::process::id(),
            timeline_ms: 0,
            progress: false,
        }
    }
}

/// What a sender did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SendReport {
    /// Destination.
    pub target: String,
    /// Requested datagrams/s (0: saturation).
    pub rate: u64,
    /// Datagrams per `sendmmsg`.
    pub batch: usize,
    /// Payload bytes per datagram.
    pub size: usize,
    /// Stream id in the headers.
    pub stream: u32,
    /// Datagrams the kernel accepted (sequence numbers `0..sent`).
    pub sent: u64,
    /// `sendmmsg` calls that failed with something other than "would block"; the rest of
    /// their batch was not sent and not counted.
    pub send_errors: u64,
    /// Seconds spent sending.
    pub secs: f64,
    /// `sent / secs`.
    pub offered_per_sec: f64,
    /// `CLOCK_MONOTONIC` when sending started.
    pub start_ns: u64,
    /// `CLOCK_MONOTONIC` when sending ended.
    pub end_ns: u64,
    /// Datagrams sent per interval, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
}

impl SendReport {
    /// The report of a run over `s` in batches of `batch` datagrams of `size` bytes, begun
    /// at `start` (`start_ns` on `CLOCK_MONOTONIC`) and ending now: both senders' last step.
    pub(crate) fn finish(
        s: &SendSettings,
        (batch, size): (usize, usize),
        (start, start_ns): (Instant, u64),
        sent: u64,
        send_errors: u64,
        timeline: Option<Timeline>,
    ) -> Self {
        let secs = start.elapsed().as_secs_f64();
        Self {
            target: s.target.to_string(),
            rate: s.rate,
            batch,
            size,
            stream: s.stream,
            sent,
            send_errors,
            secs,
            offered_per_sec: if secs > 0.0 { sent as f64 / secs } else { 0.0 },
            start_ns,
            end_ns: monotonic_ns(),
            timeline,
        }
    }
}

fn sender_socket(s: &SendSettings) -> io::Result<UdpSocket> {
    let local = s.bind.unwrap_or(match s.target {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    });
    let sock = Socket::new(Domain::for_address(s.target), Type::DGRAM, None)?;
    // Best effort: the kernel caps it at wmem_max.
    let _ = sock.set_send_buffer_size(4 << 20);
    sock.bind(&local.into())?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

/// Waits until `due`: sleeps, then yields for the last 20 µs.
pub(crate) fn pace(due: Instant) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > Duration::from_micros(20) {
            // Overslept time (timer slack, ~50 µs) is caught up by sending the batches that
            // fell due at once: the average rate stays exact, and the generator leaves the
            // CPU to the balancer instead of spinning.
            thread::sleep(left);
        } else {
            thread::yield_now();
        }
    }
}

/// Sends until `s.duration` has passed or `stop` is set.
///
/// # Errors
/// When the socket cannot be opened or bound.
pub fn send(s: &SendSettings, stop: &AtomicBool) -> io::Result<SendReport> {
    let sock = sender_socket(s)?;
    let n = s.batch.clamp(1, dataplane::socket::sys::MAX_BATCH);
    let size = s.size.max(MIN_PAYLOAD);
    let mut batch = Batch::new(n, size);
    let mut payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    payload[..PREFIX.len()].copy_from_slice(PREFIX);
    for i in 0..n {
        batch.stage(i, &payload);
    }
    let out: Vec<Outgoing> = (0..n)
        .map(|index| Outgoing {
            index,
            to: s.target,
            from: None,
        })
        .collect();
    let mut timeline = (s.timeline_ms > 0).then(|| Timeline::new(s.timeline_ms * 1_000_000));
    let start = Instant::now();
    let start_ns = monotonic_ns();
    let mut seq: u64 = 0;
    let mut send_errors = 0u64;
    let mut last_progress = (start, 0u64);
    while start.elapsed() < s.duration && !stop.load(Ordering::Relaxed) {
        if s.rate > 0 {
            pace(start + Duration::from_secs_f64(seq as f64 / s.rate as f64));
        }
        let now_ns = monotonic_ns();
        for i in 0..n {
            if let Some(p) = batch.payload_mut(i).and_then(|p| p.get_mut(PREFIX.len()..)) {
                Header {
                    stream: s.stream,
                    seq: seq + i as u64,
                    sent_ns: now_ns,
                }
                .emit(p);
            }
        }
        let mut done = 0;
        while done < n {
            match batch.send(sock.as_fd(), &out[done..]) {
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::yield_now(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // ECONNREFUSED from an earlier ICMP error, ENOBUFS, ...: the rest of this
                    // batch is not sent; sequence numbers stay contiguous.
                    send_errors += 1;
                    break;
                }
            }
        }
        seq += done as u64;
        if let Some(t) = timeline.as_mut() {
            t.add(now_ns, done as u64);
        }
        if s.progress && last_progress.0.elapsed() >= Duration::from_secs(1) {
            let dt = last_progress.0.elapsed().as_secs_f64();
            eprintln!(
                "send: {:>6.1} s  sent {:>11}  {:>9.0}/s",
                start.elapsed().as_secs_f64(),
                seq,
                (seq - last_progress.1) as f64 / dt
            );
            last_progress = (Instant::now(), seq);
        }
    }
    Ok(SendReport::finish(
        s,
        (n, size),
        (start, start_ns),
        seq,
        send_errors,
        timeline,
    ))
}

/// A one-line human summary of a report.
pub fn summary_line(r: &SendReport) -> String {
    let rate = if r.rate == 0 {
        "max".to_owned()
    } else {
        r.rate.to_string()
    };
    format!(
        "send: {} datagrams of {} B to {} in {:.2} s: {:.0}/s (asked {rate}, batch {}), {} send errors",
        r.sent, r.size, r.target, r.secs, r.offered_per_sec, r.batch, r.send_errors
    )
}
