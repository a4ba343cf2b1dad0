//! Batched kernel UDP I/O for socket mode: `recvmmsg`/`sendmmsg`, `epoll`, socket options.
//!
//! This is the only module of socket mode that calls the operating system directly; the proxy
//! logic in [`crate::socket`] is safe code on top of it. Three pieces:
//!
//! * [`Batch`]: preallocated `mmsghdr`/`iovec`/`sockaddr_storage` arrays and one contiguous
//!   buffer of `batch` slots. [`Batch::recv`] fills the slots with one `recvmmsg` call;
//!   [`Batch::send`] sends received slots (to any destinations) with one `sendmmsg` call,
//!   straight from the receive buffers: no copy, no allocation.
//! * [`Epoll`]: a level-triggered readiness set keyed by caller-chosen `u64` tokens.
//! * Socket constructors (`bind_vip`, `session_socket`, `set_transparent`) that set
//!   the options socket mode needs, with `socket2` where it has them and `setsockopt` where it
//!   does not (`SO_RCVBUFFORCE`, `IPV6_TRANSPARENT`).
//!
//! Contract: no function here panics; every OS failure comes back as an [`io::Error`].
//!
//! The `mmsghdr` arrays hold raw pointers into the batch's own arrays. Those pointers are
//! rewritten right before every system call from the arrays' current addresses, so they can
//! never dangle, and no Rust reference to the arrays is alive while the kernel writes them.
#![allow(unsafe_code)]

use std::fmt;
use std::io;
use std::mem;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use libc::{c_int, c_uint, c_void, sockaddr_in, sockaddr_in6, sockaddr_storage, socklen_t};
use socket2::{Domain, Protocol, Socket, Type};

/// Largest UDP payload a slot must hold: 65535 minus the 8-byte UDP header, rounded up.
pub(crate) const MAX_DATAGRAM: usize = 65536;

/// Most datagrams one `recvmmsg`/`sendmmsg` call may carry (the kernel's `UIO_MAXIOV`).
pub const MAX_BATCH: usize = 1024;

/// `SO_RCVBUFFORCE` from `asm-generic/socket.h` (the value on x86_64, aarch64, riscv and
/// powerpc; `libc` does not export it for Linux/glibc).
const SO_RCVBUFFORCE: c_int = 33;

const STORAGE_LEN: socklen_t = mem::size_of::<sockaddr_storage>() as socklen_t;

/// One datagram of a received batch.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// The payload (cut at the slot size when `truncated`).
    pub data: &'a [u8],
    /// The sender; `None` when the kernel reported no IPv4/IPv6 address.
    pub from: Option<SocketAddr>,
    /// The address it was sent to, on a socket with `set_pktinfo` (a wildcard VIP).
    pub to: Option<IpAddr>,
    /// The datagram was larger than the slot (`MSG_TRUNC`).
    pub truncated: bool,
}

/// One datagram to send: a received slot and its destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outgoing {
    /// Index of the received datagram (as passed to [`Batch::datagram`]).
    pub index: usize,
    /// Where it goes.
    pub to: SocketAddr,
    /// The source address to send from, on a socket bound to a wildcard address (so a reply
    /// leaves from the address its request was sent to); `None`: the kernel chooses.
    pub from: Option<IpAddr>,
}

/// Room for one `IP_PKTINFO` or `IPV6_PKTINFO` control message (`CMSG_SPACE` of an
/// `in6_pktinfo` is 40 bytes on 64-bit Linux), aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Cmsg([u8; 64]);

/// Preallocated state for one `recvmmsg` and one `sendmmsg` of up to `capacity` datagrams.
pub struct Batch {
    slot: usize,
    bufs: Box<[u8]>,
    received: usize,
    rx_hdrs: Box<[libc::mmsghdr]>,
    rx_iov: Box<[libc::iovec]>,
    rx_addrs: Box<[sockaddr_storage]>,
    rx_ctrl: Box<[Cmsg]>,
    tx_hdrs: Box<[libc::mmsghdr]>,
    tx_iov: Box<[libc::iovec]>,
    tx_addrs: Box<[sockaddr_storage]>,
    tx_ctrl: Box<[Cmsg]>,
}

// SAFETY: the raw pointers inside the `mmsghdr`/`iovec` arrays only ever point into arrays
// owned by this same `Batch` (they are rewritten before each system call), nothing else holds
// them, and every access needs `&mut self`; moving the whole batch to another thread moves the
// pointees with it.
unsafe impl Send for Batch {}

impl fmt::Debug for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("capacity", &self.rx_hdrs.len())
            .field("slot", &self.slot)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

fn zeroed_array<T>(n: usize) -> Box<[T]> {
    // SAFETY: only instantiated below with `mmsghdr`, `iovec`, `sockaddr_storage` and `Cmsg`,
    // plain C structs of integers, bytes and raw pointers for which all-zero bytes are a valid
    // value (null pointers, zero lengths, AF_UNSPEC).
    (0..n).map(|_| unsafe { mem::zeroed::<T>() }).collect()
}

impl Batch {
    /// A batch of `capacity` slots (clamped to `1..=`[`MAX_BATCH`]) of `slot` bytes each
    /// (at least 1; `MAX_DATAGRAM` holds any UDP datagram).
    pub fn new(capacity: usize, slot: usize) -> Self {
        let n = capacity.clamp(1, MAX_BATCH);
        let slot = slot.max(1);
        Self {
            slot,
            bufs: vec![0u8; n * slot].into_boxed_slice(),
            received: 0,
            rx_hdrs: zeroed_array(n),
            rx_iov: zeroed_array(n),
            rx_addrs: zeroed_array(n),
            rx_ctrl: zeroed_array(n),
            tx_hdrs: zeroed_array(n),
            tx_iov: zeroed_array(n),
            tx_addrs: zeroed_array(n),
            tx_ctrl: zeroed_array(n),
        }
    }

    /// How many datagrams one call moves at most.
    pub fn capacity(&self) -> usize {
        self.rx_hdrs.len()
    }

    /// Datagrams held from the last [`Batch::recv`].
    pub fn len(&self) -> usize {
        self.received
    }

    /// Whether the last [`Batch::recv`] returned nothing.
    pub fn is_empty(&self) -> bool {
        self.received == 0
    }

    /// Puts `data` (cut at the slot size) in slot `i` as if it had been received, so that
    /// [`Batch::send`] can send it: how traffic generators use a batch. Slots below `i` keep
    /// what they held. Returns false when `i` is beyond [`Batch::capacity`].
    pub fn stage(&mut self, i: usize, data: &[u8]) -> bool {
        let Some(h) = self.rx_hdrs.get_mut(i) else {
            return false;
        };
        let len = data.len().min(self.slot);
        let start = i * self.slot;
        self.bufs[start..start + len].copy_from_slice(&data[..len]);
        h.msg_len = len as u32;
        h.msg_hdr.msg_namelen = 0;
        h.msg_hdr.msg_flags = 0;
        self.received = self.received.max(i + 1);
        true
    }

    /// The payload of slot `i`, writable (to stamp a sequence number before a resend).
    pub fn payload_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        if i >= self.received {
            return None;
        }
        let len = (self.rx_hdrs[i].msg_len as usize).min(self.slot);
        let start = i * self.slot;
        self.bufs.get_mut(start..start + len)
    }

    /// Receives up to [`Batch::capacity`] datagrams from `fd` without blocking, replacing the
    /// previous batch, and returns how many arrived.
    ///
    /// # Errors
    /// The `recvmmsg` error; `WouldBlock` when nothing is queued.
    pub fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        self.received = 0;
        let n = self.rx_hdrs.len();
        let base = self.bufs.as_mut_ptr();
        let iov = self.rx_iov.as_mut_ptr();
        let addrs = self.rx_addrs.as_mut_ptr();
        let ctrl = self.rx_ctrl.as_mut_ptr();
        for (i, h) in self.rx_hdrs.iter_mut().enumerate() {
            // SAFETY: `i < n` and `bufs`, `rx_iov`, `rx_addrs` and `rx_ctrl` have `n * slot`,
            // `n`, `n` and `n` elements, so every offset stays inside its allocation.
            let (buf, v, a, cm) = unsafe {
                (
                    base.add(i * self.slot),
                    iov.add(i),
                    addrs.add(i),
                    ctrl.add(i),
                )
            };
            // SAFETY: `v` points to element `i` of `rx_iov` (in bounds, see above); no
            // reference to that array is alive.
            unsafe {
                v.write(libc::iovec {
                    iov_base: buf.cast::<c_void>(),
                    iov_len: self.slot,
                })
            };
            h.msg_hdr.msg_name = a.cast::<c_void>();
            h.msg_hdr.msg_namelen = STORAGE_LEN;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            // Filled only on sockets with `set_pktinfo`; the kernel sets the length it used.
            h.msg_hdr.msg_control = cm.cast::<c_void>();
            h.msg_hdr.msg_controllen = mem::size_of::<Cmsg>();
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: `fd` is a valid open descriptor for the call's duration (borrowed); the
        // `n` headers were just pointed at `n` live iovecs of `slot` writable bytes each,
        // `n` sockaddr_storage of `msg_namelen` bytes and `n` control buffers of
        // `msg_controllen` bytes, all owned by `self`, which is mutably borrowed, so nothing
        // else reads or writes them meanwhile. A null timeout
        // is allowed. The return value is checked below.
        let r = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.rx_hdrs.as_mut_ptr(),
                n as c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        self.received = (r as usize).min(n);
        Ok(self.received)
    }

    /// Datagram `i` of the last [`Batch::recv`], or `None` when `i` is out of range.
    #[inline]
    pub fn datagram(&self, i: usize) -> Option<Datagram<'_>> {
        if i >= self.received {
            return None;
        }
        let h = &self.rx_hdrs[i];
        let len = (h.msg_len as usize).min(self.slot);
        let start = i * self.slot;
        Some(Datagram {
            data: self.bufs.get(start..start + len)?,
            from: decode_addr(&self.rx_addrs[i], h.msg_hdr.msg_namelen),
            to: pktinfo_dst(&h.msg_hdr),
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
        })
    }

    /// Sends received datagrams `out[k].index` to `out[k].to` from `fd` with one `sendmmsg`
    /// call and returns how many of the first ones the kernel accepted (`sendmmsg` stops at
    /// the first failure; call again with the rest).
    ///
    /// # Errors
    /// `InvalidInput` when an index is not a received datagram or `out` is longer than
    /// [`Batch::capacity`]; otherwise the error of the first datagram (`WouldBlock` when the
    /// socket's send buffer is full).
    pub fn send(&mut self, fd: BorrowedFd<'_>, out: &[Outgoing]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if out.len() > self.tx_hdrs.len() || out.iter().any(|o| o.index >= self.received) {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        let base = self.bufs.as_mut_ptr();
        // Raw pointers taken once: no reference to `tx_iov` or `tx_addrs` is created after
        // this point, so the pointers stored into the headers stay valid until the call.
        let iov = self.tx_iov.as_mut_ptr();
        let addrs = self.tx_addrs.as_mut_ptr();
        let ctrl = self.tx_ctrl.as_mut_ptr();
        for (k, o) in out.iter().enumerate() {
            let len = (self.rx_hdrs[o.index].msg_len as usize).min(self.slot);
            // SAFETY: `o.index < received <= n` and `k < out.len() <= n`, so the offsets stay
            // inside `bufs` (`n * slot` bytes), `tx_iov` and `tx_addrs` (`n` elements each).
            let (buf, v, a) = unsafe { (base.add(o.index * self.slot), iov.add(k), addrs.add(k)) };
            // SAFETY: `a` points to element `k` of `tx_addrs` (in bounds, initialised); the
            // temporary `&mut` is the only reference to it and ends with the call.
            let namelen = encode_addr(&o.to, unsafe { &mut *a });
            // SAFETY: `v` points to element `k` of `tx_iov` (in bounds); no reference to that
            // array is alive.
            unsafe {
                v.write(libc::iovec {
                    iov_base: buf.cast::<c_void>(),
                    iov_len: len,
                })
            };
            let h = &mut self.tx_hdrs[k];
            h.msg_hdr.msg_name = a.cast::<c_void>();
            h.msg_hdr.msg_namelen = namelen;
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            match o.from {
                Some(from) => {
                    // SAFETY: `k < out.len() <= n` elements of `tx_ctrl`; the temporary
                    // `&mut` is the only reference to that element and ends with the call.
                    let cm = unsafe { &mut *ctrl.add(k) };
                    h.msg_hdr.msg_controllen = encode_pktinfo(from, cm);
                    h.msg_hdr.msg_control = std::ptr::from_mut(cm).cast::<c_void>();
                }
                None => {
                    h.msg_hdr.msg_control = std::ptr::null_mut();
                    h.msg_hdr.msg_controllen = 0;
                }
            }
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: `fd` is a valid open descriptor for the call (borrowed); the first
        // `out.len()` headers were just pointed at live iovecs (each within a received slot)
        // and encoded addresses of `msg_namelen` bytes, all owned by the mutably borrowed
        // `self`; the kernel only reads them. The return value is checked below.
        let r = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                self.tx_hdrs.as_mut_ptr(),
                out.len() as c_uint,
                libc::MSG_DONTWAIT,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }
}

/// The destination address of an `IP_PKTINFO`/`IPV6_PKTINFO` message in `h`'s control data.
fn pktinfo_dst(h: &libc::msghdr) -> Option<IpAddr> {
    if h.msg_control.is_null() || h.msg_controllen < mem::size_of::<libc::cmsghdr>() {
        return None;
    }
    // SAFETY: `h` describes a control buffer of `msg_controllen` bytes that the kernel
    // filled (or that is all zero); CMSG_FIRSTHDR/CMSG_NXTHDR stay within it and return
    // null at its end.
    let mut c = unsafe { libc::CMSG_FIRSTHDR(h) };
    while !c.is_null() {
        // SAFETY: `c` is non-null and points to a whole `cmsghdr` inside the buffer.
        let (level, ty) = unsafe { ((*c).cmsg_level, (*c).cmsg_type) };
        match (level, ty) {
            (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                // SAFETY: the kernel wrote an `in_pktinfo` after this header (its type says
                // so); read unaligned, as CMSG_DATA promises no alignment for the payload.
                let p = unsafe {
                    libc::CMSG_DATA(c)
                        .cast::<libc::in_pktinfo>()
                        .read_unaligned()
                };
                return Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr))));
            }
            (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                // SAFETY: as above, with an `in6_pktinfo`.
                let p = unsafe {
                    libc::CMSG_DATA(c)
                        .cast::<libc::in6_pktinfo>()
                        .read_unaligned()
                };
                return Some(IpAddr::V6(Ipv6Addr::from(p.ipi6_addr.s6_addr)));
            }
            _ => {}
        }
        // SAFETY: `c` is a header inside `h`'s buffer; the next one, if any, is too.
        c = unsafe { libc::CMSG_NXTHDR(h, c) };
    }
    None
}

/// Writes a control message that makes a send leave from `from` into `buf`; returns its
/// length for `msg_controllen`.
fn encode_pktinfo(from: IpAddr, buf: &mut Cmsg) -> usize {
    buf.0 = [0; 64];
    // SAFETY: a zeroed msghdr is valid; it only describes `buf` to the CMSG_* helpers.
    let mut h: libc::msghdr = unsafe { mem::zeroed() };
    h.msg_control = std::ptr::from_mut(buf).cast::<c_void>();
    h.msg_controllen = mem::size_of::<Cmsg>();
    let (level, ty, len) = match from {
        IpAddr::V4(_) => (
            libc::IPPROTO_IP,
            libc::IP_PKTINFO,
            mem::size_of::<libc::in_pktinfo>(),
        ),
        IpAddr::V6(_) => (
            libc::IPPROTO_IPV6,
            libc::IPV6_PKTINFO,
            mem::size_of::<libc::in6_pktinfo>(),
        ),
    };
    // SAFETY: `h` describes `buf` (64 bytes, aligned for cmsghdr), which holds a header and
    // either payload (CMSG_SPACE of both is at most 40), so CMSG_FIRSTHDR is non-null and
    // the writes below stay inside `buf`.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&h);
        (*c).cmsg_level = level;
        (*c).cmsg_type = ty;
        (*c).cmsg_len = libc::CMSG_LEN(len as c_uint) as usize;
        match from {
            IpAddr::V4(a) => libc::CMSG_DATA(c)
                .cast::<libc::in_pktinfo>()
                .write_unaligned(libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(a).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                }),
            IpAddr::V6(a) => libc::CMSG_DATA(c)
                .cast::<libc::in6_pktinfo>()
                .write_unaligned(libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    ipi6_ifindex: 0,
                }),
        }
        libc::CMSG_SPACE(len as c_uint) as usize
    }
}

/// Turns on `IP_PKTINFO` (IPv4) or `IPV6_RECVPKTINFO` (IPv6): each received datagram says
/// which local address it was sent to ([`Datagram::to`]). A socket bound to a wildcard
/// address needs it to answer from that address.
///
/// # Errors
/// The `setsockopt` error.
pub(crate) fn set_pktinfo(sock: &Socket, ipv6: bool) -> io::Result<()> {
    let one: c_int = 1;
    let (level, name) = if ipv6 {
        (libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)
    } else {
        (libc::IPPROTO_IP, libc::IP_PKTINFO)
    };
    // SAFETY: the fd is valid (owned by `sock`); the option value is a live `c_int` whose
    // size is passed; the result is checked.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            std::ptr::addr_of!(one).cast::<c_void>(),
            mem::size_of::<c_int>() as socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes `addr` into `storage` as a `sockaddr_in`/`sockaddr_in6` and returns its length.
fn encode_addr(addr: &SocketAddr, storage: &mut sockaddr_storage) -> socklen_t {
    let p: *mut sockaddr_storage = storage;
    match addr {
        SocketAddr::V4(a) => {
            let sin = sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: `sockaddr_storage` is larger than and aligned for every sockaddr type
            // (that is its purpose); `p` comes from a live `&mut`.
            unsafe { p.cast::<sockaddr_in>().write(sin) };
            mem::size_of::<sockaddr_in>() as socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, `sockaddr_storage` holds and aligns a `sockaddr_in6`.
            unsafe { p.cast::<sockaddr_in6>().write(sin6) };
            mem::size_of::<sockaddr_in6>() as socklen_t
        }
    }
}

/// Reads the address the kernel wrote into `storage` (`len` bytes).
#[inline]
fn decode_addr(storage: &sockaddr_storage, len: socklen_t) -> Option<SocketAddr> {
    let p: *const sockaddr_storage = storage;
    match c_int::from(storage.ss_family) {
        libc::AF_INET if len as usize >= mem::size_of::<sockaddr_in>() => {
            // SAFETY: the family says the kernel wrote a `sockaddr_in` of `len` bytes (checked
            // above); `sockaddr_storage` is aligned for it.
            let sin = unsafe { &*p.cast::<sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 if len as usize >= mem::size_of::<sockaddr_in6>() => {
            // SAFETY: as above, for a `sockaddr_in6`.
            let sin6 = unsafe { &*p.cast::<sockaddr_in6>() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// A level-triggered epoll set whose events carry caller-chosen `u64` tokens.
pub struct Epoll {
    fd: OwnedFd,
    events: Box<[libc::epoll_event]>,
    ready: usize,
}

impl fmt::Debug for Epoll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Epoll")
            .field("fd", &self.fd)
            .field("capacity", &self.events.len())
            .field("ready", &self.ready)
            .finish()
    }
}

impl Epoll {
    /// An epoll instance reporting up to `capacity` (at least 1) ready descriptors per wait.
    ///
    /// # Errors
    /// The `epoll_create1` error (`EMFILE`, `ENOMEM`).
    pub fn new(capacity: usize) -> io::Result<Self> {
        // SAFETY: plain system call with a constant flag; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            // SAFETY: `fd` was just returned by epoll_create1 and is owned by nobody else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            events: (0..capacity.max(1))
                .map(|_| libc::epoll_event { events: 0, u64: 0 })
                .collect(),
            ready: 0,
        })
    }

    fn ctl(&self, op: c_int, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: both descriptors are valid for the call (one owned, one borrowed) and `ev`
        // is a live, initialised event; the result is checked.
        let r = unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), op, fd.as_raw_fd(), &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Watches `fd` for readability, reporting `token`.
    ///
    /// # Errors
    /// The `epoll_ctl` error.
    pub fn add(&self, fd: BorrowedFd<'_>, token: u64) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token)
    }

    /// Stops watching `fd` (closing it does the same).
    ///
    /// # Errors
    /// The `epoll_ctl` error (`ENOENT` when `fd` was not watched).
    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0)
    }

    /// Waits up to `timeout` (rounded up to whole milliseconds) for readiness and returns how
    /// many descriptors are ready; their tokens are `Epoll::token``(0..n)`. A signal
    /// interrupting the wait counts as a timeout.
    ///
    /// # Errors
    /// The `epoll_wait` error.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<usize> {
        self.ready = 0;
        let mut ms = timeout.as_millis().min(i32::MAX as u128) as c_int;
        if Duration::from_millis(ms as u64) < timeout && ms < i32::MAX {
            ms += 1;
        }
        // SAFETY: the epoll fd is owned and valid; `events` is a live array of
        // `events.len()` entries the kernel may write; the result is checked.
        let r = unsafe {
            libc::epoll_wait(
                self.fd.as_raw_fd(),
                self.events.as_mut_ptr(),
                self.events.len().min(i32::MAX as usize) as c_int,
                ms,
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(e)
            };
        }
        self.ready = (r as usize).min(self.events.len());
        Ok(self.ready)
    }

    /// The token of ready descriptor `i` of the last wait (0 when out of range).
    #[inline]
    pub(crate) fn token(&self, i: usize) -> u64 {
        if i < self.ready {
            // A by-value copy: `epoll_event` is packed on x86_64, so no reference is taken.
            let ev = self.events[i];
            ev.u64
        } else {
            0
        }
    }
}

fn udp_socket(family_of: &SocketAddr) -> io::Result<Socket> {
    let sock = Socket::new(
        Domain::for_address(*family_of),
        Type::DGRAM,
        Some(Protocol::UDP),
    )?;
    if family_of.is_ipv6() {
        // A v6 socket never receives v4 traffic: a v4 VIP on the same port is its own socket.
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// Sets the receive buffer to `bytes`: `SO_RCVBUFFORCE` when the process may exceed
/// `net.core.rmem_max` (CAP_NET_ADMIN), else `SO_RCVBUF` (capped by the kernel).
///
/// # Errors
/// The `SO_RCVBUF` error.
pub fn set_rcvbuf(sock: &Socket, bytes: usize) -> io::Result<()> {
    let v = bytes.min(i32::MAX as usize / 2) as c_int;
    // SAFETY: the fd is valid (owned by `sock`); the option value is a live `c_int` whose
    // size is passed; the result is checked.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_RCVBUFFORCE,
            std::ptr::addr_of!(v).cast::<c_void>(),
            mem::size_of::<c_int>() as socklen_t,
        )
    };
    if r == 0 {
        return Ok(());
    }
    sock.set_recv_buffer_size(bytes)
}

/// VIP addresses this process's workers have bound, each with its number of sockets.
/// Locked only when a VIP socket is opened or closed, never per datagram.
static OWN_VIPS: Mutex<Vec<(SocketAddr, usize)>> = Mutex::new(Vec::new());

/// Whether binding `a` and `b` would collide without `SO_REUSEPORT` (v6 sockets are
/// v6-only, so the families never meet).
fn overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// This process's share of a VIP address; dropping it (with its socket) lets a later
/// first bind probe again.
#[derive(Debug)]
pub(crate) struct VipClaim(SocketAddr);

impl Drop for VipClaim {
    fn drop(&mut self) {
        let mut own = OWN_VIPS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = own.iter().position(|(a, _)| *a == self.0) {
            own[i].1 -= 1;
            if own[i].1 == 0 {
                own.swap_remove(i);
            }
        }
    }
}

/// A nonblocking UDP socket bound to `vip` with `SO_REUSEPORT` (so every worker binds its own
/// and the kernel spreads datagrams over them) and a receive buffer of `rcvbuf` bytes.
///
/// `SO_REUSEPORT` would also let another process of the same user join and take part of the
/// clients, silently; so the first socket of an address this process does not hold yet is
/// preceded by an exclusive probe bind (no reuse flags), which fails while anything else
/// holds it.
///
/// # Errors
/// `AddrInUse` naming the cause when another process holds the address; otherwise the first
/// failing step's error (typically `EADDRNOTAVAIL` from `bind`).
pub(crate) fn bind_vip(vip: SocketAddr, rcvbuf: usize) -> io::Result<(Socket, VipClaim)> {
    let mut own = OWN_VIPS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !own.iter().any(|(a, _)| overlaps(a, &vip)) {
        let probe = udp_socket(&vip)?;
        if let Err(e) = probe.bind(&vip.into()) {
            if e.kind() == io::ErrorKind::AddrInUse {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "already bound by another process (another spray, or a server on this port)",
                ));
            }
            return Err(e);
        }
    }
    let sock = udp_socket(&vip)?;
    sock.set_reuse_port(true)?;
    if rcvbuf > 0 {
        set_rcvbuf(&sock, rcvbuf)?;
    }
    if vip.ip().is_unspecified() {
        set_pktinfo(&sock, vip.is_ipv6())?;
    }
    sock.bind(&vip.into())?;
    match own.iter_mut().find(|(a, _)| *a == vip) {
        Some((_, n)) => *n += 1,
        None => own.push((vip, 1)),
    }
    Ok((sock, VipClaim(vip)))
}

/// Sets `IP_TRANSPARENT` (IPv4) or `IPV6_TRANSPARENT` (IPv6) on `sock`, which lets it bind to
/// and send from an address that is not local.
///
/// # Errors
/// `EPERM` without CAP_NET_ADMIN (or CAP_NET_RAW).
pub(crate) fn set_transparent(sock: &Socket, ipv6: bool) -> io::Result<()> {
    if !ipv6 {
        return sock.set_ip_transparent(true);
    }
    let one: c_int = 1;
    // SAFETY: the fd is valid (owned by `sock`); the option value is a live `c_int` whose
    // size is passed; the result is checked.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_IPV6,
            libc::IPV6_TRANSPARENT,
            std::ptr::addr_of!(one).cast::<c_void>(),
            mem::size_of::<c_int>() as socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Checks that this process may use transparent sockets of `vip`'s family, by setting the
/// option on a throwaway socket.
///
/// # Errors
/// As [`set_transparent`].
pub(crate) fn probe_transparent(vip: &SocketAddr) -> io::Result<()> {
    let sock = udp_socket(vip)?;
    set_transparent(&sock, vip.is_ipv6())
}

/// The upstream socket of one client session, of the family of `vip`: bound to an ephemeral
/// port, or with `transparent_src`, made transparent and bound (with `SO_REUSEADDR`) to the
/// client's own address and port, so that backends see the client as the source.
///
/// # Errors
/// The first failing step's error.
pub(crate) fn session_socket(
    vip: &SocketAddr,
    transparent_src: Option<SocketAddr>,
) -> io::Result<Socket> {
    let sock = udp_socket(vip)?;
    match transparent_src {
        Some(src) => {
            set_transparent(&sock, vip.is_ipv6())?;
            sock.set_reuse_address(true)?;
            sock.bind(&src.into())?;
        }
        None => {
            let any = match vip {
                SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
                SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
            };
            sock.bind(&any.into())?;
        }
    }
    Ok(sock)
}

/// Local ports of this process's (non-transparent) session sockets, a bit per port and
/// family. Each such port belongs to one socket at a time, so setting and clearing are exact.
static SESSION_PORTS: [[AtomicU64; 1024]; 2] = [const { [const { AtomicU64::new(0) }; 1024] }; 2];

fn port_bit(v6: bool, port: u16) -> (&'static AtomicU64, u64) {
    (
        &SESSION_PORTS[usize::from(v6)][usize::from(port >> 6)],
        1 << (port & 63),
    )
}

/// A session socket's local port, marked as this process's while the claim lives.
#[derive(Debug)]
pub(crate) struct SessionPort {
    v6: bool,
    port: u16,
}

impl SessionPort {
    /// Marks `sock`'s local port.
    ///
    /// # Errors
    /// The `getsockname` error.
    pub(crate) fn claim(sock: &Socket) -> io::Result<Self> {
        let local = sock
            .local_addr()?
            .as_socket()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let (v6, port) = (local.is_ipv6(), local.port());
        let (word, bit) = port_bit(v6, port);
        word.fetch_or(bit, Ordering::Relaxed);
        Ok(Self { v6, port })
    }
}

impl Drop for SessionPort {
    fn drop(&mut self) {
        let (word, bit) = port_bit(self.v6, self.port);
        word.fetch_and(!bit, Ordering::Relaxed);
    }
}

/// Whether `from`'s port is the local port of one of this process's session sockets (the
/// caller also checks that `from`'s address is this host's).
pub(crate) fn is_session_port(from: &SocketAddr) -> bool {
    let (word, bit) = port_bit(from.is_ipv6(), from.port());
    word.load(Ordering::Relaxed) & bit != 0
}

/// Turns on `IP_RECVERR` (IPv4) or `IPV6_RECVERR` (IPv6): ICMP errors about datagrams sent
/// from `sock` are queued on its error queue (read with [`recv_error`]) instead of being
/// dropped, which is how socket mode notices an unreachable backend without a check.
///
/// Side effect: the kernel also reports each error once as the socket's pending error, so
/// the next send or receive on it may fail with `ECONNREFUSED` (or `EHOSTUNREACH`, ...)
/// without having done anything; callers retry ([`is_icmp_errno`]).
///
/// # Errors
/// The `setsockopt` error.
pub(crate) fn set_recverr(sock: &Socket, ipv6: bool) -> io::Result<()> {
    let one: c_int = 1;
    let (level, name) = if ipv6 {
        (libc::SOL_IPV6, libc::IPV6_RECVERR)
    } else {
        (libc::SOL_IP, libc::IP_RECVERR)
    };
    // SAFETY: the fd is valid (owned by `sock`); the option value is a live `c_int` whose
    // size is passed; the result is checked.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            std::ptr::addr_of!(one).cast::<c_void>(),
            mem::size_of::<c_int>() as socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `e` is an errno an ICMP error turns into on a UDP socket (the pending error that
/// `IP_RECVERR` leaves behind): the operation did nothing and may be retried.
pub(crate) fn is_icmp_errno(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EPROTO
                | libc::EHOSTDOWN
                | libc::ENONET
        )
    )
}

/// One entry of a socket's error queue (`struct sock_extended_err`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueuedError {
    /// The errno the error stands for (`ECONNREFUSED` for a port unreachable).
    pub errno: i32,
    /// Where it came from: `SO_EE_ORIGIN_ICMP` (2), `SO_EE_ORIGIN_ICMP6` (3), ...
    pub origin: u8,
    /// ICMP type (3 = destination unreachable; ICMPv6: 1).
    pub icmp_type: u8,
    /// ICMP code (3 = port unreachable; ICMPv6: 4).
    pub icmp_code: u8,
    /// Destination of the datagram that caused the error (the backend address:port).
    pub dest: Option<SocketAddr>,
    /// Address of the node that sent the ICMP error (`SO_EE_OFFENDER`).
    pub offender: Option<SocketAddr>,
}

impl QueuedError {
    /// Whether the error is an ICMP (or ICMPv6) message from the network.
    pub(crate) fn is_icmp(&self) -> bool {
        self.origin == libc::SO_EE_ORIGIN_ICMP || self.origin == libc::SO_EE_ORIGIN_ICMP6
    }
}

/// Reads one entry from `fd`'s error queue (`recvmsg` with `MSG_ERRQUEUE`), without blocking
/// and without allocating; `Ok(None)` when the queue is empty.
///
/// # Errors
/// The `recvmsg` error, other than "queue empty".
pub(crate) fn recv_error(fd: BorrowedFd<'_>) -> io::Result<Option<QueuedError>> {
    // The original datagram comes back as data; only its destination (msg_name) matters,
    // so a few bytes of it are enough (the rest is cut, MSG_TRUNC).
    let mut data = [0u8; 16];
    // u64 elements keep the control buffer aligned for `cmsghdr`.
    let mut control = [0u64; 64];
    // SAFETY: all-zero bytes are a valid `sockaddr_storage` (AF_UNSPEC) and `msghdr` (null
    // pointers, zero lengths).
    let mut name: sockaddr_storage = unsafe { mem::zeroed() };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast::<c_void>(),
        iov_len: data.len(),
    };
    msg.msg_name = std::ptr::addr_of_mut!(name).cast::<c_void>();
    msg.msg_namelen = STORAGE_LEN;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast::<c_void>();
    msg.msg_controllen = mem::size_of_val(&control);
    // SAFETY: `fd` is valid for the call (borrowed); `msg` points at live stack buffers of
    // the sizes it states (name, one iovec over `data`, `control`), which outlive the call
    // and are not otherwise referenced meanwhile. The result is checked.
    let r = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(e)
        };
    }
    let dest = decode_addr(&name, msg.msg_namelen);
    // SAFETY: `msg` was filled by a successful recvmsg, so its control pointer and length
    // describe the initialised part of `control`; CMSG_FIRSTHDR only reads those fields.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: non-null pointers from CMSG_FIRSTHDR/CMSG_NXTHDR point to a complete,
        // aligned `cmsghdr` inside `control`.
        let h = unsafe { &*cmsg };
        let is_err = (h.cmsg_level == libc::SOL_IP && h.cmsg_type == libc::IP_RECVERR)
            || (h.cmsg_level == libc::SOL_IPV6 && h.cmsg_type == libc::IPV6_RECVERR);
        let need = mem::size_of::<libc::sock_extended_err>();
        // SAFETY: CMSG_LEN is plain arithmetic on its argument.
        let min_len = unsafe { libc::CMSG_LEN(need as u32) } as usize;
        if is_err && h.cmsg_len as usize >= min_len {
            // SAFETY: the header says its data holds at least a `sock_extended_err`
            // (checked above); `read_unaligned` copes with any alignment.
            let ee = unsafe {
                libc::CMSG_DATA(cmsg)
                    .cast::<libc::sock_extended_err>()
                    .read_unaligned()
            };
            // SAFETY: the kernel puts the offender's sockaddr right after the extended
            // error (SO_EE_OFFENDER); the address is only computed here.
            let off = unsafe {
                libc::SO_EE_OFFENDER(libc::CMSG_DATA(cmsg).cast::<libc::sock_extended_err>())
            };
            let data_end = cmsg as usize + h.cmsg_len as usize;
            let offender = if off as usize + mem::size_of::<sockaddr_in>() <= data_end {
                // SAFETY: at least a `sockaddr_in` fits before the end of this cmsg (checked
                // above); `read_unaligned` copes with any alignment; the storage is zeroed
                // first so a short address leaves AF_UNSPEC or zeros behind.
                let mut st: sockaddr_storage = unsafe { mem::zeroed() };
                let avail = (data_end - off as usize).min(mem::size_of::<sockaddr_storage>());
                // SAFETY: `avail` bytes are readable at `off` (inside the cmsg) and
                // writable at `st` (its size is the cap).
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        off.cast::<u8>(),
                        std::ptr::addr_of_mut!(st).cast::<u8>(),
                        avail,
                    )
                };
                decode_addr(&st, avail as socklen_t)
            } else {
                None
            };
            return Ok(Some(QueuedError {
                errno: ee.ee_errno as i32,
                origin: ee.ee_origin,
                icmp_type: ee.ee_type,
                icmp_code: ee.ee_code,
                dest,
                offender,
            }));
        }
        // SAFETY: `cmsg` is a valid header inside `msg`'s control buffer (see above).
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    // An error-queue entry without an extended error: report what is known.
    Ok(Some(QueuedError {
        errno: 0,
        origin: 0,
        icmp_type: 0,
        icmp_code: 0,
        dest,
        offender: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsFd;

    fn reuseport_socket(addr: SocketAddr) -> Socket {
        let s = udp_socket(&addr).unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&addr.into()).unwrap();
        s
    }

    #[test]
    fn only_this_process_workers_share_a_vip() {
        // Another process's reuseport socket (what a second spray would hold).
        let foreign = reuseport_socket("127.0.0.1:0".parse().unwrap());
        let taken = foreign.local_addr().unwrap().as_socket().unwrap();
        let e = bind_vip(taken, 0).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        assert!(e.to_string().contains("another process"), "{e}");
        drop(foreign);
        // Free now: the first worker probes and binds, the second joins without a probe.
        let (a, claim_a) = bind_vip(taken, 0).unwrap();
        let (b, claim_b) = bind_vip(taken, 0).unwrap();
        // A wildcard of the same port overlaps what this process holds: no probe either.
        let any = SocketAddr::from((Ipv4Addr::UNSPECIFIED, taken.port()));
        let (c, claim_c) = bind_vip(any, 0).unwrap();
        drop((a, claim_a, b, claim_b, c, claim_c));
        // All closed: the address is exclusive again.
        let plain = UdpSocket::bind(taken).unwrap();
        drop(plain);
    }

    #[test]
    fn addresses_round_trip_through_sockaddr_storage() {
        for a in [
            "198.18.0.10:514",
            "0.0.0.0:0",
            "[2001:db8::1]:2055",
            "[::1]:65535",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            // SAFETY: all-zero bytes are a valid `sockaddr_storage` (AF_UNSPEC).
            let mut st: sockaddr_storage = unsafe { mem::zeroed() };
            let len = encode_addr(&addr, &mut st);
            assert_eq!(decode_addr(&st, len), Some(addr), "{a}");
            assert_eq!(decode_addr(&st, 2), None, "short length must not decode");
        }
    }

    #[test]
    fn batch_receives_and_resends_without_copying() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            tx.send_to(&[i; 3], rx.local_addr().unwrap()).unwrap();
        }
        let mut b = Batch::new(4, 16);
        let mut got = 0;
        for _ in 0..1000 {
            got = b.recv(rx.as_fd()).unwrap_or(0);
            if got > 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!((1..=4).contains(&got));
        let d = b.datagram(0).unwrap();
        assert_eq!(d.data, &[0, 0, 0]);
        assert_eq!(d.from, Some(tx.local_addr().unwrap()));
        assert!(!d.truncated);
        assert!(b.datagram(got).is_none());
        let out = [Outgoing {
            index: 0,
            to: sink.local_addr().unwrap(),
            from: None,
        }];
        assert_eq!(b.send(tx.as_fd(), &out).unwrap(), 1);
        let mut buf = [0u8; 16];
        let (n, from) = sink.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from),
            (&[0u8, 0, 0][..], tx.local_addr().unwrap())
        );
        let bad = [Outgoing {
            index: 9,
            to: sink.local_addr().unwrap(),
            from: None,
        }];
        assert!(b.send(tx.as_fd(), &bad).is_err());
    }

    #[test]
    fn oversized_datagram_is_flagged_truncated() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(&[7u8; 100], rx.local_addr().unwrap()).unwrap();
        let mut b = Batch::new(2, 10);
        let mut ep = Epoll::new(4).unwrap();
        ep.add(rx.as_fd(), 42).unwrap();
        assert_eq!(ep.wait(Duration::from_secs(2)).unwrap(), 1);
        assert_eq!(ep.token(0), 42);
        assert_eq!(b.recv(rx.as_fd()).unwrap(), 1);
        let d = b.datagram(0).unwrap();
        assert!(d.truncated);
        assert_eq!(d.data.len(), 10);
        ep.delete(rx.as_fd()).unwrap();
        assert_eq!(ep.wait(Duration::ZERO).unwrap(), 0);
    }

    #[test]
    fn icmp_port_unreachable_lands_on_the_error_queue() {
        let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let s = session_socket(&dead_addr, None).unwrap();
        set_recverr(&s, false).unwrap();
        assert_eq!(recv_error(s.as_fd()).unwrap(), None);
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        let mut b = Batch::new(1, 16);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(b.recv(rx.as_fd()).unwrap(), 1);
        let out = [Outgoing {
            index: 0,
            to: dead_addr,
            from: None,
        }];
        assert_eq!(b.send(s.as_fd(), &out).unwrap(), 1);
        let mut ep = Epoll::new(1).unwrap();
        ep.add(s.as_fd(), 7).unwrap();
        // Loopback delivers the ICMP error at once; epoll reports it (EPOLLERR).
        assert_eq!(ep.wait(Duration::from_secs(2)).unwrap(), 1);
        let e = recv_error(s.as_fd()).unwrap().expect("an error is queued");
        assert!(e.is_icmp(), "{e:?}");
        assert_eq!(e.errno, libc::ECONNREFUSED);
        assert_eq!((e.icmp_type, e.icmp_code), (3, 3));
        assert_eq!(e.dest, Some(dead_addr));
        assert_eq!(e.offender.map(|a| a.ip()), Some(dead_addr.ip()));
        assert_eq!(recv_error(s.as_fd()).unwrap(), None);
        // The pending error is reported once, then the socket works again.
        let r = b.send(s.as_fd(), &out);
        if let Err(e) = r {
            assert!(is_icmp_errno(&e), "{e}");
        }
    }
}
