//! On the CPU: the kernels' model (`reference`), merged into a recorder, gives the snapshot
//! and drop counts that recording the same tokens one by one gives: exact counts (halves
//! too, with sequence ids), sums within 1e-5 relative.

mod common;

use common::{assert_drops_match, assert_snapshots_match, recorder, sweep, Case};
use moescope_core::{BulkError, ModelSpec, Recorder, SamplingConfig, SamplingRate};
use moescope_cuda::reference::{count_topk, Step, TokenTags};
use moescope_cuda::{Aggregates, Layout};

#[test]
fn merged_reference_counts_equal_per_token_records_over_the_sweep() {
    let mut total = 0.0;
    for (i, shape) in sweep().into_iter().enumerate() {
        if shape.tokens > 4096 {
            continue; // the largest shapes run on the GPU suite only (debug builds are slow)
        }
        let case = Case::new(shape, 1000 + i as u64);
        let (merged, recorded) = (recorder(&shape), recorder(&shape));
        let agg = case.reference(Layout::for_recorder(&merged), merged.split_salt());
        let report = agg.merge_into(&merged);
        assert!(report.errors.is_empty(), "{shape:?}: {:?}", report.errors);
        case.record(&recorded);
        let what = format!("case {i} {shape:?}");
        total += assert_snapshots_match(
            &merged.snapshot(),
            &recorded.snapshot(),
            shape.sequence_ids,
            &what,
        );
        assert_drops_match(&merged, &recorded, &what);
    }
    assert!(total > 10_000.0, "the sweep counted {total} tokens");
}

#[test]
fn a_sampled_language_is_reported_not_merged() {
    let spec = ModelSpec::new("s", 4, 1, vec![0]).unwrap();
    let r = Recorder::builder(spec)
        .sampling(
            SamplingConfig::default()
                .with_language("en", SamplingRate::Fixed(0.25))
                .unwrap(),
        )
        .build()
        .unwrap();
    let (he, en) = (r.language("he"), r.language("en"));
    let mut agg = Aggregates::zeroed(Layout::for_recorder(&r));
    let tags = [he.index() as u16, en.index() as u16, en.index() as u16];
    let step = Step {
        layer: 0,
        tokens: 3,
        tags: TokenTags::PerToken(&tags),
        sequence_ids: None,
        salt: 0,
        valid: None,
    };
    count_topk(&mut agg, &step, &[1, 2, 3], 1, None);
    let report = agg.merge_into(&r);
    assert_eq!((report.merged_tokens, report.unmerged_tokens), (1, 2));
    assert!(matches!(&report.errors[..], [BulkError::Sampled { tag, .. }] if tag == "en"));
    let s = r.snapshot();
    assert_eq!(
        s.languages["he"].layers[0].expert_tokens,
        [0.0, 1.0, 0.0, 0.0]
    );
    assert!(!s.languages.contains_key("en"));
}

#[test]
fn an_accumulator_of_another_shape_is_refused() {
    let r = Recorder::new(ModelSpec::new("s", 4, 1, vec![0]).unwrap()).unwrap();
    let mut layout = Layout::for_recorder(&r);
    layout.experts = 8;
    let report = Aggregates::zeroed(layout).merge_into(&r);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.merged_tokens, 0);
}
