//! `spray-plots`: draws the SVG plots of a side-by-side run from its JSON files.
//!
//! `spray-plots --results results.json [--failover failover.json] --out DIR` writes
//! `DIR/throughput.svg`, `DIR/latency.svg` and, with a failover run, `DIR/failover.svg`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use spray_bench::plot;
use spray_bench::traffic::measure::FailoverRun;
use spray_bench::traffic::results::Results;

/// Draw SVG plots from `spray-traffic summary` and `spray-traffic failover` output
#[derive(Debug, Parser)]
#[command(name = "spray-plots", version)]
struct Cli {
    /// results.json from `spray-traffic summary`
    #[arg(long)]
    results: Option<PathBuf>,
    /// failover.json from `spray-traffic failover` (skipped when missing)
    #[arg(long)]
    failover: Option<PathBuf>,
    /// Folder for the SVG files
    #[arg(long, default_value = ".")]
    out: PathBuf,
}

fn run(cli: &Cli) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(&cli.out)?;
    if let Some(p) = &cli.results {
        let r: Results = serde_json::from_str(&std::fs::read_to_string(p)?)?;
        plot::throughput(&r, &cli.out.join("throughput.svg"))?;
        plot::latency(&r, &cli.out.join("latency.svg"))?;
        println!(
            "wrote {0}/throughput.svg, {0}/latency.svg",
            cli.out.display()
        );
    }
    if let Some(p) = cli.failover.as_ref().filter(|p| p.exists()) {
        let f: FailoverRun = serde_json::from_str(&std::fs::read_to_string(p)?)?;
        plot::failover(&f, &cli.out.join("failover.svg"))?;
        println!("wrote {}/failover.svg", cli.out.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spray-plots: error: {e}");
            ExitCode::from(1)
        }
    }
}
