//! Criterion bench: the built-in analyzer over the embedded corpus (both
//! versions of every pair), one thread. Target: ≥ 5,000 functions/s.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vul2safe::data::corpus::functions as corpus_functions;
use vul2safe::eval::analyzer::builtin::analyze_text;

fn analyzer(c: &mut Criterion) {
    let funcs = corpus_functions();
    let mut g = c.benchmark_group("analyzer");
    g.throughput(Throughput::Elements(funcs.len() as u64));
    g.bench_function("builtin_corpus", |b| b.iter(|| funcs.iter().map(|(l, f)| analyze_text(*l, f, "f").len()).sum::<usize>()));
    g.finish();
}

criterion_group!(benches, analyzer);
criterion_main!(benches);
