//! Neighbour handling (ARP, IPv6 neighbour discovery) for ports that own the wire.
//!
//! A kernel-bypass port gets no help from the kernel: nobody answers "who has the VIP?",
//! nobody finds the backends' MAC addresses. This module does both, in two halves:
//!
//! * **In the worker, per frame, no allocation** (`handle_arp`, `handle_ndp`): an ARP
//!   request or a neighbour solicitation for a VIP or the port's own address is turned into
//!   the reply in the buffer it arrived in and sent back on the same port (VLAN tag kept).
//!   ARP replies, gratuitous ARP and neighbour advertisements are copied into a fixed-size
//!   [`NeighFrame`] and pushed onto a bounded channel toward the control thread
//!   ([`WorkerNeigh::to_control`]); when it is full the frame is counted as
//!   [`DropReason::NeighQueueFull`]. Everything else ARP/NDP is [`DropReason::NeighNotForUs`].
//! * **In the control thread, sans-I/O** ([`Neighbours`], quinn's verbs): it tracks the
//!   addresses that need a MAC (backends without a configured `mac`, the gateways), sends ARP
//!   requests / neighbour solicitations with retries, keeps answers for a reachable time,
//!   re-probes (unicast) before expiry, withdraws a MAC that stops answering, and announces
//!   each VIP that becomes active with gratuitous ARP / an unsolicited neighbour
//!   advertisement. Frames it wants sent come out of [`Neighbours::poll_transmit`]; the
//!   control loop hands them to one worker ([`WorkerNeigh::from_control`]), which copies
//!   them into a port buffer ([`crate::port::Port::alloc_frame`]) between bursts.
//!
//! Resolved MACs reach workers in the snapshot: the control thread fills
//! [`crate::model::Backend::mac`] of every backend that has no static MAC with
//! [`Neighbours::fill_macs`], and the gateway MACs with
//! [`crate::model::Snapshot::with_gateway_macs`], whenever [`Neighbours::generation`]
//! moves. A worker never looks a MAC up on its own, so it can never pair a backend with a
//! MAC learnt for another address: a backend without a MAC is counted as
//! [`DropReason::NoBackendMac`] and dropped. Configured MACs are static entries and are never
//! replaced.
//!
//! Timers follow RFC 4861's defaults (retransmit 1 s, 3 solicitations, reachable 30 s);
//! announcements follow RFC 5227 (2 gratuitous ARP, 2 s apart).
//!
//! The parts: `responder` (the worker's half), `resolver` (the control thread's half) and
//! `frames` (writing and reading ARP/NDP frames, for both halves and for tests).

mod frames;
mod resolver;
mod responder;

use std::fmt;

#[cfg(any(test, feature = "testkit"))]
pub(crate) use self::frames::icmpv6_sum;
pub use self::frames::{arp_frame, multicast_mac, ndp_frame, sender_of, solicited_node};
pub use self::resolver::{NeighConfig, NeighState, Neighbours};
pub use self::responder::WorkerNeigh;
pub(crate) use self::responder::{handle_arp, handle_ndp, is_ndp, Verdict};

#[cfg(doc)]
use crate::counters::DropReason;

/// Largest ARP/NDP frame carried between workers and the control thread.
pub const MAX_FRAME: usize = 128;
const ETHERTYPE_ARP: u16 = 0x0806;
const ICMPV6: u8 = 58;
const NS: u8 = 135;
const NA: u8 = 136;
const BROADCAST: [u8; 6] = [0xff; 6];

/// A copy of one ARP/NDP frame, fixed size so a bounded channel of them never allocates.
#[derive(Clone, Copy)]
pub struct NeighFrame {
    len: u8,
    bytes: [u8; MAX_FRAME],
}

impl NeighFrame {
    /// A copy of `frame`, truncated to [`MAX_FRAME`] bytes (ARP and NDP frames are shorter).
    pub fn new(frame: &[u8]) -> Self {
        let n = frame.len().min(MAX_FRAME);
        let mut bytes = [0u8; MAX_FRAME];
        bytes[..n].copy_from_slice(&frame[..n]);
        Self {
            len: n as u8,
            bytes,
        }
    }

    /// The frame.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Debug for NeighFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NeighFrame({} bytes)", self.len)
    }
}
