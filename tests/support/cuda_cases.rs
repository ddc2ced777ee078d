//! The CUDA backend's cases against the CPU reference: each op on random
//! inputs, and the full model's forward, backward and AdamW step on a
//! fixture model. Run on a GPU by cuda_backend.rs and on the emulated driver
//! by cuda_emulated.rs; each provides `open_device`.

use crate::common::{assert_close, draw_distance, fixture_dir};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vul2safe::backend::cpu::{rope_tables, Cpu};
use vul2safe::backend::cuda::{Cuda, Math};
use vul2safe::backend::{row_slots, AdamWStep, AdamWTensor, AttnShape, Backend, HeadSlots, MatMul, QkvHeads, Rope, SeqSpan, IGNORE};
use vul2safe::model::weights::load_params;
use vul2safe::model::{Batch, GradWrite, ModelConfig, Params, TrainState, Transformer};

/// The GPU in exact f32 mode, compared with the CPU at tight tolerances.
fn gpu() -> Option<Cuda> {
    let g = gpu_tensor_cores()?;
    g.set_math(Math::Exact).unwrap();
    Some(g)
}

/// The device in its default mode (bf16 matmul inputs, bf16 flash attention).
fn gpu_tensor_cores() -> Option<Cuda> {
    match crate::open_device() {
        Ok(g) => Some(g),
        Err(e) => {
            eprintln!("SKIPPED: no device: {e:#}");
            None
        }
    }
}

fn randv(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn close(what: &str, gpu: &Cuda, got: &<Cuda as Backend>::Buf, want: &[f32]) {
    close_within(what, gpu, got, want, (1e-4, 1e-5));
}

/// Tolerances (relative, fraction of the largest |want|) for bf16 tensor-core inputs.
const BF16_TOL: (f32, f32) = (2e-2, 2e-2);

fn close_within(what: &str, gpu: &Cuda, got: &<Cuda as Backend>::Buf, want: &[f32], (rtol, atol): (f32, f32)) {
    assert_close(what, &gpu.download(got)[..want.len()], want, rtol, atol);
}

/// A training batch's RoPE: tables for `seq` positions, token `i` at position `i % seq`.
struct TrainingRope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    positions: Vec<u32>,
    device: [<Cuda as Backend>::Buf; 2],
}

impl TrainingRope {
    fn new(g: &Cuda, batch: usize, seq: usize, hd: usize) -> TrainingRope {
        let (cos, sin) = rope_tables(seq, hd, 10_000.0);
        let device = [g.upload(&cos), g.upload(&sin)];
        TrainingRope { cos, sin, positions: (0..batch * seq).map(|i| (i % seq) as u32).collect(), device }
    }
    fn host(&self) -> Rope<'_, Vec<f32>> {
        Rope { cos: &self.cos, sin: &self.sin, positions: &self.positions }
    }
    fn device(&self) -> Rope<'_, <Cuda as Backend>::Buf> {
        Rope { cos: &self.device[0], sin: &self.device[1], positions: &self.positions }
    }
}

/// `host` rounded into a bf16 attention operand (a KV cache's or training's
/// storage): a matmul by the identity writes it into a bf16 projection,
/// which is copied across (only attention's own ops write these otherwise).
fn bf16_operand(g: &Cuda, host: &[f32], width: usize) -> <Cuda as Backend>::Buf {
    let eye: Vec<f32> = (0..width * width).map(|i| if i % (width + 1) == 0 { 1.0 } else { 0.0 }).collect();
    let mut proj = g.zeros_projection(host.len());
    g.matmul(&mut proj, &g.upload(host), &g.upload(&eye), MatMul::linear(host.len() / width, width, width));
    let mut operand = g.zeros_attention(host.len());
    g.copy_range(&mut operand, 0, &proj, 0, host.len());
    operand
}

/// Every transpose combination, writing and accumulating, in `g`'s math mode.
fn check_matmuls(g: &Cuda, rng: &mut ChaCha8Rng, tol: (f32, f32)) {
    for (m, n, k, ta, tb) in [(7, 5, 3, false, false), (33, 17, 65, false, true), (16, 40, 9, true, false), (130, 96, 257, true, true)] {
        let (a, b, c0) = (randv(rng, m * k), randv(rng, k * n), randv(rng, m * n));
        for accumulate in [false, true] {
            let mm = MatMul { m, n, k, trans_a: ta, trans_b: tb, accumulate };
            let mut want = c0.clone();
            Cpu.matmul(&mut want, &a, &b, mm);
            let mut got = g.upload(&c0);
            g.matmul(&mut got, &g.upload(&a), &g.upload(&b), mm);
            close_within(&format!("{:?} matmul {mm:?}", g.math()), g, &got, &want, tol);
        }
        // Onto a residual kept apart (cuBLASLt, C ≠ D): the residual stays as it was.
        let mm = MatMul { m, n, k, trans_a: ta, trans_b: tb, accumulate: false };
        let mut want = vec![0.0; m * n];
        Cpu.matmul_residual(&mut want, &a, &b, &c0, mm);
        let (residual, mut got) = (g.upload(&c0), g.upload(&randv(rng, m * n)));
        g.matmul_residual(&mut got, &g.upload(&a), &g.upload(&b), &residual, mm);
        close_within(&format!("{:?} matmul_residual {mm:?}", g.math()), g, &got, &want, tol);
        assert_eq!(g.download(&residual), c0, "matmul_residual wrote its residual");
    }
}

#[test]
fn dense_and_elementwise_ops_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    check_matmuls(&g, &mut rng, (1e-4, 1e-5));
    let y = randv(&mut rng, 1000);
    assert!((g.sum_squares(&g.upload(&y)) - Cpu.sum_squares(&y)).abs() < 1e-5 * Cpu.sum_squares(&y));
    // Stacked gate/up rows, one value per thread (ff 27) and four (ff 64).
    for (rows, ff) in [(37, 27), (9, 64)] {
        let (gate_up, dh) = (randv(&mut rng, rows * 2 * ff), randv(&mut rng, rows * ff));
        let mut h = vec![0.0; rows * ff];
        Cpu.swiglu_fwd(&mut h, &gate_up, ff);
        let mut gh = g.zeros(rows * ff);
        g.swiglu_fwd(&mut gh, &g.upload(&gate_up), ff);
        close(&format!("swiglu fwd ff {ff}"), &g, &gh, &h);
        let mut dgu = vec![0.0; gate_up.len()];
        Cpu.swiglu_bwd(&mut dgu, &dh, &gate_up, ff);
        let mut gdgu = g.zeros(gate_up.len());
        g.swiglu_bwd(&mut gdgu, &g.upload(&dh), &g.upload(&gate_up), ff);
        close(&format!("swiglu bwd ff {ff}"), &g, &gdgu, &dgu);
    }
    let (rows, cols) = (13, 24);
    let (yb, bias) = (randv(&mut rng, rows * cols), randv(&mut rng, cols));
    let mut db = bias.clone();
    Cpu.bias_grad(&mut db, &yb, rows);
    let mut gdb = g.upload(&bias);
    g.bias_grad(&mut gdb, &g.upload(&yb), rows);
    close("bias_grad", &g, &gdb, &db);
}

#[test]
fn norm_and_embedding_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (rows, dim) = (37, 96);
    let (x, w) = (randv(&mut rng, rows * dim), randv(&mut rng, dim));
    let (mut out, mut rstd) = (vec![0.0; rows * dim], vec![0.0; rows]);
    Cpu.rmsnorm_fwd(&mut out, &mut rstd, &x, &w, dim, 1e-5);
    let (mut gout, mut grstd) = (g.zeros(rows * dim), g.zeros(rows));
    let (gx, gw) = (g.upload(&x), g.upload(&w));
    g.rmsnorm_fwd(&mut gout, &mut grstd, &gx, &gw, dim, 1e-5);
    close("rmsnorm", &g, &gout, &out);
    // The backward in one kernel (rows up to 1024 values: one four-value
    // group per lane, then eight with a partial last one) and in two (wider);
    // 600 rows make more weight-gradient partials (38) than the column sum has warps.
    for (rows, dim) in [(37, 96), (37, 900), (600, 96), (5, 1100)] {
        let dout = g.upload(&randv(&mut rng, rows * dim));
        rmsnorm_bwd_matches_the_cpu(&g, &mut rng, rows, dim, &dout, "");
    }

    let (vocab, edim) = (50, 24);
    let ids: Vec<u32> = (0..rows).map(|i| if i % 3 == 0 { 7 } else { rng.random_range(0..vocab as u32) }).collect();
    let table = randv(&mut rng, vocab * edim);
    let mut e = vec![0.0; rows * edim];
    Cpu.embedding_fwd(&mut e, &table, &ids, edim);
    let mut ge = g.zeros(rows * edim);
    g.embedding_fwd(&mut ge, &g.upload(&table), &ids, edim);
    close("embedding", &g, &ge, &e);
    let de = randv(&mut rng, rows * edim);
    let mut dt = table.clone();
    Cpu.embedding_bwd(&mut dt, &de, &ids, edim);
    let mut gdt = g.upload(&table);
    g.embedding_bwd(&mut gdt, &g.upload(&de), &ids, edim);
    close("embedding bwd (hot token 7)", &g, &gdt, &dt);
}

/// A profile counts each product once, with its FLOPs, whichever way it ran
/// (cuda_emulated.rs runs this again with cuBLASLt failing every call, so
/// each product's first call falls back after its algorithm was chosen).
#[test]
fn profile_counts_each_matmul_once() {
    let Some(g) = gpu_tensor_cores() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let (m, n, k) = (48, 40, 24);
    let [a, b, residual] = [m * k, k * n, m * n].map(|len| g.upload(&randv(&mut rng, len)));
    let mut c = g.zeros(m * n);
    let mm = MatMul::linear(m, k, n);
    g.start_profile();
    for _ in 0..2 {
        g.matmul(&mut c, &a, &b, mm);
        g.matmul_residual(&mut c, &a, &b, &residual, mm);
    }
    let profile = g.take_profile();
    let gemm = profile.families.iter().find(|f| f.family == "gemm").expect("a gemm row");
    assert_eq!((gemm.calls, gemm.flops), (4, 4.0 * 2.0 * (m * n * k) as f64), "{:?}", profile.families);
}

#[test]
fn tensor_core_matmuls_match_the_cpu_at_their_precision() {
    let Some(g) = gpu_tensor_cores() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for math in [Math::Tf32, Math::Bf16] {
        g.set_math(math).unwrap();
        check_matmuls(&g, &mut rng, BF16_TOL);
    }
}

/// Causal training attention, forward and backward, on `g` against the CPU.
fn check_training_attention(g: &Cuda, rng: &mut ChaCha8Rng, shapes: &[(usize, usize, usize, usize)], tol: (f32, f32)) {
    for hd in [32, 64, 128] {
        for &(batch, hq, hkv, t) in shapes {
            let sh = AttnShape { batch, q_heads: hq, kv_heads: hkv, q_len: t, kv_cap: t, head_dim: hd };
            let (q, k, v, dout) = (
                randv(rng, batch * hq * t * hd),
                randv(rng, batch * hkv * t * hd),
                randv(rng, batch * hkv * t * hd),
                randv(rng, batch * hq * t * hd),
            );
            let lens = vec![t; batch];
            let (mut out, mut lse) = (vec![0.0; q.len()], vec![0.0; batch * hq * t]);
            Cpu.attention_fwd(&mut out, Some(&mut lse), &q, &k, &v, sh, &lens);
            let (gq, gk, gv) = (g.upload(&q), g.upload(&k), g.upload(&v));
            let (mut gout, mut glse) = (g.zeros(q.len()), g.zeros(lse.len()));
            g.attention_fwd(&mut gout, Some(&mut glse), &gq, &gk, &gv, sh, &lens);
            let at = format!("hd {hd} b {batch} hq {hq} hkv {hkv} t {t}");
            close_within(&format!("attention out {at}"), g, &gout, &out, tol);
            close_within(&format!("attention lse {at}"), g, &glse, &lse, tol);
            let rope = TrainingRope::new(g, batch, t, hd);
            let mut dqkv = vec![0.0; batch * t * (hq + 2 * hkv) * hd];
            Cpu.attention_bwd(&mut dqkv, &dout, &q, &k, &v, &out, &lse, sh, rope.host());
            let mut gdqkv = g.zeros(dqkv.len());
            g.attention_bwd(&mut gdqkv, &g.upload(&dout), &gq, &gk, &gv, &gout, &glse, sh, rope.device());
            close_within(&format!("attention dqkv {at}"), g, &gdqkv, &dqkv, tol);
        }
    }
}

/// Queries against a KV cache holding more positions than some rows see.
fn check_cached_attention(g: &Cuda, rng: &mut ChaCha8Rng, sh: AttnShape, lens: &[usize], tol: (f32, f32)) {
    let (q, k, v) = (
        randv(rng, sh.batch * sh.q_heads * sh.q_len * sh.head_dim),
        randv(rng, sh.batch * sh.kv_heads * sh.kv_cap * sh.head_dim),
        randv(rng, sh.batch * sh.kv_heads * sh.kv_cap * sh.head_dim),
    );
    let mut out = vec![0.0; q.len()];
    Cpu.attention_fwd(&mut out, None, &q, &k, &v, sh, lens);
    let mut gout = g.zeros(q.len());
    g.attention_fwd(&mut gout, None, &g.upload(&q), &g.upload(&k), &g.upload(&v), sh, lens);
    close_within(&format!("cached attention {sh:?}"), g, &gout, &out, tol);
}

#[test]
fn attention_matches_the_cpu_forward_and_backward() {
    let Some(g) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    check_training_attention(&g, &mut rng, &[(2, 4, 2, 37), (1, 2, 2, 70)], (1e-4, 1e-5));
    let decode = AttnShape { batch: 2, q_heads: 2, kv_heads: 1, q_len: 1, kv_cap: 16, head_dim: 64 };
    check_cached_attention(&g, &mut rng, decode, &[5, 11], (1e-4, 1e-5));
}

#[test]
fn split_decode_attention_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // Few rows and long caches split the keys across blocks; a row shorter
    // than the others leaves whole splits empty; groups of 1, 4 and 7.
    for (hq, hkv, hd) in [(2, 2, 64), (8, 2, 32), (14, 2, 128)] {
        let sh = AttnShape { batch: 3, q_heads: hq, kv_heads: hkv, q_len: 1, kv_cap: 2000, head_dim: hd };
        check_cached_attention(&g, &mut rng, sh, &[2000, 130, 1337], (1e-4, 1e-5));
    }
}

#[test]
fn flash_attention_matches_the_cpu_at_bf16_tolerance() {
    let Some(g) = gpu_tensor_cores() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    // Several 64-row tiles, a ragged last tile, GQA groups of 1, 2 and 3.
    let shapes = [(2, 4, 2, 37), (1, 3, 1, 200), (2, 2, 2, 128)];
    check_training_attention(&g, &mut rng, &shapes, BF16_TOL);
    // The backward's escape hatch: dQ's shares added in any order.
    g.set_ordered_dq(false);
    check_training_attention(&g, &mut rng, &shapes, BF16_TOL);
    g.set_ordered_dq(true);
    // A prefill chunk against a longer cache (flash), and a decode step (decode.cu).
    let prefill = AttnShape { batch: 2, q_heads: 4, kv_heads: 2, q_len: 40, kv_cap: 112, head_dim: 64 };
    check_cached_attention(&g, &mut rng, prefill, &[60, 112], BF16_TOL);
    let decode = AttnShape { batch: 2, q_heads: 2, kv_heads: 1, q_len: 1, kv_cap: 16, head_dim: 128 };
    check_cached_attention(&g, &mut rng, decode, &[5, 11], BF16_TOL);
}

/// cuBLASLt tuning (gemm_tune.rs) keeps one algorithm per size class of
/// bf16 products: each tuned product gives exactly the bits of its kept
/// candidate run pinned (an accumulating one, timed on a scratch output,
/// adds its sum once), every candidate agrees with the heuristic's first
/// at bf16 precision, and a known size class is not timed again.
#[test]
fn gemm_tuning_keeps_one_algorithm_per_size_class() {
    let Some(g) = gpu_tensor_cores() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let (rows, d_in, d_out) = (300, 192, 320);
    let [x, w, dy, c0] = [rows * d_in, d_out * d_in, rows * d_out, rows * d_out.max(d_in)].map(|n| randv(&mut rng, n));
    let [x, w, dy] = [&x, &w, &dy].map(|h| g.upload(h));
    let residual = g.upload(&c0[..rows * d_out]);
    let into = |mut c: <Cuda as Backend>::Buf, a: &<Cuda as Backend>::Buf, b: &<Cuda as Backend>::Buf, mm: MatMul| {
        g.matmul(&mut c, a, b, mm);
        g.download(&c)
    };
    let weight_grad = |mm: MatMul| into(g.upload(&c0[..d_out * d_in]), &dy, &x, mm);
    let accumulating = MatMul::linear_dw(rows, d_in, d_out);
    let forward = |n: usize| into(g.upload(&c0[..n * d_out]), &x, &w, MatMul::linear(n, d_in, d_out));
    // The layer's products: forward (also into a bf16 projection, and onto a residual), input and weight gradients.
    let run = || -> Vec<Vec<f32>> {
        let mut onto = g.zeros(rows * d_out);
        g.matmul_residual(&mut onto, &x, &w, &residual, MatMul::linear(rows, d_in, d_out));
        vec![
            forward(rows),
            into(g.zeros_projection(rows * d_out), &x, &w, MatMul::linear(rows, d_in, d_out)),
            into(g.upload(&c0[..rows * d_in]), &dy, &w, MatMul::linear_dx(rows, d_in, d_out)),
            weight_grad(accumulating),
            g.download(&onto),
        ]
    };
    // Each product's problem as tuning names it.
    let problems = ["300x320x192 NT", "300x320x192 NT bf16-out", "300x192x320 NN", "320x192x300 TN", "300x320x192 NT onto-residual"];
    let pinned = |i: usize| {
        g.pin_variant(Some(i));
        let r = (run(), forward(280), weight_grad(MatMul { accumulate: false, ..accumulating }));
        g.pin_variant(None);
        r
    };
    let candidates: Vec<_> = (0..8).map(pinned).collect();
    for (i, (products, _, _)) in candidates.iter().enumerate() {
        for (p, (got, want)) in products.iter().zip(&candidates[0].0).enumerate() {
            assert_close(&format!("{}: candidate {i} against the first", problems[p]), got, want, BF16_TOL.0, BF16_TOL.1);
        }
    }
    let emulated = g.device_name().starts_with("CPU kernel emulator");
    let before = g.tunings().len();
    let tuned = run();
    let runs: Vec<_> = g.tunings()[before..].to_vec();
    assert!(runs.iter().all(|r| r.ms.is_finite() && r.resources.is_none() && r.candidate.is_some()), "{runs:?}");
    // The candidate each product kept. A problem with one candidate is not
    // timed (it runs that one): on a card some may be; the emulator offers three.
    let kept = |p: usize| -> usize {
        let name = format!("gemm {}", problems[p]);
        let timed: Vec<_> = runs.iter().filter(|r| r.kernel == name).collect();
        assert!(!timed.is_empty() || !emulated, "{name} was not timed: {runs:?}");
        let chosen: Vec<_> = timed.iter().filter(|r| r.chosen).collect();
        assert!(timed.is_empty() || chosen.len() == 1, "{name}: one kept of {timed:?}");
        chosen.first().map_or(0, |r| r.candidate.unwrap())
    };
    assert!(runs.iter().all(|r| problems.iter().any(|p| r.kernel == format!("gemm {p}"))), "only the five problems timed: {runs:?}");
    for (p, got) in tuned.iter().enumerate() {
        assert!(got == &candidates[kept(p)].0[p], "{}: the tuned product is not its kept candidate's", problems[p]);
    }
    // Fewer rows of the forward's size class (up to 512) run one of their own
    // candidates, the kept one where it is among them: the emulator's lists
    // are the same for every size, a card's heuristic may order 280 rows' otherwise.
    let fewer = forward(280);
    assert!(candidates.iter().any(|c| c.1 == fewer), "280 rows ran none of their candidates");
    assert!(!emulated || fewer == candidates[kept(0)].1, "280 rows did not run the kept algorithm");
    // The weight gradient written instead of added is the same problem: the kept algorithm.
    assert!(weight_grad(MatMul { accumulate: false, ..accumulating }) == candidates[kept(3)].2);
    assert!(run() == tuned);
    assert_eq!(g.tunings().len(), before + runs.len(), "known problems and size classes are not timed again");
    // A projection of another width (the first 288 of w's rows) is a class of its own (timed, where it has candidates to choose from).
    into(g.zeros(rows * 288), &x, &w, MatMul::linear(rows, d_in, 288));
    let narrower = g.tunings()[before + runs.len()..].to_vec();
    assert!(narrower.iter().all(|r| r.kernel == "gemm 300x288x192 NT"), "{narrower:?}");
    assert!(narrower.iter().filter(|r| r.chosen).count() == 1 || (!emulated && narrower.is_empty()), "{narrower:?}");
    if emulated {
        // The emulated heuristic's second candidate splits K: other bits, so the checks above can tell them apart.
        assert!(candidates[1].0[0] != candidates[0].0[0]);
    }
}

#[test]
fn flash_variants_agree_bit_for_bit_and_tuning_keeps_one() {
    let Some(g) = gpu_tensor_cores() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    // The head_dim-64 variants: forward with two 16-row tiles per warp or
    // one; backward at one block per SM, two, or 64-query tiles in dynamic
    // shared memory. At 128: one stage of tiles or two ("staged"). The same
    // arithmetic in the same order: the same bits.
    let cases: [(usize, usize, &[&str]); 2] = [
        (
            64,
            3,
            &[
                "flash_fwd_d64_f32",
                "flash_fwd_d64_f32_one_tile",
                "flash_bwd_d64_f32",
                "flash_bwd_d64_f32_two_blocks",
                "flash_bwd_d64_f32_wide",
            ],
        ),
        (128, 2, &["flash_fwd_d128_f32", "flash_fwd_d128_f32_staged", "flash_bwd_d128_f32", "flash_bwd_d128_f32_staged"]),
    ];
    for (hd, variants, want) in cases {
        let sh = AttnShape { batch: 2, q_heads: 4, kv_heads: 2, q_len: 200, kv_cap: 200, head_dim: hd };
        let (q_len, kv_len) = (2 * 4 * 200 * hd, 2 * 2 * 200 * hd);
        let [q, k, v, dout] = [q_len, kv_len, kv_len, q_len].map(|n| g.upload(&randv(&mut rng, n)));
        let forward = || {
            let (mut out, mut lse) = (g.zeros(q_len), g.zeros(2 * 4 * 200));
            g.attention_fwd(&mut out, Some(&mut lse), &q, &k, &v, sh, &[200, 200]);
            (out, lse)
        };
        let rope = TrainingRope::new(&g, 2, 200, hd);
        let backward = |(out, lse): &(<Cuda as Backend>::Buf, <Cuda as Backend>::Buf)| {
            let mut dqkv = g.zeros(2 * 200 * (4 + 2 * 2) * hd);
            g.attention_bwd(&mut dqkv, &dout, &q, &k, &v, out, lse, sh, rope.device());
            g.download(&dqkv)
        };
        let both = |fwd: &(<Cuda as Backend>::Buf, <Cuda as Backend>::Buf)| [g.download(&fwd.0), g.download(&fwd.1)];
        g.pin_variant(Some(0));
        let fwd = forward();
        let (want_fwd, want_bwd) = (both(&fwd), backward(&fwd));
        for i in 1..variants {
            g.pin_variant(Some(i));
            let fwd_i = forward();
            assert!(both(&fwd_i) == want_fwd, "head_dim {hd}: the flash forward's variant {i} disagrees with variant 0");
            assert!(backward(&fwd) == want_bwd, "head_dim {hd}: the flash backward's variant {i} disagrees with variant 0");
        }
        g.pin_variant(None);
        let before = g.tunings().len();
        assert!(hd != 64 || before == 0, "pinned launches do not tune");
        // Unpinned, the first launch of each times its variants and keeps one; the results are the same.
        let fwd = forward();
        assert!(both(&fwd) == want_fwd && backward(&fwd) == want_bwd, "head_dim {hd}: the tuned kernels disagree");
        let runs = &g.tunings()[before..];
        let names: Vec<&str> = runs.iter().map(|r| r.kernel.as_str()).collect();
        assert_eq!(names, want);
        assert!(runs.iter().all(|r| r.ms.is_finite() && r.ms >= 0.0), "{runs:?}");
        assert_eq!(runs.iter().filter(|r| r.chosen).count(), 2, "one kept per kernel: {runs:?}");
        // The shapes are known now: no second tuning.
        backward(&forward());
        assert_eq!(g.tunings().len(), before + want.len());
    }
}

#[test]
fn losses_and_adamw_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (rows, vocab) = (9, 1000);
    let logits = randv(&mut rng, rows * vocab);
    let targets: Vec<u32> = (0..rows).map(|r| if r == 4 { IGNORE } else { rng.random_range(0..vocab as u32) }).collect();
    let weights: Vec<f32> = (0..rows).map(|r| 0.1 * r as f32).collect();
    let mut want = logits.clone();
    let l_cpu = Cpu.cross_entropy_inplace(&mut want, &targets, &weights, vocab);
    let mut got = g.upload(&logits);
    let l_gpu = g.cross_entropy_inplace(&mut got, &targets, &weights, vocab);
    assert!((l_cpu - l_gpu).abs() < 1e-4 * l_cpu.abs().max(1.0));
    close("cross-entropy grad", &g, &got, &want);
    // At temperature 1 and at a policy's sampling temperature 0.7.
    for inv_temp in [1.0, 0.7f32.recip()] {
        let (lp, h) = Cpu.logprob_entropy(&logits, &targets, vocab, inv_temp);
        let (glp, gh) = g.logprob_entropy(&g.upload(&logits), &targets, vocab, inv_temp);
        assert_close("logprob", &glp, &lp, 1e-4, 1e-5);
        assert_close("entropy", &gh, &h, 1e-4, 1e-5);
        let (cl, ce) = (randv(&mut rng, rows), randv(&mut rng, rows));
        let mut want = logits.clone();
        Cpu.logit_grad_inplace(&mut want, &targets, &cl, &ce, vocab, inv_temp);
        let mut got = g.upload(&logits);
        g.logit_grad_inplace(&mut got, &targets, &cl, &ce, vocab, inv_temp);
        close("policy logit grad", &g, &got, &want);
    }
    let (p, gr, m, v) = (
        randv(&mut rng, 777),
        randv(&mut rng, 777),
        randv(&mut rng, 777),
        randv(&mut rng, 777).iter().map(|x| x.abs()).collect::<Vec<_>>(),
    );
    let hp = AdamWStep { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1, step: 3, grad_scale: 0.7 };
    let (mut cp, mut cm, mut cv) = (p.clone(), m.clone(), v.clone());
    Cpu.adamw(&mut cp, &gr, &mut cm, &mut cv, hp);
    let (mut gp, mut gm, mut gv) = (g.upload(&p), g.upload(&m), g.upload(&v));
    g.adamw(&mut gp, &g.upload(&gr), &mut gm, &mut gv, hp);
    close("adamw p", &g, &gp, &cp);
    close("adamw m", &g, &gm, &cm);
    close("adamw v", &g, &gv, &cv);
}

#[test]
fn multi_tensor_optimizer_ops_match_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    // Sizes around the 65,536-element chunk, so tensors end mid-chunk and span several.
    let sizes = [1usize, 1000, 65536, 70001, 200000];
    let host = |rng: &mut ChaCha8Rng| sizes.iter().map(|&n| randv(rng, n)).collect::<Vec<_>>();
    let (p, gr, m) = (host(&mut rng), host(&mut rng), host(&mut rng));
    let v: Vec<Vec<f32>> = host(&mut rng).into_iter().map(|x| x.into_iter().map(f32::abs).collect()).collect();
    let up = |xs: &Vec<Vec<f32>>| xs.iter().map(|x| g.upload(x)).collect::<Vec<_>>();
    let (mut gp, ggr, mut gm, mut gv) = (up(&p), up(&gr), up(&m), up(&v));
    let hp = AdamWStep { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0, step: 3, grad_scale: 0.5 };
    let decay = |i: usize| if i.is_multiple_of(2) { 0.1 } else { 0.0 };
    let (mut cp, mut cm, mut cv) = (p.clone(), m.clone(), v.clone());
    for i in 0..sizes.len() {
        Cpu.adamw(&mut cp[i], &gr[i], &mut cm[i], &mut cv[i], AdamWStep { weight_decay: decay(i), ..hp });
    }
    let tensors = gp
        .iter_mut()
        .zip(&ggr)
        .zip(gm.iter_mut().zip(gv.iter_mut()))
        .enumerate()
        .map(|(i, ((param, grad), (m, v)))| AdamWTensor { param, grad, m, v, weight_decay: decay(i) })
        .collect();
    g.adamw_many(tensors, hp);
    for i in 0..sizes.len() {
        close(&format!("multi adamw param {i}"), &g, &gp[i], &cp[i]);
        close(&format!("multi adamw m {i}"), &g, &gm[i], &cm[i]);
        close(&format!("multi adamw v {i}"), &g, &gv[i], &cv[i]);
    }
    let want: f64 = gr.iter().map(|x| Cpu.sum_squares(x)).sum();
    let got = g.sum_squares_many(&ggr.iter().collect::<Vec<_>>());
    assert!((got - want).abs() < 1e-5 * want, "multi sum of squares {got} vs {want}");
}

#[test]
fn full_model_step_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    full_model_step(&g, (1e-3, 1e-4));
}

#[test]
fn full_model_step_on_tensor_cores_matches_the_cpu_at_bf16_tolerance() {
    let Some(g) = gpu_tensor_cores() else { return };
    full_model_step(&g, (5e-2, 3e-2));
}

fn full_model_step(g: &Cuda, tol: (f32, f32)) {
    // qwen2_b: GQA, q/k/v bias, tied embeddings, head_dim 32 (llama_a's head_dim 16 is below the kernels' 32).
    let dir = fixture_dir("qwen2_b");
    let cfg = ModelConfig::load(&dir).unwrap();
    let mut host = load_params(&dir, &cfg).unwrap();
    full_model_step_of(g, &cfg, &host, tol);
    // Without the biases (as Llama): the q/k/v gradients then feed matmuls only.
    let cfg = ModelConfig { qkv_bias: false, ..cfg };
    for l in &mut host.layers {
        l.bqkv = None;
    }
    full_model_step_of(g, &cfg, &host, tol);
}

fn full_model_step_of(g: &Cuda, cfg: &ModelConfig, host: &Params<Vec<f32>>, (rtol, atol): (f32, f32)) {
    let cpu_model = Transformer::from_host(&Cpu, cfg.clone(), host);
    let gpu_model = Transformer::from_host(g, cfg.clone(), host);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (b, t) = (2, 37);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect();
    let batch = Batch::causal_lm(ids.clone(), &vec![true; b * t], b, t, (b * (t - 1)) as f32);
    let logits_cpu = cpu_model.forward_logits(&Cpu, &ids, b, t).unwrap();
    let logits_gpu = g.download(&gpu_model.forward_logits(g, &ids, b, t).unwrap());
    assert_close("logits", &logits_gpu, &logits_cpu, rtol, atol);
    let mut st_c = TrainState::new(&Cpu, cfg, b, t);
    let mut st_g = TrainState::new(g, cfg, b, t);
    let mut gr_c = Params::build(cfg, |s| vec![0.0; s.numel()]);
    // The GPU pass overwrites gradient buffers full of NaN (a step's first micro-batch).
    let mut gr_g = Params::build(cfg, |s| g.upload(&vec![f32::NAN; s.numel()]));
    let loss_c = cpu_model.forward_backward(&Cpu, &batch, &mut st_c, &mut gr_c, GradWrite::Add).unwrap();
    let loss_g = gpu_model.forward_backward(g, &batch, &mut st_g, &mut gr_g, GradWrite::Overwrite).unwrap();
    assert!((loss_c - loss_g).abs() < 0.1 * rtol as f64 * loss_c, "{loss_c} vs {loss_g}");
    for (spec, (a, bb)) in vul2safe::model::param_specs(cfg).iter().zip(gr_g.iter().into_iter().zip(gr_c.iter())) {
        assert_close(&format!("grad {} (bias {})", spec.name, cfg.qkv_bias), &g.download(a), bb, rtol, atol);
    }
}

#[test]
fn rl_reductions_match_their_cpu_twins() {
    use vul2safe::rl::gae::gae;
    use vul2safe::rl::ppo_loss::{policy_token, value_token, ClipMode, PolicyToken};
    use vul2safe::rl::reward::{assemble, RewardMode, SampleReward};
    let Some(g) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    let lens = [5usize, 1, 9, 3];
    let mut starts = vec![0usize];
    for l in lens {
        starts.push(starts.last().unwrap() + l);
    }
    let n = *starts.last().unwrap();
    let (values, rewards, kl, bonus, penalty) =
        (randv(&mut rng, n), randv(&mut rng, n), randv(&mut rng, n), randv(&mut rng, n), randv(&mut rng, n));
    let sums = g.rl_segment_sum(&penalty, &starts);
    for s in 0..lens.len() {
        let want: f32 = penalty[starts[s]..starts[s + 1]].iter().sum();
        assert!((sums[s] - want).abs() < 1e-5, "segment {s}");
    }
    let instance = randv(&mut rng, lens.len());
    let token_total: Vec<f32> = (0..lens.len())
        .map(|s| bonus[starts[s]..starts[s + 1]].iter().sum::<f32>() + penalty[starts[s]..starts[s + 1]].iter().sum::<f32>())
        .collect();
    for (mode, tlr) in [(RewardMode::Tlr, true), (RewardMode::Instance, false)] {
        let (gi, gt) = g.rl_assemble(&kl, &bonus, &penalty, &instance, &token_total, &starts, 0.3, tlr);
        for s in 0..lens.len() {
            let span = starts[s]..starts[s + 1];
            let r = SampleReward {
                instance: instance[s],
                secure_bonus: bonus[span.clone()].to_vec(),
                penalties: penalty[span.clone()].to_vec(),
                high_medium: 0,
            };
            let (ci, ct) = assemble(&r, &kl[span.clone()], 0.3, mode);
            assert_close("assembled instance stream", &gi[span.clone()], &ci, 1e-5, 1e-6);
            assert_close("assembled token stream", &gt[span], &ct, 1e-5, 1e-6);
        }
    }
    let (ga, gr) = g.rl_gae(&rewards, &values, &starts, 0.99, 0.95);
    for s in 0..lens.len() {
        let span = starts[s]..starts[s + 1];
        let (a, r) = gae(&rewards[span.clone()], &values[span.clone()], 0.99, 0.95);
        assert_close("gae advantages", &ga[span.clone()], &a, 1e-5, 1e-6);
        assert_close("gae returns", &gr[span], &r, 1e-5, 1e-6);
    }
    let (lp, lo, adv, at) = (randv(&mut rng, n), randv(&mut rng, n), randv(&mut rng, n), randv(&mut rng, n));
    let has: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
    for mode in [ClipMode::Standard, ClipMode::Dual { c: 3.0 }, ClipMode::TokenAware { eps_tok: 0.5 }, ClipMode::Decoupled { eps_tok: 0.5 }]
    {
        let out = g.rl_policy_loss(&lp, &lo, &adv, &at, &has, 0.2, mode);
        for i in 0..n {
            let (l, d, c) = policy_token(
                PolicyToken { logp: lp[i], logp_old: lo[i], adv: adv[i], adv_tok: at[i], has_token_reward: has[i] },
                0.2,
                mode,
            );
            assert!((out.loss[i] - l).abs() < 1e-4 && (out.dlogp[i] - d).abs() < 1e-4 && out.clipped[i] == c, "{mode:?} token {i}");
        }
    }
    let (v, vo, ret) = (randv(&mut rng, n), randv(&mut rng, n), randv(&mut rng, n));
    let (gl, gd) = g.rl_value_loss(&v, &vo, &ret, 0.2);
    for i in 0..n {
        let (l, d) = value_token(v[i], vo[i], ret[i], 0.2);
        assert!((gl[i] - l).abs() < 1e-5 && (gd[i] - d).abs() < 1e-5, "value token {i}");
    }
}

#[test]
fn ppo_reductions_through_the_backend_match_the_cpu() {
    use vul2safe::backend::PackedRewards;
    use vul2safe::rl::ppo_loss::{ClipMode, PolicyToken};
    use vul2safe::rl::reward::RewardMode;
    let Some(g) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let starts = [0usize, 4, 5, 12, 20];
    let n = 20;
    let (kl, bonus, pen, values) = (randv(&mut rng, n), randv(&mut rng, n), randv(&mut rng, n), randv(&mut rng, n));
    let instance = randv(&mut rng, starts.len() - 1);
    let packed = PackedRewards { starts: &starts, kl: &kl, secure_bonus: &bonus, penalties: &pen, instance: &instance };
    for mode in [RewardMode::Tlr, RewardMode::Instance] {
        let (ci, ct) = Cpu.ppo_rewards(&packed, 0.2, mode);
        let (gi, gt) = g.ppo_rewards(&packed, 0.2, mode);
        assert_close(&format!("{mode:?} instance stream"), &gi, &ci, 1e-5, 1e-6);
        assert_close(&format!("{mode:?} token stream"), &gt, &ct, 1e-5, 1e-6);
    }
    let (ca, cr) = Cpu.ppo_gae(&kl, &values, &starts, 0.99, 0.95);
    let (ga, gr) = g.ppo_gae(&kl, &values, &starts, 0.99, 0.95);
    assert_close("packed gae advantages", &ga, &ca, 1e-5, 1e-6);
    assert_close("packed gae returns", &gr, &cr, 1e-5, 1e-6);
    let tokens: Vec<PolicyToken> = (0..n)
        .map(|i| PolicyToken { logp: kl[i], logp_old: bonus[i], adv: pen[i], adv_tok: values[i], has_token_reward: i % 2 == 0 })
        .collect();
    let mode = ClipMode::Decoupled { eps_tok: 0.5 };
    for (i, (c, gg)) in Cpu.ppo_policy_loss(&tokens, 0.2, mode).into_iter().zip(g.ppo_policy_loss(&tokens, 0.2, mode)).enumerate() {
        assert!((c.0 - gg.0).abs() < 1e-4 && (c.1 - gg.1).abs() < 1e-4 && c.2 == gg.2, "policy token {i}: {c:?} vs {gg:?}");
    }
    for (i, (c, gg)) in Cpu.ppo_value_loss(&kl, &bonus, &pen, 0.2).into_iter().zip(g.ppo_value_loss(&kl, &bonus, &pen, 0.2)).enumerate() {
        assert!((c.0 - gg.0).abs() < 1e-5 && (c.1 - gg.1).abs() < 1e-5, "value token {i}: {c:?} vs {gg:?}");
    }
}

#[test]
fn gpu_generation_matches_the_cpu() {
    use vul2safe::generate::{generate, generate_continuous, SamplingConfig};
    let Some(g) = gpu_tensor_cores() else { return };
    // The last prompt is long enough for the packed prefill's flash path.
    let long: Vec<u32> = (0..23).map(|i| (i * 37 + 11) % 300).collect();
    let prompts: Vec<Vec<u32>> = vec![vec![5, 17, 200, 3], vec![9], vec![300, 1, 2, 3, 4, 5, 6, 7, 8, 250, 11], long];
    let greedy = SamplingConfig { max_new_tokens: 16, ..Default::default() };
    // qwen2_b: head_dim 32 (llama_a's 16 is below the kernels' smallest).
    let dir = fixture_dir("qwen2_b");
    let (cpu_model, gpu_model) = (Transformer::load(&Cpu, &dir).unwrap(), Transformer::load(&g, &dir).unwrap());
    let want = generate(&Cpu, &cpu_model, &prompts, &greedy).unwrap();
    for math in [Math::Exact, Math::Bf16] {
        g.set_math(math).unwrap();
        let got = generate_continuous(&g, &gpu_model, &prompts, 2, &greedy).unwrap();
        for (i, (a, b)) in got.iter().zip(&want).enumerate() {
            // bf16 rounding may flip a near-tie later on; the first tokens must agree.
            let agree = a.tokens.iter().zip(&b.tokens).take_while(|(x, y)| x == y).count();
            let need = if math == Math::Exact { 8 } else { 4 };
            assert!(agree >= need, "{math:?} prompt {i}: {agree} tokens agree ({:?} vs {:?})", a.tokens, b.tokens);
        }
    }
    // Sampled logprobs against a full forward of the sampled sequence, on the GPU.
    let sampled = SamplingConfig { max_new_tokens: 12, temperature: 1.0, seed: 3, ..Default::default() };
    let gens = generate(&g, &gpu_model, &prompts, &sampled).unwrap();
    for (p, gen) in prompts.iter().zip(&gens) {
        let full: Vec<u32> = p.iter().chain(&gen.tokens).copied().collect();
        let scored = gpu_model.score(&g, &[full], 1.0).unwrap().remove(0);
        for (a, b) in gen.logprobs.iter().zip(&scored[p.len() - 1..]) {
            assert!((a - b).abs() < 2e-2, "sampled logprob {a} vs scored {b}");
        }
    }
}

/// How far (in probability mass) a sampled token may sit from the exact
/// landing point of its draw: the device's block sums stay close; the CPU's
/// running f32 sums drift with the vocab.
const DEVICE_DRAW_TOL: f64 = 1e-5;
const CPU_DRAW_TOL: f64 = 2e-4;

#[test]
fn device_sampling_matches_the_cpu() {
    use vul2safe::generate::SamplingConfig;
    let Some(g) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let cfgs = [
        SamplingConfig { temperature: 0.0, ..Default::default() },
        SamplingConfig { temperature: 1.0, ..Default::default() },
        SamplingConfig { temperature: 0.7, top_k: 40, ..Default::default() },
        SamplingConfig { temperature: 1.3, top_p: 0.9, ..Default::default() },
        SamplingConfig { temperature: 1.0, top_k: 300, top_p: 0.5, ..Default::default() },
    ];
    // A vocab below one block's threads, one that is not a multiple of it,
    // logits on a coarse grid, so ties (broken by id) are everywhere, and
    // rows of one logit, where every token ties at the lowest (and highest)
    // value (1,001 of them, so no top-p cut-off falls on a token boundary).
    let random = |x: f32| x;
    let coarse = |x: f32| (x * 2.0).round() / 2.0;
    let flat = |_: f32| 1.5;
    type Shape<'a> = &'a dyn Fn(f32) -> f32;
    let cases: [(usize, usize, Shape); 4] = [(7, 5, &random), (50_257, 16, &random), (4_000, 64, &coarse), (1_001, 8, &flat)];
    for (vocab, rows, shape) in cases {
        let logits: Vec<f32> = (0..rows * vocab).map(|_| shape(rng.random_range(-6.0f32..6.0))).collect();
        let on_gpu = g.upload(&logits);
        for cfg in &cfgs {
            let draws: Vec<Option<f32>> = (0..rows).map(|r| if r % 5 == 3 { None } else { Some(rng.random()) }).collect();
            let want = Cpu.sample(&logits, vocab, cfg, &draws);
            let got = g.sample(&on_gpu, vocab, cfg, &draws);
            for (r, (w, gg)) in want.iter().zip(&got).enumerate() {
                let (Some(w), Some(gg)) = (w, gg) else {
                    assert!(w.is_none() && gg.is_none(), "row {r}: skipped on one side only");
                    continue;
                };
                // The device's logprob must be its own token's, whatever it picked.
                let t = if cfg.temperature > 0.0 { cfg.temperature } else { 1.0 };
                let scaled: Vec<f64> = logits[r * vocab..(r + 1) * vocab].iter().map(|&x| (x / t) as f64).collect();
                let m = scaled.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let log_z = m + scaled.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
                let lp = scaled[gg.0 as usize] - log_z;
                assert!((gg.1 as f64 - lp).abs() < 1e-4, "{cfg:?} row {r}: logprob {} for token {}, want {lp}", gg.1, gg.0);
                // Both picks must be where the draw lands, up to f32 rounding of
                // the running mass. The CPU's sequential f32 sums drift most
                // (up to 7e-5 of mass over 50K tokens here: several tokens'
                // worth), so the two need not pick the same token.
                let row = &logits[r * vocab..(r + 1) * vocab];
                let u = draws[r].expect("sampled row");
                for (who, pick, tol) in [("device", gg.0, DEVICE_DRAW_TOL), ("cpu", w.0, CPU_DRAW_TOL)] {
                    let off = draw_distance(row, cfg, u, pick);
                    assert!(off <= tol, "{cfg:?} vocab {vocab} row {r}: the {who} picked {pick}, {off:e} of mass from the draw");
                }
            }
        }
    }
}

#[test]
fn every_write_drops_a_buffers_kept_bf16_copy() {
    let Some(g) = gpu_tensor_cores() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let (rows, d_in, d_out) = (8, 64, 48);
    let n = d_out * d_in;
    let x = g.upload(&randv(&mut rng, rows * d_in));
    let other = g.upload(&randv(&mut rng, n));
    let mm = MatMul::linear(rows, d_in, d_out);
    // Each write to `w`, after a matmul has kept w's bf16 copy.
    let hp = AdamWStep { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.0, step: 1, grad_scale: 1.0 };
    type Write = Box<dyn Fn(&Cuda, &mut <Cuda as Backend>::Buf, &<Cuda as Backend>::Buf)>;
    let writes: Vec<(&str, Write)> = vec![
        ("copy_range", Box::new(move |g, w, o| g.copy_range(w, 5, o, 0, n - 5))),
        (
            "matmul output",
            Box::new(move |g, w, o| {
                g.matmul(w, o, o, MatMul { m: d_out, n: d_in, k: 1, trans_a: false, trans_b: false, accumulate: false })
            }),
        ),
        // These two write the bf16 copy themselves, in the same kernel.
        // `w` as [d_out, d_in] SwiGLU outputs of a [d_out, 2 d_in] projection.
        ("swiglu", Box::new(move |g, w, o| g.swiglu_fwd(w, &g.upload(&[g.download(o), g.download(o)].concat()), d_in))),
        ("rmsnorm_fwd", Box::new(move |g, w, o| g.rmsnorm_fwd(w, &mut g.zeros(d_out), o, &g.upload(&vec![0.5; d_in]), d_in, 1e-6))),
        // `w` as the gradient of a [d_out / 2, 2 d_in] projection.
        ("swiglu_bwd", Box::new(move |g, w, o| g.swiglu_bwd(w, &g.upload(&g.download(o)[..n / 2]), o, d_in))),
        (
            "rmsnorm_bwd",
            Box::new(move |g, w, o| {
                let (weight, rstd) = (g.upload(&vec![0.5; d_in]), g.upload(&vec![1.0; d_out]));
                g.rmsnorm_bwd(w, &mut g.zeros(d_in), o, o, &weight, &rstd, d_in)
            }),
        ),
        // `w` as the q/k/v projection's gradient [2 × 4 tokens, (2 + 2 · 2) heads × 64].
        (
            "attention_bwd",
            Box::new(|g, w, o| {
                let sh = AttnShape { batch: 2, q_heads: 2, kv_heads: 2, q_len: 4, kv_cap: 4, head_dim: 64 };
                let x = g.upload(&g.download(o)[..1024]);
                let rope = TrainingRope::new(g, 2, 4, 64);
                g.attention_bwd(w, &x, &x, &x, &x, &x, &g.upload(&[0.0; 16]), sh, rope.device())
            }),
        ),
        // `w` as [d_out, d_in] logits, overwritten by their gradient (and its bf16 copy).
        (
            "cross_entropy_inplace",
            Box::new(move |g, w, _| {
                let targets: Vec<u32> = (0..d_out as u32).map(|r| (r * 5) % d_in as u32).collect();
                g.cross_entropy_inplace(w, &targets, &vec![1.0; d_out], d_in);
            }),
        ),
        (
            "logit_grad_inplace",
            Box::new(move |g, w, _| {
                let targets: Vec<u32> = (0..d_out as u32).map(|r| (r * 3) % d_in as u32).collect();
                g.logit_grad_inplace(w, &targets, &vec![0.7; d_out], &vec![0.1; d_out], d_in, 1.0);
            }),
        ),
        ("adamw", Box::new(move |g, w, o| g.adamw(w, o, &mut g.zeros(n), &mut g.zeros(n), hp))),
        (
            "adamw_many",
            Box::new(move |g, w, o| {
                let (mut m, mut v) = (g.zeros(n), g.zeros(n));
                g.adamw_many(vec![AdamWTensor { param: w, grad: o, m: &mut m, v: &mut v, weight_decay: 0.0 }], hp)
            }),
        ),
        ("fill_zero", Box::new(|g, w, _| g.fill_zero(w))),
    ];
    let mut w = g.upload(&randv(&mut rng, n));
    for (what, write) in writes {
        let mut y = g.zeros(rows * d_out);
        g.matmul(&mut y, &x, &w, mm);
        write(&g, &mut w, &other);
        g.matmul(&mut y, &x, &w, mm);
        let mut want = vec![0.0; rows * d_out];
        Cpu.matmul(&mut want, &g.download(&x), &g.download(&w), mm);
        close_within(&format!("matmul after {what}"), &g, &y, &want, BF16_TOL);
    }
}

#[test]
fn attention_on_a_bf16_kv_cache_matches_the_cpu() {
    let Some(g) = gpu_tensor_cores() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    // A decode step, a short prefill (per-row kernel) and a long one (flash).
    for (q_len, hq, hkv, hd) in [(1, 14, 2, 64), (5, 4, 2, 32), (40, 4, 1, 128)] {
        let (batch, cap) = (2, 96);
        let sh = AttnShape { batch, q_heads: hq, kv_heads: hkv, q_len, kv_cap: cap, head_dim: hd };
        let kv_tok = |rng: &mut ChaCha8Rng| randv(rng, batch * hkv * cap * hd);
        let (k_tok, v_tok) = (kv_tok(&mut rng), kv_tok(&mut rng));
        // A bf16 cache (written as generation writes it in fused_attention_entry_and_exit_match_the_cpu).
        let (gk, gv) = (bf16_operand(&g, &k_tok, hkv * hd), bf16_operand(&g, &v_tok, hkv * hd));
        let (k_cache, v_cache) = (g.download(&gk), g.download(&gv));
        assert_close("bf16 cache", &k_cache, &k_tok, 1e-2, 1e-2);
        let q = randv(&mut rng, batch * q_len * hq * hd);
        let lens = [cap, 50];
        let mut out = vec![0.0; q.len()];
        Cpu.attention_fwd(&mut out, None, &q, &k_cache, &v_cache, sh, &lens);
        let mut gout = g.zeros(q.len());
        g.attention_fwd(&mut gout, None, &g.upload(&q), &gk, &gv, sh, &lens);
        close_within(&format!("attention on a bf16 cache {sh:?}"), &g, &gout, &out, BF16_TOL);
        if q_len == 1 {
            // The decode kernels also write the output's bf16 copy, which the next matmul reads.
            let w = randv(&mut rng, 8 * hq * hd);
            let mm = MatMul::linear(batch, hq * hd, 8);
            let mut y = g.zeros(batch * 8);
            g.matmul(&mut y, &gout, &g.upload(&w), mm);
            let mut want = vec![0.0; batch * 8];
            Cpu.matmul(&mut want, &g.download(&gout), &w, mm);
            close_within("matmul on the decode output", &g, &y, &want, BF16_TOL);
        }
    }
}

#[test]
fn packed_prefill_attention_matches_the_cpu() {
    let Some(g) = gpu_tensor_cores() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    // (q_len, kv_row, kv_len) per span: rows out of order, one span after keys
    // already cached, ragged flash tiles, a span of two flash blocks, and
    // spans all under 16 queries (the per-row kernel).
    type Spans = &'static [(usize, usize, usize)];
    let cases: [(Math, usize, usize, usize, usize, Spans); 5] = [
        (Math::Exact, 4, 2, 32, 16, &[(5, 2, 5), (3, 0, 9), (12, 1, 12)]),
        (Math::Bf16, 4, 2, 64, 140, &[(37, 2, 37), (3, 0, 10), (130, 3, 130), (16, 1, 16)]),
        (Math::Bf16, 2, 1, 128, 64, &[(20, 1, 20), (45, 0, 60)]),
        (Math::Bf16, 4, 4, 32, 40, &[(17, 0, 17), (33, 1, 40)]),
        (Math::Bf16, 4, 2, 64, 8, &[(5, 1, 5), (2, 0, 2)]),
    ];
    for (math, hq, hkv, hd, cap, spans) in cases {
        g.set_math(math).unwrap();
        let rows = spans.iter().map(|s| s.1 + 1).max().unwrap();
        let mut seqs = Vec::new();
        for &(q_len, kv_row, kv_len) in spans {
            seqs.push(SeqSpan { q_start: seqs.iter().map(|s: &SeqSpan| s.q_len).sum(), q_len, kv_row, kv_len });
        }
        let tokens: usize = seqs.iter().map(|s| s.q_len).sum();
        let sh = AttnShape { batch: rows, q_heads: hq, kv_heads: hkv, q_len: tokens, kv_cap: cap, head_dim: hd };
        // The cache as the model keeps it (bf16 in bf16 math); the CPU reads the same values.
        let mut cache = || {
            let host = randv(&mut rng, rows * hkv * cap * hd);
            if math == Math::Exact {
                g.upload(&host)
            } else {
                bf16_operand(&g, &host, hd)
            }
        };
        let (gk, gv) = (cache(), cache());
        let q = randv(&mut rng, tokens * hq * hd);
        let mut want = vec![0.0; q.len()];
        Cpu.attention_packed_fwd(&mut want, &q, &g.download(&gk), &g.download(&gv), sh, &seqs);
        let mut got = g.zeros(q.len());
        g.attention_packed_fwd(&mut got, &g.upload(&q), &gk, &gv, sh, &seqs);
        let tol = if math == Math::Exact { (1e-4, 1e-5) } else { BF16_TOL };
        close_within(&format!("packed attention {math:?} hd {hd} spans {spans:?}"), &g, &got, &want, tol);
    }
}

#[test]
fn fused_attention_entry_matches_the_cpu() {
    let Some(g) = gpu() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    // GQA (3 query heads, 1 key/value head); keys and values into rows of a
    // cache of `cap` positions at different offsets.
    let (b, t, hd, cap) = (2, 5, 32, 9);
    let heads = QkvHeads { q: 3, kv: 1, dim: hd };
    let (width, qd, kvd) = (heads.width(), heads.q * hd, heads.kv * hd);
    let (cos, sin) = rope_tables(64, hd, 10_000.0);
    let (gc, gs) = (g.upload(&cos), g.upload(&sin));
    let pos: Vec<u32> = (0..(b * t) as u32).map(|i| (i * 7) % 64).collect();
    let kv_slots = row_slots(t, cap, &[1, 4]);
    let kv_at = HeadSlots { cap, slots: &kv_slots };
    let (bias, src) = (randv(&mut rng, width), randv(&mut rng, b * t * width));
    let gbias = g.upload(&bias);
    let (q_len, kv_len) = (b * t * qd, b * cap * kvd);
    let rope = Rope { cos: &cos, sin: &sin, positions: &pos };
    let grope = Rope { cos: &gc, sin: &gs, positions: &pos };
    for with_bias in [true, false] {
        let what = format!("qkv_from_tokens bias {with_bias}");
        let cpu = |src: &Vec<f32>| {
            let mut want = [vec![0.0; q_len], vec![0.0; kv_len], vec![0.0; kv_len]];
            let [q, k, v] = &mut want;
            Cpu.qkv_from_tokens(q, k, v, src, with_bias.then_some(&bias), rope, heads, kv_at);
            want
        };
        let run = |[mut q, mut k, mut v]: [<Cuda as Backend>::Buf; 3], src: &<Cuda as Backend>::Buf| {
            g.qkv_from_tokens(&mut q, &mut k, &mut v, src, with_bias.then_some(&gbias), grope, heads, kv_at);
            [q, k, v].map(|x| g.download(&x))
        };
        let want = cpu(&src);
        let got = run([g.zeros(q_len), g.zeros(kv_len), g.zeros(kv_len)], &g.upload(&src));
        for (name, (got, want)) in ["q", "k", "v"].iter().zip(got.iter().zip(&want)) {
            assert_close(&format!("{what}: {name}"), got, want, 1e-5, 1e-6);
        }
        g.set_math(Math::Bf16).unwrap();
        // Generation: f32 queries, a bf16 KV cache; and all bf16.
        let decode = run([g.zeros(q_len), g.zeros_attention(kv_len), g.zeros_attention(kv_len)], &g.upload(&src));
        let bf16 = run([g.zeros_attention(q_len), g.zeros_attention(kv_len), g.zeros_attention(kv_len)], &g.upload(&src));
        // Training: from a bf16 projection, written by a matmul by the identity.
        let eye: Vec<f32> = (0..width * width).map(|i| if i % (width + 1) == 0 { 1.0 } else { 0.0 }).collect();
        let mut proj = g.zeros_projection(src.len());
        g.matmul(&mut proj, &g.upload(&src), &g.upload(&eye), MatMul::linear(b * t, width, width));
        let want_rounded = cpu(&g.download(&proj));
        let training = run([g.zeros_attention(q_len), g.zeros_attention(kv_len), g.zeros_attention(kv_len)], &proj);
        g.set_math(Math::Exact).unwrap();
        for (case, got, want) in [("f32 q, bf16 cache", &decode, &want), ("bf16", &bf16, &want), ("from bf16", &training, &want_rounded)] {
            for (name, (got, want)) in ["q", "k", "v"].iter().zip(got.iter().zip(want)) {
                assert_close(&format!("{what} {case}: {name}"), got, want, 1e-2, 1e-2);
            }
        }
    }
}

#[test]
fn matmul_input_buffers_hold_bf16_only_and_refuse_other_readers() {
    let Some(g) = gpu_tensor_cores() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let (rows, d, out) = (6, 64, 24);
    let x = g.upload(&randv(&mut rng, rows * d));
    let w = randv(&mut rng, out * d);
    let mm = MatMul::linear(rows, d, out);
    let mut ln = g.zeros_matmul_input(rows * d);
    g.rmsnorm_fwd(&mut ln, &mut g.zeros(rows), &x, &g.upload(&vec![1.5; d]), d, 1e-6);
    // A matmul reads the bf16 values the norm kernel wrote alone.
    let mut y = g.zeros(rows * out);
    g.matmul(&mut y, &ln, &g.upload(&w), mm);
    let mut want = vec![0.0; rows * out];
    Cpu.matmul(&mut want, &g.download(&ln), &w, mm);
    close_within("matmul on a matmul-input buffer", &g, &y, &want, BF16_TOL);
    // Any other reader is a bug in the caller's plan, reported at once.
    let other = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| g.sum_squares(&ln)));
    assert!(other.is_err(), "reading a bf16-only buffer outside a matmul must panic");
    // Written by a matmul, it is an ordinary buffer again.
    g.matmul(&mut ln, &x, &g.upload(&randv(&mut rng, d * d)), MatMul::linear(rows, d, d));
    let want = Cpu.sum_squares(&g.download(&ln));
    assert!((g.sum_squares(&ln) - want).abs() <= 1e-4 * want, "sum of squares of a matmul's output");
}

#[test]
fn bf16_attention_operands_match_the_cpu_forward_and_backward() {
    let Some(g) = gpu_tensor_cores() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    // Flash tiles with a ragged end and GQA, and a short sequence (per-row kernel).
    for (b, hq, hkv, t, hd) in [(2, 4, 2, 37, 64), (1, 2, 1, 130, 128), (2, 2, 2, 5, 32), (1, 2, 2, 200, 64)] {
        let sh = AttnShape { batch: b, q_heads: hq, kv_heads: hkv, q_len: t, kv_cap: t, head_dim: hd };
        // bf16 operands; the CPU gets the same rounded values.
        let mut operand = |heads: usize| bf16_operand(&g, &randv(&mut rng, b * t * heads * hd), hd);
        let (gq, gk, gv, gdout) = (operand(hq), operand(hkv), operand(hkv), operand(hq));
        let (q, k, v, dout) = (g.download(&gq), g.download(&gk), g.download(&gv), g.download(&gdout));
        let lens = vec![t; b];
        let (mut out, mut lse) = (vec![0.0; q.len()], vec![0.0; b * hq * t]);
        Cpu.attention_fwd(&mut out, Some(&mut lse), &q, &k, &v, sh, &lens);
        let (mut gout, mut glse) = (g.zeros_attention(q.len()), g.zeros(lse.len()));
        g.attention_fwd(&mut gout, Some(&mut glse), &gq, &gk, &gv, sh, &lens);
        let at = format!("bf16 operands hd {hd} b {b} hq {hq} hkv {hkv} t {t}");
        assert_close(&format!("{at} out"), &g.download(&gout), &out, BF16_TOL.0, BF16_TOL.1);
        close_within(&format!("{at} lse"), &g, &glse, &lse, BF16_TOL);
        // The CPU backward runs on the GPU's (rounded) output, as the GPU's does.
        let gout_host = g.download(&gout);
        // Into a bf16 projection gradient (a model without q/k/v biases) and an f32 one (with).
        let rope = TrainingRope::new(&g, b, t, hd);
        let mut dqkv = vec![0.0; b * t * (hq + 2 * hkv) * hd];
        Cpu.attention_bwd(&mut dqkv, &dout, &q, &k, &v, &gout_host, &g.download(&glse), sh, rope.host());
        for (what, mut gdqkv) in [("bf16", g.zeros_projection(dqkv.len())), ("f32", g.zeros(dqkv.len()))] {
            g.attention_bwd(&mut gdqkv, &gdout, &gq, &gk, &gv, &gout, &glse, sh, rope.device());
            assert_close(&format!("{at} dqkv into {what}"), &g.download(&gdqkv), &dqkv, BF16_TOL.0, BF16_TOL.1);
        }
    }
}

#[test]
fn bf16_mlp_projections_feed_swiglu_forward_and_backward() {
    let Some(g) = gpu_tensor_cores() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    // f is not a multiple of 4: SwiGLU takes its values one by one; at 96, four at a time.
    for f in [95, 96] {
        let (rows, d) = (9, 64);
        let (x, w, dh) = (randv(&mut rng, rows * d), randv(&mut rng, 2 * f * d), randv(&mut rng, rows * f));
        let mm = MatMul::linear(rows, d, 2 * f);
        // The stacked projection is written by a bf16-output matmul into bf16 storage.
        let mut gate_up = g.zeros_projection(rows * 2 * f);
        g.matmul(&mut gate_up, &g.upload(&x), &g.upload(&w), mm);
        let mut want = vec![0.0; rows * 2 * f];
        Cpu.matmul(&mut want, &x, &w, mm);
        close_within("bf16 gate/up projection", &g, &gate_up, &want, BF16_TOL);
        // SwiGLU reads it as stored; compare with the CPU on the stored values.
        // Its outputs go to a matmul input's bf16 copy, or in place into a
        // buffer stored in bf16 (what a training step keeps per layer).
        let stored = g.download(&gate_up);
        let mut want_h = vec![0.0; rows * f];
        Cpu.swiglu_fwd(&mut want_h, &stored, f);
        for mut h in [g.zeros_matmul_input(rows * f), g.zeros_projection(rows * f)] {
            g.swiglu_fwd(&mut h, &gate_up, f);
            close_within(&format!("swiglu on a bf16 projection, f {f}"), &g, &h, &want_h, BF16_TOL);
        }
        // The output gradient uploaded in f32, or a bf16 matmul output (a training step's).
        let mut dh16 = g.zeros_projection(rows * f);
        let dh_mm = MatMul::linear(rows, d, f);
        g.matmul(&mut dh16, &g.upload(&x), &g.upload(&randv(&mut rng, f * d)), dh_mm);
        let dh16_values = g.download(&dh16);
        let cases = [
            ("f32", g.upload(&dh), dh.clone(), g.zeros_matmul_input(rows * 2 * f)),
            ("bf16", dh16, dh16_values, g.zeros_projection(rows * 2 * f)),
        ];
        for (what, dh_buf, dh_values, mut dgu) in cases {
            let mut want_dgu = vec![0.0; rows * 2 * f];
            g.swiglu_bwd(&mut dgu, &dh_buf, &gate_up, f);
            Cpu.swiglu_bwd(&mut want_dgu, &dh_values, &stored, f);
            close_within(&format!("swiglu_bwd on a bf16 projection, {what} dh, f {f}"), &g, &dgu, &want_dgu, BF16_TOL);
        }
    }
}

#[test]
fn rmsnorm_bwd_takes_a_bf16_output_gradient() {
    let Some(g) = gpu_tensor_cores() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    // A training step's norm gradient is a bf16 matmul output; one kernel up
    // to 1024 values a row, two beyond.
    for (rows, dim) in [(37, 96), (5, 1100)] {
        let mut dout = g.zeros_projection(rows * dim);
        let k = 16;
        g.matmul(&mut dout, &g.upload(&randv(&mut rng, rows * k)), &g.upload(&randv(&mut rng, dim * k)), MatMul::linear(rows, k, dim));
        rmsnorm_bwd_matches_the_cpu(&g, &mut rng, rows, dim, &dout, " from a bf16 gradient");
    }
}

/// RMSNorm's backward on the device against the CPU's on the values `dout`
/// holds there, with random inputs, weights, and dx and dw to add into.
fn rmsnorm_bwd_matches_the_cpu(g: &Cuda, rng: &mut ChaCha8Rng, rows: usize, dim: usize, dout: &<Cuda as Backend>::Buf, what: &str) {
    let (x, w) = (randv(rng, rows * dim), randv(rng, dim));
    let (mut out, mut rstd) = (vec![0.0; rows * dim], vec![0.0; rows]);
    Cpu.rmsnorm_fwd(&mut out, &mut rstd, &x, &w, dim, 1e-5);
    let (mut dx, mut dw) = (randv(rng, rows * dim), randv(rng, dim));
    let (mut gdx, mut gdw) = (g.upload(&dx), g.upload(&dw));
    Cpu.rmsnorm_bwd(&mut dx, &mut dw, &g.download(dout), &x, &w, &rstd, dim);
    g.rmsnorm_bwd(&mut gdx, &mut gdw, dout, &g.upload(&x), &g.upload(&w), &g.upload(&rstd), dim);
    close(&format!("rmsnorm dx{what}, dim {dim}"), g, &gdx, &dx);
    close(&format!("rmsnorm dw{what}, dim {dim}"), g, &gdw, &dw);
}

#[test]
fn decode_graphs_replay_exactly_what_eager_steps_compute() {
    use vul2safe::generate::{generate_continuous, SamplingConfig};
    let Some(g) = gpu_tensor_cores() else { return };
    let dir = fixture_dir("qwen2_b");
    let model = Transformer::load(&g, &dir).unwrap();
    let prompts: Vec<Vec<u32>> = vec![vec![5, 17, 200, 3], vec![9], vec![300, 1, 2, 3, 4, 5, 6, 7, 8, 250, 11], vec![42, 43]];
    // Sampled, with a stop token and two slots for four prompts, so rows
    // finish early and take new prompts while the others keep decoding.
    let sampled =
        SamplingConfig { max_new_tokens: 24, temperature: 1.0, top_k: 40, seed: 11, stop_tokens: vec![7, 13], ..Default::default() };
    let greedy = SamplingConfig { max_new_tokens: 20, ..Default::default() };
    for cfg in [sampled, greedy] {
        g.set_graphs(false);
        let eager = generate_continuous(&g, &model, &prompts, 2, &cfg).unwrap();
        g.set_graphs(true);
        // Three new tokens in four rows: two decode steps, two record passes
        // noting the same calls. The next loop's first step, on buffers of
        // its own, must not be captured on their strength.
        let short = SamplingConfig { max_new_tokens: 3, stop_tokens: vec![], ..cfg.clone() };
        generate_continuous(&g, &model, &prompts, 4, &short).unwrap();
        let before = g.graph_replays();
        let graphed = generate_continuous(&g, &model, &prompts, 2, &cfg).unwrap();
        let replays = g.graph_replays() - before;
        let steps: usize = eager.iter().map(|e| e.tokens.len()).sum::<usize>() / 2;
        assert_eq!(graphed, eager, "graph-replayed decode steps must compute what eager ones do");
        // The first step records and the second captures; refills between steps keep the graph.
        assert!(replays as usize + 4 >= steps, "{replays} of ~{steps} decode steps ran as graphs");
    }
}

#[test]
fn losses_on_bf16_logits_match_the_cpu_on_their_values() {
    let Some(g) = gpu_tensor_cores() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    // An odd vocab: most rows start off a 16-byte boundary, so the kernels'
    // scalar head and tail run beside their 8-value vectors.
    let (rows, d, vocab) = (7, 16, 1001);
    let (x, w) = (g.upload(&randv(&mut rng, rows * d)), g.upload(&randv(&mut rng, vocab * d)));
    // Logits as training stores them: bf16, written by the head's matmul,
    // in a chunk buffer with two rows to spare (a last, shorter chunk's),
    // which every op must leave as they are (zero here and on the CPU).
    let logits = || {
        let mut z = g.zeros_projection((rows + 2) * vocab);
        g.matmul(&mut z, &x, &w, MatMul::linear(rows, d, vocab));
        z
    };
    let host = g.download(&logits());
    let mut targets: Vec<u32> = (0..rows).map(|_| rng.random_range(0..vocab as u32)).collect();
    targets[2] = IGNORE;
    let weights: Vec<f32> = (0..rows).map(|r| if r == 4 { 0.0 } else { 0.5 + r as f32 / 10.0 }).collect();
    // The gradient is stored in bf16: relative rounding, and a small floor for the probabilities.
    let tol = (1e-2, 1e-4);

    let (mut want, mut z) = (host.clone(), logits());
    let loss_c = Cpu.cross_entropy_inplace(&mut want, &targets, &weights, vocab);
    let loss_g = g.cross_entropy_inplace(&mut z, &targets, &weights, vocab);
    assert!((loss_c - loss_g).abs() < 1e-4 * loss_c.abs(), "cross-entropy {loss_g} vs {loss_c}");
    close_within("cross-entropy gradient on bf16 logits", &g, &z, &want, tol);

    // A policy sampling at temperature 0.7.
    let inv_temp = 0.7f32.recip();
    let (lp_c, h_c) = Cpu.logprob_entropy(&host, &targets, vocab, inv_temp);
    let (lp_g, h_g) = g.logprob_entropy(&logits(), &targets, vocab, inv_temp);
    assert_close("logprobs of bf16 logits", &lp_g, &lp_c, 1e-4, 1e-5);
    assert_close("entropies of bf16 logits", &h_g, &h_c, 1e-4, 1e-5);

    let (c_logp, c_ent) = (randv(&mut rng, rows), randv(&mut rng, rows));
    let (mut want, mut z) = (host.clone(), logits());
    Cpu.logit_grad_inplace(&mut want, &targets, &c_logp, &c_ent, vocab, inv_temp);
    g.logit_grad_inplace(&mut z, &targets, &c_logp, &c_ent, vocab, inv_temp);
    close_within("policy-loss logit gradient on bf16 logits", &g, &z, &want, tol);
}
