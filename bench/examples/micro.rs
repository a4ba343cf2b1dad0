//! Quick run of the dataplane micro-benchmark: `cargo run --release -p spray-bench --example micro`.
use spray_bench::micro::{run_case, Case, MicroSettings};

fn main() {
    let s = MicroSettings::default();
    for case in [Case::IoForward, Case::Dr, Case::Nat] {
        let r = run_case(case, &s);
        println!(
            "{:<10} {:>7.2} Mpps {:>6.1} ns/pkt  runs {:?}",
            case.name(),
            r.mpps,
            r.ns_per_packet,
            r.runs
        );
    }
}
