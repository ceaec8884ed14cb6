//! Whatever a serving stack passes, `record` neither panics nor loses track: every token of an
//! accepted batch is recorded, sampled out, excluded or counted as dropped; a rejected batch
//! is counted by reason; and nothing already recorded changes.

use moescope_core::{
    DropReason, LangId, Languages, ModelSpec, Recorder, RouterBatch, SamplingConfig, SamplingRate,
    Segment,
};
use proptest::prelude::*;

fn recorder() -> Recorder {
    let sampling = SamplingConfig::new(SamplingRate::All)
        .unwrap()
        .with_language("ja", SamplingRate::Fixed(0.5))
        .unwrap();
    Recorder::builder(ModelSpec::new("garbage", 6, 2, vec![1, 3, 5]).unwrap())
        .max_languages(2)
        .sampling(sampling)
        .build()
        .unwrap()
}

fn total_dropped(rec: &Recorder) -> u64 {
    DropReason::ALL.iter().map(|r| rec.dropped(*r)).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn any_batch_is_accounted_for(
        layer in 0usize..5,
        ids in proptest::collection::vec(-3i64..9, 0..40),
        lang_ix in proptest::collection::vec(0u16..6, 0..25),
        scores in proptest::option::of(proptest::collection::vec(
            prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(-1.0f32), -5.0f32..5.0], 0..130)),
        logits in any::<bool>(),
        weights in proptest::option::of(proptest::collection::vec(
            prop_oneof![Just(f32::NAN), -1.0f32..2.0], 0..40)),
        seqs in proptest::option::of(proptest::collection::vec(any::<u64>(), 0..25)),
        segments in any::<bool>(),
    ) {
        let rec = recorder();
        let known = [rec.language("en"), rec.language("ja"), LangId::EXCLUDED, LangId::UND];
        // Record something valid first: it must survive whatever comes next.
        let good: [u32; 4] = [0, 1, 2, 3];
        rec.record(&RouterBatch::at_depth(0, &good, Languages::All(known[0]))).unwrap();
        let before = rec.snapshot();

        let langs: Vec<LangId> = lang_ix
            .iter()
            .map(|&i| known.get(i as usize).copied().unwrap_or(LangId::from_index(40 + i)))
            .collect();
        let segs: Vec<Segment> = langs
            .iter()
            .map(|&lang| Segment { lang, tokens: 1, sequence_id: None })
            .collect();
        let mut batch = if segments {
            RouterBatch::at_depth(layer, &ids, Languages::Segments(&segs))
        } else {
            RouterBatch::at_depth(layer, &ids, Languages::PerToken(&langs))
        };
        if let Some(s) = &scores {
            batch = if logits { batch.logits(s) } else { batch.probabilities(s) };
        }
        if let Some(w) = &weights {
            batch = batch.topk_weights(w);
        }
        if let Some(q) = &seqs {
            batch = batch.sequence_ids(q);
        }
        let dropped_before = total_dropped(&rec);
        match rec.record(&batch) {
            Ok(got) => {
                let t = ids.len() / 2;
                prop_assert_eq!(
                    (got.recorded + got.sampled_out + got.excluded + got.dropped) as usize,
                    t
                );
                prop_assert_eq!(total_dropped(&rec) - dropped_before, u64::from(got.dropped));
                let after = rec.snapshot();
                let recorded: f64 = after.languages.values().map(|l| l.layers[layer].tokens).sum();
                let was: f64 = before.languages.values().map(|l| l.layers[layer].tokens).sum();
                // Weighted: ja counts twice per kept token.
                prop_assert!(recorded - was >= f64::from(got.recorded) - 1e-9);
            }
            Err(err) => {
                prop_assert!(total_dropped(&rec) > dropped_before, "{err}");
                prop_assert!(rec.dropped(err.reason()) > 0);
            }
        }
        // What was recorded before is still there.
        let after = rec.snapshot();
        prop_assert!(after.languages["en"].layers[0].tokens >= 2.0);
    }
}
