//! `spray-traffic`: traffic generator, sink and side-by-side benchmark driver.
//!
//! Exit status: 0 success, 1 runtime error, 2 usage error.

use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use spray_bench::traffic::measure::{self, FailoverSettings, MeasureSettings, PeerRun, Testbed};
use spray_bench::traffic::results::{summarize, table};
use spray_bench::traffic::send::{self, SendReport, SendSettings};
use spray_bench::traffic::sink::{self, SinkReport, SinkSettings};
use spray_bench::traffic::{monotonic_ns, raw, trial};

/// Traffic generator and sink for Spray's benchmarks (works across network namespaces)
#[derive(Debug, Parser)]
#[command(name = "spray-traffic", version, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

const EXAMPLES: &str = "\
Examples:
  spray-traffic sink --bind 198.18.1.2:514 --out sink1.json        (until SIGTERM)
  spray-traffic send --target 198.18.0.2:514 --rate 20000 --seconds 5
  spray-traffic send --target 198.18.0.2:514 --rate 0 --json       (saturation)
  spray-traffic send --target 198.18.0.2:514 --rate 0 --raw eth0   (raw frames, faster)
  spray-traffic merge --send send.json sink1.json sink2.json sink3.json
  spray-traffic measure --name spray --client-ns c --target 198.18.0.2:514 \\
      --sink b1=198.18.1.2:514 --sink b2=198.18.2.2:514 --cpu-pid 1234 --out spray.json
  spray-traffic summary --out results.json spray.json nginx.json";

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Send numbered, timestamped datagrams at a fixed rate or as fast as possible
    Send(SendArgs),
    /// Receive datagrams, count loss/duplicates/reordering, record latency
    Sink(SinkArgs),
    /// Print CLOCK_MONOTONIC in nanoseconds (the clock the headers carry)
    Now,
    /// Merge a sender's JSON report and its sinks' reports into one trial result
    Merge {
        /// The sender's report (`send --json`)
        #[arg(long)]
        send: PathBuf,
        /// The sinks' reports, one per backend
        #[arg(required = true)]
        sinks: Vec<PathBuf>,
    },
    /// Measure one balancer: saturation, loss-free rate search, latency, CPU
    Measure(MeasureArgs),
    /// Stop one backend's sink part-way through a fixed-rate run; per-interval timelines
    Failover(FailoverArgs),
    /// Medians over `measure` outputs: results JSON and a summary table
    Summary {
        /// Write the results JSON here
        #[arg(long)]
        out: Option<PathBuf>,
        /// Text describing the settings, stored in the results
        #[arg(long, default_value = "")]
        settings: String,
        /// `measure` outputs (each one PeerRun, or a JSON array of them)
        #[arg(required = true)]
        runs: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct SendArgs {
    /// Destination address:port (the VIP)
    #[arg(long)]
    target: SocketAddr,
    /// Local address to send from
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Datagrams per second; 0 = as fast as possible
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds to send
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Payload bytes (at least 64: a syslog priority and tag, then the 44-byte header)
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(64..=65507))]
    size: u16,
    /// Datagrams per sendmmsg
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
    batch: u16,
    /// Stream id in the headers (default: the process id)
    #[arg(long)]
    stream: Option<u32>,
    /// Record datagrams sent per interval of this many milliseconds (0: no timeline)
    #[arg(long, default_value_t = 0)]
    timeline_ms: u64,
    /// Print the report as JSON on standard output
    #[arg(long)]
    json: bool,
    /// No progress lines
    #[arg(long, short)]
    quiet: bool,
    /// Send the same datagrams as raw Ethernet frames out of this interface (AF_PACKET,
    /// qdisc bypass; IPv4, needs CAP_NET_RAW): skips the sender's own UDP/IP output path
    #[arg(long, value_name = "IFACE")]
    raw: Option<String>,
}

#[derive(Debug, Args)]
struct SinkArgs {
    /// Address:port to receive on
    #[arg(long)]
    bind: SocketAddr,
    /// Datagrams per recvmmsg
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..=1024))]
    batch: u16,
    /// Receive buffer bytes (SO_RCVBUFFORCE when root)
    #[arg(long, default_value_t = 8 << 20)]
    rcvbuf: usize,
    /// Stop after this many seconds without a datagram (once one has arrived)
    #[arg(long)]
    idle_timeout: Option<f64>,
    /// Stop after this many seconds in any case
    #[arg(long, default_value_t = 600.0)]
    max_seconds: f64,
    /// Record datagrams received per interval of this many milliseconds (0: no timeline)
    #[arg(long, default_value_t = 0)]
    timeline_ms: u64,
    /// Write the JSON report to this file on exit (SIGTERM, SIGINT, idle or time limit)
    #[arg(long)]
    out: Option<PathBuf>,
    /// Print the report as JSON on standard output
    #[arg(long)]
    json: bool,
    /// No progress lines (the "listening" line is always printed on standard error)
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct TestbedArgs {
    /// Network namespace of the sender (empty: this one)
    #[arg(long, default_value = "")]
    client_ns: String,
    /// The balancer's VIP
    #[arg(long)]
    target: SocketAddr,
    /// A backend's sink as NAMESPACE=ADDR:PORT (or ADDR:PORT); one per backend
    #[arg(long = "sink", required = true, value_parser = parse_sink)]
    sinks: Vec<(String, SocketAddr)>,
    /// Folder for the sinks' report files
    #[arg(long, default_value_os_t = std::env::temp_dir())]
    work: PathBuf,
    /// Payload bytes per datagram
    #[arg(long, default_value_t = 200)]
    size: usize,
    /// The sender writes raw frames out of this interface of the client namespace (see
    /// `send --raw`)
    #[arg(long, value_name = "IFACE")]
    raw: Option<String>,
}

#[derive(Debug, Args)]
struct MeasureArgs {
    #[command(flatten)]
    testbed: TestbedArgs,
    /// Balancer's name in the results
    #[arg(long)]
    name: String,
    /// PIDs of the balancer's processes, comma-separated (none: a kernel balancer)
    #[arg(long, value_delimiter = ',')]
    cpu_pid: Vec<u32>,
    /// Seconds per trial of the rate search
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Datagrams per sendmmsg during the rate search
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Loss below this percentage is loss-free
    #[arg(long, default_value_t = 0.01)]
    loss_threshold: f64,
    /// Most search trials after the saturation trial
    #[arg(long, default_value_t = 6)]
    steps: usize,
    /// Datagrams/s of the latency trial
    #[arg(long, default_value_t = 20_000)]
    latency_rate: u64,
    /// Seconds of the latency trial
    #[arg(long, default_value_t = 3.0)]
    latency_seconds: f64,
    /// Datagrams per sendmmsg in the latency trial
    #[arg(long, default_value_t = 1)]
    latency_batch: usize,
    /// Write the result (JSON) here; otherwise to standard output
    #[arg(long)]
    out: Option<PathBuf>,
    /// No per-trial lines on standard error
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Debug, Args)]
struct FailoverArgs {
    #[command(flatten)]
    testbed: TestbedArgs,
    /// Balancer's name in the results
    #[arg(long)]
    name: String,
    /// Offered datagrams/s
    #[arg(long, default_value_t = 20_000)]
    rate: u64,
    /// Seconds the sender sends
    #[arg(long, default_value_t = 6.0)]
    seconds: f64,
    /// Seconds after the start when the sink is stopped
    #[arg(long, default_value_t = 2.0)]
    kill_after: f64,
    /// Which backend's sink to stop (0-based, in --sink order)
    #[arg(long, default_value_t = 1)]
    kill_index: usize,
    /// Seconds between starting the sinks and starting the sender (lets a balancer's health
    /// checks see the sinks up before traffic starts)
    #[arg(long, default_value_t = 0.0)]
    settle: f64,
    /// Timeline interval in milliseconds
    #[arg(long, default_value_t = 100)]
    bucket_ms: u64,
    /// Datagrams per sendmmsg
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Write the result (JSON) here; otherwise to standard output
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_sink(s: &str) -> Result<(String, SocketAddr), String> {
    let (ns, addr) = match s.split_once('=') {
        Some((ns, a)) => (ns.to_owned(), a),
        None => (String::new(), s),
    };
    let addr = addr
        .parse()
        .map_err(|e| format!("{addr:?} is not an address:port: {e}"))?;
    Ok((ns, addr))
}

fn stop_flag() -> io::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    Ok(stop)
}

fn to_json<T: serde::Serialize>(v: &T) -> io::Result<String> {
    serde_json::to_string_pretty(v).map_err(io::Error::other)
}

fn read_json<T: serde::de::DeserializeOwned>(p: &PathBuf) -> io::Result<T> {
    let text = fs::read_to_string(p)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", p.display())))?;
    serde_json::from_str(&text).map_err(|e| io::Error::other(format!("{}: {e}", p.display())))
}

fn write_or_print(out: Option<&PathBuf>, text: &str) -> io::Result<()> {
    match out {
        Some(p) => fs::write(p, text),
        None => {
            println!("{text}");
            Ok(())
        }
    }
}

fn testbed(a: &TestbedArgs) -> io::Result<Testbed> {
    Ok(Testbed {
        exe: std::env::current_exe()?,
        client_ns: a.client_ns.clone(),
        target: a.target,
        sinks: a.sinks.clone(),
        work: a.work.clone(),
        size: a.size,
        raw: a.raw.clone(),
    })
}

fn run(cli: Cli) -> io::Result<()> {
    match cli.command {
        Cmd::Send(a) => {
            let stop = stop_flag()?;
            let settings = SendSettings {
                target: a.target,
                bind: a.bind,
                rate: a.rate,
                duration: Duration::from_secs_f64(a.seconds.clamp(0.0, 3600.0)),
                size: usize::from(a.size),
                batch: usize::from(a.batch),
                stream: a.stream.unwrap_or_else(std::process::id),
                timeline_ms: a.timeline_ms,
                progress: !a.quiet,
            };
            let r = match &a.raw {
                Some(iface) => raw::send(&settings, iface, &stop)?,
                None => send::send(&settings, &stop)?,
            };
            if a.json {
                println!("{}", to_json(&r)?);
            } else {
                println!("{}", send::summary_line(&r));
            }
        }
        Cmd::Sink(a) => {
            let stop = stop_flag()?;
            let s = SinkSettings {
                bind: a.bind,
                batch: usize::from(a.batch),
                rcvbuf: a.rcvbuf,
                idle_timeout: a
                    .idle_timeout
                    .map(|t| Duration::from_secs_f64(t.clamp(0.01, 3600.0))),
                max_duration: Duration::from_secs_f64(a.max_seconds.clamp(0.01, 86_400.0)),
                timeline_ms: a.timeline_ms,
                progress: !a.quiet,
            };
            let sock = sink::bind(&s)?;
            eprintln!("sink: listening on {}", sock.local_addr()?);
            let r = sink::run(&sock, &s, &stop)?;
            if let Some(p) = &a.out {
                // Written to a temporary name and renamed: a reader never sees half a file.
                let tmp = p.with_extension("part");
                fs::write(&tmp, to_json(&r)?)?;
                fs::rename(&tmp, p)?;
            }
            if a.json {
                println!("{}", to_json(&r)?);
            } else if !a.quiet || a.out.is_none() {
                println!("{}", sink::summary(&r));
            }
        }
        Cmd::Now => println!("{}", monotonic_ns()),
        Cmd::Merge { send, sinks } => {
            let s: SendReport = read_json(&send)?;
            let reports = sinks
                .iter()
                .map(|p| Ok((p.display().to_string(), read_json::<SinkReport>(p)?)))
                .collect::<io::Result<Vec<_>>>()?;
            println!("{}", to_json(&trial::merge(&s, &reports))?);
        }
        Cmd::Measure(a) => {
            let tb = testbed(&a.testbed)?;
            let r = measure::measure(
                &tb,
                &MeasureSettings {
                    name: a.name,
                    cpu_pids: a.cpu_pid,
                    seconds: a.seconds.clamp(0.2, 600.0),
                    batch: a.batch.clamp(1, 1024),
                    loss_threshold_percent: a.loss_threshold,
                    max_steps: a.steps,
                    latency_rate: a.latency_rate,
                    latency_seconds: a.latency_seconds.clamp(0.2, 600.0),
                    latency_batch: a.latency_batch.clamp(1, 1024),
                    progress: !a.quiet,
                },
            )?;
            write_or_print(a.out.as_ref(), &to_json(&r)?)?;
        }
        Cmd::Failover(a) => {
            let tb = testbed(&a.testbed)?;
            let r = measure::failover(
                &tb,
                &a.name,
                &FailoverSettings {
                    rate: a.rate,
                    seconds: a.seconds.clamp(0.5, 600.0),
                    kill_after: a.kill_after.clamp(0.0, a.seconds),
                    kill_index: a.kill_index,
                    settle: a.settle.clamp(0.0, 60.0),
                    bucket_ms: a.bucket_ms.max(1),
                    batch: a.batch.clamp(1, 1024),
                },
            )?;
            eprintln!(
                "failover {}: sent {} lost {} ({:.2} %), per backend {:?}; sink {} stopped at {:.2} s",
                r.name,
                r.total.sent,
                r.total.lost,
                r.total.loss_percent,
                r.total.per_backend.iter().map(|b| b.received).collect::<Vec<_>>(),
                r.backends.get(r.killed).map_or("?", String::as_str),
                r.kill_at_secs
            );
            write_or_print(a.out.as_ref(), &to_json(&r)?)?;
        }
        Cmd::Summary {
            out,
            settings,
            runs,
        } => {
            let mut all: Vec<PeerRun> = Vec::new();
            for p in &runs {
                let v: serde_json::Value = read_json(p)?;
                if v.is_array() {
                    all.extend(
                        serde_json::from_value::<Vec<PeerRun>>(v).map_err(io::Error::other)?,
                    );
                } else {
                    all.push(serde_json::from_value(v).map_err(io::Error::other)?);
                }
            }
            let r = summarize(all, &settings);
            if let Some(p) = &out {
                fs::write(p, to_json(&r)?)?;
            }
            println!("{}", r.machine);
            print!("{}", table(&r));
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spray-traffic: error: {e}");
            ExitCode::from(1)
        }
    }
}
