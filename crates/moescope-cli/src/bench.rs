//! `moescope bench`: ns per token-layer for moescope and its baselines, with ratios.

use std::io::Write;

use moescope_bench::{measure, Budget, CaseResult, Impl, Workload};
use serde::Serialize;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Short run (under 30 s): fewer, shorter samples.
    #[arg(long)]
    quick: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Tokens per batch to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 64, 4096])]
    tokens: Vec<usize>,
    /// Writer thread counts to measure.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 2])]
    threads: Vec<usize>,
    /// Instead: tokens per second of the bundled MoE model through tract, with and without
    /// moescope recording, in the same run.
    #[arg(long)]
    model_overhead: bool,
    /// With --model-overhead: tokens per forward pass.
    #[arg(long, default_value_t = 256)]
    batch_tokens: usize,
    /// Instead: milliseconds per publisher round (Qwen3-30B-A3B, 16 languages, 30 buckets,
    /// probabilities), the live round against the full-analysis round it replaced, in the
    /// same run.
    #[arg(long)]
    publisher_round: bool,
    /// Instead: the collapse alert's false alarms per day on healthy traffic and its detection
    /// delay after planted collapses, over a grid of traffic shares, sampling rates and
    /// collapse sizes (simulated time; the table of docs/RUNBOOK.md).
    #[arg(long)]
    alert_sweep: bool,
    /// With --alert-sweep: simulated hours of healthy traffic per row.
    #[arg(long, default_value_t = 24.0)]
    healthy_hours: f64,
    /// With --alert-sweep: planted collapses per detection row.
    #[arg(long, default_value_t = 5)]
    onsets: usize,
    /// With --alert-sweep: tokens per second of the simulated replica.
    #[arg(long, default_value_t = 2000.0)]
    tokens_per_second: f64,
    /// With --alert-sweep: the watched language's shares of traffic (default 0.001,0.01,0.05).
    #[arg(long, value_delimiter = ',')]
    shares: Vec<f64>,
    /// With --alert-sweep: sampling rates, each 1/w for a whole w (default 1,0.1).
    #[arg(long, value_delimiter = ',')]
    sampling_rates: Vec<f64>,
    /// With --alert-sweep: tokens per independent routing decision (default 1,32).
    #[arg(long, value_delimiter = ',')]
    clumps: Vec<u64>,
}

#[derive(Serialize)]
struct Report {
    format: &'static str,
    machine: Machine,
    workload: WorkloadInfo,
    cases: Vec<CaseResult>,
    ratios: Vec<Ratio>,
    /// The design budgets of benches/README.md, with where this run stands.
    budgets: Vec<DesignBudget>,
}

#[derive(Serialize)]
struct Machine {
    logical_cpus: usize,
    os: &'static str,
    arch: &'static str,
}

#[derive(Serialize)]
struct WorkloadInfo {
    experts: usize,
    top_k: usize,
    layers: usize,
    languages: &'static str,
    samples: usize,
    sample_ms: u128,
}

/// A baseline's cost divided by moescope's, for one (tokens, threads).
#[derive(Serialize)]
struct Ratio {
    tokens: usize,
    threads: usize,
    baseline: &'static str,
    /// baseline ns ÷ moescope ns (> 1: moescope is cheaper).
    baseline_over_moescope: f64,
}

/// One of the recorder's design budgets (benches/README.md explains each) and this run's
/// figure against it.
#[derive(Serialize)]
struct DesignBudget {
    name: String,
    value: f64,
    budget: String,
    within: bool,
}

pub fn run(args: &BenchArgs) -> u8 {
    if args.alert_sweep {
        return alert_sweep(args);
    }
    if args.publisher_round {
        return publisher_round(args.quick, args.json);
    }
    if args.model_overhead {
        #[cfg(feature = "demo")]
        return match crate::model_bench::run(args.quick, args.json, args.batch_tokens.max(1)) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("moescope bench --model-overhead: {e}");
                2
            }
        };
        #[cfg(not(feature = "demo"))]
        {
            eprintln!(
                "moescope bench --model-overhead: this build has no model runner; build the CLI with its `demo` feature"
            );
            return 2;
        }
    }
    if args.tokens.iter().chain(&args.threads).any(|&n| n == 0) {
        eprintln!("moescope bench: --tokens and --threads take positive numbers");
        return 2;
    }
    let budget = if args.quick {
        Budget::QUICK
    } else {
        Budget::FULL
    };
    let mut cases = Vec::new();
    for &tokens in &args.tokens {
        let w = Workload::new(tokens);
        for &threads in &args.threads {
            for imp in Impl::ALL {
                if !args.json {
                    eprint!(
                        "\rmeasuring {:<16} T={tokens:<5} threads={threads} ",
                        imp.name()
                    );
                }
                cases.push(measure(imp, &w, threads, budget));
            }
        }
    }
    if !args.json {
        eprint!("\r{:60}\r", "");
    }
    let ratios = ratios(&cases);
    let budgets = budgets(&cases);
    let report = Report {
        format: "moescope.bench/v1",
        machine: Machine {
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        },
        workload: WorkloadInfo {
            experts: moescope_bench::EXPERTS,
            top_k: moescope_bench::TOP_K,
            layers: moescope_bench::LAYERS,
            languages: "en 90%, he 5%, ja 5% (per token)",
            samples: budget.samples,
            sample_ms: budget.sample_time.as_millis(),
        },
        cases,
        ratios,
        budgets,
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        print_table(&mut out, &report)
    };
    match written {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("moescope bench: {e}");
            1
        }
    }
}

fn find(cases: &[CaseResult], imp: Impl, tokens: usize, threads: usize) -> Option<&CaseResult> {
    cases
        .iter()
        .find(|c| c.imp == imp.name() && c.tokens == tokens && c.threads == threads)
}

fn ratios(cases: &[CaseResult]) -> Vec<Ratio> {
    cases
        .iter()
        .filter(|c| c.imp == Impl::Moescope.name())
        .flat_map(|m| {
            Impl::ALL[1..].iter().filter_map(move |&b| {
                let base = find(cases, b, m.tokens, m.threads)?;
                Some(Ratio {
                    tokens: m.tokens,
                    threads: m.threads,
                    baseline: b.name(),
                    baseline_over_moescope: base.ns_per_token_layer / m.ns_per_token_layer,
                })
            })
        })
        .collect()
}

fn budgets(cases: &[CaseResult]) -> Vec<DesignBudget> {
    let ns = |imp, tokens, threads| find(cases, imp, tokens, threads).map(|c| c.ns_per_token_layer);
    let mut out = Vec::new();
    if let (Some(m), Some(c), Some(h)) = (
        ns(Impl::Moescope, 64, 1),
        ns(Impl::MetricsCounter, 64, 1),
        ns(Impl::MetricsHandles, 64, 1),
    ) {
        out.push(DesignBudget {
            name: "T=64: metrics-counter / moescope".into(),
            value: c / m,
            budget: ">= 100".into(),
            within: c / m >= 100.0,
        });
        out.push(DesignBudget {
            name: "T=64: metrics-handles / moescope".into(),
            value: h / m,
            budget: ">= 3".into(),
            within: h / m >= 3.0,
        });
    }
    if let (Some(m), Some(p)) = (ns(Impl::Moescope, 4096, 1), ns(Impl::PlainArray, 4096, 1)) {
        out.push(DesignBudget {
            name: "T=4096: moescope / plain-array".into(),
            value: m / p,
            budget: "<= 1.5".into(),
            within: m / p <= 1.5,
        });
    }
    for tokens in [64, 4096] {
        if let (Some(one), Some(two)) =
            (ns(Impl::Moescope, tokens, 1), ns(Impl::Moescope, tokens, 2))
        {
            // ns per token-layer is wall × threads / work: throughput speed-up = 2 · one / two.
            let speedup = 2.0 * one / two;
            out.push(DesignBudget {
                name: format!("T={tokens}: moescope throughput, 2 threads / 1 thread"),
                value: speedup,
                budget: ">= 1.8 (near-linear)".into(),
                within: speedup >= 1.8,
            });
        }
    }
    out
}

fn print_table(out: &mut impl Write, r: &Report) -> std::io::Result<()> {
    writeln!(
        out,
        "moescope bench: E={} k={} layers={} languages: {}; median of {} samples of ~{} ms; {} logical CPUs",
        r.workload.experts,
        r.workload.top_k,
        r.workload.layers,
        r.workload.languages,
        r.workload.samples,
        r.workload.sample_ms,
        r.machine.logical_cpus
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<16} {:>6} {:>7} {:>14} {:>22} {:>12}",
        "impl", "tokens", "threads", "ns/token-layer", "min..max", "vs moescope"
    )?;
    for c in &r.cases {
        let vs = find(&r.cases, Impl::Moescope, c.tokens, c.threads)
            .map(|m| c.ns_per_token_layer / m.ns_per_token_layer)
            .map_or_else(String::new, |x| format!("{x:.2}x"));
        writeln!(
            out,
            "{:<16} {:>6} {:>7} {:>14.2} {:>22} {:>12}",
            c.imp,
            c.tokens,
            c.threads,
            c.ns_per_token_layer,
            format!(
                "{:.2}..{:.2}",
                c.min_ns_per_token_layer, c.max_ns_per_token_layer
            ),
            vs
        )?;
    }
    if !r.budgets.is_empty() {
        writeln!(out)?;
        writeln!(out, "design budgets (benches/README.md):")?;
        for t in &r.budgets {
            writeln!(
                out,
                "  {:<52} {:>9.2}  budget {:<22} {}",
                t.name,
                t.value,
                t.budget,
                if t.within { "within" } else { "over" }
            )?;
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct RoundReport {
    format: &'static str,
    machine: Machine,
    workload: moescope_bench::round::RoundWorkload,
    model: &'static str,
    results: Vec<moescope_bench::round::RoundResult>,
    /// full-analysis round ÷ live round (medians).
    full_over_live: f64,
}

/// `moescope bench --publisher-round`.
fn publisher_round(quick: bool, json: bool) -> u8 {
    use moescope_bench::round::{measure_rounds, RoundWorkload};
    let workload = RoundWorkload::QWEN3_16_LANGUAGES;
    let (live, full) = if quick { (5, 2) } else { (21, 5) };
    if !json {
        eprint!("filling the window and timing {live} live and {full} full-analysis rounds... ");
    }
    let results = measure_rounds(workload, live, full);
    if !json {
        eprintln!("done");
    }
    let report = RoundReport {
        format: "moescope.bench-round/v1",
        machine: Machine {
            logical_cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        },
        workload,
        model: "qwen3-30b-a3b (48 MoE layers, E = 128, top-8)",
        full_over_live: results[1].median_ms / results[0].median_ms,
        results,
    };
    let mut out = std::io::stdout().lock();
    let written = if json {
        serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        print_rounds(&mut out, &report)
    };
    match written {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("moescope bench: {e}");
            1
        }
    }
}

fn print_rounds(out: &mut impl Write, r: &RoundReport) -> std::io::Result<()> {
    writeln!(
        out,
        "moescope bench --publisher-round: {}, {} languages, {} buckets, {} tokens per language, layer and bucket, probabilities {}; {} logical CPUs",
        r.model,
        r.workload.languages,
        r.workload.buckets,
        r.workload.tokens_per_bucket,
        if r.workload.probabilities { "on" } else { "off" },
        r.machine.logical_cpus
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<26} {:>7} {:>10} {:>20} {:>9} {:>12}",
        "path", "rounds", "median ms", "min..max ms", "samples", "round bytes"
    )?;
    for x in &r.results {
        writeln!(
            out,
            "{:<26} {:>7} {:>10.2} {:>20} {:>9} {:>12}",
            x.path,
            x.rounds,
            x.median_ms,
            format!("{:.2}..{:.2}", x.min_ms, x.max_ms),
            x.samples.map_or_else(|| "-".into(), |n| n.to_string()),
            x.round_bytes.map_or_else(|| "-".into(), |n| n.to_string()),
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "full-analysis round / live round: {:.1}x",
        r.full_over_live
    )
}

/// `moescope bench --alert-sweep`.
fn alert_sweep(args: &BenchArgs) -> u8 {
    use moescope_bench::alert::{sweep, SweepConfig};
    let mut config = SweepConfig {
        tokens_per_second: args.tokens_per_second,
        healthy_hours: args.healthy_hours,
        onsets: args.onsets,
        ..SweepConfig::default()
    };
    if !args.shares.is_empty() {
        config.shares.clone_from(&args.shares);
    }
    if !args.sampling_rates.is_empty() {
        config.sampling_rates.clone_from(&args.sampling_rates);
    }
    if !args.clumps.is_empty() {
        config.clumps.clone_from(&args.clumps);
    }
    if args.quick {
        config.healthy_hours = config.healthy_hours.min(1.0);
        config.onsets = config.onsets.min(2);
    }
    if !(config.healthy_hours > 0.0 && config.tokens_per_second > 0.0) {
        eprintln!(
            "moescope bench --alert-sweep: --healthy-hours and --tokens-per-second must be > 0"
        );
        return 2;
    }
    if !args.json {
        eprintln!(
            "simulating {} healthy hours per row and {} collapses per detection row...",
            config.healthy_hours, config.onsets
        );
    }
    let result = match sweep(&config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("moescope bench --alert-sweep: {e}");
            return 2;
        }
    };
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &result)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        print_sweep(&mut out, &result)
    };
    match written {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("moescope bench: {e}");
            1
        }
    }
}

fn print_sweep(out: &mut impl Write, s: &moescope_bench::alert::Sweep) -> std::io::Result<()> {
    let c = &s.config;
    writeln!(
        out,
        "MoeRoutingDeepLayerCollapse (flag held {} min, >= {} window tokens), detector defaults; \
         {} tokens/s per replica; qwen3-30b-a3b",
        c.rule.hold.as_secs() / 60,
        c.rule.min_window_tokens,
        c.tokens_per_second
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "Healthy traffic ({} simulated hours per row)",
        c.healthy_hours
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| tokens/run | share | sampling | window tokens (kept) | healthy C / baseline, bits | C mean ± sd (max), bits | flag up | false alarms/day |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|")?;
    let f = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"));
    for r in &s.healthy {
        let sc = &r.scenario;
        writeln!(
            out,
            "| {} | {}% | {} | {:.0} ({:.0}) | {} / {} | {} ± {} ({}) | {:.1}% | {:.2} ({} in {} h) |",
            sc.clump_tokens,
            sc.share * 100.0,
            sc.sampling_rate,
            sc.window_tokens(),
            sc.kept_window_tokens(),
            sc.baseline_bits,
            sc.configured_baseline_bits,
            f(r.score_mean_bits),
            f(r.score_std_bits),
            f(r.score_max_bits),
            r.flag_up_fraction * 100.0,
            r.false_alarms_per_day,
            r.firings,
            r.hours
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "Planted collapses (healthy C = 0; {} per row; minutes from onset, median [max]; missed within {} min)",
        c.onsets,
        c.give_up.as_secs() / 60
    )?;
    writeln!(out)?;
    writeln!(
        out,
        "| tokens/run | share | sampling | collapse, bits | flag raised | alert fires | missed |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|")?;
    let med = |v: &[f64]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.1} [{:.1}]", v[v.len() / 2], v[v.len() - 1])
        }
    };
    for r in &s.detection {
        let sc = &r.scenario;
        writeln!(
            out,
            "| {} | {}% | {} | {} | {} | {} | {}/{} |",
            sc.clump_tokens,
            sc.share * 100.0,
            sc.sampling_rate,
            r.collapse_bits,
            med(&r.flag_minutes),
            med(&r.alert_minutes),
            r.missed,
            r.onsets
        )?;
    }
    Ok(())
}
