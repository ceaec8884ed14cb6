//! `moescope`: the command-line face of moescope.
//!
//! - `moescope bench`: what recording costs on this machine, against the alternatives.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;

/// Per-language routing health for Mixture-of-Experts models.
#[derive(Parser, Debug)]
#[command(name = "moescope", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure the cost of recording router decisions (ns per token-layer) against the
    /// alternatives a serving engineer would write, in the same run.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match &cli.command {
        Command::Bench(args) => bench::run(args),
    };
    ExitCode::from(code)
}
