//! `spray`: the control plane binary.
//!
//! `main` parses the command line and calls the fallible [`run`]; an error is printed with
//! its whole `source` chain, once, and mapped to the exit status: 2 for usage and config
//! errors, 1 for runtime ones.

#[cfg(spray_dpdk)]
use spray::run::dpdk as startup;
use spray::{bench, config, ctl, demo, report, run};

use std::error::Error as _;
use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use spray::cli::{Cli, Command};
use spray::config::{Config, ConfigError, Machine};

/// Everything that ends `spray` with an error.
#[derive(Debug, thiserror::Error)]
enum Error {
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `--log-level` is not a filter.
    #[error("--log-level: {0}")]
    LogFilter(String),
    /// The workers failed.
    #[error(transparent)]
    Run(#[from] run::RunError),
    /// The demo failed.
    #[error(transparent)]
    Demo(#[from] demo::DemoError),
    /// The man pages could not be written.
    #[error("man: cannot write the man pages into {dir}")]
    Man {
        /// The folder.
        dir: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A benchmark could not run.
    #[error("bench: {0}")]
    Bench(std::io::Error),
    /// The DPDK dataplane failed.
    #[cfg(spray_dpdk)]
    #[error(transparent)]
    Dpdk(#[from] startup::StartupError),
}

impl Error {
    fn exit_code(&self) -> u8 {
        match self {
            Self::Config(_) | Self::LogFilter(_) => 2,
            Self::Demo(e) if e.is_usage() => 2,
            Self::Run(_) | Self::Demo(_) | Self::Bench(_) | Self::Man { .. } => 1,
            #[cfg(spray_dpdk)]
            Self::Dpdk(_) => 1,
        }
    }
}

fn init_logging(filter: &str) -> Result<(), Error> {
    let f = config::log_filter(filter).map_err(Error::LogFilter)?;
    // Fails only when a subscriber is already installed, which is then as good.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(f)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    Ok(())
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Check(args) => {
            let config = Config::load(&args.config, &Machine::current())?;
            let backends: usize = config.services.iter().map(|s| s.backends.len()).sum();
            println!(
                "{}: ok: {} service(s), {backends} backend(s), {} dataplane, {} worker(s)",
                args.config.display(),
                config.services.len(),
                config.runtime.dataplane.name(),
                config.workers()
            );
            print!("{}", report::services_table(&config.services));
            for w in spray::config::traps::warnings(&config)
                .into_iter()
                .chain(spray::health::coverage::blind_spots(&config))
            {
                eprintln!("warning: {w}");
            }
            Ok(())
        }
        Command::Run(args) => {
            let config = Config::load(&args.config, &Machine::current())?;
            init_logging(cli.log_level.as_deref().unwrap_or(&config.runtime.log))?;
            for w in spray::config::traps::warnings(&config)
                .into_iter()
                .chain(spray::health::coverage::blind_spots(&config))
            {
                tracing::warn!("{w}");
            }
            let every = (args.stats_interval > 0).then(|| Duration::from_secs(args.stats_interval));
            #[cfg(spray_dpdk)]
            if config.runtime.dataplane == config::DataplaneKind::Dpdk {
                startup::run(&config, &args.config, every)?;
                return Ok(());
            }
            run::run(&config, &args.config, every)?;
            Ok(())
        }
        Command::Demo(args) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"))?;
            demo::demo(&args)?;
            Ok(())
        }
        Command::Bench(args) => {
            init_logging(cli.log_level.as_deref().unwrap_or("warn"))?;
            bench::bench(&args).map_err(Error::Bench)
        }
        Command::Completions { shell } => {
            use clap::CommandFactory as _;
            clap_complete::generate(shell, &mut Cli::command(), "spray", &mut std::io::stdout());
            Ok(())
        }
        Command::Man { out } => {
            use clap::CommandFactory as _;
            clap_mangen::generate_to(Cli::command(), &out).map_err(|source| Error::Man {
                dir: out.display().to_string(),
                source,
            })
        }
        // Handled in `main`: it has exit codes of its own.
        Command::Ctl(_) | Command::Import(_) => Ok(()),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `spray ctl --json` scripts read every failure, usage errors too, as JSON.
        Err(e) if e.use_stderr() && ctl::wants_json(std::env::args_os()) => {
            println!("{}", ctl::usage_json(&e));
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    if let Command::Ctl(args) = &cli.command {
        return ExitCode::from(ctl::run(args));
    }
    if let Command::Import(args) = &cli.command {
        return ExitCode::from(spray::import::run(args));
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match &e {
                // Every problem of the file on its own line.
                Error::Config(c) if !c.problems().is_empty() => {
                    for p in c.problems() {
                        eprintln!("error: {p}");
                    }
                }
                _ => eprintln!("error: {e}"),
            }
            // `transparent` variants forward `source` to the inner error's.
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            if let Error::Config(ConfigError::Read { file, .. }) = &e {
                if file == spray::cli::DEFAULT_CONFIG {
                    eprintln!(
                        "  hint: that is the default config path; give --config FILE, or start \
                         from a sample (/usr/share/doc/spray/examples/ when installed, \
                         docs/examples/ in the source); spray demo needs no config"
                    );
                }
            }
            ExitCode::from(e.exit_code())
        }
    }
}
