//! The recorder through its public API: exact counts under concurrency, every drop reason,
//! sampling weights, probabilities, halves, the rolling window, and the memory bound.

#![allow(clippy::needless_range_loop)] // index loops read best against hand-built expectations

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use moescope_core::{
    DropReason, LangId, Languages, ManualClock, ModelSpec, RecordError, Recorded, Recorder,
    RouterBatch, SamplingConfig, SamplingRate, Segment, Snapshot, WindowConfig,
};

const T0: u64 = 1_700_000_000_000;

fn tiny_spec() -> ModelSpec {
    ModelSpec::new("tiny", 8, 2, vec![0, 2, 4, 6]).unwrap()
}

fn recorder_with_clock(spec: ModelSpec) -> (Recorder, ManualClock) {
    let clock = ManualClock::new(T0);
    let rec = Recorder::builder(spec)
        .window(WindowConfig {
            bucket_ms: 1_000,
            buckets: 5,
        })
        .clock(clock.clone())
        .build()
        .unwrap();
    (rec, clock)
}

/// Expert ids of token `t` of writer `w` in layer `l`: deterministic, so the expected counts
/// can be computed independently.
fn ids_for(w: usize, l: usize, t: usize, e: u32, k: usize) -> impl Iterator<Item = u32> {
    (0..k).map(move |j| ((w * 31 + l * 7 + t * 13 + j * 5) as u32 + j as u32) % e)
}

#[test]
fn concurrent_writers_and_reader_count_exactly() {
    let spec = ModelSpec::new("conc", 16, 4, (0..6).collect()).unwrap();
    // More stripes than the 4 writers and the reader can hold at once, so no batch is dropped
    // for contention however the threads are scheduled (contention has its own test).
    let clock = ManualClock::new(T0);
    let rec = Recorder::builder(spec.clone())
        .window(WindowConfig {
            bucket_ms: 1_000,
            buckets: 5,
        })
        .clock(clock.clone())
        .writer_stripes(8)
        .build()
        .unwrap();
    let rec = Arc::new(rec);
    let langs = [rec.language("en"), rec.language("he"), rec.language("ja")];
    let (writers, steps, tokens) = (4usize, 300usize, 24usize);
    let (e, k, layers) = (16u32, 4usize, 6usize);
    let done = Arc::new(AtomicBool::new(false));

    // The reader snapshots and moves the clock (rotating buckets) while writers write; the
    // clock never leaves the window (5 buckets of 1 s), so nothing may be lost.
    let reader = {
        let (rec, done, clock) = (rec.clone(), done.clone(), clock.clone());
        std::thread::spawn(move || {
            let mut snapshots = 0;
            while !done.load(Ordering::Relaxed) || snapshots < 30 {
                let s = rec.snapshot();
                assert!(s.languages.values().all(|l| l.layers.len() == 6));
                if snapshots < 30 {
                    clock.advance_ms(100); // 3 s in all: within the 5 s window
                }
                snapshots += 1;
            }
            snapshots
        })
    };
    std::thread::scope(|s| {
        for w in 0..writers {
            let rec = &rec;
            s.spawn(move || {
                let mut ids = Vec::with_capacity(tokens * k);
                let lang_of: Vec<LangId> = (0..tokens).map(|t| langs[(t + w) % 3]).collect();
                for step in 0..steps {
                    for l in 0..layers {
                        ids.clear();
                        for t in 0..tokens {
                            ids.extend(ids_for(w, l, t + step, e, k));
                        }
                        let got = rec
                            .record(&RouterBatch::at_depth(
                                l,
                                &ids,
                                Languages::PerToken(&lang_of),
                            ))
                            .unwrap();
                        assert_eq!(got.recorded as usize, tokens);
                    }
                }
            });
        }
    });
    done.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);

    // Expected counts, computed independently.
    let mut expected = vec![vec![vec![0f64; e as usize]; layers]; 3];
    for w in 0..writers {
        for step in 0..steps {
            for l in 0..layers {
                for t in 0..tokens {
                    for id in ids_for(w, l, t + step, e, k) {
                        expected[(t + w) % 3][l][id as usize] += 1.0;
                    }
                }
            }
        }
    }
    let snap = rec.snapshot();
    assert!(snap.buckets.is_empty());
    assert_eq!(snap.window.unwrap().start_unix_ms, T0);
    for (i, tag) in ["en", "he", "ja"].iter().enumerate() {
        let lang = &snap.languages[*tag];
        assert_eq!(lang.tokens, (writers * steps * tokens / 3) as f64);
        for l in 0..layers {
            assert_eq!(
                lang.layers[l].expert_tokens, expected[i][l],
                "{tag} layer {l}"
            );
            let halves = lang.halves.as_ref().unwrap();
            for j in 0..e as usize {
                assert_eq!(
                    halves[0].layers[l].expert_tokens[j] + halves[1].layers[l].expert_tokens[j],
                    expected[i][l][j]
                );
            }
        }
    }
    // The buckets the reader rotated through hold the same total.
    let with_buckets = rec.snapshot_with_buckets();
    assert!(
        with_buckets.buckets.len() >= 3,
        "{}",
        with_buckets.buckets.len()
    );
    let total: f64 = with_buckets
        .buckets
        .iter()
        .filter_map(|b| b.languages.get("he"))
        .map(|l| l.layers[2].expert_tokens.iter().sum::<f64>())
        .sum();
    assert_eq!(total, expected[1][2].iter().sum::<f64>());
}

fn assert_only_drop(rec: &Recorder, reason: DropReason, n: u64) {
    for &r in DropReason::ALL {
        let want = if r == reason { n } else { 0 };
        assert_eq!(rec.dropped(r), want, "{}", r.as_str());
    }
}

/// Records one valid batch so that each drop test can check nothing recorded is lost.
fn baseline(rec: &Recorder, lang: LangId) {
    let ids: [u32; 4] = [1, 2, 3, 4];
    rec.record(&RouterBatch::at_depth(0, &ids, Languages::All(lang)))
        .unwrap();
}

fn assert_baseline_kept(rec: &Recorder) {
    let s = rec.snapshot();
    assert_eq!(
        s.languages["en"].layers[0].expert_tokens,
        [0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn drop_shape_mismatch() {
    let (rec, _) = recorder_with_clock(tiny_spec());
    let en = rec.language("en");
    baseline(&rec, en);
    let ids: [u32; 5] = [0; 5]; // not a multiple of k = 2
    let err = rec
        .record(&RouterBatch::at_depth(0, &ids, Languages::All(en)))
        .unwrap_err();
    assert_eq!(
        err,
        RecordError::ShapeMismatch {
            field: "expert_ids",
            expected: 6,
            found: 5
        }
    );
    assert!(err.to_string().contains("expert_ids"));
    let ids: [u32; 4] = [0; 4];
    let langs = [en; 3];
    let err = rec
        .record(&RouterBatch::at_depth(0, &ids, Languages::PerToken(&langs)))
        .unwrap_err();
    assert!(matches!(
        err,
        RecordError::ShapeMismatch {
            field: "languages",
            expected: 2,
            found: 3
        }
    ));
    let logits = [0f32; 15];
    let err = rec
        .record(&RouterBatch::at_depth(0, &ids, Languages::All(en)).logits(&logits))
        .unwrap_err();
    assert!(matches!(
        err,
        RecordError::ShapeMismatch {
            field: "router_scores",
            expected: 16,
            found: 15
        }
    ));
    let w = [0.5f32; 3];
    let err = rec
        .record(&RouterBatch::at_depth(0, &ids, Languages::All(en)).topk_weights(&w))
        .unwrap_err();
    assert!(matches!(
        err,
        RecordError::ShapeMismatch {
            field: "topk_weights",
            ..
        }
    ));
    let seqs = [1u64];
    let err = rec
        .record(&RouterBatch::at_depth(0, &ids, Languages::All(en)).sequence_ids(&seqs))
        .unwrap_err();
    assert!(matches!(
        err,
        RecordError::ShapeMismatch {
            field: "sequence_ids",
            ..
        }
    ));
    let segs = [Segment {
        lang: en,
        tokens: 3,
        sequence_id: None,
    }];
    let err = rec
        .record(&RouterBatch::at_depth(0, &ids, Languages::Segments(&segs)))
        .unwrap_err();
    assert!(matches!(
        err,
        RecordError::ShapeMismatch {
            field: "languages",
            ..
        }
    ));
    // 6 rejected batches: 2 + 2 + 2 + 2 + 2 tokens, and 2 for the 5 ids (5 / 2 rounded down).
    assert_only_drop(&rec, DropReason::ShapeMismatch, 12);
    assert_baseline_kept(&rec);
}

#[test]
fn drop_layer_out_of_range() {
    let (rec, _) = recorder_with_clock(tiny_spec());
    let en = rec.language("en");
    baseline(&rec, en);
    let ids: [u32; 6] = [0; 6];
    let err = rec
        .record(&RouterBatch::at_depth(4, &ids, Languages::All(en)))
        .unwrap_err();
    assert_eq!(
        err,
        RecordError::LayerOutOfRange {
            depth: 4,
            layers: 4
        }
    );
    assert_only_drop(&rec, DropReason::LayerOutOfRange, 3);
    assert_baseline_kept(&rec);
}

#[test]
fn drop_expert_out_of_range_for_each_id_type() {
    let (rec, _) = recorder_with_clock(tiny_spec());
    let en = rec.language("en");
    baseline(&rec, en);
    // u32: 8 is out of range for E = 8; the second token is fine.
    let ids: [u32; 4] = [8, 1, 2, 3];
    let got = rec
        .record(&RouterBatch::at_depth(1, &ids, Languages::All(en)))
        .unwrap();
    assert_eq!(
        got,
        Recorded {
            recorded: 1,
            dropped: 1,
            ..Default::default()
        }
    );
    // i64, as PyTorch's topk returns: negative ids are out of range.
    let ids: [i64; 4] = [-1, 1, 7, 0];
    let got = rec
        .record(&RouterBatch::at_depth(1, &ids, Languages::All(en)))
        .unwrap();
    assert_eq!(got.recorded, 1);
    let ids: [i32; 4] = [2, i32::MAX, 6, 5];
    rec.record(&RouterBatch::at_depth(1, &ids, Languages::All(en)))
        .unwrap();
    assert_only_drop(&rec, DropReason::ExpertOutOfRange, 3);
    let s = rec.snapshot();
    assert_eq!(
        s.languages["en"].layers[1].expert_tokens,
        [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    );
    assert_eq!(s.languages["en"].layers[1].tokens, 3.0);
    assert_baseline_kept(&rec);
}

#[test]
fn drop_non_finite_values() {
    let (rec, _) = recorder_with_clock(tiny_spec());
    let en = rec.language("en");
    baseline(&rec, en);
    let ids: [u32; 6] = [0, 1, 2, 3, 4, 5];
    let mut logits = [0f32; 24];
    logits[3] = f32::NAN; // token 0
    logits[8 + 1] = f32::INFINITY; // token 1
    let got = rec
        .record(&RouterBatch::at_depth(2, &ids, Languages::All(en)).logits(&logits))
        .unwrap();
    assert_eq!(got.recorded, 1);
    let w = [0.5, 0.5, f32::NEG_INFINITY, 0.1, 0.7, 0.3];
    let got = rec
        .record(&RouterBatch::at_depth(3, &ids, Languages::All(en)).topk_weights(&w))
        .unwrap();
    assert_eq!(got.recorded, 2);
    assert_only_drop(&rec, DropReason::NonFinite, 3);
    let s = rec.snapshot();
    let l2 = &s.languages["en"].layers[2];
    assert_eq!(l2.expert_tokens, [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);
    // Token 2's logits are all zero: uniform over 8 experts, 3 bits.
    assert_eq!(l2.prob_tokens, 1.0);
    assert!((l2.selection_entropy_sum_bits.unwrap() - 3.0).abs() < 1e-9);
    let l3 = &s.languages["en"].layers[3];
    assert!((l3.topk_weight_sum.unwrap() - 2.0).abs() < 1e-9); // 0.5+0.5 and 0.7+0.3
    assert_baseline_kept(&rec);
}

#[test]
fn drop_invalid_probability() {
    let (rec, _) = recorder_with_clock(tiny_spec());
    let en = rec.language("en");
    baseline(&rec, en);
    let ids: [u32; 6] = [0, 1, 2, 3, 4, 5];
    let mut probs = [0.125f32; 24];
    probs[2] = -0.1; // token 0: negative probability
    for p in &mut probs[8..16] {
        *p = 0.0; // token 1: a row that sums to zero
    }
    let got = rec
        .record(&RouterBatch::at_depth(1, &ids, Languages::All(en)).probabilities(&probs))
        .unwrap();
    assert_eq!(got.recorded, 1);
    let w = [0.5, -0.5, 1.0, 0.0, 0.5, 0.5];
    let got = rec
        .record(&RouterBatch::at_depth(2, &ids, Languages::All(en)).topk_weights(&w))
        .unwrap();
    assert_eq!(got.recorded, 2);
    assert_only_drop(&rec, DropReason::InvalidProbability, 3);
    let s = rec.snapshot();
    let p = s.languages["en"].layers[1].prob_sum.clone().unwrap();
    assert!(p.iter().all(|&x| (x - 0.125).abs() < 1e-9), "{p:?}");
    assert_baseline_kept(&rec);
}

#[test]
fn drop_unknown_language() {
    let (rec, _) = recorder_with_clock(tiny_spec());
    let en = rec.language("en");
    baseline(&rec, en);
    let ids: [u32; 6] = [0, 1, 2, 3, 4, 5];
    // An id the registry never issued (slot 10 of 34), and one past every slot.
    let langs = [LangId::from_index(10), en, LangId::from_index(5000)];
    let got = rec
        .record(&RouterBatch::at_depth(0, &ids, Languages::PerToken(&langs)))
        .unwrap();
    assert_eq!(
        got,
        Recorded {
            recorded: 1,
            dropped: 2,
            ..Default::default()
        }
    );
    rec.record_text(LangId::from_index(12), 10, 2);
    assert_only_drop(&rec, DropReason::UnknownLanguage, 3);
    let s = rec.snapshot();
    assert_eq!(s.languages.len(), 1);
    assert_eq!(s.languages["en"].layers[0].tokens, 3.0);
}

#[test]
fn drop_batch_too_large() {
    let spec = ModelSpec::new("k1", 4, 1, vec![0]).unwrap();
    let (rec, _) = recorder_with_clock(spec);
    let en = rec.language("en");
    let ids = vec![0u32; moescope_core::MAX_BATCH_TOKENS + 1];
    let err = rec
        .record(&RouterBatch::at_depth(0, &ids, Languages::All(en)))
        .unwrap_err();
    assert!(matches!(err, RecordError::BatchTooLarge { tokens } if tokens == ids.len()));
    assert_only_drop(&rec, DropReason::BatchTooLarge, ids.len() as u64);
    assert!(rec.snapshot().languages.is_empty());
}

#[test]
fn excluded_tokens_are_not_counted() {
    let (rec, _) = recorder_with_clock(tiny_spec());
    let en = rec.language("en");
    let ids: [u32; 6] = [0, 1, 2, 3, 4, 5];
    let segs = [
        Segment {
            lang: LangId::EXCLUDED,
            tokens: 1,
            sequence_id: Some(1),
        }, // BOS
        Segment {
            lang: en,
            tokens: 2,
            sequence_id: Some(1),
        },
    ];
    let got = rec
        .record(&RouterBatch::at_depth(0, &ids, Languages::Segments(&segs)))
        .unwrap();
    assert_eq!(
        got,
        Recorded {
            recorded: 2,
            excluded: 1,
            ..Default::default()
        }
    );
    let s = rec.snapshot();
    assert_eq!(
        s.languages["en"].layers[0].expert_tokens,
        [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    );
}

#[test]
fn logits_become_softmax_sums_and_selection_entropy() {
    let (rec, _) = recorder_with_clock(tiny_spec());
    let ja = rec.language("ja");
    let ids: [u32; 4] = [0, 1, 0, 1];
    let mut logits = [0f32; 16];
    logits[0] = 2.0_f32.ln(); // token 0: p ∝ (2, 1, 1, ..., 1) → p0 = 2/9
    logits[8] = 100.0; // token 1: essentially one-hot on expert 0
    rec.record(&RouterBatch::at_depth(0, &ids, Languages::All(ja)).logits(&logits))
        .unwrap();
    let s = rec.snapshot();
    let l = &s.languages["ja"].layers[0];
    let p = l.prob_sum.as_ref().unwrap();
    let one_hot_rest = (-100f64).exp() / (1.0 + 7.0 * (-100f64).exp());
    assert!((p[0] - (2.0 / 9.0 + 1.0 / (1.0 + 7.0 * (-100f64).exp()))).abs() < 1e-7);
    assert!((p[1] - (1.0 / 9.0 + one_hot_rest)).abs() < 1e-7);
    assert!((p.iter().sum::<f64>() - 2.0).abs() < 1e-7);
    // H(2/9, 1/9 × 7) = (2/9)·log2(4.5) + (7/9)·log2(9) ≈ 2.94770; token 1 ≈ 0.
    let h0 = (2.0 / 9.0) * 4.5f64.log2() + (7.0 / 9.0) * 9f64.log2();
    assert!((l.selection_entropy_sum_bits.unwrap() - h0).abs() < 1e-6);
    assert_eq!(l.prob_tokens, 2.0);
}

#[test]
fn sequences_stay_in_one_half_across_layers() {
    let (rec, _) = recorder_with_clock(tiny_spec());
    let he = rec.language("he");
    let ids: Vec<u32> = (0..2 * 200).map(|i| (i % 8) as u32).collect();
    let seqs: Vec<u64> = (0..200).map(|t| t / 4).collect(); // 50 sequences of 4 tokens
    for l in 0..4 {
        rec.record(&RouterBatch::at_depth(l, &ids, Languages::All(he)).sequence_ids(&seqs))
            .unwrap();
    }
    let s = rec.snapshot();
    let halves = s.languages["he"].halves.as_ref().unwrap();
    let a = halves[0].layers[0].tokens;
    assert_eq!(a + halves[1].layers[0].tokens, 200.0);
    assert_eq!(a % 4.0, 0.0, "sequences are split whole");
    assert!(a > 40.0 && a < 160.0, "{a}");
    for l in 1..4 {
        assert_eq!(halves[0].layers[l].tokens, a, "same split in layer {l}");
    }
}

#[test]
fn fixed_rate_sampling_is_weighted_and_unbiased() {
    let clock = ManualClock::new(T0);
    let sampling = SamplingConfig::new(SamplingRate::All)
        .unwrap()
        .with_language("en", SamplingRate::Fixed(0.25))
        .unwrap();
    let rec = Recorder::builder(tiny_spec())
        .sampling(sampling)
        .clock(clock)
        .build()
        .unwrap();
    let (en, he) = (rec.language("en"), rec.language("he"));
    let n = 20_000usize;
    let ids: Vec<u32> = (0..2 * n).map(|i| (i % 8) as u32).collect();
    let seqs: Vec<u64> = (0..n as u64).collect();
    let got_en = rec
        .record(&RouterBatch::at_depth(0, &ids, Languages::All(en)).sequence_ids(&seqs))
        .unwrap();
    let got_he = rec
        .record(&RouterBatch::at_depth(0, &ids, Languages::All(he)).sequence_ids(&seqs))
        .unwrap();
    assert_eq!(got_he.recorded as usize, n);
    assert_eq!((got_en.recorded + got_en.sampled_out) as usize, n);
    // Binomial(20000, 0.25): sd ≈ 61; 5 sd.
    assert!(
        (got_en.recorded as i64 - 5000).abs() < 306,
        "{}",
        got_en.recorded
    );
    let s = rec.snapshot();
    // Weight 4 exactly: the estimate is the kept count × 4.
    assert_eq!(
        s.languages["en"].layers[0].tokens,
        got_en.recorded as f64 * 4.0
    );
    assert_eq!(s.languages["he"].layers[0].tokens, n as f64);
    let est: f64 = s.languages["en"].layers[0].expert_tokens.iter().sum();
    assert!((est / (2.0 * n as f64) - 1.0).abs() < 0.07, "{est}");
}

#[test]
fn target_rate_thins_busy_languages_at_rotation() {
    let clock = ManualClock::new(T0);
    let rec = Recorder::builder(tiny_spec())
        .window(WindowConfig {
            bucket_ms: 1_000,
            buckets: 10,
        })
        .sampling(SamplingConfig::new(SamplingRate::TargetTokensPerSecond(1_000.0)).unwrap())
        .clock(clock.clone())
        .build()
        .unwrap();
    let (en, he) = (rec.language("en"), rec.language("he"));
    let step = |n: usize, lang: LangId, first_seq: u64| {
        let ids: Vec<u32> = (0..2 * n).map(|i| (i % 8) as u32).collect();
        let seqs: Vec<u64> = (first_seq..first_seq + n as u64).collect();
        rec.record(&RouterBatch::at_depth(0, &ids, Languages::All(lang)).sequence_ids(&seqs))
            .unwrap()
    };
    clock.set_unix_ms(T0 - T0 % 1000); // align: the first bucket is a full second
                                       // Bucket 1: everything kept (no history); 20 000 en tokens, 500 he tokens in 1 s.
    assert_eq!(step(20_000, en, 0).recorded, 20_000);
    assert_eq!(step(500, he, 0).recorded, 500);
    clock.advance_ms(1_000);
    rec.upkeep();
    // Bucket 2: en at 1000/20000 = 5 %, he still 100 %.
    let got = step(20_000, en, 1_000_000);
    assert!((got.recorded as i64 - 1000).abs() < 160, "{}", got.recorded);
    assert_eq!(step(500, he, 1_000_000).recorded, 500);
    let s = rec.snapshot_with_buckets();
    assert_eq!(s.buckets.len(), 2);
    let b2 = &s.buckets[1].languages["en"];
    assert_eq!(b2.layers[0].tokens, got.recorded as f64 * 20.0);
    assert!((s.languages["en"].tokens / 40_000.0 - 1.0).abs() < 0.1);
}

#[test]
fn window_forgets_old_buckets_and_reports_each_bucket() {
    let (rec, clock) = recorder_with_clock(tiny_spec());
    let en = rec.language("en");
    clock.set_unix_ms(T0 - T0 % 1000);
    let ids: [u32; 2] = [1, 2];
    for _ in 0..7 {
        rec.record(&RouterBatch::at_depth(0, &ids, Languages::All(en)))
            .unwrap();
        clock.advance_ms(1_000);
        rec.upkeep(); // rotation happens on upkeep, as an exporter's thread would call it
    }
    // 7 buckets written, one each second; the window keeps the last 5 (the newest is
    // current and empty now): 4 tokens.
    let s = rec.snapshot_with_buckets();
    assert_eq!(s.buckets.len(), 5);
    assert_eq!(s.languages["en"].layers[0].tokens, 4.0);
    let w = s.window.unwrap();
    assert_eq!(w.end_unix_ms - w.start_unix_ms, 4_000);
    for pair in s.buckets.windows(2) {
        assert_eq!(pair[0].window.end_unix_ms, pair[1].window.start_unix_ms);
    }
    assert!(!s.buckets[4].languages.contains_key("en"));
    // Only the buckets that began after the second-newest closed one: the newest closed
    // (1 token) and the current, empty one; the merged window is unchanged.
    let after = s.buckets[2].window.start_unix_ms;
    let newer = rec.snapshot_with_buckets_after(after);
    assert_eq!(newer.buckets.len(), 2);
    assert_eq!(newer.buckets[0].window, s.buckets[3].window);
    assert_eq!(newer.buckets[0].languages["en"].layers[0].tokens, 1.0);
    assert_eq!(newer.languages, s.languages);
    // Idle far longer than the window: everything is gone, and nothing hangs.
    clock.advance_ms(3_600_000);
    let s = rec.snapshot();
    assert!(s.languages.is_empty());
    // What was recorded since the last upkeep lands in the last bucket closed, in the window.
    rec.record(&RouterBatch::at_depth(1, &ids, Languages::All(en)))
        .unwrap();
    clock.advance_ms(3_000);
    let s = rec.snapshot();
    assert_eq!(s.languages["en"].layers[1].tokens, 1.0);
    clock.advance_ms(3_600_000);
    let s = rec.snapshot();
    assert!(s.languages.is_empty());
    // The snapshot is valid interchange JSON.
    rec.record(&RouterBatch::at_depth(3, &ids, Languages::All(en)))
        .unwrap();
    rec.record_text(en, 120, 20);
    let s = rec.snapshot_with_buckets();
    let back = Snapshot::from_json_str(&s.to_json_string()).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.languages["en"].chars, Some(120.0));
    assert_eq!(back.languages["en"].words, Some(20.0));
}

#[test]
fn untrusted_tags_cannot_grow_the_recorder() {
    let spec = ModelSpec::preset("qwen3-30b-a3b").unwrap();
    let builder = Recorder::builder(spec).max_languages(4);
    let bound = builder.memory_bound(4 + 2, false, 1);
    let rec = builder.build().unwrap();
    let ids: Vec<u32> = (0..8).collect();
    let mut x = 1u64;
    for _ in 0..10_000 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let tag: String = (0..2 + (x >> 60) % 4)
            .map(|i| (b'a' + ((x >> (8 * i)) % 26) as u8) as char)
            .collect();
        let lang = rec.language(&tag);
        rec.record(&RouterBatch::at_depth(0, &ids, Languages::All(lang)))
            .unwrap();
    }
    let s = rec.snapshot();
    // 4 tracked, `other`, and `und` for a random tag that happens to be "und".
    assert!(
        s.languages.len() <= 4 + 2,
        "{:?}",
        s.languages.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        s.languages.values().map(|l| l.tokens).sum::<f64>(),
        10_000.0
    );
    assert!(rec.allocated_bytes() <= bound);
}

#[test]
fn qwen3_with_16_languages_allocates_under_64_mib() {
    let builder = Recorder::builder(ModelSpec::preset("qwen3-30b-a3b").unwrap());
    let bound = builder.memory_bound(18, true, 1);
    let rec = builder.build().unwrap();
    let tags = [
        "en", "he", "ja", "zh", "ar", "de", "fr", "es", "ru", "ko", "hi", "tr", "it", "pt", "nl",
        "pl",
    ];
    let ids: Vec<u32> = (0..8).collect();
    let probs = vec![1.0f32 / 128.0; 128];
    for tag in tags.iter().chain(&["und", "other"]) {
        let lang = rec.language(tag);
        rec.record(&RouterBatch::at_depth(47, &ids, Languages::All(lang)).probabilities(&probs))
            .unwrap();
    }
    rec.upkeep(); // folds the staged counts into the window, which allocates its share
    let bytes = rec.allocated_bytes();
    assert_eq!(bytes, bound);
    assert!(bytes < 64 << 20, "{bytes} bytes");
}

#[test]
fn upkeep_thread_rotates_buckets_until_dropped() {
    let clock = ManualClock::new(T0);
    let rec = Arc::new(
        Recorder::builder(tiny_spec())
            .window(WindowConfig {
                bucket_ms: 1_000,
                buckets: 3,
            })
            .clock(clock.clone())
            .build()
            .unwrap(),
    );
    let en = rec.language("en");
    let ids: [u32; 2] = [0, 1];
    let upkeep = rec
        .spawn_upkeep(std::time::Duration::from_millis(5))
        .unwrap();
    rec.record(&RouterBatch::at_depth(0, &ids, Languages::All(en)))
        .unwrap();
    rec.upkeep(); // folded into the bucket of T0 (the thread may have done it already)
    assert_eq!(rec.current_bucket_start_unix_ms(), T0);
    clock.advance_ms(10_000); // the bucket leaves the window; only the thread can notice
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while rec.current_bucket_start_unix_ms() != T0 + 10_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "upkeep thread never rotated"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    rec.record(&RouterBatch::at_depth(1, &ids, Languages::All(en)))
        .unwrap();
    drop(upkeep);
    let s = rec.snapshot();
    assert_eq!(s.languages["en"].layers[0].tokens, 0.0);
    assert_eq!(s.languages["en"].layers[1].tokens, 1.0);
}

#[test]
fn drop_writer_contention() {
    // One stripe: while a long batch holds it, other calls are dropped and counted, never
    // waited for; every token is either recorded or counted as dropped. The long batches go on
    // until the small ones have seen a drop (bounded by a deadline), so a busy machine that
    // schedules the two threads apart only makes the test longer.
    let rec = Recorder::builder(tiny_spec())
        .writer_stripes(1)
        .build()
        .unwrap();
    let en = rec.language("en");
    let big_ids: Vec<u32> = (0..2 * 200_000).map(|i| (i % 8) as u32).collect();
    let big_logits: Vec<f32> = (0..8 * 200_000).map(|i| (i % 5) as f32).collect();
    let small: [u32; 2] = [1, 2];
    let saw_drop = AtomicBool::new(false);
    let finished = AtomicBool::new(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut big_batches = 0u64;
    let (mut small_recorded, mut small_dropped) = (0u64, 0u64);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !saw_drop.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                let got = rec
                    .record(
                        &RouterBatch::at_depth(0, &big_ids, Languages::All(en)).logits(&big_logits),
                    )
                    .unwrap();
                assert_eq!(got.recorded + got.dropped, 200_000);
                big_batches += 1;
            }
            finished.store(true, Ordering::SeqCst);
        });
        while !finished.load(Ordering::SeqCst) {
            let got = rec
                .record(&RouterBatch::at_depth(1, &small, Languages::All(en)))
                .unwrap();
            small_recorded += u64::from(got.recorded);
            small_dropped += u64::from(got.dropped);
            if got.dropped > 0 {
                saw_drop.store(true, Ordering::SeqCst);
            }
        }
    });
    assert!(
        small_dropped > 0,
        "no small batch overlapped a long one within 60 s"
    );
    let s = rec.snapshot();
    let big_recorded = s.languages["en"].layers[0].tokens;
    assert_eq!(s.languages["en"].layers[1].tokens, small_recorded as f64);
    let dropped = rec.dropped(DropReason::WriterContention);
    assert_eq!(
        dropped,
        small_dropped + (big_batches * 200_000 - big_recorded as u64)
    );
}

#[test]
fn totals_outlive_the_window_and_record_times_are_sampled() {
    let (rec, clock) = recorder_with_clock(tiny_spec());
    let (en, he) = (rec.language("en"), rec.language("he"));
    let ids: [u32; 4] = [1, 2, 1, 3];
    for _ in 0..128 {
        rec.record(&RouterBatch::at_depth(0, &ids, Languages::All(en)))
            .unwrap();
    }
    rec.record(&RouterBatch::at_depth(2, &ids, Languages::All(he)))
        .unwrap();
    rec.upkeep(); // folded into the bucket of T0
                  // Far past the window: the snapshot forgets, the totals do not.
    clock.advance_ms(60_000);
    assert!(rec.snapshot().languages.is_empty());
    let totals = rec.totals();
    assert_eq!(totals["en"].tokens, 256.0);
    assert_eq!(totals["en"].expert_selections[0][1], 256.0);
    assert_eq!(totals["en"].expert_selections[0][2], 128.0);
    assert_eq!(totals["he"].layer_tokens, [0.0, 0.0, 2.0, 0.0]);
    // One call in 64 per thread is timed: this thread made 129 calls (plus none before).
    let times = rec.take_record_times();
    assert!((2..=3).contains(&times.samples), "{times:?}");
    assert!(times.p50_seconds > 0.0 && times.p50_seconds <= times.max_seconds);
    // Histogram view: cumulative buckets that never decrease and never exceed the samples,
    // and a sum between samples × the shortest and samples × the longest call.
    assert_eq!(
        times.buckets.len(),
        moescope_core::RECORD_TIME_BUCKETS_SECONDS.len()
    );
    assert!(times
        .buckets
        .windows(2)
        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    assert!(times.buckets.iter().all(|&(_, n)| n <= times.samples));
    assert!(times.sum_seconds > 0.0);
    assert!(times.sum_seconds <= times.samples as f64 * times.max_seconds * 1.01);
    assert_eq!(rec.take_record_times().samples, 0, "taking resets");
}

#[test]
fn both_record_paths_count_the_same() {
    // Ids and languages only take the specialised loop; adding sequence ids (or weights, or
    // scores) takes the general one. Same tokens, same counts.
    let (fast, _) = recorder_with_clock(tiny_spec());
    let (general, _) = recorder_with_clock(tiny_spec());
    let ids: Vec<u32> = (0..2 * 7).map(|i| (i * 3 % 8) as u32).collect();
    let ids_bad: Vec<i64> = vec![0, 1, 2, 3, -1, 5, 6, 7, 0, 1, 2, 3, 4, 5];
    for rec in [&fast, &general] {
        let (en, he) = (rec.language("en"), rec.language("he"));
        let segs = |seq: Option<u64>| {
            [
                Segment {
                    lang: LangId::EXCLUDED,
                    tokens: 1,
                    sequence_id: seq,
                },
                Segment {
                    lang: en,
                    tokens: 4,
                    sequence_id: seq,
                },
                Segment {
                    lang: he,
                    tokens: 2,
                    sequence_id: seq,
                },
            ]
        };
        let with_seq = std::ptr::eq(rec, &general);
        let s = segs(with_seq.then_some(9));
        let got = rec
            .record(&RouterBatch::at_depth(1, &ids, Languages::Segments(&s)))
            .unwrap();
        assert_eq!(
            got,
            Recorded {
                recorded: 6,
                excluded: 1,
                ..Default::default()
            }
        );
        let got = rec
            .record(&RouterBatch::at_depth(2, &ids_bad, Languages::Segments(&s)))
            .unwrap();
        assert_eq!(
            got,
            Recorded {
                recorded: 5,
                excluded: 1,
                dropped: 1,
                ..Default::default()
            }
        );
        assert_eq!(rec.dropped(DropReason::ExpertOutOfRange), 1);
    }
    let (a, b) = (fast.snapshot(), general.snapshot());
    for tag in ["en", "he"] {
        for l in 0..4 {
            assert_eq!(
                a.languages[tag].layers[l].expert_tokens, b.languages[tag].layers[l].expert_tokens,
                "{tag} {l}"
            );
            assert_eq!(
                a.languages[tag].layers[l].tokens,
                b.languages[tag].layers[l].tokens
            );
        }
    }
    assert_eq!(a.languages["en"].layers[1].tokens, 4.0);
    // Layer 2: token 2 (an en token) holds -1 and is dropped: en keeps 3 tokens, he 2.
    assert_eq!(a.languages["en"].layers[2].tokens, 3.0);
    assert_eq!(a.languages["he"].layers[2].tokens, 2.0);
}

/// The window's running sums (what `snapshot` reads) equal the buckets it holds, each read on
/// its own and added up, through rotations that expire buckets, with router probabilities,
/// gate weights and a sampled language (whose buckets carry different weights).
#[test]
fn window_sums_equal_the_sum_of_their_buckets_through_rotations() {
    let spec = ModelSpec::new("sums", 8, 2, vec![0, 1, 2]).unwrap();
    let clock = ManualClock::new(T0 - T0 % 1000);
    let rec = Recorder::builder(spec)
        .window(WindowConfig {
            bucket_ms: 1_000,
            buckets: 4,
        })
        .clock(clock.clone())
        .sampling(
            moescope_core::SamplingConfig::new(moescope_core::SamplingRate::Fixed(1.0))
                .unwrap()
                .with_language("en", moescope_core::SamplingRate::Fixed(0.37))
                .unwrap(),
        )
        .build()
        .unwrap();
    let (en, he) = (rec.language("en"), rec.language("he"));
    let mut x = 7u64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for step in 0..40u64 {
        for depth in 0..3 {
            let tokens = 1 + (next() % 9) as usize;
            let ids: Vec<u32> = (0..tokens * 2).map(|_| (next() % 8) as u32).collect();
            let logits: Vec<f32> = (0..tokens * 8)
                .map(|_| (next() % 100) as f32 / 10.0)
                .collect();
            let weights: Vec<f32> = (0..tokens * 2)
                .map(|_| (next() % 10) as f32 / 10.0)
                .collect();
            let lang = if next() % 3 == 0 { he } else { en };
            let seqs: Vec<u64> = (0..tokens as u64).map(|t| step * 100 + t).collect();
            rec.record(
                &RouterBatch::at_depth(depth, &ids, Languages::All(lang))
                    .logits(&logits)
                    .topk_weights(&weights)
                    .sequence_ids(&seqs),
            )
            .unwrap();
        }
        rec.record_text(he, 5, 2);
        if step % 3 == 2 {
            clock.advance_ms(1_000);
            rec.upkeep();
        }
    }
    let s = rec.snapshot_with_buckets();
    assert_eq!(s.buckets.len(), 4);
    let mut added: std::collections::BTreeMap<String, moescope_core::LanguageCounts> =
        Default::default();
    for b in &s.buckets {
        for (tag, counts) in &b.languages {
            match added.get_mut(tag) {
                Some(a) => a.add_scaled(counts, 1.0),
                None => {
                    added.insert(tag.clone(), counts.clone());
                }
            }
        }
    }
    assert_eq!(
        s.languages.keys().collect::<Vec<_>>(),
        added.keys().collect::<Vec<_>>()
    );
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    for (tag, want) in &added {
        let got = &s.languages[tag];
        assert_eq!(got.chars, want.chars, "{tag}");
        for (g, w) in got.layers.iter().zip(&want.layers) {
            assert!(
                close(g.tokens, w.tokens),
                "{tag}: {} vs {}",
                g.tokens,
                w.tokens
            );
            for (a, b) in g.expert_tokens.iter().zip(&w.expert_tokens) {
                assert!(close(*a, *b), "{tag}: {a} vs {b}");
            }
            assert!(close(g.prob_tokens, w.prob_tokens));
            assert_eq!(g.prob_sum.is_some(), w.prob_sum.is_some(), "{tag}");
            if let (Some(gp), Some(wp)) = (&g.prob_sum, &w.prob_sum) {
                for (a, b) in gp.iter().zip(wp) {
                    assert!(close(*a, *b), "{tag}: {a} vs {b}");
                }
            }
            for (a, b) in [
                (g.selection_entropy_sum_bits, w.selection_entropy_sum_bits),
                (g.topk_weight_sum, w.topk_weight_sum),
            ] {
                assert_eq!(a.is_some(), b.is_some(), "{tag}");
                assert!(
                    close(a.unwrap_or(0.0), b.unwrap_or(0.0)),
                    "{tag}: {a:?} vs {b:?}"
                );
            }
        }
    }
    // Unsampled counts are integers, summed exactly.
    let he_layer = &s.languages["he"].layers[1];
    assert_eq!(he_layer.tokens.fract(), 0.0);
    assert_eq!(
        he_layer.expert_tokens.iter().sum::<f64>(),
        2.0 * he_layer.tokens
    );
    // Idle past the window: the sums are exactly empty, not rounding residue.
    clock.advance_ms(10_000);
    assert!(rec.snapshot().languages.is_empty());
}

#[test]
fn config_errors_name_their_field() {
    let spec = ModelSpec::new("t", 8, 2, vec![0, 1]).unwrap();
    let cases: [(moescope_core::RecorderBuilder, &str, &str); 4] = [
        (
            Recorder::builder(spec.clone()).window(WindowConfig {
                bucket_ms: 0,
                buckets: 3,
            }),
            "window.bucket_ms",
            "got 0",
        ),
        (
            Recorder::builder(spec.clone()).window(WindowConfig {
                bucket_ms: 10,
                buckets: 0,
            }),
            "window.buckets",
            "got 0",
        ),
        (
            Recorder::builder(spec.clone()).max_languages(5000),
            "max_languages",
            "got 5000",
        ),
        (
            Recorder::builder(spec.clone()).writer_stripes(0),
            "writer_stripes",
            "got 0",
        ),
    ];
    for (builder, field, reason) in cases {
        let err = builder.build().unwrap_err();
        assert_eq!(err.field(), field);
        assert!(err.reason().contains(reason), "{err}");
        assert!(err
            .to_string()
            .starts_with(&format!("invalid recorder configuration: {field}: ")));
    }
    let mut bad = spec;
    bad.top_k = 9;
    let err = Recorder::new(bad).unwrap_err();
    assert_eq!(err.field(), "spec.top_k");
}

/// A random lowercase tag of 2 to 5 letters.
fn random_tag(x: &mut u64) -> String {
    *x = x
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let v = *x;
    (0..2 + (v >> 60) % 4)
        .map(|i| (b'a' + ((v >> (8 * i)) % 26) as u8) as char)
        .collect()
}

/// 10 000 random tags take every slot; once they have been idle for a whole window, a real
/// language gets a slot of its own again, with exactly its own counts.
#[test]
fn a_flood_of_tags_cannot_take_the_slots_for_good() {
    let spec = ModelSpec::new("flood", 8, 2, vec![0, 1]).unwrap();
    let clock = ManualClock::new(T0 - T0 % 1000);
    let window = WindowConfig {
        bucket_ms: 1_000,
        buckets: 5,
    };
    let rec = Recorder::builder(spec)
        .window(window)
        .clock(clock.clone())
        .build()
        .unwrap();
    let ids: [u32; 2] = [1, 2];
    let en = rec.language("en");
    let mut x = 1u64;
    for _ in 0..10_000 {
        let lang = rec.language(&random_tag(&mut x));
        rec.record(&RouterBatch::at_depth(0, &ids, Languages::All(lang)))
            .unwrap();
    }
    assert!(rec.registry().over_cap_tags() > 9_000);
    assert_eq!(rec.language("fr"), moescope_core::LangId::OTHER);
    // en keeps recording and interning: it is never idle, so it keeps its slot.
    for _ in 0..7 {
        clock.advance_ms(1_000);
        rec.language("en");
        rec.record(&RouterBatch::at_depth(1, &ids, Languages::All(en)))
            .unwrap();
        rec.upkeep();
    }
    assert_eq!(rec.registry().recycled_slots(), 31);
    let fr = rec.language("fr");
    assert_ne!(fr, moescope_core::LangId::OTHER);
    assert_eq!(rec.language("en"), en);
    rec.record(&RouterBatch::at_depth(
        0,
        &[3u32, 4, 3, 5],
        Languages::All(fr),
    ))
    .unwrap();
    let s = rec.snapshot();
    let counts = &s.languages["fr"];
    assert_eq!(counts.layers[0].tokens, 2.0);
    assert_eq!(
        counts.layers[0].expert_tokens,
        [0.0, 0.0, 0.0, 2.0, 1.0, 1.0, 0.0, 0.0]
    );
    assert_eq!(counts.layers[1].tokens, 0.0);
    // en's window: 4 of its 7 tokens (each folded into the bucket the upkeep after it closed:
    // buckets 0..=6; the window holds the current bucket 7 and buckets 3..=6).
    assert_eq!(s.languages["en"].layers[1].tokens, 4.0);
    // The flood's tags are gone; their totals too.
    assert!(s
        .languages
        .keys()
        .all(|k| ["en", "fr"].contains(&k.as_str())));
    let totals = rec.totals();
    assert!(
        totals
            .keys()
            .all(|k| ["en", "fr", "other", "und"].contains(&k.as_str())),
        "{:?}",
        totals.keys().collect::<Vec<_>>()
    );
}

/// With an allowlist, a flood takes no slot at all.
#[test]
fn an_allowlist_keeps_slots_for_the_listed_languages() {
    let spec = ModelSpec::new("allow", 8, 2, vec![0]).unwrap();
    let rec = Recorder::builder(spec)
        .allowed_languages(["en", "fr", "zh_hant"])
        .build()
        .unwrap();
    let ids: [u32; 2] = [1, 2];
    let mut x = 1u64;
    for _ in 0..10_000 {
        let tag = random_tag(&mut x);
        let lang = rec.language(&tag);
        if !["en", "fr", "und", "other"].contains(&tag.as_str()) {
            assert_eq!(lang, moescope_core::LangId::OTHER, "{tag}");
        }
        rec.record(&RouterBatch::at_depth(0, &ids, Languages::All(lang)))
            .unwrap();
    }
    let fr = rec.language("fr");
    assert_ne!(fr, moescope_core::LangId::OTHER);
    assert_ne!(rec.language("zh-Hant"), moescope_core::LangId::OTHER);
    rec.record(&RouterBatch::at_depth(0, &ids, Languages::All(fr)))
        .unwrap();
    let s = rec.snapshot();
    assert!(s.languages["fr"].tokens >= 1.0);
    assert!(rec.registry().not_allowed_tags() > 9_000);
    let err = Recorder::builder(ModelSpec::new("allow", 8, 2, vec![0]).unwrap())
        .allowed_languages(["en", "not a tag"])
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "allowed_languages");
}

/// An id kept past its language's recycling counts nowhere: its counts are dropped (as
/// `unknown_language`) rather than given to the language that takes the slot next.
#[test]
fn a_stale_id_never_counts_for_the_next_language_of_its_slot() {
    let spec = ModelSpec::new("stale", 8, 2, vec![0]).unwrap();
    let clock = ManualClock::new(T0 - T0 % 1000);
    let rec = Recorder::builder(spec)
        .window(WindowConfig {
            bucket_ms: 1_000,
            buckets: 2,
        })
        .max_languages(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    let ids: [u32; 2] = [1, 2];
    let xx = rec.language("xx");
    rec.record(&RouterBatch::at_depth(0, &ids, Languages::All(xx)))
        .unwrap();
    assert_eq!(rec.language("yy"), moescope_core::LangId::OTHER); // full: pressure
    rec.upkeep(); // xx's token is in the window: xx is not idle
    assert_eq!(rec.registry().recycled_slots(), 0);
    clock.advance_ms(5_000); // past the window: it has left
    rec.upkeep();
    assert_eq!(rec.registry().recycled_slots(), 1);
    // The stale id records; the next fold drops it.
    let got = rec
        .record(&RouterBatch::at_depth(0, &[7u32, 7], Languages::All(xx)))
        .unwrap();
    assert_eq!(got.recorded, 1, "{got:?}");
    rec.upkeep();
    assert_eq!(rec.dropped(DropReason::UnknownLanguage), 1);
    let yy = rec.language("yy");
    assert_eq!(yy, xx, "the freed slot is taken again");
    rec.record(&RouterBatch::at_depth(0, &[3u32, 4], Languages::All(yy)))
        .unwrap();
    let s = rec.snapshot();
    assert_eq!(s.languages["yy"].layers[0].expert_tokens[7], 0.0);
    assert_eq!(s.languages["yy"].layers[0].tokens, 1.0);
    assert!(!s.languages.contains_key("xx"));
}

#[test]
fn snapshot_files_write_on_demand_and_refuse_a_folder_that_is_a_file() {
    let rec = Arc::new(Recorder::new(tiny_spec()).unwrap());
    let en = rec.language("en");
    rec.record(&RouterBatch::at_depth(1, &[2u32, 3], Languages::All(en)))
        .unwrap();
    let dir = std::env::temp_dir().join(format!("moescope-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("window.json");
    rec.write_snapshot(&path).unwrap();
    let back = Snapshot::read_json(&path).unwrap();
    assert_eq!(back.languages["en"].layers[1].tokens, 1.0);
    // A "folder" that is a file: an error, no thread.
    let err = rec
        .spawn_snapshot_files(&path, std::time::Duration::from_millis(1), 3)
        .unwrap_err();
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotADirectory
        ),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
