//! An in-process port: rings of prebuilt frames, for tests and `spray bench dataplane`.
//!
//! Tests push frames with [`MemoryPort::push_rx`] and read what the worker sent with
//! [`MemoryPort::pop_tx`]. In replay mode ([`MemoryPort::replay`]) the RX ring never runs dry:
//! each received buffer is refilled from a list of template frames (one 64-byte copy, the
//! stand-in for the NIC's DMA) and transmitted buffers go straight back to the free list, so
//! a benchmark measures the worker and not the allocator.

use std::collections::VecDeque;

use super::{PacketBuf, Port, RxIpChecksum};
use crate::model::MacAddr;

/// Largest frame a memory buffer holds (a jumbo frame).
pub(crate) const BUF_SIZE: usize = 9216;

const SMALL: usize = 128;

/// A replay template, padded to a fixed size for a cheap copy.
#[derive(Debug, Clone)]
struct Template {
    bytes: [u8; SMALL],
    len: usize,
    big: Vec<u8>,
}

/// Room kept in front of every frame for headers grown there (tunnels, ICMP errors), as
/// DPDK's `RTE_PKTMBUF_HEADROOM`.
pub(crate) const HEADROOM: usize = 128;

/// A heap buffer with a length; moving it is a pointer move.
#[derive(Debug, Clone)]
pub struct MemBuf {
    buf: Box<[u8]>,
    // u32 and u16 (at most BUF_SIZE) so that the verdict fits beside them and a MemBuf stays
    // 24 bytes: buffers are moved for every packet.
    len: u32,
    /// Where the frame starts: `HEADROOM` when received, less once headers were grown.
    head: u16,
    /// The stand-in NIC's verdict on the IPv4 header checksum.
    rx_csum: RxIpChecksum,
}

impl MemBuf {
    /// A buffer holding a copy of `frame` (truncated to `BUF_SIZE`).
    pub fn from_frame(frame: &[u8]) -> Self {
        let mut b = Self {
            buf: vec![0u8; HEADROOM + BUF_SIZE].into_boxed_slice(),
            len: 0,
            head: HEADROOM as u16,
            rx_csum: RxIpChecksum::Unknown,
        };
        b.fill(frame);
        b
    }

    fn fill(&mut self, frame: &[u8]) {
        let n = frame.len().min(BUF_SIZE);
        self.buf[HEADROOM..HEADROOM + n].copy_from_slice(&frame[..n]);
        self.head = HEADROOM as u16;
        self.len = n as u32;
        self.rx_csum = RxIpChecksum::Unknown;
    }

    /// Refills from a padded template: a fixed-size copy compiles to a few vector moves,
    /// where the variable-length one calls memmove for every frame (see docs/benchmarks.md).
    #[inline]
    fn fill_small(&mut self, t: &Template) {
        if let Some(dst) = self
            .buf
            .get_mut(HEADROOM..)
            .and_then(|b| b.first_chunk_mut::<SMALL>())
        {
            *dst = t.bytes;
            self.head = HEADROOM as u16;
            self.len = t.len as u32;
        }
    }

    #[inline]
    fn range(&self) -> std::ops::Range<usize> {
        let head = usize::from(self.head);
        head..head + self.len as usize
    }
}

impl PacketBuf for MemBuf {
    #[inline]
    fn data(&self) -> &[u8] {
        &self.buf[self.range()]
    }
    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        let r = self.range();
        &mut self.buf[r]
    }
    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        let Some(head) = usize::from(self.head).checked_sub(n) else {
            return false;
        };
        self.head = head as u16;
        self.len += n as u32;
        true
    }
    #[inline]
    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len as u32);
    }
    #[inline]
    fn rx_ip_checksum(&self) -> RxIpChecksum {
        self.rx_csum
    }
}

/// See the module docs.
#[derive(Debug)]
pub struct MemoryPort {
    mac: MacAddr,
    rx: VecDeque<MemBuf>,
    tx: VecDeque<MemBuf>,
    free: Vec<MemBuf>,
    tx_capacity: usize,
    templates: Vec<Template>,
    next_template: usize,
    /// Packets replay mode generated (replay mode only).
    pub generated: u64,
    /// Packets transmitted (both modes).
    pub transmitted: u64,
    /// Packets freed without being sent.
    pub freed: u64,
    /// A stand-in for a NIC's RX checksum offload: `Some(v)` turns it on, and replayed
    /// frames carry verdict `v` ([`MemoryPort::set_rx_ip_checksum_offload`]).
    offload: Option<RxIpChecksum>,
}

impl MemoryPort {
    /// An empty port with MAC `mac`; the TX ring holds at most `tx_capacity` frames (more
    /// are refused, as a full NIC ring would).
    pub fn new(mac: MacAddr, tx_capacity: usize) -> Self {
        Self {
            mac,
            rx: VecDeque::new(),
            tx: VecDeque::with_capacity(tx_capacity),
            free: Vec::new(),
            tx_capacity,
            templates: Vec::new(),
            next_template: 0,
            generated: 0,
            transmitted: 0,
            freed: 0,
            offload: None,
        }
    }

    /// A port whose RX never runs dry: it cycles through `templates`, and transmitted frames
    /// are recycled instead of kept. `pool` buffers are allocated up front.
    pub fn replay(mac: MacAddr, templates: Vec<Vec<u8>>, pool: usize) -> Self {
        let mut p = Self::new(mac, 0);
        p.free = (0..pool).map(|_| MemBuf::from_frame(&[])).collect();
        p.templates = templates
            .into_iter()
            .map(|t| {
                let mut bytes = [0u8; SMALL];
                let n = t.len().min(SMALL);
                bytes[..n].copy_from_slice(&t[..n]);
                Template {
                    bytes,
                    len: t.len(),
                    big: if t.len() > SMALL { t } else { Vec::new() },
                }
            })
            .collect();
        p
    }

    /// Queues a frame for the worker to receive.
    pub fn push_rx(&mut self, frame: &[u8]) {
        self.push_rx_with(frame, RxIpChecksum::Unknown);
    }

    /// Queues a frame with the NIC's verdict on its IPv4 header checksum (which the worker
    /// reads only while the offload is on: [`MemoryPort::set_rx_ip_checksum_offload`]).
    pub(crate) fn push_rx_with(&mut self, frame: &[u8], verdict: RxIpChecksum) {
        let mut b = self.free.pop().unwrap_or_else(|| MemBuf::from_frame(&[]));
        b.fill(frame);
        b.rx_csum = verdict;
        self.rx.push_back(b);
    }

    /// Acts as a NIC with (`Some`) or without (`None`) IPv4 RX checksum offload; in replay
    /// mode every frame then carries the given verdict.
    pub fn set_rx_ip_checksum_offload(&mut self, replay_verdict: Option<RxIpChecksum>) {
        self.offload = replay_verdict;
    }

    /// Takes the oldest transmitted frame.
    pub fn pop_tx(&mut self) -> Option<Vec<u8>> {
        let b = self.tx.pop_front()?;
        let v = b.data().to_vec();
        self.free.push(b);
        Some(v)
    }

    /// Frames waiting in the TX ring.
    pub fn tx_len(&self) -> usize {
        self.tx.len()
    }

    /// Frames waiting in the RX ring.
    pub fn rx_len(&self) -> usize {
        self.rx.len()
    }
}

impl Port for MemoryPort {
    type Buf = MemBuf;

    // Inline hints on both bursts: without them the io-forward loop stopped inlining them
    // once the offload stand-in was added, and the benchmark then measured the calls.
    #[inline]
    fn rx_burst(&mut self, bufs: &mut Vec<MemBuf>, max: usize) -> usize {
        let mut n = 0;
        if self.templates.is_empty() {
            while n < max {
                let Some(b) = self.rx.pop_front() else { break };
                bufs.push(b);
                n += 1;
            }
        } else {
            while n < max {
                let Some(mut b) = self.free.pop() else { break };
                let t = &self.templates[self.next_template];
                if t.big.is_empty() {
                    b.fill_small(t);
                } else {
                    b.fill(&t.big);
                }
                self.next_template += 1;
                if self.next_template == self.templates.len() {
                    self.next_template = 0;
                }
                bufs.push(b);
                n += 1;
            }
            self.generated += n as u64;
            if let Some(v) = self.offload {
                let start = bufs.len() - n;
                for b in &mut bufs[start..] {
                    b.rx_csum = v;
                }
            }
        }
        n
    }

    #[inline]
    fn tx_burst(&mut self, bufs: &mut Vec<MemBuf>) -> usize {
        let mut sent = 0;
        if self.templates.is_empty() {
            for b in bufs.drain(..) {
                if self.tx.len() < self.tx_capacity {
                    self.tx.push_back(b);
                    sent += 1;
                } else {
                    self.freed += 1;
                    self.free.push(b);
                }
            }
        } else {
            sent = bufs.len();
            self.free.append(bufs);
        }
        self.transmitted += sent as u64;
        sent
    }

    fn free(&mut self, buf: MemBuf) {
        self.freed += 1;
        self.free.push(buf);
    }

    fn mac(&self) -> MacAddr {
        self.mac
    }

    fn rx_ip_checksum_offload(&self) -> bool {
        self.offload.is_some()
    }

    fn alloc_frame(&mut self, frame: &[u8]) -> Option<MemBuf> {
        let mut b = self.free.pop().unwrap_or_else(|| MemBuf::from_frame(&[]));
        b.fill(frame);
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rings_keep_order_and_refuse_past_capacity() {
        let mut p = MemoryPort::new(MacAddr::default(), 2);
        p.push_rx(&[1]);
        p.push_rx(&[2]);
        p.push_rx(&[3]);
        let mut burst = Vec::with_capacity(8);
        assert_eq!(p.rx_burst(&mut burst, 8), 3);
        assert_eq!(p.tx_burst(&mut burst), 2);
        assert!(burst.is_empty());
        assert_eq!(p.freed, 1);
        assert_eq!(p.pop_tx(), Some(vec![1]));
        assert_eq!(p.pop_tx(), Some(vec![2]));
        assert_eq!(p.pop_tx(), None);
    }

    #[test]
    fn replay_never_runs_dry_and_recycles() {
        let mut p = MemoryPort::replay(MacAddr::default(), vec![vec![7; 64], vec![8; 64]], 4);
        let mut burst = Vec::with_capacity(4);
        for round in 0..10 {
            assert_eq!(p.rx_burst(&mut burst, 4), 4, "round {round}");
            assert_eq!(burst[1].data()[0], 8);
            assert_eq!(p.tx_burst(&mut burst), 4);
        }
        assert_eq!(p.generated, 40);
    }
}
