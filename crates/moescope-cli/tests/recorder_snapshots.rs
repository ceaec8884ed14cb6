//! `moescope analyze` and `moescope diff` on snapshots written by the recorder itself.

use std::path::PathBuf;
use std::process::Command;

use moescope_core::{Languages, ModelSpec, Recorder, RouterBatch};
use serde_json::Value;

/// A recorder-written snapshot: en uniform over 8 experts everywhere; he uniform except in
/// the last two of 8 MoE layers, where it uses `deep_experts` experts.
fn snapshot(name: &str, deep_experts: u32) -> PathBuf {
    let spec = ModelSpec::new("toy-moe", 8, 2, (0..8).collect()).unwrap();
    let rec = Recorder::new(spec).unwrap();
    let (en, he) = (rec.language("en"), rec.language("he"));
    let seqs: Vec<u64> = (0..800).collect();
    for depth in 0..8 {
        let uniform: Vec<u32> = (0..1600).map(|i| (i % 8) as u32).collect();
        rec.record(&RouterBatch::at_depth(depth, &uniform, Languages::All(en)).sequence_ids(&seqs))
            .unwrap();
        let pool = if depth >= 6 { deep_experts } else { 8 };
        let ids: Vec<u32> = (0..1600).map(|i| (i as u32) % pool).collect();
        rec.record(&RouterBatch::at_depth(depth, &ids, Languages::All(he)).sequence_ids(&seqs))
            .unwrap();
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("recorder_snapshots");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    rec.snapshot().write_json(&path).unwrap();
    path
}

fn moescope(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_moescope"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn analyze_flags_collapse_in_a_recorder_snapshot() {
    let collapsed = snapshot("collapsed.json", 2);
    let out = moescope(&["analyze", collapsed.to_str().unwrap(), "--reference", "en"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format"], "moescope.analysis/v1");
    let he = v["collapse"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["lang"] == "he")
        .unwrap();
    // Middle layers 2..6 at 3 bits, deep layers 6, 7 at 1 bit: drop 2 bits; en drops 0.
    assert_eq!(he["drop_bits"], 2.0);
    assert_eq!(he["score_bits"], 2.0);
    assert_eq!(he["collapsed"], true);
    let deep = v["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["lang"] == "he" && r["layer"] == 7)
        .unwrap();
    assert_eq!(deep["usage_entropy_bits"], 1.0);
    assert_eq!(deep["tokens"], 800.0);
}

#[test]
fn diff_of_recorder_snapshots_gates_on_repair() {
    let collapsed = snapshot("base.json", 2);
    let repaired = snapshot("cpt.json", 8);
    let (base, cand) = (collapsed.to_str().unwrap(), repaired.to_str().unwrap());
    let out = moescope(&["diff", base, cand, "--reference", "en"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = moescope(&["diff", cand, base, "--reference", "en"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
