//! The raw generator: the same datagrams as [`super::send`], written as whole Ethernet
//! frames to an `AF_PACKET` socket (`sendmmsg`, `PACKET_QDISC_BYPASS`). The frames come from
//! the dataplane's own builder ([`udp_frame`], [`fix_udp_checksum`]).
//!
//! The UDP sender pays the kernel's socket, UDP and IP output path for every datagram; on a
//! small machine that path, not the balancer, sets the highest rate a testbed can offer.
//! Frames written to a packet socket skip it (like netsniff-ng's trafgen): the sender builds
//! the Ethernet, IPv4 and UDP headers once, and per datagram rewrites only the payload
//! header (sequence number, send time) and the UDP checksum. What the receiving side sees is
//! the same datagram from the same address and port.
//!
//! Addresses: the source address and port are those of a UDP socket connected to the target
//! (held open for the run, so the port stays ours); the source MAC is the interface's; the
//! destination MAC is the next hop's (the target itself when it is on-link, else the
//! gateway of the route to it), read from the kernel's ARP table after one empty datagram
//! to the target's port 9 made the kernel resolve it. IPv4 only.

use std::fs;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use dataplane::service::MacAddr;
use dataplane::testkit::frames::{fix_udp_checksum, udp_frame, FrameSpec};

use super::send::{pace, SendReport, SendSettings};
use super::{monotonic_ns, Header, Timeline, MIN_PAYLOAD, PREFIX};

/// Ethernet, IPv4 (no options) and UDP headers of an untagged frame: where the payload starts.
const HEAD: usize = 14 + 20 + 8;

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn iface_mac(iface: &str) -> io::Result<[u8; 6]> {
    let text = fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .map_err(|e| io::Error::new(e.kind(), format!("interface {iface}: {e}")))?;
    parse_mac(&text).ok_or_else(|| io::Error::other(format!("interface {iface}: no MAC")))
}

fn iface_index(iface: &str) -> io::Result<i32> {
    fs::read_to_string(format!("/sys/class/net/{iface}/ifindex"))
        .map_err(|e| io::Error::new(e.kind(), format!("interface {iface}: {e}")))?
        .trim()
        .parse()
        .map_err(io::Error::other)
}

/// The next hop toward `to` out of `iface`, from `/proc/net/route` (longest prefix).
fn next_hop(iface: &str, to: Ipv4Addr) -> io::Result<Ipv4Addr> {
    let text = fs::read_to_string("/proc/net/route")?;
    let dst = u32::from(to);
    let mut best: Option<(u32, Ipv4Addr)> = None;
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 8 || f[0] != iface {
            continue;
        }
        // Addresses are in network order, printed as a native-endian u32.
        let ip = |s: &str| {
            u32::from(Ipv4Addr::from(
                u32::from_str_radix(s, 16).unwrap_or(0).to_ne_bytes(),
            ))
        };
        let (net, gw, mask) = (ip(f[1]), ip(f[2]), ip(f[7]));
        let better = match best {
            None => true,
            Some((m, _)) => mask.count_ones() > m,
        };
        if dst & mask == net && better {
            let hop = if gw == 0 { to } else { Ipv4Addr::from(gw) };
            best = Some((mask.count_ones(), hop));
        }
    }
    best.map(|(_, h)| h)
        .ok_or_else(|| io::Error::other(format!("no route to {to} through {iface}")))
}

fn arp_lookup(iface: &str, ip: Ipv4Addr) -> Option<[u8; 6]> {
    let text = fs::read_to_string("/proc/net/arp").ok()?;
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        // IP address, HW type, Flags (0x2: complete), HW address, Mask, Device
        (f.len() >= 6 && f[5] == iface && f[0] == ip.to_string() && f[2] == "0x2")
            .then(|| parse_mac(f[3]))
            .flatten()
    })
}

fn resolve(iface: &str, sock: &UdpSocket, target: SocketAddrV4) -> io::Result<[u8; 6]> {
    let hop = next_hop(iface, *target.ip())?;
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(mac) = arp_lookup(iface, hop) {
            return Ok(mac);
        }
        if Instant::now() >= deadline {
            return Err(io::Error::other(format!(
                "the MAC of next hop {hop} on {iface} is not known (no ARP answer)"
            )));
        }
        // An empty datagram to the discard port makes the kernel resolve the next hop; no
        // balancer forwards it (it is not the service port).
        let _ = sock.send_to(&[], SocketAddrV4::new(*target.ip(), 9));
        thread::sleep(Duration::from_millis(50));
    }
}

fn packet_socket(ifindex: i32) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex;
    // Protocol 0: the socket sends and receives nothing, so it costs no receive copies.
    // SAFETY: `sll` is a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::from_ref(&sll).cast::<libc::sockaddr>(),
            mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let one: libc::c_int = 1;
    // SAFETY: an int option of the size passed; best effort (the qdisc path also works).
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            std::ptr::from_ref(&one).cast::<libc::c_void>(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    Ok(fd)
}

/// Sends like [`super::send::send`], through `iface` as raw frames.
///
/// # Errors
/// When the target is not IPv4, or the interface, the route or the next hop's MAC cannot be
/// found, or the packet socket cannot be opened (needs CAP_NET_RAW).
pub fn send(s: &SendSettings, iface: &str, stop: &AtomicBool) -> io::Result<SendReport> {
    let SocketAddr::V4(target) = s.target else {
        return Err(io::Error::other("the raw sender is IPv4 only"));
    };
    let udp = UdpSocket::bind(
        s.bind
            .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
    )?;
    udp.connect(target)?;
    let SocketAddr::V4(local) = udp.local_addr()? else {
        return Err(io::Error::other("the raw sender is IPv4 only"));
    };
    let src_mac = iface_mac(iface)?;
    let dst_mac = resolve(iface, &udp, target)?;
    let fd = packet_socket(iface_index(iface)?)?;

    let n = s.batch.clamp(1, 1024);
    let size = s.size.max(MIN_PAYLOAD);
    let mut payload: Vec<u8> = (0..size).map(|i| b'a' + (i % 26) as u8).collect();
    payload[..PREFIX.len()].copy_from_slice(PREFIX);
    let spec = FrameSpec {
        src_mac: MacAddr(src_mac),
        dst_mac: MacAddr(dst_mac),
        ..FrameSpec::new(local.into(), target.into())
    };
    let mut frames: Vec<Vec<u8>> = (0..n).map(|_| udp_frame(&spec, &payload)).collect();
    let mut iov: Vec<libc::iovec> = frames
        .iter_mut()
        .map(|f| libc::iovec {
            iov_base: f.as_mut_ptr().cast(),
            iov_len: f.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain data; all-zero is a valid value (no name, no control).
    let mut msgs: Vec<libc::mmsghdr> = (0..n).map(|_| unsafe { mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = std::ptr::from_mut(v);
        m.msg_hdr.msg_iovlen = 1;
    }

    let mut timeline = (s.timeline_ms > 0).then(|| Timeline::new(s.timeline_ms * 1_000_000));
    let start = Instant::now();
    let start_ns = monotonic_ns();
    let mut seq: u64 = 0;
    let mut send_errors = 0u64;
    while start.elapsed() < s.duration && !stop.load(Ordering::Relaxed) {
        if s.rate > 0 {
            pace(start + Duration::from_secs_f64(seq as f64 / s.rate as f64));
        }
        let now_ns = monotonic_ns();
        for (i, f) in frames.iter_mut().enumerate() {
            Header {
                stream: s.stream,
                seq: seq + i as u64,
                sent_ns: now_ns,
            }
            .emit(&mut f[HEAD + PREFIX.len()..]);
            fix_udp_checksum(f);
        }
        let mut done = 0usize;
        while done < n {
            // SAFETY: `msgs[done..]` are valid mmsghdrs whose iovecs point into `frames`,
            // which outlive the call and are not touched during it.
            let rc = unsafe {
                libc::sendmmsg(
                    fd.as_raw_fd(),
                    msgs[done..].as_mut_ptr(),
                    (n - done) as libc::c_uint,
                    0,
                )
            };
            if rc > 0 {
                done += rc as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::ENOBUFS) => thread::yield_now(),
                Some(libc::EINTR) => {}
                _ => {
                    send_errors += 1;
                    break;
                }
            }
        }
        // Frames not sent keep their sequence numbers out of the count: the next batch
        // starts after the last one sent.
        seq += done as u64;
        if let Some(t) = timeline.as_mut() {
            t.add(now_ns, done as u64);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What `send` does to each frame: the header stamped at `HEAD`, then the checksum.
    #[test]
    fn a_stamped_frame_is_the_datagram_sinks_parse_with_a_valid_checksum() {
        use dataplane::testkit::frames::checksums_valid;
        let spec = FrameSpec::new(
            "198.18.0.1:40000".parse().unwrap(),
            "198.18.0.2:514".parse().unwrap(),
        );
        let mut payload = vec![b'a'; MIN_PAYLOAD];
        payload[..PREFIX.len()].copy_from_slice(PREFIX);
        let mut f = udp_frame(&spec, &payload);
        let h = Header {
            stream: 3,
            seq: 7,
            sent_ns: 42,
        };
        assert!(h.emit(&mut f[HEAD + PREFIX.len()..]));
        assert!(!checksums_valid(&f), "stamping changes the checksum");
        fix_udp_checksum(&mut f);
        assert!(checksums_valid(&f));
        assert_eq!(&f[HEAD..HEAD + PREFIX.len()], PREFIX);
        assert_eq!(Header::parse(&f[HEAD + PREFIX.len()..]), Some(h));
    }

    #[test]
    fn parses_macs() {
        assert_eq!(
            parse_mac("aa:0b:cc:dd:ee:0f"),
            Some([0xaa, 0x0b, 0xcc, 0xdd, 0xee, 0x0f])
        );
        assert_eq!(parse_mac("aa:bb"), None);
    }
}
