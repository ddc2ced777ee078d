//! Attention alone: the forward's and the backward's TFLOP/s on one causal
//! GQA shape with random operands, in the layouts and storage a training
//! step uses (`vul2safe bench attention`; bench/torch_compare.py times
//! PyTorch's FlashAttention-2 kernels on the same shape in the same run).

use crate::backend::{cpu::rope_tables, row_slots, AttnShape, Backend, HeadSlots, MatMul, QkvHeads, Rope};
use crate::model::ModelConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Mean milliseconds per call over the timed repetitions.
pub struct AttentionBench {
    pub fwd_ms: f64,
    pub bwd_ms: f64,
}

impl AttentionBench {
    /// Forward, backward and forward + backward TFLOP/s (`causal_rates`).
    pub fn tflops(&self, sh: AttnShape) -> [f64; 3] {
        causal_rates(sh.causal_fwd_flops(), self.fwd_ms, self.bwd_ms)
    }
}

/// Forward, backward and forward + backward TFLOP/s of attention whose
/// forward does `fwd_flops` in `fwd_ms` and whose backward takes `bwd_ms`,
/// the backward counted as 2.5× the forward's FLOPs as FlashAttention's
/// papers do.
pub fn causal_rates(fwd_flops: f64, fwd_ms: f64, bwd_ms: f64) -> [f64; 3] {
    let rate = super::tflop_per_s;
    [rate(fwd_flops, fwd_ms), rate(2.5 * fwd_flops, bwd_ms), rate(3.5 * fwd_flops, fwd_ms + bwd_ms)]
}

/// Times `reps` forwards, then `reps` backwards (the backward's exit into
/// the fused projection's gradient and the GQA sums included), after one
/// of each untimed (where the CUDA backend picks its kernel variants).
pub fn attention_throughput<B: Backend>(be: &B, sh: AttnShape, reps: usize) -> anyhow::Result<AttentionBench> {
    anyhow::ensure!(
        sh.batch > 0 && sh.q_len > 0 && sh.q_len == sh.kv_cap && sh.kv_heads > 0 && sh.q_heads.is_multiple_of(sh.kv_heads),
        "attention bench: need rows, queries, key heads, and whole GQA groups ({} query heads over {} key heads)",
        sh.q_heads,
        sh.kv_heads
    );
    // A model with this attention, for the backend to refuse a head size its kernels lack.
    let model = ModelConfig {
        num_heads: sh.q_heads,
        num_kv_heads: sh.kv_heads,
        head_dim: sh.head_dim,
        hidden_size: sh.q_heads * sh.head_dim,
        ..super::small_llama()
    };
    be.supports(&model)?;
    let (n, t) = (sh.batch * sh.q_len, sh.q_len);
    let heads = QkvHeads { q: sh.q_heads, kv: sh.kv_heads, dim: sh.head_dim };
    let (q_dim, kv_dim) = (sh.q_heads * sh.head_dim, sh.kv_heads * sh.head_dim);
    // The projection and the output gradient as a step has them: matmul outputs (of random inputs).
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut random = |len: usize| be.upload(&(0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect::<Vec<_>>());
    const K: usize = 64;
    let (x, w_qkv, w_out) = (random(n * K), random(K * heads.width()), random(K * q_dim));
    let mut qkv = be.zeros_projection(n * heads.width());
    be.matmul(&mut qkv, &x, &w_qkv, MatMul::linear(n, K, heads.width()));
    let mut dout = be.zeros_projection(n * q_dim);
    be.matmul(&mut dout, &x, &w_out, MatMul::linear(n, K, q_dim));
    let (cos, sin) = rope_tables(t, sh.head_dim, 10_000.0);
    let (cos, sin) = (be.upload(&cos), be.upload(&sin));
    let positions: Vec<u32> = (0..n).map(|i| (i % t) as u32).collect();
    let rope = Rope { cos: &cos, sin: &sin, positions: &positions };
    let slots = row_slots(t, t, &vec![0; sh.batch]);
    let (mut q, mut k, mut v) = (be.zeros_attention(n * q_dim), be.zeros_attention(n * kv_dim), be.zeros_attention(n * kv_dim));
    be.qkv_from_tokens(&mut q, &mut k, &mut v, &qkv, None, rope, heads, HeadSlots { cap: t, slots: &slots });
    let (mut out, mut lse, mut dqkv) = (be.zeros_projection(n * q_dim), be.zeros(n * sh.q_heads), be.zeros_projection(n * heads.width()));
    let kv_lens = vec![t; sh.batch];
    let timed = |run: &mut dyn FnMut()| {
        run();
        be.synchronize();
        let t0 = std::time::Instant::now();
        for _ in 0..reps {
            run();
        }
        be.synchronize();
        t0.elapsed().as_secs_f64() * 1e3 / reps as f64
    };
    let fwd_ms = timed(&mut || be.attention_fwd(&mut out, Some(&mut lse), &q, &k, &v, sh, &kv_lens));
    let bwd_ms = timed(&mut || be.attention_bwd(&mut dqkv, &dout, &q, &k, &v, &out, &lse, sh, rope));
    Ok(AttentionBench { fwd_ms, bwd_ms })
}
