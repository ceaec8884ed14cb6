//! `moescope`: the command-line face of moescope.
//!
//! - `moescope analyze`: the paper's routing metrics and the deep-layer collapse verdict for a
//!   snapshot.
//! - `moescope diff`: base against candidate checkpoint; the exit code gates a rollout.
//! - `moescope report`: the paper's figures from a snapshot (optionally against a base) as
//!   one self-contained HTML file.
//! - `moescope bench`: what recording costs on this machine, against the alternatives.
//! - `moescope demo` (feature `demo`, on by default): a real MoE model (ONNX, run by tract)
//!   behind an HTTP server with a multilingual load generator, its routing recorded per
//!   language and served at `/metrics`; `--simulate` drives a simulated router with a
//!   scripted deep-layer collapse instead.
//!
//! Without default features (`cargo install moescope-cli --no-default-features`) the binary
//! has `analyze`, `diff`, `report` and `bench`, and builds without tract.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod analyze;
mod bench;
#[cfg(feature = "demo")]
mod demo;
#[cfg(feature = "demo")]
mod model_bench;
mod report;

/// Per-language routing health for Mixture-of-Experts models.
#[derive(Parser, Debug)]
#[command(name = "moescope", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compute per-layer, per-language routing metrics and the deep-layer collapse verdict
    /// of a snapshot (JSON, table or CSV). Exit 0; 2 on bad input.
    Analyze(analyze::AnalyzeArgs),
    /// Compare a base and a candidate snapshot (e.g. a continual pre-training checkpoint).
    /// Exit 0: no regression; 1: the candidate regresses; 2: bad input.
    Diff(analyze::DiffArgs),
    /// Draw the paper's figures from a snapshot (with `--diff BASE`, against a base) into
    /// one self-contained HTML file: inline SVG, no script, nothing fetched. Exit 0; 2 on
    /// bad input.
    Report(Box<report::ReportArgs>),
    /// Measure the cost of recording router decisions (ns per token-layer) against the
    /// alternatives a serving engineer would write, in the same run.
    Bench(bench::BenchArgs),
    /// Run the pipeline live: a real MoE model through tract, served over HTTP with a
    /// multilingual load generator, routing recorded and served at /metrics, with a terminal
    /// view. `--simulate`: simulated routing where one language collapses and recovers.
    #[cfg(feature = "demo")]
    Demo(Box<demo::DemoArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match &cli.command {
        Command::Analyze(args) => analyze::run_analyze(args),
        Command::Diff(args) => analyze::run_diff(args),
        Command::Report(args) => report::run(args),
        Command::Bench(args) => i32::from(bench::run(args)),
        #[cfg(feature = "demo")]
        Command::Demo(args) => demo::run(args),
    };
    ExitCode::from(u8::try_from(code).unwrap_or(2))
}
