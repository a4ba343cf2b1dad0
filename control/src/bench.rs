//! `spray bench`: runs the benchmarks of the `spray-bench` crate and prints their results.

use std::io;
use std::time::Duration;

use spray_bench::micro::{run_case, Case, MicroSettings};
use spray_bench::socket::{self, RunSettings};

use crate::cli::{BenchArgs, BenchWhat};

/// Runs what `args` asks for.
///
/// # Errors
/// When a socket benchmark cannot open its sockets or start its worker.
pub fn bench(args: &BenchArgs) -> io::Result<()> {
    match &args.what {
        BenchWhat::Dataplane {
            burst,
            size,
            millis,
            reps,
            scheduler,
            workers,
        } => {
            let mut s = MicroSettings {
                burst: usize::from(*burst),
                frame_len: usize::from(*size),
                duration: Duration::from_millis(*millis),
                reps: usize::from(*reps),
                scheduler: *scheduler,
                ..MicroSettings::default()
            };
            if !args.json {
                println!(
                    "dataplane over the memory port: {}-byte frames, burst {}, {} x {} ms, scheduler {}, workers pinned to cores 0..",
                    s.frame_len, s.burst, s.reps, millis, scheduler
                );
                println!(
                    "{:>7} {:<11} {:>9} {:>12} {:>10}",
                    "workers", "case", "Mpps", "ns/pkt/core", "vs io-fwd"
                );
            }
            for &w in workers {
                s.workers = usize::from(w);
                let mut base = None;
                for case in Case::ALL {
                    let r = run_case(case, &s);
                    let base_mpps = *base.get_or_insert(r.mpps);
                    if args.json {
                        println!("{}", serde_json::to_string(&r).map_err(io::Error::other)?);
                    } else {
                        println!(
                            "{:>7} {:<11} {:>9.2} {:>12.1} {:>9.0}%",
                            w,
                            case.name(),
                            r.mpps,
                            r.ns_per_packet,
                            100.0 * r.mpps / base_mpps
                        );
                    }
                }
            }
            if cfg!(debug_assertions) && !args.json {
                println!("note: this is a debug build; build with --release for real figures");
            }
        }
        BenchWhat::Socket {
            rate,
            seconds,
            size,
            batch,
        } => {
            if !args.json {
                println!(
                    "socket mode on 127.0.0.1: 1 client -> 1 worker -> 3 sinks, {size}-byte payloads, batch {batch}, {seconds} s per rate"
                );
                println!(
                    "{:>9} {:>10} {:>10} {:>11} {:>11} {:>8}  per backend",
                    "rate", "sent", "received", "offered/s", "forwarded/s", "loss %"
                );
            }
            for &r in rate {
                let s = RunSettings {
                    rate: r,
                    duration: Duration::from_secs_f64(seconds.clamp(0.1, 600.0)),
                    size: usize::from(*size),
                    batch: usize::from(*batch),
                    backends: 3,
                };
                let res = socket::run(&s)?;
                if args.json {
                    println!("{}", serde_json::to_string(&res).map_err(io::Error::other)?);
                } else {
                    let rate = if r == 0 {
                        "max".to_owned()
                    } else {
                        r.to_string()
                    };
                    println!(
                        "{:>9} {:>10} {:>10} {:>11.0} {:>11.0} {:>8.3}  {:?}",
                        rate,
                        res.sent,
                        res.received,
                        res.offered_per_sec,
                        res.forwarded_per_sec,
                        res.loss_percent,
                        res.per_backend
                    );
                }
            }
        }
    }
    Ok(())
}
