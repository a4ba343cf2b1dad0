//! Traffic generator and sink for namespace testbeds (`spray-traffic send|sink|measure`).
//!
//! Every datagram the generator sends starts with a 24-byte [`Header`]: a magic number, a
//! stream id, a sequence number and the `CLOCK_MONOTONIC` time it was sent. `CLOCK_MONOTONIC`
//! is one clock for the whole machine (network namespaces share it; only time namespaces
//! would not), so a sink in another namespace computes one-way latency by subtracting the
//! stamp from its own reading of the same clock.
//!
//! * [`send`]: `sendmmsg` batches through [`dataplane::socket::sys::Batch`], paced to a
//!   fixed rate or as fast as the socket takes them (saturation).
//! * [`raw`]: the same datagrams as whole Ethernet frames through an `AF_PACKET` socket,
//!   for when the UDP sender's own kernel path is the testbed's limit.
//! * [`sink`]: `recvmmsg` batches; counts datagrams, duplicates and reordering per stream,
//!   records latency into an hdrhistogram and optionally a per-interval timeline.
//! * [`trial`]: merges one sender report and the reports of the sinks (one per backend)
//!   into loss, evenness and latency percentiles per backend and overall.
//! * [`measure`]: the driver of a side-by-side run: it starts sinks and the sender in their
//!   namespaces, searches the highest loss-free rate and measures latency and CPU.
//! * [`results`]: medians over repetitions, the summary table and `results.json`.

pub mod measure;
pub mod raw;
pub mod results;
pub mod send;
pub mod sink;
pub mod trial;

use hdrhistogram::Histogram;
use nix::time::{clock_gettime, ClockId};
use serde::{Deserialize, Serialize};

/// Marks the start of a generated header.
pub const MAGIC: &[u8; 4] = b"SPRY";

/// Bytes of [`Header`]: the magic and 40 hexadecimal digits.
pub const HEADER_LEN: usize = 44;

/// What the generator puts before the header: an RFC 3164 priority (local0.info) and a tag,
/// so syslog-aware balancers (HAProxy's log-forward) take the datagram for a log message.
pub const PREFIX: &[u8] = b"<134>spray-traffic: ";

/// Smallest payload: [`PREFIX`] and the header.
pub const MIN_PAYLOAD: usize = PREFIX.len() + HEADER_LEN;

/// How far into a payload a sink looks for the magic (a syslog relay may rewrite the
/// priority and add a timestamp and host name before the message).
pub const SEARCH_LEN: usize = 256;

/// The head of every generated message: `SPRY`, then stream, sequence number and send time
/// as 8, 16 and 16 lower-case hexadecimal digits. Text, not binary, so that a syslog relay
/// forwards it unchanged (no NUL bytes, nothing unprintable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Sender's stream id (one per `send` process), so sinks can tell senders apart.
    pub stream: u32,
    /// Sequence number within the stream, from 0.
    pub seq: u64,
    /// `CLOCK_MONOTONIC` nanoseconds when the batch holding it was handed to the kernel.
    pub sent_ns: u64,
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn put_hex(out: &mut [u8], v: u64) {
    let n = out.len();
    for (i, b) in out.iter_mut().enumerate() {
        *b = HEX[((v >> (4 * (n - 1 - i))) & 0xf) as usize];
    }
}

fn get_hex(s: &[u8]) -> Option<u64> {
    s.iter().try_fold(0u64, |acc, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        Some((acc << 4) | u64::from(d))
    })
}

impl Header {
    /// Writes the header into the first [`HEADER_LEN`] bytes of `buf`; false when `buf` is
    /// shorter.
    pub fn emit(&self, buf: &mut [u8]) -> bool {
        let Some(h) = buf.get_mut(..HEADER_LEN) else {
            return false;
        };
        h[0..4].copy_from_slice(MAGIC);
        put_hex(&mut h[4..12], u64::from(self.stream));
        put_hex(&mut h[12..28], self.seq);
        put_hex(&mut h[28..44], self.sent_ns);
        true
    }

    /// Finds and reads a header in the first [`SEARCH_LEN`] bytes of a payload; `None` when
    /// there is none or its digits are not hexadecimal.
    pub fn parse(buf: &[u8]) -> Option<Self> {
        let head = &buf[..buf.len().min(SEARCH_LEN)];
        let at = head.windows(4).position(|w| w == MAGIC)?;
        let h = buf.get(at..at + HEADER_LEN)?;
        Some(Self {
            stream: get_hex(&h[4..12])? as u32,
            seq: get_hex(&h[12..28])?,
            sent_ns: get_hex(&h[28..44])?,
        })
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds (0 if the clock cannot be read, which Linux never does).
pub fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| (t.tv_sec() as u64).saturating_mul(1_000_000_000) + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// Counts per fixed interval of `CLOCK_MONOTONIC` time, aligned to absolute multiples of the
/// interval so that timelines from different processes line up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// Interval length in nanoseconds.
    pub bucket_ns: u64,
    /// `CLOCK_MONOTONIC` time of the start of `counts[0]`.
    pub start_ns: u64,
    /// Datagrams per interval.
    pub counts: Vec<u64>,
}

impl Timeline {
    /// An empty timeline with intervals of `bucket_ns` (at least 1 ms).
    pub fn new(bucket_ns: u64) -> Self {
        Self {
            bucket_ns: bucket_ns.max(1_000_000),
            start_ns: 0,
            counts: Vec::new(),
        }
    }

    /// Adds `n` datagrams at time `now_ns`. Times before the first one are counted in the
    /// first interval; the timeline stops growing after 100 000 intervals.
    pub fn add(&mut self, now_ns: u64, n: u64) {
        let bucket = now_ns / self.bucket_ns;
        if self.counts.is_empty() {
            self.start_ns = bucket * self.bucket_ns;
        }
        let i = (bucket.saturating_sub(self.start_ns / self.bucket_ns)) as usize;
        if i >= 100_000 {
            return;
        }
        if i >= self.counts.len() {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += n;
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Datagrams recorded.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Largest.
    pub max_us: f64,
    /// Mean.
    pub mean_us: f64,
}

impl Latency {
    /// Percentiles of a histogram of nanoseconds.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let us = |ns: u64| ns as f64 / 1e3;
        Self {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.5)),
            p90_us: us(h.value_at_quantile(0.9)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1e3,
        }
    }
}

/// A latency histogram in nanoseconds: 1 ns to 60 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("constant bounds are valid")
}

/// The recorded buckets of a histogram as `(value, count)` pairs: a compact, exact way to
/// carry a histogram through JSON and merge it elsewhere.
pub fn histogram_buckets(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// Adds `(value, count)` pairs from [`histogram_buckets`] to `h` (values out of range are
/// clamped to its bounds).
pub fn add_buckets(h: &mut Histogram<u64>, buckets: &[(u64, u64)]) {
    for &(v, n) in buckets {
        h.saturating_record_n(v, n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_foreign_payloads() {
        let h = Header {
            stream: 7,
            seq: 0x0102_0304_0506_0708,
            sent_ns: 42,
        };
        let mut buf = [b'x'; 80];
        buf[..PREFIX.len()].copy_from_slice(PREFIX);
        assert!(h.emit(&mut buf[PREFIX.len()..]));
        assert_eq!(
            &buf[PREFIX.len()..PREFIX.len() + HEADER_LEN],
            b"SPRY000000070102030405060708000000000000002a"
        );
        assert_eq!(Header::parse(&buf), Some(h));
        // A relay may rewrite what comes before the header.
        let mut relayed = b"<134>Nov 22 10:00:00 host ".to_vec();
        relayed.extend_from_slice(&buf[PREFIX.len()..]);
        assert_eq!(Header::parse(&relayed), Some(h));
        assert_eq!(Header::parse(&buf[..PREFIX.len() + HEADER_LEN - 1]), None);
        buf[PREFIX.len() + 10] = b'g';
        assert_eq!(Header::parse(&buf), None);
        buf[PREFIX.len()] = b'X';
        assert_eq!(Header::parse(&buf), None);
        assert!(!h.emit(&mut [0u8; 10]));
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }

    #[test]
    fn timelines_align_to_absolute_intervals() {
        let mut t = Timeline::new(100_000_000);
        t.add(1_250_000_000, 1);
        t.add(1_299_999_999, 2);
        t.add(1_500_000_000, 3);
        assert_eq!(t.start_ns, 1_200_000_000);
        assert_eq!(t.counts, [3, 0, 0, 3]);
    }

    #[test]
    fn histogram_buckets_merge_exactly() {
        let mut a = new_histogram();
        for v in [1_000u64, 2_000, 2_000, 50_000] {
            a.record(v).unwrap();
        }
        let mut b = new_histogram();
        add_buckets(&mut b, &histogram_buckets(&a));
        assert_eq!(b.len(), 4);
        assert_eq!(Latency::of(&a), Latency::of(&b));
    }
}
