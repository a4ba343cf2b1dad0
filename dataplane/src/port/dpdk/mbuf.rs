//! [`Mbuf`]: the owning handle of one DPDK packet buffer.
//!
//! The type system tracks who owns each mbuf. An `Mbuf` is built only from a pointer that
//! `rte_eth_rx_burst` or `rte_pktmbuf_alloc` just returned, so it is the sole owner; dropping
//! it frees the buffer back to its mempool, and [`Mbuf::into_raw`] gives ownership up (to
//! `rte_eth_tx_burst`). Whatever a TX burst did not accept stays an `Mbuf` and frees itself:
//! DPDK's free-the-remainder rule, enforced by `Drop`.
//!
//! `NonNull` makes the handle `!Send`: an mbuf never leaves the lcore that received it (the
//! mempool's per-lcore cache assumes so).
//!
//! Lending the data as `&mut [u8]` is sound because a fresh mbuf has refcount 1 and the NIC
//! is done with it: nothing else reads or writes those bytes while the handle lives (shared,
//! refcount > 1 mbufs are never built into an `Mbuf`; a debug assertion checks it).
//!
//! One exception, for copies to mirror pools: [`Mbuf::share_tail`] builds a two-segment
//! copy whose first segment (the headers) is its own and whose second refers to the
//! original's payload (an indirect mbuf: DPDK's refcount keeps the original's buffer until
//! both are sent). The handle lends only its first segment; the payload is never written
//! through either handle after sharing, and both go to the port in the same poll.

use std::ptr::NonNull;

use super::ffi;
use crate::port::{PacketBuf, RxIpChecksum};

/// One packet buffer, owned by the worker that received it; dropping it frees it.
///
/// `repr(transparent)`: a `[Mbuf]` has the layout of a `[*mut rte_mbuf]` (with no NULL), so
/// [`crate::port::dpdk::DpdkPort`] lets `rte_eth_rx_burst` write straight into a burst
/// `Vec<Mbuf>` and hands a `Vec<Mbuf>`'s storage to `rte_eth_tx_burst` as it is.
#[derive(Debug)]
#[repr(transparent)]
pub struct Mbuf(NonNull<ffi::rte_mbuf>);

impl Mbuf {
    /// Takes ownership of `m`.
    ///
    /// # Safety
    /// `m` must come straight from `rte_eth_rx_burst` or `rte_pktmbuf_alloc` (a
    /// single-segment mbuf with refcount 1 that nothing else refers to), and must not be
    /// used through any other pointer afterwards.
    #[inline]
    pub unsafe fn from_raw(m: NonNull<ffi::rte_mbuf>) -> Self {
        // SAFETY: the caller hands over a live mbuf (see `# Safety`).
        debug_assert_eq!(unsafe { ffi::spray_mbuf_refcnt_read(m.as_ptr()) }, 1);
        Self(m)
    }

    /// Gives up ownership: the caller (in practice `rte_eth_tx_burst`) becomes responsible
    /// for freeing the buffer.
    #[inline]
    pub fn into_raw(self) -> NonNull<ffi::rte_mbuf> {
        let p = self.0;
        std::mem::forget(self);
        p
    }

    /// The raw pointer, still owned by `self` (for a burst call that may take it over).
    #[inline]
    pub(crate) fn as_ptr(&self) -> *mut ffi::rte_mbuf {
        self.0.as_ptr()
    }

    /// Length of the packet data.
    ///
    /// Reads `data_len` from the mbuf header itself rather than through the shim's
    /// `spray_pktmbuf_data_len`: it is read several times per packet, and through the shim
    /// each read is a call into C (see docs/benchmarks.md, DPDK section).
    #[inline]
    pub fn len(&self) -> usize {
        // SAFETY: `self.0` is a live mbuf this handle owns; `data_len` is a plain field of
        // the header that only its owner writes (bindgen laid the struct out from DPDK's own
        // header, so the offset is the C one).
        usize::from(unsafe { (*self.0.as_ptr()).data_len })
    }

    /// Start of the packet data: `buf_addr + data_off`, what `rte_pktmbuf_mtod` computes
    /// (read in Rust for the same reason as [`Mbuf::len`]).
    #[inline]
    fn data_ptr(&self) -> *mut u8 {
        let m = self.0.as_ptr();
        // SAFETY: live, owned mbuf (see `len`); `buf_addr` and `data_off` are plain fields.
        let p = unsafe { (*m).buf_addr.cast::<u8>().add(usize::from((*m).data_off)) };
        // SAFETY: as above; the shim's mtod is the reference this must agree with.
        debug_assert_eq!(p, unsafe { ffi::spray_pktmbuf_mtod(m) }.cast::<u8>());
        p
    }

    /// Length of the whole frame, every segment included (`pkt_len`).
    #[inline]
    pub fn frame_len(&self) -> usize {
        // SAFETY: live, owned mbuf (see `len`); `pkt_len` is a plain field.
        unsafe { (*self.0.as_ptr()).pkt_len as usize }
    }

    /// Whether the packet is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Allocates a buffer from `pool` and appends `frame` to it (tests and benchmarks).
    /// Returns `None` when the pool is empty or `frame` does not fit.
    ///
    /// # Safety
    /// `pool` must be a live mempool of packet buffers (from `rte_pktmbuf_pool_create`).
    pub unsafe fn alloc_with(pool: NonNull<ffi::rte_mempool>, frame: &[u8]) -> Option<Self> {
        // SAFETY: the pool is live (caller's contract).
        let m = NonNull::new(unsafe { ffi::spray_pktmbuf_alloc(pool.as_ptr()) })?;
        // SAFETY: `m` was just allocated: refcount 1, nobody else knows it.
        let mbuf = unsafe { Self::from_raw(m) };
        let len = u16::try_from(frame.len()).ok()?;
        // SAFETY: `m` is live and owned; append returns NULL when `len` bytes do not fit.
        let dst = unsafe { ffi::spray_pktmbuf_append(m.as_ptr(), len) };
        if dst.is_null() {
            return None; // `mbuf` frees the buffer
        }
        // SAFETY: append reserved `len` writable bytes at `dst`, which do not overlap `frame`
        // (a Rust slice cannot point into an mbuf nobody else has seen).
        unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), dst.cast::<u8>(), frame.len()) };
        Some(mbuf)
    }
}

impl Mbuf {
    /// A copy of `original` that owns only its first `headers` bytes: a fresh mbuf from
    /// `pool` holding them, chained to an indirect mbuf that refers to the rest of
    /// `original`'s data (no copy of the payload). The copy's [`PacketBuf::data`] is its
    /// `headers` bytes, its [`Mbuf::frame_len`] the whole frame. `None` when the pool is
    /// empty or `headers` is not shorter than `original`.
    ///
    /// # Safety
    /// `pool` must be a live packet mempool, and the port that sends the copy must accept
    /// multi-segment frames (`RTE_ETH_TX_OFFLOAD_MULTI_SEGS`). `original`'s bytes past
    /// `headers` are then shared: the caller must not write them while either lives.
    pub unsafe fn share_tail(
        pool: NonNull<ffi::rte_mempool>,
        original: &Mbuf,
        headers: usize,
    ) -> Option<Self> {
        if original.is_chained() || headers >= original.len() {
            return None;
        }
        let head = original.data().get(..headers)?;
        // SAFETY: the pool is live (caller's contract).
        let copy = unsafe { Self::alloc_with(pool, head) }?;
        // SAFETY: `original` is a live single-segment mbuf; the clone is a fresh indirect
        // mbuf from the live `pool` attached to it (its refcount now counts the clone).
        let tail =
            NonNull::new(unsafe { ffi::rte_pktmbuf_clone(original.as_ptr(), pool.as_ptr()) })?;
        // SAFETY: `tail` is the clone just made, owned here; `headers` < its data length, so
        // adj succeeds; chain links it after `copy`'s only segment (or fails, and then the
        // tail is freed here and `copy` by its handle).
        unsafe {
            ffi::spray_pktmbuf_adj(tail.as_ptr(), headers as u16);
            if ffi::spray_pktmbuf_chain(copy.as_ptr(), tail.as_ptr()) != 0 {
                ffi::spray_pktmbuf_free(tail.as_ptr());
                return None;
            }
        }
        Some(copy)
    }

    /// Every segment's bytes, in order: the whole frame (tests and tools; allocates).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.frame_len());
        let mut m = self.0.as_ptr();
        while !m.is_null() {
            // SAFETY: `m` is this handle's mbuf or a segment chained to it, live while the
            // handle is; a segment's `data_len` bytes from `buf_addr + data_off` are packet
            // data, only read here (a shared payload is never written).
            unsafe {
                let p = (*m).buf_addr.cast::<u8>().add(usize::from((*m).data_off));
                out.extend_from_slice(std::slice::from_raw_parts(p, usize::from((*m).data_len)));
                m = (*m).next;
            }
        }
        out
    }

    /// Whether the frame has more than one segment (a copy from [`Mbuf::share_tail`]).
    #[inline]
    fn is_chained(&self) -> bool {
        // SAFETY: live, owned mbuf (see `len`); `next` is a plain field.
        !unsafe { (*self.0.as_ptr()).next }.is_null()
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: built only from a pointer rx_burst/alloc just returned, and `into_raw`
        // forgets `self` before tx_burst takes it, so this handle is the sole owner.
        unsafe { ffi::spray_pktmbuf_free(self.0.as_ptr()) }
    }
}

impl PacketBuf for Mbuf {
    /// The first segment: the whole frame, except for a copy from [`Mbuf::share_tail`].
    #[inline]
    fn data(&self) -> &[u8] {
        // SAFETY: an mbuf's first `data_len` bytes from `buf_addr + data_off` are initialised
        // packet data inside its first segment, and this handle is their only user (refcount
        // 1; a shared payload is in a second segment, never lent).
        unsafe { std::slice::from_raw_parts(self.data_ptr().cast_const(), self.len()) }
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`; `&mut self` makes the borrow exclusive, and the NIC no longer
        // writes to a received buffer.
        unsafe { std::slice::from_raw_parts_mut(self.data_ptr(), self.len()) }
    }

    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        let m = self.0.as_ptr();
        // SAFETY: live, owned mbuf (see `data`); what `rte_pktmbuf_prepend` does, on the
        // plain header fields: `data_off` bytes of headroom lie in the first segment's buffer
        // before its data, so moving the start back by at most that stays inside it.
        unsafe {
            let Ok(n16) = u16::try_from(n) else {
                return false;
            };
            if n16 > (*m).data_off
                || u32::from((*m).data_len) + u32::from(n16) > u32::from(u16::MAX)
            {
                return false;
            }
            (*m).data_off -= n16;
            (*m).data_len += n16;
            (*m).pkt_len += u32::from(n16);
        }
        true
    }

    #[inline]
    fn frame_len(&self) -> usize {
        Mbuf::frame_len(self)
    }

    #[inline]
    fn truncate(&mut self, len: usize) {
        if self.is_chained() {
            debug_assert!(false, "truncate of a shared copy");
            return; // never asked of a copy; `pkt_len` would then need every segment
        }
        let m = self.0.as_ptr();
        // SAFETY: live, owned, single-segment mbuf; shortening `data_len` (and `pkt_len` with
        // it, one segment) only gives bytes up, as `rte_pktmbuf_trim` does.
        unsafe {
            if let Ok(len) = u16::try_from(len) {
                if len < (*m).data_len {
                    (*m).data_len = len;
                    (*m).pkt_len = u32::from(len);
                }
            }
        }
    }

    #[inline]
    fn rx_ip_checksum(&self) -> RxIpChecksum {
        // SAFETY: the mbuf is live and owned by this handle (see `data`); `ol_flags` is a
        // plain field the driver set on receive.
        let flags = unsafe { (*self.0.as_ptr()).ol_flags };
        match flags & RX_IP_CKSUM_MASK {
            RX_IP_CKSUM_GOOD => RxIpChecksum::Good,
            RX_IP_CKSUM_BAD => RxIpChecksum::Bad,
            // UNKNOWN (0) and NONE (both bits: "not correct in the packet, but valid").
            _ => RxIpChecksum::Unknown,
        }
    }
}

impl Mbuf {
    /// Sets the IPv4 header checksum verdict as a NIC's RX offload would (`Unknown` clears
    /// it): for stand-ins of a NIC, such as the template port of `bench/src/dpdk_micro.rs`.
    #[inline]
    pub fn set_rx_ip_checksum(&mut self, verdict: RxIpChecksum) {
        let bits = match verdict {
            RxIpChecksum::Good => RX_IP_CKSUM_GOOD,
            RxIpChecksum::Bad => RX_IP_CKSUM_BAD,
            RxIpChecksum::Unknown => 0,
        };
        // SAFETY: the mbuf is live and owned by this handle (see `data`), and `&mut self`
        // makes this the only access; `ol_flags` is a plain field.
        unsafe {
            let m = self.0.as_ptr();
            (*m).ol_flags = (*m).ol_flags & !RX_IP_CKSUM_MASK | bits;
        }
    }
}

/// `RTE_MBUF_F_RX_IP_CKSUM_*` from rte_mbuf_core.h (shim.c asserts the values at compile
/// time).
const RX_IP_CKSUM_BAD: u64 = 1 << 4;
const RX_IP_CKSUM_GOOD: u64 = 1 << 7;
const RX_IP_CKSUM_MASK: u64 = RX_IP_CKSUM_BAD | RX_IP_CKSUM_GOOD;
