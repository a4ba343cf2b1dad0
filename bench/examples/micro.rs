//! Quick run of the dataplane micro-benchmark:
//! `cargo run --release -p spray-bench --example micro [io-forward|dr|nat|tunnel-ipip|all] [millis] [reps] [--bursts N] [--nic-checksum]`.
//!
//! `--nic-checksum`: the port acts as a NIC whose RX checksum offload vouched for every IPv4
//! header, so the worker skips its own header-checksum check.
//!
//! With `--bursts N` each repetition runs exactly N bursts instead of for `millis`: a fixed
//! amount of work, to count instructions per packet under callgrind (docs/benchmarks.md).
use std::time::Duration;

use spray_bench::micro::{run_case, Case, MicroSettings};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut s = MicroSettings::default();
    if let Some(i) = args.iter().position(|a| a == "--nic-checksum") {
        s.nic_checksum = true;
        args.remove(i);
    }
    if let Some(i) = args.iter().position(|a| a == "--bursts") {
        s.bursts = args.get(i + 1).and_then(|a| a.parse().ok());
        args.drain(i..(i + 2).min(args.len()));
    }
    let cases = match args.first().and_then(|a| Case::from_name(a)) {
        Some(case) => vec![case],
        None => Case::ALL.to_vec(),
    };
    if let Some(ms) = args.get(1).and_then(|a| a.parse().ok()) {
        s.duration = Duration::from_millis(ms);
    }
    if let Some(r) = args.get(2).and_then(|a| a.parse().ok()) {
        s.reps = r;
    }
    for case in cases {
        let r = run_case(case, &s);
        println!(
            "{:<11} {:>7.2} Mpps {:>6.1} ns/pkt  per on-CPU second {:>7.2} Mpps  runs {:.2?}",
            case.name(),
            r.mpps,
            r.ns_per_packet,
            r.mpps_cpu.unwrap_or(f64::NAN),
            r.runs
        );
    }
}
