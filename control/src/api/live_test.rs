//! Live changes through the control socket while a steady stream flows through socket mode
//! on loopback: no datagram may be lost, and none may reach a backend after the command that
//! took it out of rotation returned.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use super::client::Client;
use super::server::Server;
use crate::config::{Config, Machine};
use crate::run::Workers;
use crate::state::{Controller, Links, State};
use dataplane::socket::ProxySettings;

/// A backend: counts the sequence numbers it receives.
struct Sink {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<u64>>>,
    thread: std::thread::JoinHandle<()>,
}

fn sink(stop: &Arc<AtomicBool>) -> Sink {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    let _ = s.set_recv_buffer_size(8 << 20);
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    let addr = s.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let (g, stop) = (Arc::clone(&got), Arc::clone(stop));
    let thread = std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            if let Ok(n) = s.recv(&mut buf) {
                if n >= 8 {
                    let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
                    g.lock().unwrap().push(seq);
                }
            }
        }
    });
    Sink { addr, got, thread }
}

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config_text(vip: SocketAddr, backends: &[(SocketAddr, u16)]) -> String {
    let list: Vec<String> = backends
        .iter()
        .map(|(a, w)| format!("{{ addr = \"{a}\", weight = {w} }}"))
        .collect();
    format!(
        "[services.live]\nvip = \"{vip}\"\nscheduler = \"wrr\"\nbackends = [{}]\n",
        list.join(", ")
    )
}

#[test]
fn live_changes_lose_and_misdirect_nothing() {
    let stop_sinks = Arc::new(AtomicBool::new(false));
    let sinks: Vec<Sink> = (0..5).map(|_| sink(&stop_sinks)).collect();
    let [a, b, c, d, e] = [0, 1, 2, 3, 4].map(|i| sinks[i].addr);
    let vip = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spray.toml");
    std::fs::write(&path, config_text(vip, &[(a, 1), (b, 1), (c, 1)])).unwrap();
    let machine = Machine { cores: vec![0] };
    let config = Config::load(&path, &machine).unwrap();
    let state = State::new(config, 1, Instant::now()).unwrap();
    let snap = Arc::clone(state.snapshot());
    let stop = Arc::new(AtomicBool::new(false));
    let workers = Workers::start(
        Arc::clone(&snap),
        1,
        None,
        &ProxySettings::default,
        Arc::clone(&stop),
    )
    .unwrap();
    // The controller of `spray run`: the one publisher of snapshots.
    let ctrl = Arc::new(
        Controller::start(
            state,
            Links {
                updates: workers.update_senders(),
                counters: workers.counters().to_vec(),
                passive: None,
                source: Some((path.clone(), machine)),
                neigh: Vec::new(),
            },
        )
        .unwrap(),
    );
    let sock = dir.path().join("ctl.sock");
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let _server = Server::start(&sock, vec![uid], ctrl).unwrap();
    let mut ctl = Client::connect(&sock).unwrap();

    // The client: numbered datagrams at about 5000/s; `sent` is the next number.
    let sent = Arc::new(AtomicU64::new(0));
    let stop_client = Arc::new(AtomicBool::new(false));
    let client = {
        let (sent, stop) = (Arc::clone(&sent), Arc::clone(&stop_client));
        std::thread::spawn(move || {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            let start = Instant::now();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = (start.elapsed().as_secs_f64() * 5000.0) as u64;
                while seq < due {
                    let mut msg = [0u8; 32];
                    msg[..8].copy_from_slice(&seq.to_be_bytes());
                    s.send_to(&msg, vip).unwrap();
                    seq += 1;
                    sent.store(seq, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };

    // After each change: datagrams numbered from `out_from` on must not reach `out`.
    let mut out_since: HashMap<SocketAddr, u64> = HashMap::new();
    let mut back: HashMap<SocketAddr, u64> = HashMap::new();
    let mut change = |cmd: &str,
                      args: serde_json::Value,
                      out: Option<SocketAddr>,
                      back_in: Option<SocketAddr>| {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(be) = back_in {
            back.insert(be, sent.load(Ordering::SeqCst));
        }
        let r = ctl.call(cmd, args).unwrap_or_else(|e| panic!("{cmd}: {e}"));
        assert!(r["generation"].as_u64().is_some(), "{cmd}: {r}");
        if let Some(be) = out {
            out_since.insert(be, sent.load(Ordering::SeqCst));
        }
    };
    let t = |be: SocketAddr| json!({ "service": "live", "backend": be.to_string() });
    change(
        "add_backend",
        json!({ "service": "live", "addr": d.to_string(), "weight": 2 }),
        None,
        None,
    );
    change(
        "set_weight",
        json!({ "service": "live", "backend": a.to_string(), "weight": 3 }),
        None,
        None,
    );
    change("drain", t(b), Some(b), None);
    change("del_backend", t(c), Some(c), None);
    // The file now has a (weight 1), b, d and e; c stays out, b stays drained.
    std::fs::write(&path, config_text(vip, &[(a, 1), (b, 1), (d, 2), (e, 1)])).unwrap();
    change("reload", json!({}), None, None);
    change("undrain", t(b), None, Some(b));
    change("del_backend", t(a), Some(a), None);
    change(
        "set_weight",
        json!({ "service": "live", "backend": d.to_string(), "weight": 0 }),
        Some(d),
        None,
    );
    std::thread::sleep(Duration::from_millis(250));
    stop_client.store(true, Ordering::SeqCst);
    client.join().unwrap();
    let total = sent.load(Ordering::SeqCst);

    // Wait for the last datagrams to reach the sinks.
    let received = || {
        sinks
            .iter()
            .map(|s| s.got.lock().unwrap().len() as u64)
            .sum::<u64>()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while received() < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    stop_sinks.store(true, Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    drop(workers);

    let mut seen = vec![0u8; total as usize];
    let mut per_sink = Vec::new();
    for s in sinks {
        s.thread.join().unwrap();
        let got = s.got.lock().unwrap();
        per_sink.push((s.addr, got.len()));
        for &seq in got.iter() {
            assert!(seq < total, "{seq} was never sent");
            seen[seq as usize] += 1;
            if let Some(&from) = out_since.get(&s.addr) {
                let until = back
                    .get(&s.addr)
                    .copied()
                    .filter(|&u| u > from)
                    .unwrap_or(u64::MAX);
                assert!(
                    !(from..until).contains(&seq),
                    "datagram {seq} reached {} after it left rotation at {from}",
                    s.addr
                );
            }
        }
    }
    let lost = seen.iter().filter(|&&n| n == 0).count();
    let dup = seen.iter().filter(|&&n| n > 1).count();
    eprintln!("live changes: {total} datagrams sent, per backend {per_sink:?}, lost {lost}, duplicated {dup}");
    assert!(total > 5000, "the client sent only {total}");
    assert_eq!((lost, dup), (0, 0), "per backend {per_sink:?}");
    // Everything after the last change went to b and e only.
    assert!(per_sink[3].1 > 0 && per_sink[4].1 > 0, "{per_sink:?}");
}
