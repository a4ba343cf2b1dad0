//! `spray import`: configs of other load balancers to Spray's TOML.
//!
//! `spray import keepalived FILE` prints the Spray config on standard output and every note
//! and warning on standard error as `FILE:LINE: warning: ...`, then checks its own output
//! with [`Config::parse`]. Exit status: 0 converted (warnings or not), 1 the output does not
//! validate (a Spray bug), 2 the file is unreadable, unbalanced, or has no UDP service.

pub mod keepalived;

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::config::{Config, Machine};

/// `spray import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// What to import.
    #[command(subcommand)]
    pub from: ImportFrom,
}

/// Formats `spray import` reads.
#[derive(Debug, Subcommand)]
pub enum ImportFrom {
    /// keepalived.conf virtual_server / real_server blocks (the LVS part)
    #[command(
        long_about = "Convert the virtual_server / real_server blocks of a keepalived.conf \
                      into a Spray config.\n\n\
                      The Spray TOML goes to standard output; every key that maps only \
                      approximately (note) or not at all (warning) is reported on standard \
                      error with its keepalived line. Only UDP services are converted. VRRP \
                      (vrrp_instance) stays with keepalived: see scripts/ha/notify.sh and \
                      docs/operations.md.\n\n\
                      Exit status: 0 converted, 1 the output did not validate (a bug), 2 the \
                      file is unreadable, its braces do not balance, or it has no UDP service.",
        after_long_help = "Examples:\n  \
                           spray import keepalived /etc/keepalived/keepalived.conf > spray.toml\n  \
                           spray import keepalived --dataplane socket keepalived.conf"
    )]
    Keepalived {
        /// The keepalived.conf to read
        file: PathBuf,
        /// Dataplane of the output: auto = dpdk when a service uses DR, else socket
        #[arg(long, value_enum, default_value_t = keepalived::Dataplane::Auto)]
        dataplane: keepalived::Dataplane,
    },
}

/// Runs `spray import`; returns the exit status.
pub fn run(args: &ImportArgs) -> u8 {
    let ImportFrom::Keepalived { file, dataplane } = &args.from;
    let name = file.display().to_string();
    let src = match std::fs::read_to_string(file) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {name}: {e}");
            return 2;
        }
    };
    let out = match keepalived::convert(
        &src,
        keepalived::Options {
            dataplane: *dataplane,
        },
    ) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {name}:{e}");
            return 2;
        }
    };
    for d in &out.diags {
        eprintln!("{name}:{d}");
    }
    if out.services == 0 {
        eprintln!("error: {name}: no UDP virtual_server to convert");
        return 2;
    }
    print!("{}", out.toml);
    let warnings = out
        .diags
        .iter()
        .filter(|d| d.level == keepalived::Level::Warning)
        .count();
    match Config::parse("<generated>", &out.toml, &Machine::current()) {
        Ok(_) => {
            eprintln!(
                "{name}: {} service(s) converted, {warnings} warning(s); the output validates",
                out.services
            );
            0
        }
        // A DR config names the dpdk dataplane, which this build may lack: not our bug.
        Err(e)
            if e.problems()
                .iter()
                .all(|p| p.message.contains("built without the dpdk feature")) =>
        {
            eprintln!(
                "{name}: {} service(s) converted, {warnings} warning(s); the output needs a \
                 spray built with the dpdk feature (edit [dpdk] first)",
                out.services
            );
            0
        }
        Err(e) => {
            eprintln!("error: the generated config does not validate (a spray import bug):");
            for p in e.problems() {
                eprintln!("  {p}");
            }
            1
        }
    }
}
