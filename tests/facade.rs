//! The facade end to end: record through `moescope`, snapshot, write and read the interchange
//! JSON, and analyze it with `moescope::stats`, checking hand-computed figures.

use moescope::stats::{self, AnalysisConfig};
use moescope::{Languages, ModelSpec, Recorder, RouterBatch, Snapshot};

#[test]
fn recorded_snapshot_round_trips_and_analyzes() {
    // 4 experts, top-1, 8 MoE layers (model layers 1, 3, ..., 15).
    let spec = ModelSpec::new("toy", 4, 1, (0..8).map(|l| 2 * l + 1).collect()).unwrap();
    let rec = Recorder::new(spec).unwrap();
    let (en, he) = (rec.language("en"), rec.language("he"));
    for depth in 0..8 {
        // en: uniform over 4 experts in every layer (2 bits).
        let ids: Vec<u32> = (0..600).map(|i| i % 4).collect();
        rec.record(&RouterBatch::at_depth(depth, &ids, Languages::All(en)))
            .unwrap();
        // he: uniform in layers 0..6; in the deep layers (d = 2: depths 6 and 7) all on one
        // expert (0 bits).
        let ids: Vec<u32> = if depth >= 6 {
            vec![2; 600]
        } else {
            (0..600).map(|i| i % 4).collect()
        };
        rec.record(&RouterBatch::at_depth(depth, &ids, Languages::All(he)))
            .unwrap();
    }
    let snapshot = rec.snapshot();
    let path = std::env::temp_dir().join(format!("moescope-facade-{}.json", std::process::id()));
    snapshot.write_json(&path).unwrap();
    let back = Snapshot::read_json(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(back, snapshot);

    let analysis = stats::analyze(&back, &AnalysisConfig::new("en")).unwrap();
    let row = analysis.layer_row("he", 7).unwrap();
    assert_eq!(row.layer, 15);
    assert_eq!(row.metrics.usage_entropy_bits, Some(0.0));
    assert_eq!(
        analysis
            .layer_row("he", 0)
            .unwrap()
            .metrics
            .usage_entropy_bits,
        Some(2.0)
    );
    // 600 tokens per layer: above the detector's default minimum of 500 per deep layer.
    // Middle set M = {2, 3, 4, 5} (L/4 ≤ l < 3L/4), deep set D = {6, 7}:
    // drop_he = 2 − 0 = 2 bits, drop_en = 0, C = 2 bits > θ = 0.3.
    let c = analysis.collapse_for("he").unwrap();
    assert_eq!(c.drop_bits, Some(2.0));
    assert_eq!(c.score_bits, Some(2.0));
    assert!(c.collapsed);
}
