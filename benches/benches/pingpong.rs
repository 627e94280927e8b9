//! Criterion benchmark of in-process request/reply between two agents of one bureau, one
//! at a time and pipelined, on a current-thread and on a multi-thread runtime (the scenario
//! is described in the crate docs).
#![allow(missing_docs)] // criterion_group! generates undocumented functions.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn runtimes() -> Vec<(&'static str, tokio::runtime::Runtime)> {
    vec![
        ("current_thread", tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()),
        ("multi_thread", tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()),
    ]
}

fn bench(c: &mut Criterion) {
    for (name, rt) in runtimes() {
        let mut group = c.benchmark_group(format!("bureau_pingpong/{name}"));
        group.throughput(Throughput::Elements(1));
        group.measurement_time(Duration::from_secs(3));
        for (label, in_flight) in [("one_at_a_time", 1), ("pipelined_64", 64)] {
            group.bench_function(label, |b| {
                b.iter_custom(|iters| {
                    let figures = rt.block_on(agora_benches::ping_pong(iters, in_flight)).unwrap();
                    Duration::from_nanos(figures.elapsed_ns)
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
