//! Criterion benches of the record path: moescope against the baselines, for T = 1, 64 and
//! 4096 tokens per batch (E = 128, k = 8, 48 layers) on 1 and 2 threads. The same workloads
//! as `moescope bench` (crate `moescope-bench`); see benches/README.md.
//!
//! `cargo bench --bench record` (all), or filter: `cargo bench --bench record -- 'T=64/'`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use moescope_bench::{run_calls, sink, Impl, Workload};

fn record(c: &mut Criterion) {
    for tokens in [1usize, 64, 4096] {
        let w = Workload::new(tokens);
        for threads in [1usize, 2] {
            let mut group = c.benchmark_group(format!("record/T={tokens}/threads={threads}"));
            group.throughput(Throughput::Elements((tokens * threads) as u64));
            group.sample_size(20);
            group.warm_up_time(Duration::from_millis(300));
            group.measurement_time(Duration::from_secs(2));
            for imp in Impl::ALL {
                let s = sink(imp, &w);
                group.bench_function(BenchmarkId::from_parameter(imp.name()), |b| {
                    // One "iteration" is one batch call on each thread (one layer, T tokens).
                    b.iter_custom(|iters| run_calls(&*s, &w, threads, iters));
                });
            }
            group.finish();
        }
    }
}

criterion_group!(benches, record);
criterion_main!(benches);
