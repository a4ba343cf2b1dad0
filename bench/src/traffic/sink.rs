//! The sink: drains one UDP address with `recvmmsg` and accounts for every datagram.
//!
//! Per stream (one per sender process) it keeps a bitmap of the sequence numbers seen, so a
//! second copy counts as a duplicate, and the highest number seen, so an older one that
//! arrives later counts as reordered. With per-packet round robin each backend sees every
//! third number; loss is therefore only known once the sinks of all backends are merged
//! with the sender's count ([`super::trial`]).
//!
//! Latency is `CLOCK_MONOTONIC` at receipt minus the sender's stamp; receipt time is read
//! once per `recvmmsg` batch, so a datagram's latency includes the time it waited in the
//! sink's socket behind the earlier ones of its batch (at most one batch of work).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dataplane::socket::sys::{set_rcvbuf, Batch, Epoll};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use socket2::{Domain, Socket, Type};

use super::{histogram_buckets, monotonic_ns, new_histogram, Header, Latency, Timeline};

/// Sequence numbers beyond this are counted but not checked for duplicates (the bitmap
/// would pass 32 MiB).
const MAX_TRACKED_SEQ: u64 = 1 << 28;

/// Settings of one sink.
#[derive(Debug, Clone)]
pub struct SinkSettings {
    /// Address to receive on.
    pub bind: SocketAddr,
    /// Datagrams per `recvmmsg`.
    pub batch: usize,
    /// Receive buffer in bytes (`SO_RCVBUFFORCE` when allowed).
    pub rcvbuf: usize,
    /// Stop after this long without a datagram, once one has arrived.
    pub idle_timeout: Option<Duration>,
    /// Stop after this long in any case.
    pub max_duration: Duration,
    /// Interval of the receive timeline in milliseconds; 0 records none.
    pub timeline_ms: u64,
    /// Print one progress line per second on standard error.
    pub progress: bool,
}

impl Default for SinkSettings {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            batch: 64,
            rcvbuf: 8 << 20,
            idle_timeout: None,
            max_duration: Duration::from_secs(600),
            timeline_ms: 0,
            progress: false,
        }
    }
}

/// What one sink saw of one stream.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamReport {
    /// Stream id from the headers.
    pub stream: u32,
    /// Distinct sequence numbers received.
    pub unique: u64,
    /// Copies of a sequence number already received.
    pub duplicates: u64,
    /// Datagrams older than the newest one already received (not duplicates).
    pub reordered: u64,
    /// Highest sequence number received.
    pub max_seq: u64,
}

/// What one sink saw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SinkReport {
    /// The address it received on.
    pub bind: String,
    /// Datagrams received with a valid header.
    pub received: u64,
    /// Payload bytes of those.
    pub bytes: u64,
    /// Datagrams without the generator's header (short or wrong magic).
    pub foreign: u64,
    /// Per stream.
    pub streams: Vec<StreamReport>,
    /// One-way latency of every valid datagram.
    pub latency: Latency,
    /// The latency histogram (nanoseconds) as `(value, count)` pairs, for merging.
    pub histogram: Vec<(u64, u64)>,
    /// `CLOCK_MONOTONIC` of the first and the last datagram (0 when none).
    pub first_ns: u64,
    /// See `first_ns`.
    pub last_ns: u64,
    /// Datagrams per interval, when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
}

#[derive(Debug, Default)]
struct StreamState {
    report: StreamReport,
    seen: Vec<u64>,
    any: bool,
}

impl StreamState {
    fn record(&mut self, seq: u64) {
        if seq < MAX_TRACKED_SEQ {
            let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
            if word >= self.seen.len() {
                self.seen.resize((word + 1).next_power_of_two(), 0);
            }
            if self.seen[word] & bit != 0 {
                self.report.duplicates += 1;
                return;
            }
            self.seen[word] |= bit;
        }
        self.report.unique += 1;
        if self.any && seq < self.report.max_seq {
            self.report.reordered += 1;
        }
        if !self.any || seq > self.report.max_seq {
            self.report.max_seq = seq;
        }
        self.any = true;
    }
}

/// The accounting of a sink, apart from its socket (so it can be tested alone).
#[derive(Debug)]
pub struct Tally {
    received: u64,
    bytes: u64,
    foreign: u64,
    streams: Vec<StreamState>,
    hist: Histogram<u64>,
    first_ns: u64,
    last_ns: u64,
    timeline: Option<Timeline>,
}

impl Tally {
    /// An empty tally; `timeline_ms > 0` records a timeline with that interval.
    pub fn new(timeline_ms: u64) -> Self {
        Self {
            received: 0,
            bytes: 0,
            foreign: 0,
            streams: Vec::new(),
            hist: new_histogram(),
            first_ns: 0,
            last_ns: 0,
            timeline: (timeline_ms > 0).then(|| Timeline::new(timeline_ms * 1_000_000)),
        }
    }

    /// Accounts for one datagram received at `now_ns`.
    pub fn datagram(&mut self, data: &[u8], now_ns: u64) {
        let Some(h) = Header::parse(data) else {
            self.foreign += 1;
            return;
        };
        self.received += 1;
        self.bytes += data.len() as u64;
        if self.first_ns == 0 {
            self.first_ns = now_ns;
        }
        self.last_ns = now_ns;
        // A stamp from the future (never on one machine) records as 0.
        self.hist
            .saturating_record(now_ns.saturating_sub(h.sent_ns));
        if let Some(t) = self.timeline.as_mut() {
            t.add(now_ns, 1);
        }
        let i = match self
            .streams
            .iter()
            .position(|s| s.report.stream == h.stream)
        {
            Some(i) => i,
            None => {
                self.streams.push(StreamState {
                    report: StreamReport {
                        stream: h.stream,
                        ..StreamReport::default()
                    },
                    ..StreamState::default()
                });
                self.streams.len() - 1
            }
        };
        self.streams[i].record(h.seq);
    }

    /// Datagrams with a valid header so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The report so far.
    pub fn report(&self, bind: &str) -> SinkReport {
        SinkReport {
            bind: bind.to_owned(),
            received: self.received,
            bytes: self.bytes,
            foreign: self.foreign,
            streams: self.streams.iter().map(|s| s.report.clone()).collect(),
            latency: Latency::of(&self.hist),
            histogram: histogram_buckets(&self.hist),
            first_ns: self.first_ns,
            last_ns: self.last_ns,
            timeline: self.timeline.clone(),
        }
    }
}

/// Binds the sink's socket: nonblocking, without `SO_REUSEPORT` (a second socket on a
/// backend's port would silently take a share of its datagrams).
///
/// # Errors
/// The socket, buffer or bind error.
pub fn bind(s: &SinkSettings) -> io::Result<UdpSocket> {
    let sock = Socket::new(Domain::for_address(s.bind), Type::DGRAM, None)?;
    if s.rcvbuf > 0 {
        set_rcvbuf(&sock, s.rcvbuf)?;
    }
    sock.bind(&s.bind.into())?;
    sock.set_nonblocking(true)?;
    Ok(sock.into())
}

/// Receives on `sock` until `stop` is set, the idle timeout or the maximum duration passes.
///
/// # Errors
/// An error of `epoll` or `recvmmsg` other than "would block" or "interrupted".
pub fn run(sock: &UdpSocket, s: &SinkSettings, stop: &AtomicBool) -> io::Result<SinkReport> {
    let bind = sock.local_addr()?.to_string();
    let mut batch = Batch::new(s.batch, 2048);
    let mut ep = Epoll::new(1)?;
    ep.add(sock.as_fd(), 0)?;
    let mut tally = Tally::new(s.timeline_ms);
    let start = Instant::now();
    let mut last_rx = start;
    let mut last_progress = (start, 0u64);
    while !stop.load(Ordering::Relaxed) && start.elapsed() < s.max_duration {
        ep.wait(Duration::from_millis(50))?;
        loop {
            match batch.recv(sock.as_fd()) {
                Ok(0) => break,
                Ok(n) => {
                    let now = monotonic_ns();
                    for i in 0..n {
                        if let Some(d) = batch.datagram(i) {
                            tally.datagram(d.data, now);
                        }
                    }
                    last_rx = Instant::now();
                    if n < batch.capacity() {
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(idle) = s.idle_timeout {
            if tally.received() > 0 && last_rx.elapsed() >= idle {
                break;
            }
        }
        if s.progress && last_progress.0.elapsed() >= Duration::from_secs(1) {
            let dt = last_progress.0.elapsed().as_secs_f64();
            let r = tally.received();
            eprintln!(
                "sink {bind}: {:>6.1} s  received {:>11}  {:>9.0}/s  p99 {:.0} us",
                start.elapsed().as_secs_f64(),
                r,
                (r - last_progress.1) as f64 / dt,
                tally.hist.value_at_quantile(0.99) as f64 / 1e3
            );
            last_progress = (Instant::now(), r);
        }
    }
    Ok(tally.report(&bind))
}

/// A human summary of a report.
pub fn summary(r: &SinkReport) -> String {
    let (mut unique, mut dups, mut reord) = (0, 0, 0);
    for s in &r.streams {
        unique += s.unique;
        dups += s.duplicates;
        reord += s.reordered;
    }
    let secs = r.last_ns.saturating_sub(r.first_ns) as f64 / 1e9;
    format!(
        "sink {}: {} datagrams ({} unique, {} duplicates, {} reordered, {} foreign) over {:.2} s\n\
         latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        r.bind,
        r.received,
        unique,
        dups,
        reord,
        r.foreign,
        secs,
        r.latency.p50_us,
        r.latency.p90_us,
        r.latency.p99_us,
        r.latency.p999_us,
        r.latency.max_us
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dgram(stream: u32, seq: u64, sent_ns: u64) -> Vec<u8> {
        let mut b = vec![b' '; 64];
        Header {
            stream,
            seq,
            sent_ns,
        }
        .emit(&mut b);
        b
    }

    #[test]
    fn tally_counts_duplicates_reordering_and_foreign_datagrams() {
        let mut t = Tally::new(0);
        for seq in [0, 3, 6, 3, 5, 9] {
            t.datagram(&dgram(1, seq, 1_000), 11_000);
        }
        t.datagram(&dgram(2, 0, 1_000), 2_000);
        t.datagram(b"hello", 3_000);
        let r = t.report("x");
        assert_eq!(r.received, 7);
        assert_eq!(r.foreign, 1);
        assert_eq!(
            r.streams[0],
            StreamReport {
                stream: 1,
                unique: 5,
                duplicates: 1,
                reordered: 1,
                max_seq: 9
            }
        );
        assert_eq!(r.streams[1].unique, 1);
        assert_eq!(r.latency.count, 7);
        assert!((r.latency.p50_us - 10.0).abs() < 0.1, "{:?}", r.latency);
        assert!((r.latency.max_us - 10.0).abs() < 0.1);
    }

    #[test]
    fn sequence_numbers_past_the_bitmap_still_count() {
        let mut t = Tally::new(0);
        t.datagram(&dgram(1, MAX_TRACKED_SEQ + 5, 0), 1);
        t.datagram(&dgram(1, MAX_TRACKED_SEQ + 5, 0), 1);
        assert_eq!(t.report("x").streams[0].unique, 2);
    }
}
