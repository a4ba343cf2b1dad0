//! Socket mode on loopback: one client, one Spray worker, three sink backends, one process.
//!
//! The client sends numbered datagrams with `sendmmsg` batches, at a fixed rate or as fast as
//! it can; each sink drains its socket with `recvmmsg` and counts. The figure that matters is
//! what reached the sinks per second, and what was lost on the way (in the kernel's socket
//! queues: Spray's own drops are reported separately). On a 2-core VM the client, the worker
//! and the sinks share the cores, so the result is a floor, not the worker's ceiling.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use dataplane::counters::WorkerCounters;
use dataplane::sched::SchedulerKind;
use dataplane::service::{Backend, BackendId, Mode, ServiceSpec, Snapshot, VipId, VipKey};
use dataplane::socket::sys::{Batch, Outgoing};
use dataplane::socket::{ProxySettings, ProxyWorker, SocketSettings};
use serde::Serialize;
use socket2::{Domain, Socket, Type};

/// Settings of one run of the loopback benchmark.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Datagrams per second offered; 0 sends as fast as the client can.
    pub rate: u64,
    /// How long the client sends.
    pub duration: Duration,
    /// Payload bytes per datagram (at least 8: the sequence number).
    pub size: usize,
    /// Datagrams per `sendmmsg` of the client and per batch of the worker.
    pub batch: usize,
    /// Number of sink backends.
    pub backends: usize,
}

impl Default for RunSettings {
    fn default() -> Self {
        Self {
            rate: 0,
            duration: Duration::from_secs(2),
            size: 200,
            batch: 32,
            backends: 3,
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct SocketResult {
    /// Datagrams per second the client was asked to offer (0: as fast as it could).
    pub rate: u64,
    /// Datagrams the client sent.
    pub sent: u64,
    /// Datagrams the sinks received.
    pub received: u64,
    /// Received per sink, in backend order.
    pub per_backend: Vec<u64>,
    /// Datagrams per second the client achieved.
    pub offered_per_sec: f64,
    /// Datagrams per second that reached the sinks.
    pub forwarded_per_sec: f64,
    /// Lost share of what was sent, in percent.
    pub loss_percent: f64,
    /// Drops Spray counted itself (all reasons).
    pub spray_drops: u64,
}

fn udp_socket(addr: SocketAddr, rcvbuf: usize) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    // Best effort: beyond rmem_max the kernel caps it, and loss is what we measure anyway.
    let _ = s.set_recv_buffer_size(rcvbuf);
    let _ = s.set_send_buffer_size(rcvbuf);
    s.bind(&addr.into())?;
    Ok(s.into())
}

fn free_port() -> io::Result<SocketAddr> {
    UdpSocket::bind("127.0.0.1:0")?.local_addr()
}

/// Runs one measurement.
///
/// # Errors
/// When a socket cannot be opened or the worker cannot start.
pub fn run(s: &RunSettings) -> io::Result<SocketResult> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut sinks = Vec::new();
    let mut counts = Vec::new();
    for _ in 0..s.backends.max(1) {
        let sock = udp_socket("127.0.0.1:0".parse().expect("literal"), 8 << 20)?;
        sock.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = sock.local_addr()?;
        let count = Arc::new(AtomicU64::new(0));
        let (c, st) = (count.clone(), stop.clone());
        let batch = s.batch;
        sinks.push((addr, thread::spawn(move || sink(sock, batch, &c, &st))));
        counts.push(count);
    }
    let vip = free_port()?;
    let spec = ServiceSpec::new(
        VipId(0),
        "bench",
        VipKey::udp(vip),
        Mode::Nat,
        SchedulerKind::Rr,
        sinks
            .iter()
            .enumerate()
            .map(|(i, (a, _))| Backend::new(BackendId(i as u16), *a, 1))
            .collect(),
    );
    let snap = Arc::new(Snapshot::new(1, vec![spec]).map_err(io::Error::other)?);
    let counters = WorkerCounters::shared();
    let settings = ProxySettings {
        socket: SocketSettings {
            batch: s.batch,
            rcvbuf: 8 << 20,
            ..SocketSettings::default()
        },
        ..ProxySettings::default()
    };
    let (_tx, rx) = crossbeam_channel::unbounded();
    let mut worker = ProxyWorker::new(0, snap, rx, settings, counters.clone())
        .map_err(|e| io::Error::other(e.to_string()))?;
    let wstop = Arc::new(AtomicBool::new(false));
    let ws = wstop.clone();
    let wt = thread::spawn(move || worker.run(&ws));

    let client = udp_socket("127.0.0.1:0".parse().expect("literal"), 8 << 20)?;
    let (sent, secs) = send(&client, vip, s)?;
    // Let the queues drain before counting.
    let mut last = 0;
    for _ in 0..40 {
        thread::sleep(Duration::from_millis(50));
        let now: u64 = counts.iter().map(|c| c.load(Ordering::Relaxed)).sum();
        if now == last && now > 0 {
            break;
        }
        last = now;
    }
    wstop.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let _ = wt.join();
    for (_, t) in sinks {
        let _ = t.join();
    }
    let per_backend: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let received: u64 = per_backend.iter().sum();
    Ok(SocketResult {
        rate: s.rate,
        sent,
        received,
        per_backend,
        offered_per_sec: sent as f64 / secs,
        forwarded_per_sec: received as f64 / secs,
        loss_percent: if sent == 0 {
            0.0
        } else {
            100.0 * sent.saturating_sub(received) as f64 / sent as f64
        },
        spray_drops: counters.dropped_total(),
    })
}

fn send(client: &UdpSocket, vip: SocketAddr, s: &RunSettings) -> io::Result<(u64, f64)> {
    let n = s.batch.clamp(1, 1024);
    let mut batch = Batch::new(n, s.size.max(8));
    let payload = vec![b'x'; s.size.max(8)];
    for i in 0..n {
        batch.stage(i, &payload);
    }
    let out: Vec<Outgoing> = (0..n)
        .map(|index| Outgoing {
            index,
            to: vip,
            from: None,
        })
        .collect();
    let start = Instant::now();
    let mut seq: u64 = 0;
    while start.elapsed() < s.duration {
        if s.rate > 0 {
            // Pace per batch: wait until the schedule says this batch is due.
            let due = Duration::from_secs_f64(seq as f64 / s.rate as f64);
            while start.elapsed() < due {
                std::hint::spin_loop();
            }
        }
        for i in 0..n {
            if let Some(p) = batch.payload_mut(i) {
                p[..8].copy_from_slice(&(seq + i as u64).to_be_bytes());
            }
        }
        let mut done = 0;
        while done < n {
            match batch.send(client.as_fd(), &out[done..]) {
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::yield_now(),
                Err(e) => return Err(e),
            }
        }
        seq += n as u64;
    }
    Ok((seq, start.elapsed().as_secs_f64()))
}

fn sink(sock: UdpSocket, batch: usize, count: &AtomicU64, stop: &AtomicBool) {
    let mut b = Batch::new(batch, 2048);
    let mut one = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        // Block for the first datagram (with a timeout, to see `stop`), then drain the
        // queue in batches without blocking.
        if sock.recv(&mut one).is_err() {
            continue;
        }
        count.fetch_add(1, Ordering::Relaxed);
        while let Ok(n) = b.recv(sock.as_fd()) {
            if n == 0 {
                break;
            }
            count.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_paced_run_loses_nothing_and_spreads_evenly() {
        let r = run(&RunSettings {
            rate: 20_000,
            duration: Duration::from_millis(300),
            size: 64,
            ..Default::default()
        })
        .unwrap();
        assert!(r.sent > 1000, "{r:?}");
        assert_eq!(r.received, r.sent, "{r:?}");
        assert_eq!(r.spray_drops, 0);
        // rr over 3 sinks from one client: exact thirds (sent is a multiple of the batch,
        // 32, so the remainder is spread one by one).
        let min = r.per_backend.iter().min().unwrap();
        let max = r.per_backend.iter().max().unwrap();
        assert!(max - min <= 1, "{r:?}");
    }
}
