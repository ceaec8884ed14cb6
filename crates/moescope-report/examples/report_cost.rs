//! What drawing the report costs next to the analysis it draws, in the same run: alternating
//! rounds of `moescope_stats::analyze` and `render_report` on one snapshot file, medians and
//! their ratio (wall time of this thread; run it on an idle machine for absolute figures).
//!
//! ```text
//! cargo run --release -p moescope-report --example report_cost -- SNAPSHOT.json [ROUNDS] [BASE.json]
//! ```

use std::time::Instant;

use moescope_core::Snapshot;
use moescope_report::{render_report, ReportOptions};
use moescope_stats::{analyze, AnalysisConfig};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args
        .first()
        .ok_or("usage: report_cost SNAPSHOT.json [ROUNDS] [BASE.json]")?;
    let rounds: usize = args.get(1).map_or(Ok(21), |s| s.parse())?;
    let t = Instant::now();
    let snapshot = Snapshot::read_json(path)?;
    let read_ms = t.elapsed().as_secs_f64() * 1e3;
    let base = args.get(2).map(Snapshot::read_json).transpose()?;
    let opts = ReportOptions::new("en");
    let config = AnalysisConfig::new("en");
    let (mut a, mut r) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        std::hint::black_box(analyze(&snapshot, &config)?);
        a.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let html = render_report(&snapshot, base.as_ref(), &opts)?;
        r.push(t.elapsed().as_secs_f64() * 1e3);
        bytes = html.len();
    }
    let (ma, mr) = (median(&mut a), median(&mut r));
    println!(
        "{path}: read {read_ms:.1} ms; analyze median {ma:.1} ms, render_report{} median {mr:.1} ms \
         ({rounds} alternating rounds); ratio {:.2}; page {:.2} MB",
        if base.is_some() { " --diff" } else { "" },
        mr / ma,
        bytes as f64 / 1e6
    );
    Ok(())
}
