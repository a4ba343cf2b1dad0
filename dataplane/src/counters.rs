//! Per-worker counters: written only by their worker, read by the control thread.
//!
//! Each worker owns one [`WorkerCounters`], cache-line padded so two workers never share a
//! line. A worker bumps a counter with a relaxed load and store (no locked operation: it is
//! the only writer); readers see a value at most one burst old. Per-VIP and per-backend arrays
//! are sized once for [`MAX_VIPS`] and [`MAX_BACKENDS`] and indexed by the stable ids of
//! `crate::model`, so nothing on the packet path allocates.

use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::model::{BackendId, VipId, MAX_BACKENDS, MAX_VIPS};

/// Why a packet was not forwarded. Indexes [`WorkerCounters::drops`].
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Shorter than the headers it claims to carry.
    Truncated,
    /// Not IPv4 or IPv6 (ARP and the rest, until the neighbour code takes them).
    NotIp,
    /// Bad IP version, header length or total length.
    BadIpHeader,
    /// IPv4 header checksum does not verify.
    BadIpChecksum,
    /// Not UDP (or an IPv6 extension header before UDP).
    NotUdp,
    /// An IP fragment Spray cannot steer: a first fragment too short to hold the whole UDP
    /// header (RFC 1858's tiny fragment), or a fragment where only whole datagrams are
    /// accepted ([`crate::wire::parse_udp`]).
    Fragment,
    /// UDP length field disagrees with the IP payload length.
    BadUdpLength,
    /// Destination is no VIP and the source is no NAT backend.
    NoVip,
    /// The VIP has no backend in rotation.
    NoHealthyBackend,
    /// The chosen backend's MAC address is unknown.
    NoBackendMac,
    /// VIP and backend are of different IP families (NAT cannot translate between them).
    FamilyMismatch,
    /// The port did not accept the packet for transmission.
    TxFull,
    /// Socket mode: a new client found its worker's session table full
    /// ([`crate::socket::ProxySettings::max_sessions`]).
    SessionTableFull,
    /// Socket mode: the upstream socket of a new client session could not be opened (file
    /// descriptor limit, or a transparent bind to the client's address failed).
    SessionSocket,
    /// NAT: the IPv4 TTL or IPv6 hop limit would reach 0 on forwarding (no ICMP
    /// time-exceeded is sent; docs/network.md).
    TtlExceeded,
    /// A non-first fragment whose first fragment was not seen (lost, out of order, or its
    /// table entry expired): it cannot be steered.
    FragmentNoFirst,
    /// The worker's fragment table had no free entry for a first fragment (or an entry had no
    /// room to track another hole).
    FragmentTableFull,
    /// A fragment overlapping one already forwarded, or arriving after such an overlap
    /// (RFC 5722: the whole datagram is discarded).
    FragmentOverlap,
    /// An ARP or NDP frame for the control thread found the worker's queue full.
    NeighQueueFull,
    /// ARP or NDP not for a VIP or the port's address, or of a kind Spray does not handle
    /// (router advertisements, redirects, requests for other hosts).
    NeighNotForUs,
    /// Malformed ARP or NDP: wrong hardware or protocol type, NDP hop limit other than 255,
    /// bad ICMPv6 checksum, or too short.
    BadNeigh,
    /// ICMP that is not an error about a NAT flow Spray can translate (echo requests to a
    /// VIP, errors about unknown flows or quoting a fragment without its UDP header).
    IcmpNotTranslated,
    /// Socket mode: a datagram reached a VIP from one of this process's own session sockets
    /// (a backend that leads back to a VIP): forwarding it again would loop forever.
    Loop,
    /// Tunnel: a datagram that would not fit its backend's tunnel MTU once encapsulated. It
    /// is answered with ICMP "fragmentation needed" / "packet too big" (counted as
    /// [`WorkerCounters::icmp_too_big`]) unless that answer is rate-limited.
    TunnelTooBig,
    /// Tunnel: the buffer had no room in front of the frame for the outer headers.
    NoHeadroom,
    /// NAT: a reply from a backend of a mirror pool. Only the primary pool answers clients.
    MirrorReply,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 26] = [
        Self::Truncated,
        Self::NotIp,
        Self::BadIpHeader,
        Self::BadIpChecksum,
        Self::NotUdp,
        Self::Fragment,
        Self::BadUdpLength,
        Self::NoVip,
        Self::NoHealthyBackend,
        Self::NoBackendMac,
        Self::FamilyMismatch,
        Self::TxFull,
        Self::SessionTableFull,
        Self::SessionSocket,
        Self::TtlExceeded,
        Self::FragmentNoFirst,
        Self::FragmentTableFull,
        Self::FragmentOverlap,
        Self::NeighQueueFull,
        Self::NeighNotForUs,
        Self::BadNeigh,
        Self::IcmpNotTranslated,
        Self::Loop,
        Self::TunnelTooBig,
        Self::NoHeadroom,
        Self::MirrorReply,
    ];

    /// Stable snake_case name for stats and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::NotIp => "not_ip",
            Self::BadIpHeader => "bad_ip_header",
            Self::BadIpChecksum => "bad_ip_checksum",
            Self::NotUdp => "not_udp",
            Self::Fragment => "fragment",
            Self::BadUdpLength => "bad_udp_length",
            Self::NoVip => "no_vip",
            Self::NoHealthyBackend => "no_healthy_backend",
            Self::NoBackendMac => "no_backend_mac",
            Self::FamilyMismatch => "family_mismatch",
            Self::TxFull => "tx_full",
            Self::SessionTableFull => "session_table_full",
            Self::SessionSocket => "session_socket",
            Self::TtlExceeded => "ttl_exceeded",
            Self::FragmentNoFirst => "fragment_no_first",
            Self::FragmentTableFull => "fragment_table_full",
            Self::FragmentOverlap => "fragment_overlap",
            Self::NeighQueueFull => "neigh_queue_full",
            Self::NeighNotForUs => "neigh_not_for_us",
            Self::BadNeigh => "bad_neigh",
            Self::IcmpNotTranslated => "icmp_not_translated",
            Self::Loop => "loop",
            Self::TunnelTooBig => "tunnel_too_big",
            Self::NoHeadroom => "no_headroom",
            Self::MirrorReply => "mirror_reply",
        }
    }
}

/// A counter with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning worker may call this: a relaxed load and store is not an
    /// atomic increment, which is what makes it cheap.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    /// Current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Packet and byte counts of one VIP or backend: the two counters of an entry sit side by
/// side: one bounds check and one cache line per packet, not two as with separate packet
/// and byte arrays (see docs/benchmarks.md).
///
/// `N`, the number of entries, is a constant so that an index is checked against an
/// immediate: the backend count on the packet path then loads no length (nor the pointer
/// to it) first.
#[derive(Debug)]
pub struct Traffic<const N: usize> {
    /// `[packets, bytes]` per index; bytes are frame bytes on the wire ports, payload bytes
    /// in socket mode.
    entries: Box<[[Counter; 2]; N]>,
}

impl<const N: usize> Default for Traffic<N> {
    fn default() -> Self {
        // Through a `Vec`: a `Box::new` of the array may build it on the stack first.
        let v: Vec<[Counter; 2]> = (0..N).map(|_| Default::default()).collect();
        Self {
            entries: v.into_boxed_slice().try_into().expect("N entries"),
        }
    }
}

impl<const N: usize> Traffic<N> {
    #[inline]
    fn add(&self, i: usize, bytes: usize) {
        self.add_n(i, 1, bytes);
    }

    /// Counts at index `i`; an index beyond `N` is ignored (ids are checked against their
    /// maximum when a snapshot is built, so none reaches here). Checked rather than masked:
    /// a mask would save the packet path a compare and a branch, but put a
    /// stray id's counts on another entry.
    #[inline]
    fn add_n(&self, i: usize, packets: u64, bytes: usize) {
        if let Some([p, b]) = self.entries.get(i) {
            p.add(packets);
            b.add(bytes as u64);
        }
    }

    /// (packets, bytes) at index `i`.
    pub fn get(&self, i: usize) -> (u64, u64) {
        match self.entries.get(i) {
            Some([p, b]) => (p.get(), b.get()),
            None => (0, 0),
        }
    }
}

/// One worker's counters.
#[derive(Debug, Default)]
pub struct WorkerCounters {
    /// Packets received from the port.
    pub rx_packets: Counter,
    /// Bytes received from the port.
    pub rx_bytes: Counter,
    /// Packets the port accepted for transmission.
    pub tx_packets: Counter,
    /// Bytes the port accepted for transmission.
    pub tx_bytes: Counter,
    /// Bursts that returned at least one packet.
    pub rx_bursts: Counter,
    /// Snapshots applied.
    pub snapshots_applied: Counter,
    /// NAT replies rewritten back to their VIP (socket mode: replies relayed to clients).
    pub nat_replies: Counter,
    /// Socket mode: VIP sockets a snapshot update could not bind (the VIP stays unserved by
    /// this worker until a later snapshot binds it).
    pub bind_errors: Counter,
    /// Socket mode, passive VIPs: ICMP errors read from session sockets' error queues.
    pub icmp_errors: Counter,
    /// Socket mode, passive VIPs: reports to the control plane lost to a full channel.
    pub passive_reports_lost: Counter,
    /// ARP requests and neighbour solicitations answered by the worker itself.
    pub neigh_answered: Counter,
    /// ARP and NDP frames handed to the control thread's neighbour cache.
    pub neigh_queued: Counter,
    /// Frames the control thread's neighbour logic asked this worker to send (requests,
    /// gratuitous ARP, unsolicited NA) that the port took.
    pub neigh_sent: Counter,
    /// ICMP errors about a NAT flow translated back toward the client.
    pub icmp_translated: Counter,
    /// Non-first IP fragments steered after their first fragment.
    pub fragments_steered: Counter,
    /// Tunnel: ICMP "fragmentation needed" / "packet too big" sent to clients whose datagram
    /// did not fit a tunnel (at most `encap::TOO_BIG_PER_SEC` a second per worker).
    pub icmp_too_big: Counter,
    /// Copies for mirror pools that the port took (also in `tx_packets`).
    pub mirror_copies: Counter,
    /// Copies for mirror pools not made for lack of a buffer (the original was sent).
    pub mirror_no_buffer: Counter,
    /// Copies for mirror pools the port refused, its TX ring full (the original was sent
    /// first).
    pub mirror_tx_full: Counter,
    /// Copies for mirror pools not sent because the pool's backend cannot be reached (no
    /// MAC address yet, or NAT to the other IP family).
    pub mirror_unsent: Counter,
    /// Drops, indexed by [`DropReason`].
    pub drops: [Counter; DropReason::ALL.len()],
    /// Packets that arrived for each VIP, indexed by [`VipId`].
    pub vip_rx: Traffic<MAX_VIPS>,
    /// Packets sent to each backend, indexed by [`BackendId`].
    pub backend_tx: Traffic<MAX_BACKENDS>,
}

/// Counters of one worker, padded so that no two workers share a cache line.
pub type SharedCounters = std::sync::Arc<CachePadded<WorkerCounters>>;

impl WorkerCounters {
    /// A fresh, zeroed, shareable set.
    pub fn shared() -> SharedCounters {
        std::sync::Arc::new(CachePadded::new(WorkerCounters::default()))
    }

    /// Counts a drop.
    #[inline]
    pub fn drop_packet(&self, reason: DropReason) {
        self.drops[reason as usize].add(1);
    }

    /// Drops counted for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize].get()
    }

    /// Sum of all drops.
    pub fn dropped_total(&self) -> u64 {
        self.drops.iter().map(Counter::get).sum()
    }

    /// Counts a packet for VIP `vip`.
    #[inline]
    pub fn vip_packet(&self, vip: VipId, bytes: usize) {
        self.vip_rx.add(usize::from(vip.0), bytes);
    }

    /// Counts `packets` packets of `bytes` bytes in all for VIP `vip`.
    #[inline]
    pub(crate) fn vip_packets(&self, vip: VipId, packets: u64, bytes: usize) {
        self.vip_rx.add_n(usize::from(vip.0), packets, bytes);
    }

    /// Counts a packet sent to backend `b`.
    #[inline]
    pub fn backend_packet(&self, b: BackendId, bytes: usize) {
        self.backend_tx.add(usize::from(b.0), bytes);
    }

    /// (packets, bytes) received for VIP `vip`.
    pub fn vip(&self, vip: VipId) -> (u64, u64) {
        self.vip_rx.get(usize::from(vip.0))
    }

    /// (packets, bytes) sent to backend `b`.
    pub fn backend(&self, b: BackendId) -> (u64, u64) {
        self.backend_tx.get(usize::from(b.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_index_by_id_and_reason() {
        let c = WorkerCounters::default();
        c.vip_packet(VipId(3), 100);
        c.vip_packet(VipId(3), 50);
        c.backend_packet(BackendId(7), 64);
        c.drop_packet(DropReason::NoVip);
        c.drop_packet(DropReason::NoVip);
        assert_eq!(c.vip(VipId(3)), (2, 150));
        assert_eq!(c.vip(VipId(2)), (0, 0));
        assert_eq!(c.backend(BackendId(7)), (1, 64));
        assert_eq!(c.dropped(DropReason::NoVip), 2);
        assert_eq!(c.dropped_total(), 2);
        // Out-of-range ids are ignored, never a panic.
        c.backend_packet(BackendId(u16::MAX), 1);
        assert_eq!(c.backend(BackendId(u16::MAX)), (0, 0));
    }

    #[test]
    fn drop_reason_table_matches_discriminants() {
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{}", r.name());
        }
    }
}
