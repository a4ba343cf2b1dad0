//! `spray demo`: the whole path on 127.0.0.1, no root, no NIC, no config.
//!
//! Sink backends count and echo; one socket-mode worker serves a VIP on a free loopback
//! port; one client socket sends `--count` datagrams and collects the echoes. The client
//! keeps at most [`WINDOW`] datagrams in flight (sent but not yet echoed), which paces it to
//! what the proxy and sinks absorb, so loopback drops nothing and the counts are exact.
//!
//! The checks make it a smoke test: every datagram echoed, every echo from the VIP address,
//! and the spread each scheduler promises (see [`check_spread`]).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dataplane::sched::SchedulerKind;
use dataplane::service::{Backend, BackendId, Mode, ServiceSpec, Snapshot, VipId, VipKey};
use socket2::{Domain, Socket, Type};

use crate::cli::DemoArgs;
use crate::report::Totals;
use crate::run::{RunError, Workers};
use dataplane::socket::ProxySettings;

/// Most datagrams in flight from the client.
pub const WINDOW: u64 = 256;
/// Most backends the demo starts.
pub const MAX_BACKENDS: usize = 16;
const RCVBUF: usize = 4 << 20;

/// Error from the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// `--weights` is unusable.
    #[error("--weights: {0}")]
    Weights(String),
    /// Sockets for the sinks or the client could not be set up.
    #[error("cannot set up the demo sockets on 127.0.0.1")]
    Setup(#[source] io::Error),
    /// The worker failed.
    #[error("the demo worker failed")]
    Run(#[source] RunError),
    /// The datagrams did not go where they should have.
    #[error("demo failed: {0}")]
    Failed(String),
}

impl DemoError {
    /// Whether the error is the user's (exit 2) rather than the run's (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Weights(_))
    }
}

struct Sink {
    addr: SocketAddr,
    received: Arc<AtomicU64>,
    handle: JoinHandle<()>,
}

fn udp(bind: SocketAddr) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(bind), Type::DGRAM, None)?;
    // Best effort: without the privilege to exceed rmem_max the window still paces.
    let _ = s.set_recv_buffer_size(RCVBUF);
    s.bind(&bind.into())?;
    Ok(s.into())
}

fn start_sink(stop: Arc<AtomicBool>) -> io::Result<Sink> {
    let sock = udp(([127, 0, 0, 1], 0).into())?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    let addr = sock.local_addr()?;
    let received = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&received);
    let handle = std::thread::Builder::new()
        .name(format!("demo-sink-{}", addr.port()))
        .spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    count.fetch_add(1, Ordering::Relaxed);
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        })?;
    Ok(Sink {
        addr,
        received,
        handle,
    })
}

/// What the client saw.
#[derive(Debug, Default)]
struct ClientResult {
    sent: u64,
    replies: u64,
    foreign: u64,
    first_foreign: Option<SocketAddr>,
    elapsed: Duration,
}

fn client(vip: SocketAddr, count: u64, size: usize) -> io::Result<ClientResult> {
    let sock = udp(([127, 0, 0, 1], 0).into())?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut payload = vec![0x5a; size];
    let mut buf = [0u8; 2048];
    let mut r = ClientResult::default();
    let mut lost = 0u64;
    let start = Instant::now();
    while r.replies + lost < count {
        while r.sent < count && r.sent - r.replies - lost < WINDOW {
            payload[..8].copy_from_slice(&r.sent.to_be_bytes());
            sock.send_to(&payload, vip)?;
            r.sent += 1;
        }
        match sock.recv_from(&mut buf) {
            Ok((_, from)) => {
                r.replies += 1;
                if from != vip {
                    r.foreign += 1;
                    r.first_foreign.get_or_insert(from);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                // Nothing for 500 ms: whatever is in flight is lost; carry on so that the
                // demo ends and reports it instead of hanging.
                lost += r.sent - r.replies - lost;
            }
            Err(e) => return Err(e),
        }
    }
    r.elapsed = start.elapsed();
    Ok(r)
}

/// Checks the per-backend counts `got` (for `weights`) against what `kind` promises for
/// `total` datagrams from one client: rr deals exactly evenly over backends of non-zero
/// weight; wrr deals in proportion to the weights, off by less than one round of the
/// table; maglev keeps the client's single flow on one backend.
///
/// # Errors
/// A sentence saying which backend got what, and what was expected.
pub fn check_spread(
    kind: SchedulerKind,
    weights: &[u16],
    got: &[u64],
    total: u64,
) -> Result<String, String> {
    let sum: u64 = got.iter().sum();
    if sum != total {
        return Err(format!(
            "backends received {sum} datagrams, {total} were sent"
        ));
    }
    if let Some(i) = weights.iter().position(|&w| w == 0) {
        if got[i] != 0 {
            return Err(format!("backend {i} has weight 0 but received {}", got[i]));
        }
    }
    match kind {
        SchedulerKind::Rr => {
            let active = weights.iter().filter(|&&w| w > 0).count() as u64;
            let (lo, hi) = (total / active, total.div_ceil(active));
            for (i, (&w, &g)) in weights.iter().zip(got).enumerate() {
                if w > 0 && !(lo..=hi).contains(&g) {
                    let want = if lo == hi {
                        lo.to_string()
                    } else {
                        format!("{lo} or {hi}")
                    };
                    return Err(format!(
                        "rr gave backend {i} {g} datagrams, expected {want}"
                    ));
                }
            }
            Ok(if lo == hi {
                format!("rr dealt exactly {lo} to each backend")
            } else {
                format!("rr dealt {lo} or {hi} to each backend")
            })
        }
        SchedulerKind::Wrr => {
            let wsum: u64 = weights.iter().map(|&w| u64::from(w)).sum();
            for (i, (&w, &g)) in weights.iter().zip(got).enumerate() {
                let want = total as f64 * f64::from(w) / wsum as f64;
                if (g as f64 - want).abs() >= wsum as f64 {
                    return Err(format!(
                        "wrr gave backend {i} {g} datagrams, expected about {want:.0}"
                    ));
                }
            }
            Ok("wrr dealt in proportion to the weights".to_owned())
        }
        SchedulerKind::Maglev => {
            let used = got.iter().filter(|&&g| g > 0).count();
            if used == 1 {
                Ok("maglev kept the client's flow on one backend".to_owned())
            } else {
                Err(format!(
                    "maglev spread one flow over {used} backends, expected one"
                ))
            }
        }
    }
}

fn free_port() -> io::Result<u16> {
    // The port is free when we drop the socket; the worker binds it right after.
    Ok(UdpSocket::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Runs the demo and prints its report.
///
/// # Errors
/// When setup fails, or (after printing the table) when a check fails.
pub fn demo(args: &DemoArgs) -> Result<(), DemoError> {
    let weights: Vec<u16> = if args.weights.is_empty() {
        vec![1, 1, 1]
    } else {
        args.weights.clone()
    };
    if weights.len() > MAX_BACKENDS {
        return Err(DemoError::Weights(format!(
            "{} weights is more than the {MAX_BACKENDS} backends the demo starts",
            weights.len()
        )));
    }
    if weights.iter().all(|&w| w == 0) {
        return Err(DemoError::Weights(
            "every weight is 0: no backend would receive anything".to_owned(),
        ));
    }
    let stop_sinks = Arc::new(AtomicBool::new(false));
    let mut sinks = Vec::new();
    for _ in &weights {
        sinks.push(start_sink(Arc::clone(&stop_sinks)).map_err(DemoError::Setup)?);
    }
    let vip: SocketAddr = ([127, 0, 0, 1], free_port().map_err(DemoError::Setup)?).into();
    let spec = ServiceSpec {
        id: VipId(0),
        name: "demo".to_owned(),
        vip: VipKey::udp(vip),
        mode: Mode::Nat,
        scheduler: args.scheduler,
        backends: sinks
            .iter()
            .zip(&weights)
            .enumerate()
            .map(|(i, (s, &w))| Backend::new(BackendId(i as u16), s.addr, u32::from(w)))
            .collect(),
        fallback: None,
        passive: false,
        mirrors: Vec::new(),
    };
    let snapshot =
        Arc::new(Snapshot::new(1, vec![spec]).map_err(|e| DemoError::Run(RunError::Snapshot(e)))?);
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Workers::start(
        snapshot,
        1,
        None,
        &ProxySettings::default,
        Arc::clone(&stop),
    )
    .map_err(DemoError::Run)?;

    let result = client(vip, args.count, usize::from(args.size)).map_err(DemoError::Setup);
    let totals = Totals::collect(workers.counters());
    let joined = workers.stop_and_join();
    stop_sinks.store(true, Ordering::Relaxed);
    let got: Vec<u64> = sinks
        .iter()
        .map(|s| s.received.load(Ordering::Relaxed))
        .collect();
    let addrs: Vec<SocketAddr> = sinks.iter().map(|s| s.addr).collect();
    for s in sinks {
        let _ = s.handle.join();
    }
    joined.map_err(DemoError::Run)?;
    let r = result?;

    println!(
        "spray demo: {} datagrams of {} bytes from one client to VIP {vip} ({}, 1 worker)\n",
        args.count,
        args.size,
        args.scheduler.name()
    );
    println!(
        "{:<22}{:>7}{:>11}{:>8}",
        "backend", "weight", "received", "share"
    );
    for ((a, w), g) in addrs.iter().zip(&weights).zip(&got) {
        let share = 100.0 * *g as f64 / args.count as f64;
        println!("{:<22}{w:>7}{g:>11}{share:>7.1}%", a.to_string());
    }
    let from = if r.foreign == 0 {
        format!("all from the VIP {vip}")
    } else {
        format!(
            "{} NOT from the VIP {vip} (first from {})",
            r.foreign,
            r.first_foreign.map_or_else(String::new, |a| a.to_string())
        )
    };
    println!("\nreplies: {} of {}, {from}", r.replies, args.count);
    let secs = r.elapsed.as_secs_f64();
    println!(
        "elapsed: {secs:.3} s, {:.0} datagrams/s (each one through spray twice: request and echo)",
        args.count as f64 / secs.max(1e-9)
    );
    println!("drops in spray: {}", totals.drops_by_reason());

    let mut failures = Vec::new();
    if r.replies != args.count {
        failures.push(format!("{} of {} replies came back", r.replies, args.count));
    }
    if r.foreign > 0 {
        failures.push(format!("{} replies did not come from the VIP", r.foreign));
    }
    match check_spread(args.scheduler, &weights, &got, args.count) {
        Ok(msg) if failures.is_empty() => {
            println!("result: ok, {msg}");
            Ok(())
        }
        Ok(_) => Err(DemoError::Failed(failures.join("; "))),
        Err(msg) => {
            failures.push(msg);
            Err(DemoError::Failed(failures.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rr_spread_must_be_exact() {
        assert!(check_spread(SchedulerKind::Rr, &[1, 1, 1], &[10, 10, 10], 30).is_ok());
        let e = check_spread(SchedulerKind::Rr, &[1, 1, 1], &[9, 11, 10], 30).unwrap_err();
        assert_eq!(e, "rr gave backend 0 9 datagrams, expected 10");
        assert!(check_spread(SchedulerKind::Rr, &[1, 1, 1], &[11, 10, 10], 31).is_ok());
        assert!(check_spread(SchedulerKind::Rr, &[1, 0, 1], &[15, 0, 15], 30).is_ok());
        assert!(check_spread(SchedulerKind::Rr, &[1, 0, 1], &[10, 10, 10], 30).is_err());
        assert!(check_spread(SchedulerKind::Rr, &[1, 1, 1], &[10, 10, 9], 30).is_err());
    }

    #[test]
    fn wrr_and_maglev_spread() {
        assert!(check_spread(SchedulerKind::Wrr, &[3, 2, 1], &[300, 200, 100], 600).is_ok());
        assert!(check_spread(SchedulerKind::Wrr, &[3, 2, 1], &[200, 200, 200], 600).is_err());
        assert!(check_spread(SchedulerKind::Maglev, &[1, 1], &[0, 50], 50).is_ok());
        assert!(check_spread(SchedulerKind::Maglev, &[1, 1], &[25, 25], 50).is_err());
    }
}
