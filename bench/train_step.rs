//! Criterion bench: one CPU training step (forward, backward, AdamW) of the
//! Llama shape that `bench/torch_cpu_compare.py` also runs.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vul2safe::backend::cpu::Cpu;
use vul2safe::bench::{setup, small_llama};

fn train_step(c: &mut Criterion) {
    let (batch, seq) = (8, 256);
    let (mut trainer, b) = setup(&Cpu, small_llama(), batch, seq, false);
    let mut g = c.benchmark_group("cpu");
    g.sample_size(10);
    g.throughput(Throughput::Elements((batch * seq) as u64));
    g.bench_function("train_step_llama4L_h256_v8192_B8_T256", |bench| bench.iter(|| trainer.step(&Cpu, std::slice::from_ref(&b)).unwrap()));
    g.finish();
}

criterion_group!(benches, train_step);
criterion_main!(benches);
