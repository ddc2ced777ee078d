//! CPU reference ops against central finite differences (for paths the model
//! fixtures do not isolate: fractional loss weights, GQA groups, decode-shaped
//! attention), plus the LR schedule and gradient clipping.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vul2safe::backend::cpu::{rope_tables, Cpu};
use vul2safe::backend::{row_slots, AttnShape, Backend, HeadSlots, QkvHeads, Rope, IGNORE};
use vul2safe::train::{LrSchedule, ScheduleKind};

fn randn(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Checks `analytic[i] ≈ ∂f/∂x[i]` on a sample of coordinates.
fn check_grad(what: &str, x: &[f32], analytic: &[f32], f: impl Fn(&[f32]) -> f64) {
    let h = 1e-2f32;
    let scale = analytic.iter().fold(0f32, |m, v| m.max(v.abs()));
    for i in (0..x.len()).step_by((x.len() / 40).max(1)) {
        let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
        xp[i] += h;
        xm[i] -= h;
        let num = ((f(&xp) - f(&xm)) / (2.0 * h as f64)) as f32;
        assert!((num - analytic[i]).abs() <= 2e-3 * scale.max(1e-3), "{what}[{i}]: numeric {num} analytic {}", analytic[i]);
    }
}

#[test]
fn attention_backward_with_gqa_and_rope_matches_finite_differences() {
    // One query block, and three (the CPU backend takes 64 queries at a time).
    attention_gradient_check(7);
    attention_gradient_check(150);
}

/// Through attention's entry as training runs it: the gradient of the fused
/// q/k/v projection, before RoPE and the keys' and values' move.
fn attention_gradient_check(t: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (batch, hd) = (2, 8);
    let sh = AttnShape { batch, q_heads: 4, kv_heads: 2, q_len: t, kv_cap: t, head_dim: hd };
    let heads = QkvHeads { q: 4, kv: 2, dim: hd };
    let (cos, sin) = rope_tables(t, hd, 10_000.0);
    let positions: Vec<u32> = (0..batch * t).map(|i| (i % t) as u32).collect();
    let rope = Rope { cos: &cos, sin: &sin, positions: &positions };
    let slots = row_slots(t, t, &vec![0; batch]);
    let kv_at = HeadSlots { cap: t, slots: &slots };
    let (nq, nk) = (batch * t * heads.q * hd, batch * t * heads.kv * hd);
    let (x, r) = (randn(&mut rng, batch * t * heads.width()), randn(&mut rng, nq));
    let forward = |x: &[f32]| {
        let (mut q, mut k, mut v) = (vec![0.0; nq], vec![0.0; nk], vec![0.0; nk]);
        Cpu.qkv_from_tokens(&mut q, &mut k, &mut v, &x.to_vec(), None, rope, heads, kv_at);
        let (mut out, mut lse) = (vec![0.0; nq], vec![0.0; batch * t * heads.q]);
        Cpu.attention_fwd(&mut out, Some(&mut lse), &q, &k, &v, sh, &vec![t; batch]);
        (q, k, v, out, lse)
    };
    let (q, k, v, out, lse) = forward(&x);
    let mut dx = vec![0.0; x.len()];
    Cpu.attention_bwd(&mut dx, &r, &q, &k, &v, &out, &lse, sh, rope);
    check_grad("dqkv", &x, &dx, |x| dot(&forward(x).3, &r));
}

#[test]
fn decode_attention_equals_the_last_rows_of_prefill() {
    // A query block at the end of a longer cache sees exactly what the same
    // rows of a full causal pass see, in one block of queries or in three.
    decode_check(9);
    decode_check(150);
}

fn decode_check(t: usize) {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let hd = 16;
    let full = AttnShape { batch: 1, q_heads: 2, kv_heads: 1, q_len: t, kv_cap: t, head_dim: hd };
    let q = randn(&mut rng, 2 * t * hd);
    let (k, v) = (randn(&mut rng, t * hd), randn(&mut rng, t * hd));
    let mut out = vec![0.0; q.len()];
    Cpu.attention_fwd(&mut out, None, &q, &k, &v, full, &[t]);
    // Last 2 queries of each head, against a cache of capacity t + 3 holding t.
    let cap = t + 3;
    let mut kc = vec![0.0; cap * hd];
    let mut vc = vec![0.0; cap * hd];
    kc[..t * hd].copy_from_slice(&k);
    vc[..t * hd].copy_from_slice(&v);
    // Queries and outputs are token-major: the last two tokens' rows, both heads.
    let last_two = (t - 2) * 2 * hd..;
    let q2 = q[last_two.clone()].to_vec();
    let dec = AttnShape { q_len: 2, kv_cap: cap, ..full };
    let mut out2 = vec![0.0; q2.len()];
    Cpu.attention_fwd(&mut out2, None, &q2, &kc, &vc, dec, &[t]);
    for (a, b) in out2.iter().zip(&out[last_two]) {
        assert!((a - b).abs() < 1e-6);
    }
}

#[test]
fn weighted_cross_entropy_gradient_and_ignore_mask() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (rows, vocab) = (5, 13);
    let logits = randn(&mut rng, rows * vocab);
    let targets = [3u32, IGNORE, 12, 0, 7];
    let weights = [0.5f32, 1.0, 0.25, 2.0, 0.0];
    let loss = |x: &[f32]| Cpu.cross_entropy_inplace(&mut x.to_vec(), &targets, &weights, vocab);
    let mut grad = logits.clone();
    let l = Cpu.cross_entropy_inplace(&mut grad, &targets, &weights, vocab);
    assert!((l - loss(&logits)).abs() < 1e-9);
    check_grad("dlogits", &logits, &grad, loss);
    assert!(grad[vocab..2 * vocab].iter().all(|&g| g == 0.0), "ignored row has zero gradient");
    assert!(grad[4 * vocab..].iter().all(|&g| g == 0.0), "zero-weight row has zero gradient");
    let (lp, _) = Cpu.logprob_entropy(&logits, &targets, vocab, 1.0);
    let row0 = &logits[..vocab];
    let z = row0.iter().map(|x| x.exp()).sum::<f32>().ln();
    assert!((lp[0] - (row0[3] - z)).abs() < 1e-6 && lp[1] == 0.0);
}

#[test]
fn rmsnorm_and_swiglu_backward_match_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (rows, dim) = (3, 8);
    let (x, w, r) = (randn(&mut rng, rows * dim), randn(&mut rng, dim), randn(&mut rng, rows * dim));
    let norm = |x: &[f32], w: &[f32]| {
        let (mut o, mut s) = (vec![0.0; rows * dim], vec![0.0; rows]);
        Cpu.rmsnorm_fwd(&mut o, &mut s, &x.to_vec(), &w.to_vec(), dim, 1e-5);
        (o, s)
    };
    let (_, rstd) = norm(&x, &w);
    let (mut dx, mut dw) = (vec![0.0; rows * dim], vec![0.0; dim]);
    Cpu.rmsnorm_bwd(&mut dx, &mut dw, &r, &x, &w, &rstd, dim);
    check_grad("rmsnorm dx", &x, &dx, |x| dot(&norm(x, &w).0, &r));
    check_grad("rmsnorm dw", &w, &dw, |w| dot(&norm(&x, w).0, &r));

    // Stacked gate/up rows [4, 2 × 6]: each row's gate values, then its up values.
    let (rows, ff) = (4, 6);
    let gu = randn(&mut rng, rows * 2 * ff);
    let r24 = randn(&mut rng, rows * ff);
    let swiglu = |gu: &[f32]| {
        let mut h = vec![0.0; rows * ff];
        Cpu.swiglu_fwd(&mut h, &gu.to_vec(), ff);
        dot(&h, &r24)
    };
    let mut dgu = vec![0.0; rows * 2 * ff];
    Cpu.swiglu_bwd(&mut dgu, &r24, &gu, ff);
    check_grad("swiglu dgate_up", &gu, &dgu, swiglu);
}

#[test]
fn lr_schedule_warms_up_then_decays() {
    let s = LrSchedule { kind: ScheduleKind::Cosine, peak: 1.0, min: 0.1, warmup_steps: 10, total_steps: 110 };
    assert!((s.lr_at(0) - 0.1).abs() < 1e-6 && (s.lr_at(9) - 1.0).abs() < 1e-6);
    assert!((s.lr_at(60) - 0.55).abs() < 1e-5, "halfway through cosine");
    assert!((s.lr_at(110) - 0.1).abs() < 1e-6 && (s.lr_at(500) - 0.1).abs() < 1e-6);
    let l = LrSchedule { kind: ScheduleKind::Linear, ..s };
    assert!((l.lr_at(60) - 0.55).abs() < 1e-5 && (l.lr_at(35) - 0.775).abs() < 1e-5);
}

#[test]
fn embedding_backward_sums_repeated_tokens() {
    let (dim, vocab) = (4, 6);
    let ids = [2u32, 5, 2, 2];
    let dout: Vec<f32> = (0..16).map(|i| i as f32).collect();
    let mut dt = vec![1.0; vocab * dim];
    Cpu.embedding_bwd(&mut dt, &dout, &ids, dim);
    assert_eq!(&dt[8..12], &[1.0 + 0.0 + 8.0 + 12.0, 1.0 + 1.0 + 9.0 + 13.0, 1.0 + 2.0 + 10.0 + 14.0, 1.0 + 3.0 + 11.0 + 15.0]);
    assert_eq!(&dt[20..24], &[5.0, 6.0, 7.0, 8.0]);
    assert!(dt[..8].iter().all(|&v| v == 1.0));
}

/// Clipping is a factor AdamW reads the gradients with: it brings their
/// global norm to the bound, and the update is bit for bit the one from
/// gradients scaled beforehand.
#[test]
fn grad_clipping_bounds_the_global_norm() {
    use vul2safe::backend::AdamWStep;
    use vul2safe::model::Params;
    use vul2safe::train::optimizer::{clip_scale, grad_norm};
    let cfg = vul2safe::demo::tiny_config(50);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let g = Params::build(&cfg, |s| randn(&mut rng, s.numel()));
    let norm = grad_norm(&Cpu, &g);
    let s = clip_scale(norm, 1.0);
    assert!(norm > 1.0 && s < 1.0);
    let scaled: Vec<Vec<f32>> = g.iter().into_iter().map(|t| t.iter().map(|x| x * s).collect()).collect();
    let scaled_norm = scaled.iter().map(|t| Cpu.sum_squares(t)).sum::<f64>().sqrt();
    assert!((scaled_norm - 1.0).abs() < 1e-4, "{scaled_norm}");
    assert_eq!(clip_scale(0.5, 1.0), 1.0, "gradients within the bound are left alone");
    let hp = AdamWStep { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, step: 2, grad_scale: s };
    let (grad, pre) = (g.iter()[0], &scaled[0]);
    let start = randn(&mut rng, grad.len());
    let update = |grad: &Vec<f32>, hp: AdamWStep| {
        let (mut p, mut m, mut v) = (start.clone(), vec![0.1; grad.len()], vec![0.2; grad.len()]);
        Cpu.adamw(&mut p, grad, &mut m, &mut v, hp);
        (p, m, v)
    };
    assert_eq!(update(grad, hp), update(pre, AdamWStep { grad_scale: 1.0, ..hp }));
    assert_ne!(update(grad, hp), update(grad, AdamWStep { grad_scale: 1.0, ..hp }));
}

#[test]
fn training_is_bitwise_deterministic() {
    // Exact resume depends on it: same seed, same steps, same bits.
    let run = || {
        let (mut t, b) = vul2safe::bench::setup(&Cpu, vul2safe::demo::tiny_config(300), 4, 64, false);
        for _ in 0..3 {
            t.step(&Cpu, std::slice::from_ref(&b)).unwrap();
        }
        t.model.params.iter().into_iter().flat_map(|p| p.iter().map(|v| v.to_bits()).collect::<Vec<_>>()).collect::<Vec<u32>>()
    };
    assert!(run() == run());
}
