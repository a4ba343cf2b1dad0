//! The DPDK micro-benchmark (net_ring, one core, 64-byte frames, burst 32):
//! `cargo run --release -p spray-bench --features dpdk --example dpdk_micro -- [--null [--nat|--tunnel] [--vips N] [--mirrors N [--full-copy]] [--size N] [--nic-checksum]] [--huge-dir DIR] [--bursts N] [millis] [reps]`
//! Without `--huge-dir` EAL runs with `--no-huge`. Needs root.
//! `--tunnel`: DR to backends behind IPIP tunnels (the outer header grown in the mbuf headroom).
//! `--vips N`: N VIPs of three backends each, consecutive frames to consecutive VIPs.
//! `--mirrors N`: N mirror pools of two backends per VIP; every datagram copied to each (the
//! copy sharing the payload where the port sends multi-segment frames; `--full-copy`: never).
//! `--size N`: frames of N bytes (42 to 1514, Ethernet header included) instead of 64.
//! `--nic-checksum`: every frame arrives with its IPv4 header checksum marked good, as from a
//! NIC with the RX offload (Spray and the hand-written loop then trust it).
//! `--bursts N`: each repetition runs exactly N bursts instead of for `millis` (a fixed
//! amount of work, to count instructions per packet under callgrind; docs/benchmarks.md).

#[cfg(spray_dpdk)]
fn main() {
    use spray_bench::dpdk_micro::{run, DpdkMicroSettings};
    let mut s = DpdkMicroSettings::default();
    let mut args = std::env::args().skip(1).peekable();
    let mut nums = Vec::new();
    while let Some(a) = args.next() {
        if a == "--null" {
            s.null = true;
        } else if a == "--nat" {
            s.nat = true;
        } else if a == "--tunnel" {
            s.tunnel = true;
        } else if a == "--full-copy" {
            s.full_copy = true;
        } else if a == "--size" {
            s.size = value(
                args.next(),
                "--size needs a frame length in bytes (42 to 1514)",
            );
        } else if a == "--nic-checksum" {
            s.nic_checksum = true;
        } else if a == "--vips" {
            s.vips = value(args.next(), "--vips needs a number of VIPs (1 to 200)");
        } else if a == "--mirrors" {
            let what = "--mirrors needs a number of mirror pools (0 to 4)";
            s.mirrors = value(args.next(), what);
            if s.mirrors > 4 {
                usage(what);
            }
        } else if a == "--bursts" {
            s.bursts = Some(value(args.next(), "--bursts needs a number of bursts"));
        } else if a == "--huge-dir" {
            s.huge_dir = Some(
                args.next()
                    .unwrap_or_else(|| usage("--huge-dir needs a folder")),
            );
        } else if let Ok(n) = a.parse::<u64>() {
            nums.push(n);
        } else {
            usage(&format!("unknown argument {a:?}"));
        }
    }
    if nums.len() > 2 {
        usage("at most two numbers: millis and reps");
    }
    if let Some(ms) = nums.first() {
        s.duration = std::time::Duration::from_millis(*ms);
    }
    if let Some(r) = nums.get(1) {
        s.reps = *r as usize;
    }
    match run(&s) {
        Ok(r) => {
            let mem = if s.huge_dir.is_some() {
                "hugepages"
            } else {
                "no-huge"
            };
            println!(
                "{}, 1 core, {} B, burst {}, {mem}: io-forward {:.2} Mpps, spray ({}, full \
                 work) {:.2} Mpps, ratio {:.2}",
                if s.null {
                    "net_null + template copy"
                } else {
                    "net_ring"
                },
                s.size,
                s.burst,
                r.io_forward,
                match (s.nat, s.tunnel, s.mirrors) {
                    (true, ..) => "nat".to_owned(),
                    (_, true, _) => "tunnel-ipip".to_owned(),
                    (_, _, 0) => "dr".to_owned(),
                    (_, _, n) => format!(
                        "dr, {n} mirror pool(s), {}",
                        if r.shared {
                            "shared payloads"
                        } else {
                            "full copies"
                        }
                    ),
                },
                r.spray,
                r.spray / r.io_forward
            );
            if let Some(m) = r.mac_forward {
                println!(
                    "  mac-forward (both MACs of every frame written, nothing else) {m:.2} Mpps"
                );
            }
            println!("  io-forward runs  {:.2?}", r.io_forward_runs);
            if !r.mac_forward_runs.is_empty() {
                println!("  mac-forward runs {:.2?}", r.mac_forward_runs);
            }
            println!("  spray runs       {:.2?}", r.spray_runs);
            if let (Some(i), Some(f), Some(q)) = (r.io_forward_cpu, r.spray_cpu, r.ratio_cpu) {
                println!(
                    "  per on-CPU second: io-forward {i:.2} Mpps, spray {f:.2} Mpps, \
                     median ratio {q:.2}"
                );
            }
            if let (Some(m), Some(q)) = (r.mac_forward_cpu, r.mac_ratio_cpu) {
                println!(
                    "  per on-CPU second: mac-forward {m:.2} Mpps, median ratio to io-forward \
                     {q:.2} (the ceiling for any work that writes every frame)"
                );
            }
            if let (Some(m), Some(q)) = (r.hand_dr_cpu, r.hand_ratio_cpu) {
                println!(
                    "  per on-CPU second: hand-written DR {m:.2} Mpps, median ratio to \
                     io-forward {q:.2} (Spray's DR work for one VIP, without the worker)"
                );
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}

/// Prints `msg` and the usage line, and exits with status 2.
/// The option's value, parsed; else the usage message `what`, and exit.
#[cfg(spray_dpdk)]
fn value<T: std::str::FromStr>(arg: Option<String>, what: &str) -> T {
    arg.and_then(|v| v.parse().ok())
        .unwrap_or_else(|| usage(what))
}

#[cfg(spray_dpdk)]
fn usage(msg: &str) -> ! {
    eprintln!(
        "error: {msg}\nusage: dpdk_micro [--null [--nat|--tunnel] [--vips N] [--mirrors N [--full-copy]] [--size N] [--nic-checksum]] \
         [--huge-dir DIR] [--bursts N] [millis] [reps]"
    );
    std::process::exit(2);
}

#[cfg(not(spray_dpdk))]
fn main() {
    eprintln!("built without the dpdk feature: cargo run -p spray-bench --features dpdk --example dpdk_micro");
    std::process::exit(2);
}
