//! `spray-traffic` end to end on 127.0.0.1, without namespaces: the driver starts a sink
//! process, runs the sender process against it and merges their reports.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::Command;

use spray_bench::traffic::measure::{measure, MeasureSettings, Testbed};

fn free_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[test]
fn measure_drives_sink_and_sender_processes() {
    let work = tempfile::tempdir().unwrap();
    let sink = free_port();
    let tb = Testbed {
        exe: PathBuf::from(env!("CARGO_BIN_EXE_spray-traffic")),
        client_ns: String::new(),
        target: sink,
        sinks: vec![(String::new(), sink)],
        work: work.path().to_owned(),
        size: 100,
        raw: None,
    };
    let run = measure(
        &tb,
        &MeasureSettings {
            name: "direct".into(),
            cpu_pids: vec![std::process::id()],
            seconds: 0.3,
            batch: 32,
            loss_threshold_percent: 100.0,
            max_steps: 1,
            latency_rate: 2000,
            latency_seconds: 0.3,
            latency_batch: 1,
            progress: false,
        },
    )
    .unwrap();
    // A 100 % threshold makes the saturation trial pass: sender-limited by definition.
    assert!(run.sender_limited);
    assert!(run.loss_free_per_sec > 0.0, "{run:?}");
    let lat = &run.latency;
    assert!(lat.sent >= 500 && lat.sent <= 700, "{lat:?}");
    assert_eq!(lat.per_backend.len(), 1);
    assert_eq!(lat.latency.count, lat.unique);
    assert!(lat.cpu.as_ref().unwrap().process_percent.is_some());
}

#[test]
fn now_prints_the_monotonic_clock() {
    let out = Command::new(env!("CARGO_BIN_EXE_spray-traffic"))
        .arg("now")
        .output()
        .unwrap();
    assert!(out.status.success());
    let ns: u64 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(ns > 0);
}
