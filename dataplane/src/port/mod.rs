//! Packet I/O: the [`Port`] trait and its implementations.
//!
//! A port hands out and takes back bursts of mutable packet buffers; the worker never knows
//! where they came from. Bursts travel in caller-owned `Vec`s whose capacity is reserved once
//! at start-up, so a burst never allocates.

use crate::model::MacAddr;

pub mod memory;

#[cfg(feature = "dpdk")]
pub mod dpdk;

/// One packet buffer owned by the worker that received it.
pub trait PacketBuf {
    /// The frame, starting at the Ethernet header (for a copy from [`Port::copy_frame`],
    /// possibly only the headers it owns: see [`PacketBuf::frame_len`]).
    fn data(&self) -> &[u8];
    /// The frame, writable in place.
    fn data_mut(&mut self) -> &mut [u8];
    /// Length of the whole frame: `data().len()`, except for a copy from [`Port::copy_frame`]
    /// whose payload is shared.
    #[inline]
    fn frame_len(&self) -> usize {
        self.data().len()
    }
    /// Whether the NIC verified this frame's IPv4 header checksum (its RX checksum offload,
    /// where the port turned it on: [`Port::rx_ip_checksum_offload`]). Only
    /// [`RxIpChecksum::Good`] changes anything: the fast path then skips its own check.
    #[inline]
    fn rx_ip_checksum(&self) -> RxIpChecksum {
        RxIpChecksum::Unknown
    }
    /// Grows the frame by `n` bytes at its front (their content is undefined), for headers
    /// put in front of a datagram; `false`, with the frame unchanged, when the buffer has no
    /// such room. The datagram is not copied: the room is the buffer's headroom.
    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        let _ = n;
        false
    }
    /// Shortens the frame to its first `len` bytes (no-op when it is not longer).
    #[inline]
    fn truncate(&mut self, len: usize) {
        let _ = len;
    }
}

/// What the NIC says of a received frame's IPv4 header checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RxIpChecksum {
    /// Not checked (no offload, not IPv4, or the device does not say).
    #[default]
    Unknown,
    /// Checked and valid: Spray need not check it again.
    Good,
    /// Checked and wrong (Spray checks it again and drops it as `BadIpChecksum`).
    Bad,
}

/// A source and sink of Ethernet frames: one RX and one TX queue.
pub trait Port {
    /// The buffer type this port lends out.
    type Buf: PacketBuf;

    /// Appends up to `max` received packets to `bufs` and returns how many were added.
    fn rx_burst(&mut self, bufs: &mut Vec<Self::Buf>, max: usize) -> usize;

    /// Transmits the packets in `bufs`, in order, leaving `bufs` empty, and returns how many
    /// the port accepted. The rest are freed by the port; the caller counts them as
    /// [`crate::counters::DropReason::TxFull`].
    fn tx_burst(&mut self, bufs: &mut Vec<Self::Buf>) -> usize;

    /// Gives back a packet that will not be sent (a drop).
    fn free(&mut self, buf: Self::Buf);

    /// This port's own MAC address: the source of every frame it sends.
    fn mac(&self) -> crate::model::MacAddr;

    /// Whether this port's buffers carry the NIC's verdict on IPv4 header checksums
    /// ([`PacketBuf::rx_ip_checksum`]); read once per burst, so ports without the offload
    /// pay nothing per packet.
    #[inline]
    fn rx_ip_checksum_offload(&self) -> bool {
        false
    }

    /// A fresh buffer holding a copy of `frame`, for the few frames a worker originates
    /// (ARP/NDP from [`crate::neigh`]); `None` when the port cannot originate frames (the
    /// default) or has no free buffer. Called between bursts, never per received packet.
    fn alloc_frame(&mut self, frame: &[u8]) -> Option<Self::Buf> {
        let _ = frame;
        None
    }

    /// A buffer that sends the same frame as `original`, for a copy to a mirror pool: its
    /// first `headers` bytes (the headers up to the UDP payload) are its own, lent by
    /// [`PacketBuf::data_mut`] to be rewritten; the rest may be shared with `original`, which
    /// the caller no longer writes. The default copies the whole frame with
    /// [`Port::alloc_frame`]; `None` when the port has no free buffer.
    fn copy_frame(&mut self, original: &Self::Buf, headers: usize) -> Option<Self::Buf> {
        let _ = headers;
        self.alloc_frame(original.data())
    }
}

/// How to set up one DPDK port. Plain data outside the `dpdk` feature, so that the config
/// (`[[dpdk.ports]]`) holds it in every build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSettings {
    /// RX (and TX) queue pairs, one per worker.
    pub queues: u16,
    /// RX descriptors per queue.
    pub rx_ring: u16,
    /// TX descriptors per queue.
    pub tx_ring: u16,
    /// Packets per RX burst.
    pub burst: u16,
    /// Per-lcore mempool cache size.
    pub mempool_cache: u32,
    /// Source MAC of sent frames instead of the device's own.
    pub mac: Option<MacAddr>,
    /// Receive frames for any destination MAC (needed when `mac` overrides the device's).
    pub promiscuous: bool,
    /// Copies for mirror pools share the original's payload instead of copying it, where
    /// the device sends multi-segment frames ([`Port::copy_frame`]).
    pub share_copies: bool,
}

impl Default for PortSettings {
    fn default() -> Self {
        Self {
            queues: 1,
            rx_ring: 1024,
            tx_ring: 1024,
            burst: 32,
            mempool_cache: 256,
            mac: None,
            promiscuous: true,
            share_copies: false,
        }
    }
}
