//! The worker's half of neighbour handling: per frame, no allocation. Requests for our
//! addresses are answered in the buffer they arrived in; replies and announcements are queued
//! for the control thread's resolver.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::counters::DropReason;
use crate::model::{MacAddr, Snapshot};
use crate::wire::IpFrame;

use super::frames::{icmpv6_sum, rd16};
#[cfg(doc)]
use super::Neighbours;
use super::{NeighFrame, NA, NS};

/// A worker's side of neighbour handling: its own addresses and its queues.
#[derive(Debug, Clone, Default)]
pub struct WorkerNeigh {
    /// The port's IPv4 address (answered like a VIP; the backends' NAT gateway).
    pub local_v4: Option<Ipv4Addr>,
    /// The port's IPv6 address.
    pub local_v6: Option<Ipv6Addr>,
    /// Bounded queue toward the control thread's [`Neighbours`]; `None`: replies are
    /// counted as [`DropReason::NeighNotForUs`].
    pub to_control: Option<Sender<NeighFrame>>,
    /// Frames the control thread wants sent through this worker's port.
    pub from_control: Option<Receiver<NeighFrame>>,
}

impl WorkerNeigh {
    /// Whether `ip` is answered for: a VIP of `snap` or one of the port's addresses.
    #[inline]
    fn ours(&self, snap: &Snapshot, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) if self.local_v4 == Some(a) => true,
            IpAddr::V6(a) if self.local_v6 == Some(a) => true,
            _ => snap.is_vip_addr(ip),
        }
    }

    #[inline]
    fn queue(&self, frame: &[u8]) -> Result<Verdict, DropReason> {
        let tx = self.to_control.as_ref().ok_or(DropReason::NeighNotForUs)?;
        match tx.try_send(NeighFrame::new(frame)) {
            Ok(()) => Ok(Verdict::Queued),
            Err(TrySendError::Full(_)) => Err(DropReason::NeighQueueFull),
            Err(TrySendError::Disconnected(_)) => Err(DropReason::NeighNotForUs),
        }
    }
}

/// What a worker does with an ARP/NDP frame that is not dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The buffer now holds the answer: transmit it.
    Answered,
    /// A copy went to the control thread: free the buffer.
    Queued,
}

/// ARP in the worker: answers requests for our addresses in place, queues replies and
/// gratuitous ARP for the control thread.
///
/// # Errors
/// [`DropReason::Truncated`], [`DropReason::BadNeigh`] (not Ethernet/IPv4 ARP),
/// [`DropReason::NeighNotForUs`], [`DropReason::NeighQueueFull`].
pub(crate) fn handle_arp(
    frame: &mut [u8],
    l3: usize,
    snap: &Snapshot,
    port_mac: MacAddr,
    ctx: &WorkerNeigh,
) -> Result<Verdict, DropReason> {
    let a = frame.get(l3..l3 + 28).ok_or(DropReason::Truncated)?;
    if rd16(a, 0) != 1 || rd16(a, 2) != 0x0800 || a[4] != 6 || a[5] != 4 {
        return Err(DropReason::BadNeigh);
    }
    let spa = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
    let tpa = Ipv4Addr::new(a[24], a[25], a[26], a[27]);
    match rd16(a, 6) {
        1 if spa == tpa => ctx.queue(frame), // gratuitous: someone announces itself
        1 if ctx.ours(snap, IpAddr::V4(tpa)) => {
            // RFC 826: swap sender and target, fill in our hardware address, opcode reply.
            let mut sha = [0u8; 6];
            sha.copy_from_slice(&a[8..14]);
            let a = &mut frame[l3..l3 + 28];
            a[7] = 2;
            a[18..24].copy_from_slice(&sha);
            a[24..28].copy_from_slice(&spa.octets());
            a[8..14].copy_from_slice(&port_mac.0);
            a[14..18].copy_from_slice(&tpa.octets());
            frame[0..6].copy_from_slice(&sha);
            frame[6..12].copy_from_slice(&port_mac.0);
            Ok(Verdict::Answered)
        }
        1 => Err(DropReason::NeighNotForUs),
        2 => ctx.queue(frame),
        _ => Err(DropReason::BadNeigh),
    }
}

/// Whether an ICMPv6 type belongs to neighbour discovery (RFC 4861: 133 to 137).
#[inline]
pub(crate) fn is_ndp(icmp_type: u8) -> bool {
    (133..=137).contains(&icmp_type)
}

/// NDP in the worker: answers neighbour solicitations for our addresses in place, queues
/// advertisements (and solicitations from hosts probing a VIP address, RFC 4862 DAD) for
/// the control thread.
///
/// # Errors
/// [`DropReason::BadNeigh`] (hop limit not 255, bad checksum, code not 0, too short),
/// [`DropReason::NeighNotForUs`], [`DropReason::NeighQueueFull`].
pub(crate) fn handle_ndp(
    frame: &mut [u8],
    ipf: &IpFrame,
    snap: &Snapshot,
    port_mac: MacAddr,
    ctx: &WorkerNeigh,
) -> Result<Verdict, DropReason> {
    let (l3, icmp, end) = (ipf.l3, ipf.l4, ipf.end.min(frame.len()));
    if icmp + 24 > end || frame[l3 + 7] != 255 || frame[icmp + 1] != 0 {
        return Err(DropReason::BadNeigh);
    }
    let (IpAddr::V6(src), IpAddr::V6(dst)) = (ipf.src, ipf.dst) else {
        return Err(DropReason::BadNeigh);
    };
    if icmpv6_sum(&src.octets(), &dst.octets(), &frame[icmp..end]) != 0 {
        return Err(DropReason::BadNeigh);
    }
    let mut t = [0u8; 16];
    t.copy_from_slice(&frame[icmp + 8..icmp + 24]);
    let target = Ipv6Addr::from(t);
    match frame[icmp] {
        NS if !ctx.ours(snap, IpAddr::V6(target)) => Err(DropReason::NeighNotForUs),
        NS if src.is_unspecified() => ctx.queue(frame), // DAD probe for our address
        NS => {
            // RFC 4861 7.2.4: solicited advertisement to the soliciting address, with our
            // link-layer address when there is room (always, for a multicast solicitation:
            // it carried a source link-layer option of the same size).
            let with_opt = end - icmp >= 32;
            let len: u16 = if with_opt { 32 } else { 24 };
            let mut smac = [0u8; 6];
            smac.copy_from_slice(&frame[6..12]);
            frame[0..6].copy_from_slice(&smac);
            frame[6..12].copy_from_slice(&port_mac.0);
            frame[l3..l3 + 4].copy_from_slice(&[0x60, 0, 0, 0]);
            frame[l3 + 4..l3 + 6].copy_from_slice(&len.to_be_bytes());
            frame[l3 + 7] = 255;
            frame[l3 + 8..l3 + 24].copy_from_slice(&target.octets());
            frame[l3 + 24..l3 + 40].copy_from_slice(&src.octets());
            let m = &mut frame[icmp..icmp + usize::from(len)];
            m[0] = NA;
            m[1] = 0;
            m[2..4].copy_from_slice(&[0, 0]);
            m[4..8].copy_from_slice(&[0x60, 0, 0, 0]); // solicited, override
            if with_opt {
                m[24] = 2; // target link-layer address
                m[25] = 1;
                m[26..32].copy_from_slice(&port_mac.0);
            }
            let c = icmpv6_sum(&target.octets(), &src.octets(), m);
            m[2..4].copy_from_slice(&c.to_be_bytes());
            Ok(Verdict::Answered)
        }
        NA => ctx.queue(frame),
        _ => Err(DropReason::NeighNotForUs),
    }
}
