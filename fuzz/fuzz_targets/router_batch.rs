//! `Recorder::record` with arbitrary ids, depths, languages, weights and scores: never panics,
//! and accounts for every token exactly once: `recorded + sampled_out + excluded + dropped`
//! equals the batch's token count, and the recorder's drop counters grow by `dropped`.
#![no_main]

use std::cell::RefCell;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use moescope_core::{
    DropReason, LangId, Languages, ModelSpec, Recorder, RouterBatch, SamplingConfig, SamplingRate,
    Segment,
};

const EXPERTS: u32 = 8;
const TOP_K: usize = 2;

thread_local! {
    static RECORDERS: RefCell<Option<[Recorder; 2]>> = const { RefCell::new(None) };
}

fn new_recorders() -> [Recorder; 2] {
    let spec = ModelSpec::new("fuzz", EXPERTS, TOP_K as u32, vec![1, 3]).unwrap();
    let all = Recorder::builder(spec.clone()).build().unwrap();
    let half = SamplingConfig::new(SamplingRate::Fixed(0.5)).unwrap();
    let sampled = Recorder::builder(spec).sampling(half).build().unwrap();
    [all, sampled]
}

fn total_drops(r: &Recorder) -> u64 {
    DropReason::ALL.iter().map(|&d| r.dropped(d)).sum()
}

fn floats(u: &mut Unstructured<'_>, n: usize) -> Result<Vec<f32>> {
    (0..n)
        .map(|_| {
            Ok(match u.int_in_range(0u8..=9)? {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => -1.0,
                3 => 0.0,
                _ => f32::from(u.int_in_range(0u16..=1000)?) / 1000.0,
            })
        })
        .collect()
}

fn run(u: &mut Unstructured<'_>, recorders: &[Recorder; 2]) -> Result<()> {
    let recorder = &recorders[usize::from(u.arbitrary::<bool>()?)];
    let langs: Vec<LangId> = ["en", "he", "ja", "zz-Fuzz", ""]
        .iter()
        .map(|t| recorder.language(t))
        .chain([LangId::UND, LangId::EXCLUDED])
        .collect();
    let tokens = u.int_in_range(0usize..=48)?;
    // Mostly well-shaped, sometimes one id short or long.
    let id_len = match u.int_in_range(0u8..=9)? {
        0 => (tokens * TOP_K).saturating_sub(1),
        1 => tokens * TOP_K + 1,
        _ => tokens * TOP_K,
    };
    let ids: Vec<i64> = (0..id_len)
        .map(|_| {
            Ok(match u.int_in_range(0u8..=9)? {
                0 => -1,
                1 => i64::from(EXPERTS),
                2 => i64::MAX,
                _ => i64::from(u.int_in_range(0..=EXPERTS - 1)?),
            })
        })
        .collect::<Result<_>>()?;
    let per_token: Vec<LangId> = (0..tokens + usize::from(u.ratio(1u8, 10)?))
        .map(|_| Ok(*u.choose(&langs)?))
        .collect::<Result<_>>()?;
    let mut segments = Vec::new();
    let mut left = tokens as u32 + u32::from(u.ratio(1u8, 10)?);
    while left > 0 {
        let n = u.int_in_range(1..=left)?;
        segments.push(Segment {
            lang: *u.choose(&langs)?,
            tokens: n,
            sequence_id: if u.arbitrary()? {
                Some(u.arbitrary()?)
            } else {
                None
            },
        });
        left -= n;
    }
    let languages = match u.int_in_range(0u8..=2)? {
        0 => Languages::All(*u.choose(&langs)?),
        1 => Languages::PerToken(&per_token),
        _ => Languages::Segments(&segments),
    };
    let depth = u.int_in_range(0usize..=2)?;
    let weights = floats(u, tokens * TOP_K)?;
    let extra = usize::from(u.ratio(1u8, 10)?);
    let scores = floats(u, tokens * EXPERTS as usize + extra)?;
    let seq_ids: Vec<u64> = (0..tokens).map(|i| i as u64 / 3).collect();
    let mut batch = RouterBatch::at_depth(depth, &ids, languages);
    if u.arbitrary()? {
        batch = batch.topk_weights(&weights);
    }
    match u.int_in_range(0u8..=2)? {
        0 => {}
        1 => batch = batch.probabilities(&scores),
        _ => batch = batch.logits(&scores),
    }
    if u.arbitrary()? {
        batch = batch.sequence_ids(&seq_ids);
    }
    let drops_before = total_drops(recorder);
    match recorder.record(&batch) {
        Ok(r) => {
            assert_eq!(id_len % TOP_K, 0, "a ragged id array was accepted");
            let t = (id_len / TOP_K) as u64;
            let sum = u64::from(r.recorded)
                + u64::from(r.sampled_out)
                + u64::from(r.excluded)
                + u64::from(r.dropped);
            assert_eq!(sum, t, "{r:?} does not account for {t} tokens");
            assert_eq!(
                total_drops(recorder) - drops_before,
                u64::from(r.dropped),
                "{r:?}"
            );
        }
        Err(e) => {
            // Refused whole: counted as drops, never fewer than before.
            assert!(total_drops(recorder) >= drops_before, "{e}");
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    RECORDERS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let recorders = cell.get_or_insert_with(new_recorders);
        let _ = run(&mut Unstructured::new(data), recorders);
    });
});
