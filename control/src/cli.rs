//! Command line: `spray run`, `spray check`, `spray demo` (clap derive).
//!
//! Usage errors exit with status 2 (clap's convention, which `main` keeps for config
//! errors too); `--help` and `--version` exit 0.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use dataplane::sched::SchedulerKind;

/// The config `spray run` and `spray check` read when `--config` is not given (the Debian
/// package installs a documented one there).
pub const DEFAULT_CONFIG: &str = "/etc/spray/spray.toml";

const ABOUT: &str = "Spray: a UDP load balancer with per-packet round robin and instant failover";

const LONG_ABOUT: &str = "\
Spray: a UDP load balancer with per-packet round robin and instant failover.

Spray deals every datagram sent to a virtual service address (VIP) to the next backend, so \
one chatty client (a syslog relay, a NetFlow exporter) cannot pin itself to a single backend. \
Replies from backends go back to the client with the VIP as their source address.

The socket dataplane (the default) needs no root and no dedicated NIC: it runs on any Linux \
box with kernel UDP sockets.";

const EXAMPLES: &str = "\
Examples:
  spray demo                               see it work on 127.0.0.1, no config needed
  spray check                              validate /etc/spray/spray.toml, list its services
  spray run --config spray.toml            serve until Ctrl-C or SIGTERM
  spray completions bash > /etc/bash_completion.d/spray

Exit status: 0 success, 1 runtime error, 2 usage or config error.
Config reference: docs/config.md; samples: docs/examples/*.toml.";

/// Top-level arguments.
#[derive(Debug, Parser)]
#[command(
    name = "spray",
    version = crate::build_info::LONG_VERSION,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    /// Log filter, overriding runtime.log (error, warn, info, debug, trace)
    #[arg(
        long,
        global = true,
        value_name = "FILTER",
        long_help = "Log filter, overriding runtime.log from the config file.\n\n\
                     A level (error, warn, info, debug, trace, off) or tracing directives \
                     such as 'spray=debug,warn'. Logs go to standard error. Defaults: the \
                     config's runtime.log for run, warn for demo.\n\n\
                     Example: spray --log-level debug run --config spray.toml"
    )]
    pub log_level: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the load balancer described by a config file
    #[command(
        long_about = "Run the load balancer described by a config file.\n\n\
                      Starts runtime.workers worker threads (pinned to runtime.cores when \
                      given) and serves every VIP until SIGINT (Ctrl-C) or SIGTERM; a second \
                      signal exits at once. On exit it prints packet and byte counts per VIP \
                      and per backend, and drops by reason.",
        after_long_help = "Examples:\n  \
                           spray run                 (reads /etc/spray/spray.toml)\n  \
                           spray run --config spray.toml\n  \
                           spray run -c spray.toml --stats-interval 1\n  \
                           spray run -c spray.toml --stats-interval 0   (no stats lines)"
    )]
    Run(RunArgs),
    /// Validate a config file and list its services like `ipvsadm -L -n`
    #[command(
        long_about = "Validate a config file and list its services like `ipvsadm -L -n`.\n\n\
                      Exits 0 and prints the services and backends when the file is valid; \
                      otherwise prints every problem as FILE:LINE: KEY: PROBLEM and exits 2. \
                      Core ids in runtime.cores are checked against this machine.",
        after_long_help = "Examples:\n  spray check\n  spray check --config spray.toml"
    )]
    Check(CheckArgs),
    /// Run a self-contained demonstration on 127.0.0.1 (no root, no config)
    #[command(
        long_about = "Run a self-contained demonstration on 127.0.0.1 (no root, no config).\n\n\
                      Starts UDP sink backends on 127.0.0.1 that count and echo what they \
                      receive, a socket-mode worker with a VIP on a free 127.0.0.1 port, and \
                      one client that sends --count datagrams to the VIP and collects the \
                      echoes. Prints how many datagrams each backend received and checks the \
                      spread: exactly even for rr, proportional to the weights for wrr, one \
                      backend for maglev (one client is one flow), and every reply from the VIP \
                      address. Exits 1 if a check fails, so it doubles as a smoke test.",
        after_long_help = "Examples:\n  \
                           spray demo\n  \
                           spray demo --count 90000\n  \
                           spray demo --scheduler wrr --weights 3,2,1\n  \
                           spray demo --scheduler maglev"
    )]
    Demo(DemoArgs),
    /// Measure Spray: the dataplane per packet, or socket mode on loopback
    #[command(
        long_about = "Measure Spray on this machine, in this process.\n\n\
                      `spray bench dataplane` runs the worker loop over an in-memory port that \
                      replays 64-byte UDP frames, beside an io-forward loop (the same port, no \
                      per-packet work) measured by the same binary in the same run, and prints \
                      Mpps and ns/packet for io-forward, DR, NAT and tunnel-ipip (DR to \
                      backends behind IPIP tunnels), each the median of --reps.\n\n\
                      `spray bench socket` runs socket mode on 127.0.0.1: one client sends \
                      numbered datagrams through a Spray worker to three sinks, at --rate \
                      datagrams/s (or as fast as it can with --rate 0; several rates with \
                      --rate 50000,100000,...), and prints what reached the sinks and what was \
                      lost.\n\n\
                      Build with --release for meaningful figures; docs/benchmarks.md has \
                      the figures measured so far and how they were taken.",
        after_long_help = "Examples:\n  \
                           spray bench dataplane\n  \
                           spray bench dataplane --burst 64 --reps 9 --json\n  \
                           spray bench dataplane --workers 1,2\n  \
                           spray bench socket --rate 0 --seconds 3\n  \
                           spray bench socket --rate 50000,100000,200000 --size 200"
    )]
    Bench(BenchArgs),
    /// Talk to a running spray over its control socket: list, stats, change, reload
    #[command(
        long_about = "Talk to a running spray over its control socket.\n\n\
                      list shows services like `ipvsadm -L -n` with per-backend health, state \
                      and counters; watch redraws live rates; the other commands change the \
                      running table at once (every worker gets the new table before the \
                      command returns). The protocol is in docs/control.md.\n\n\
                      Exit status: 0 done, 1 the server refused or failed, 2 usage error, \
                      3 cannot connect to the socket.",
        after_long_help = "Examples:\n  \
                           spray ctl list\n  \
                           spray ctl --json list\n  \
                           spray ctl weight syslog 198.18.1.1:514 3\n  \
                           spray ctl drain syslog 198.18.1.1:514\n  \
                           spray ctl reload\n  \
                           spray ctl --socket /tmp/spray.sock watch"
    )]
    Ctl(crate::ctl::CtlArgs),
    /// Convert another load balancer's config (keepalived.conf) to a Spray config
    Import(crate::import::ImportArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    #[command(
        long_about = "Print a shell completion script for spray on standard output.\n\n\
                      The Debian package installs them; from a build, write the script where \
                      the shell looks for completions.",
        after_long_help = "Examples:\n  \
                           spray completions bash > /etc/bash_completion.d/spray\n  \
                           spray completions zsh > /usr/local/share/zsh/site-functions/_spray\n  \
                           spray completions fish > ~/.config/fish/completions/spray.fish"
    )]
    Completions {
        /// The shell to complete for
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (spray.1, spray-run.1, ...) into a folder (for packagers)
    #[command(hide = true)]
    Man {
        /// Folder to write into; it must exist
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

/// `spray bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[command(subcommand)]
    pub what: BenchWhat,
    /// Print results as JSON (one object per line) instead of a table
    #[arg(long, global = true)]
    pub json: bool,
}

/// What `spray bench` measures.
#[derive(Debug, Subcommand)]
pub enum BenchWhat {
    /// The per-packet work over the in-memory port, against io-forward
    Dataplane {
        /// Packets per burst
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
        burst: u16,
        /// Frame length in bytes (without FCS)
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(60..=9000))]
        size: u16,
        /// Milliseconds per repetition
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
        millis: u64,
        /// Repetitions per case; the median is reported
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=101))]
        reps: u16,
        /// Scheduler of the benchmark VIP: rr, wrr or maglev
        #[arg(long, default_value = "rr", value_parser = parse_scheduler)]
        scheduler: SchedulerKind,
        /// Worker threads, each pinned to its own core; a comma list runs each (1,2)
        #[arg(long, value_delimiter = ',', default_value = "1",
              value_parser = clap::value_parser!(u16).range(1..=64))]
        workers: Vec<u16>,
    },
    /// Socket mode on 127.0.0.1: client -> Spray worker -> three sinks
    Socket {
        /// Offered datagrams/s; 0 = as fast as the client can; a comma list runs each
        #[arg(long, value_delimiter = ',', default_value = "0")]
        rate: Vec<u64>,
        /// Seconds the client sends, per rate
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Payload bytes per datagram
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u16).range(8..=1472))]
        size: u16,
        /// Datagrams per sendmmsg/recvmmsg batch
        #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..=1024))]
        batch: u16,
    },
}

/// `spray run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file (TOML)
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = DEFAULT_CONFIG,
        long_help = "Config file (TOML): services, backends, workers. Every key is described \
                     in docs/config.md; samples are in docs/examples/.\n\n\
                     Example: --config /etc/spray/spray.toml"
    )]
    pub config: PathBuf,
    /// Seconds between stats lines; 0 turns them off
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 5,
        long_help = "Seconds between stats lines on standard output (packets received and \
                     sent with rates, NAT replies, drops by reason); 0 turns them off."
    )]
    pub stats_interval: u64,
}

/// `spray check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Config file (TOML)
    #[arg(
        short,
        long,
        value_name = "FILE",
        default_value = DEFAULT_CONFIG,
        long_help = "Config file (TOML) to validate; see docs/config.md.\n\n\
                     Example: --config /etc/spray/spray.toml"
    )]
    pub config: PathBuf,
}

/// `spray demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Datagrams the client sends
    #[arg(
        short = 'n',
        long,
        default_value_t = 30_000,
        value_parser = clap::value_parser!(u64).range(1..=100_000_000)
    )]
    pub count: u64,
    /// Scheduler of the demo VIP: rr, wrr or maglev
    #[arg(long, default_value = "rr", value_parser = parse_scheduler)]
    pub scheduler: SchedulerKind,
    /// Backend weights, comma-separated; one backend per weight (default: 3 backends of weight 1)
    #[arg(
        long,
        value_name = "W,W,..",
        value_delimiter = ',',
        long_help = "Backend weights, comma-separated, each 0..=65535; one backend is started \
                     per weight (1 to 16 of them). Default: three backends of weight 1. rr \
                     only distinguishes 0 (left out) from the rest; wrr deals in proportion.\n\n\
                     Example: --scheduler wrr --weights 3,2,1"
    )]
    pub weights: Vec<u16>,
    /// Payload bytes per datagram
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(8..=1472))]
    pub size: u16,
}

fn parse_scheduler(s: &str) -> Result<SchedulerKind, dataplane::sched::UnknownScheduler> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_demo_options() {
        let cli =
            Cli::try_parse_from(["spray", "demo", "--scheduler", "wrr", "--weights", "3,2,1"])
                .unwrap();
        let Command::Demo(d) = cli.command else {
            panic!("not demo")
        };
        assert_eq!(d.scheduler, SchedulerKind::Wrr);
        assert_eq!(d.weights, [3, 2, 1]);
        assert_eq!(d.count, 30_000);
        assert!(Cli::try_parse_from(["spray", "demo", "--scheduler", "lc"]).is_err());
    }

    #[test]
    fn run_and_check_read_the_default_config_unless_told() {
        let Command::Run(r) = Cli::try_parse_from(["spray", "run"]).unwrap().command else {
            panic!("not run")
        };
        assert_eq!(r.config, PathBuf::from(DEFAULT_CONFIG));
        assert_eq!(r.stats_interval, 5);
        let Command::Run(r) = Cli::try_parse_from(["spray", "run", "-c", "x.toml"])
            .unwrap()
            .command
        else {
            panic!("not run")
        };
        assert_eq!(r.config, PathBuf::from("x.toml"));
        let Command::Check(c) = Cli::try_parse_from(["spray", "check"]).unwrap().command else {
            panic!("not check")
        };
        assert_eq!(c.config, PathBuf::from(DEFAULT_CONFIG));
    }
}
