//! After warm-up, `record` allocates nothing: a counting global allocator proves it.

#![allow(unsafe_code)] // a counting global allocator

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use moescope_core::{Languages, ModelSpec, Recorder, RouterBatch, Segment};

struct CountingAlloc;

thread_local! {
    // Const-initialized and without a destructor: touching it never allocates.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards every call to the system allocator unchanged; the counter is a
// thread-local `Cell` that needs no allocation.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn record_does_not_allocate_after_warm_up() {
    let spec = ModelSpec::preset("qwen3-30b-a3b").unwrap();
    let rec = Recorder::new(spec).unwrap();
    let (en, he) = (rec.language("en"), rec.language("he"));
    let t = 64;
    let ids: Vec<u32> = (0..t * 8).map(|i| (i * 37 % 128) as u32).collect();
    let ids64: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
    let logits: Vec<f32> = (0..t * 128).map(|i| (i % 17) as f32 * 0.1).collect();
    let weights = vec![0.125f32; t * 8];
    let seqs: Vec<u64> = (0..t as u64).collect();
    let segs = [
        Segment {
            lang: en,
            tokens: 40,
            sequence_id: Some(7),
        },
        Segment {
            lang: he,
            tokens: 24,
            sequence_id: Some(8),
        },
    ];
    let run = |layer: usize| {
        rec.record(&RouterBatch::at_depth(layer, &ids, Languages::All(en)))
            .unwrap();
        rec.record(
            &RouterBatch::at_depth(layer, &ids64, Languages::Segments(&segs))
                .logits(&logits)
                .topk_weights(&weights),
        )
        .unwrap();
        rec.record(&RouterBatch::at_depth(layer, &ids, Languages::All(he)).sequence_ids(&seqs))
            .unwrap();
        // Bad input is counted, not allocated for.
        let _ = rec.record(&RouterBatch::at_depth(99, &ids, Languages::All(he)));
        rec.record_text(he, 100, 20);
    };
    run(0); // warm-up: this thread's scratch, the languages' probability counters
    let before = allocations();
    for layer in 0..48 {
        run(layer);
    }
    assert_eq!(allocations() - before, 0, "record allocated after warm-up");
    // The counter works: a snapshot allocates.
    let _ = rec.snapshot();
    assert!(allocations() > before);
}
