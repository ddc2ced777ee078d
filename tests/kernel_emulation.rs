//! The CUDA kernels run on the CPU emulator (tools/kernel-emu) against the
//! CPU backend: the same kernel source the PTX is built from, with each GPU
//! thread a fiber and the tensor-core and warp collectives evaluated from
//! the PTX ISA's layouts. This checks indexing, tiling, masking and
//! fragment layouts on machines without a GPU; speed and the real
//! hardware's behaviour are tools/gpu-check's. Arguments and launch shapes
//! are passed as engine/backend/cuda/ passes them.

mod common;
#[path = "support/kernel_emu.rs"]
mod kernel_emu;

use common::assert_close;
use kernel_emu::{emulator, Arg, Mem};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vul2safe::backend::cpu::Cpu;
use vul2safe::backend::{AttnShape, Backend};

fn randv(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Values as bf16 storage holds them.
fn bf16_rounded(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| half::bf16::from_f32(x).to_f32()).collect()
}

/// Tolerances (relative, fraction of the largest |want|) for bf16 tensor-core products.
const BF16_TOL: (f32, f32) = (2e-2, 2e-2);

/// How an attention kernel stores its operands: the suffix of its name.
#[derive(Clone, Copy, Debug)]
enum Operands {
    /// Everything f32 (`_d64_f32`).
    F32,
    /// f32 queries and outputs against a bf16 KV cache (`_bf16kv_d64_f32`).
    Bf16Cache,
    /// Everything bf16 (`_d64_bf16`, training).
    Bf16,
}

impl Operands {
    fn name(self, stem: &str, d: usize) -> String {
        match self {
            Operands::F32 => format!("{stem}_d{d}_f32"),
            Operands::Bf16Cache => format!("{stem}_bf16kv_d{d}_f32"),
            Operands::Bf16 => format!("{stem}_d{d}_bf16"),
        }
    }
    fn q_bf16(self) -> bool {
        matches!(self, Operands::Bf16)
    }
    fn kv_bf16(self) -> bool {
        !matches!(self, Operands::F32)
    }
}

/// A buffer in f32 or bf16, and the values the kernel sees (rounded when bf16).
fn stored(v: &[f32], bf16: bool) -> (Mem, Vec<f32>) {
    if bf16 {
        (Mem::bf16(v), bf16_rounded(v))
    } else {
        (Mem::f32(v), v.to_vec())
    }
}

fn read(m: &Mem, bf16: bool) -> Vec<f32> {
    if bf16 {
        m.bf16_to_f32()
    } else {
        m.to_f32()
    }
}

/// One flash forward launch (128 queries per block of 8 warps) against the CPU's attention.
fn check_flash_forward(sh: AttnShape, kv_lens: &[usize], ops: Operands, seed: u64) {
    let Some(emu) = emulator() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = sh.head_dim;
    let q_host = randv(&mut rng, sh.batch * sh.q_heads * sh.q_len * d);
    let kv_n = sh.batch * sh.kv_heads * sh.kv_cap * d;
    let (k_host, v_host) = (randv(&mut rng, kv_n), randv(&mut rng, kv_n));
    let (q, q_want) = stored(&q_host, ops.q_bf16());
    let (k, k_want) = stored(&k_host, ops.kv_bf16());
    let (v, v_want) = stored(&v_host, ops.kv_bf16());
    let rows = sh.batch * sh.q_heads * sh.q_len;
    let out = if ops.q_bf16() { Mem::bf16(&vec![0.0; rows * d]) } else { Mem::f32(&vec![0.0; rows * d]) };
    let lse = Mem::f32(&vec![0.0; rows]);
    let lens = Mem::u32(&kv_lens.iter().map(|&l| l as u32).collect::<Vec<_>>());
    let grid = (sh.q_len.div_ceil(128) as u32, sh.q_heads as u32, sh.batch as u32);
    let args = [
        Arg::Buf(&out),
        Arg::Buf(&lse),
        Arg::Buf(&q),
        Arg::Buf(&k),
        Arg::Buf(&v),
        Arg::Buf(&lens),
        Arg::I32(sh.q_heads as i32),
        Arg::I32(sh.kv_heads as i32),
        Arg::I32(sh.q_len as i32),
        Arg::I32(sh.kv_cap as i32),
        Arg::F32(sh.scale()),
    ];
    let name = ops.name("flash_fwd", d);
    emu.launch("flash", &name, grid, 256, &args, seed).unwrap_or_else(|e| panic!("{e}"));
    let (mut want, mut want_lse) = (vec![0.0; rows * d], vec![0.0; rows]);
    Cpu.attention_fwd(&mut want, Some(&mut want_lse), &q_want, &k_want, &v_want, sh, kv_lens);
    assert_close(&format!("{name} {sh:?} out"), &read(&out, ops.q_bf16()), &want, BF16_TOL.0, BF16_TOL.1);
    assert_close(&format!("{name} {sh:?} lse"), &lse.to_f32(), &want_lse, 1e-2, 1e-2);
}

fn shape(batch: usize, q_heads: usize, kv_heads: usize, q_len: usize, kv_cap: usize, head_dim: usize) -> AttnShape {
    AttnShape { batch, q_heads, kv_heads, q_len, kv_cap, head_dim }
}

#[test]
fn flash_forward_matches_the_cpu_for_every_head_dim_and_storage() {
    for (i, ops) in [Operands::F32, Operands::Bf16, Operands::Bf16Cache].into_iter().enumerate() {
        for d in [32, 64, 128] {
            // Training shape: queries = keys, a partial last block, GQA group 2.
            check_flash_forward(shape(1, 2, 1, 150, 150, d), &[150], ops, 10 * i as u64 + d as u64);
        }
    }
}

#[test]
fn flash_prefill_attends_to_earlier_cache_entries() {
    // 40 new queries after 60 cached keys (kv_lens), one row shorter, cap padding past both.
    check_flash_forward(shape(2, 4, 2, 40, 128, 64), &[100, 77], Operands::Bf16Cache, 7);
    check_flash_forward(shape(2, 4, 2, 40, 128, 64), &[100, 77], Operands::F32, 8);
}

/// Training attention backward as attention.rs runs it on the tensor cores:
/// row dots, flash dQ (64 queries per 4-warp block), flash dK/dV per query
/// head (128 keys per 8-warp block), then a sum over each GQA group.
fn check_flash_backward(sh: AttnShape, bf16: bool, seed: u64) {
    let Some(emu) = emulator() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (d, t) = (sh.head_dim, sh.q_len);
    let rows = sh.batch * sh.q_heads * t;
    let kv_n = sh.batch * sh.kv_heads * t * d;
    let (q, q_v) = stored(&randv(&mut rng, rows * d), bf16);
    let (k, k_v) = stored(&randv(&mut rng, kv_n), bf16);
    let (v, v_v) = stored(&randv(&mut rng, kv_n), bf16);
    let (dout, dout_v) = stored(&randv(&mut rng, rows * d), bf16);
    let (mut out_v, mut lse_v) = (vec![0.0; rows * d], vec![0.0; rows]);
    Cpu.attention_fwd(&mut out_v, Some(&mut lse_v), &q_v, &k_v, &v_v, sh, &vec![t; sh.batch]);
    let (out, out_v) = stored(&out_v, bf16);
    let lse = Mem::f32(&lse_v);
    let zeros = |n: usize| if bf16 { Mem::bf16(&vec![0.0; n]) } else { Mem::f32(&vec![0.0; n]) };
    let ops = if bf16 { Operands::Bf16 } else { Operands::F32 };

    let rowdot = Mem::f32(&vec![0.0; rows]);
    let rowdot_args = [Arg::Buf(&rowdot), Arg::Buf(&dout), Arg::Buf(&out), Arg::I64(rows as i64)];
    emu.launch("attention", &ops.name("attention_rowdot", d), (rows.div_ceil(8) as u32, 1, 1), 256, &rowdot_args, seed).unwrap();
    let (hq, hkv, tl, scale) = (Arg::I32(sh.q_heads as i32), Arg::I32(sh.kv_heads as i32), Arg::I32(t as i32), Arg::F32(sh.scale()));
    let dq = zeros(rows * d);
    let dq_args =
        [Arg::Buf(&dq), Arg::Buf(&dout), Arg::Buf(&q), Arg::Buf(&k), Arg::Buf(&v), Arg::Buf(&lse), Arg::Buf(&rowdot), hq, hkv, tl, scale];
    emu.launch("flash", &ops.name("flash_bwd_dq", d), (t.div_ceil(64) as u32, sh.q_heads as u32, sh.batch as u32), 128, &dq_args, seed)
        .unwrap_or_else(|e| panic!("{e}"));
    let (dk_heads, dv_heads) = (zeros(rows * d), zeros(rows * d));
    let (hq, hkv, tl, scale) = (Arg::I32(sh.q_heads as i32), Arg::I32(sh.kv_heads as i32), Arg::I32(t as i32), Arg::F32(sh.scale()));
    let dkdv_args = [
        Arg::Buf(&dk_heads),
        Arg::Buf(&dv_heads),
        Arg::Buf(&dout),
        Arg::Buf(&q),
        Arg::Buf(&k),
        Arg::Buf(&v),
        Arg::Buf(&lse),
        Arg::Buf(&rowdot),
        hq,
        hkv,
        tl,
        scale,
    ];
    let grid = (t.div_ceil(128) as u32, sh.q_heads as u32, sh.batch as u32);
    emu.launch("flash", &ops.name("flash_bwd_dkdv", d), grid, 256, &dkdv_args, seed).unwrap_or_else(|e| panic!("{e}"));
    let (dk, dv) = (zeros(kv_n), zeros(kv_n));
    let sum = if bf16 { "flash_group_sum_bf16" } else { "flash_group_sum_f32" };
    for (dst, part) in [(&dk, &dk_heads), (&dv, &dv_heads)] {
        let args = [
            Arg::Buf(dst),
            Arg::Buf(part),
            Arg::I64((sh.batch * sh.kv_heads) as i64),
            Arg::I32(sh.group() as i32),
            Arg::I64((t * d) as i64),
        ];
        emu.launch("flash", sum, (kv_n.div_ceil(256) as u32, 1, 1), 256, &args, seed).unwrap();
    }

    let (mut want_dq, mut want_dk, mut want_dv) = (vec![0.0; rows * d], vec![0.0; kv_n], vec![0.0; kv_n]);
    Cpu.attention_bwd(&mut want_dq, &mut want_dk, &mut want_dv, &dout_v, &q_v, &k_v, &v_v, &out_v, &lse_v, sh);
    for (what, got, want) in [("dq", &dq, want_dq), ("dk", &dk, want_dk), ("dv", &dv, want_dv)] {
        assert_close(&format!("{ops:?} {sh:?} {what}"), &read(got, bf16), &want, BF16_TOL.0, BF16_TOL.1);
    }
}

#[test]
fn flash_backward_matches_the_cpu_for_every_head_dim_and_storage() {
    for bf16 in [false, true] {
        for d in [32, 64, 128] {
            // 150 tokens: partial dQ and dK/dV blocks and query tiles; GQA group 2.
            check_flash_backward(shape(1, 2, 1, 150, 150, d), bf16, d as u64 + bf16 as u64);
        }
    }
    check_flash_backward(shape(2, 3, 3, 40, 40, 64), true, 5);
}

/// A single-query decode step as attention.rs launches it: a block per
/// (split of `chunk` keys, kv head, row) with a warp per query head of the
/// group, then the combine kernel (8 rows per block) when there are several
/// splits. `out` may be skipped when only the bf16 copy is wanted.
fn check_decode(sh: AttnShape, kv_lens: &[usize], chunk: usize, bf16_cache: bool, write_f32: bool, seed: u64) {
    let Some(emu) = emulator() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = sh.head_dim;
    let rows = sh.batch * sh.q_heads;
    let kv_n = sh.batch * sh.kv_heads * sh.kv_cap * d;
    let q_v = randv(&mut rng, rows * d);
    let q = Mem::f32(&q_v);
    let (k, k_v) = stored(&randv(&mut rng, kv_n), bf16_cache);
    let (v, v_v) = stored(&randv(&mut rng, kv_n), bf16_cache);
    let longest = *kv_lens.iter().max().unwrap();
    let splits = longest.div_ceil(chunk).max(1);
    let (out, out16, lse) = (Mem::f32(&vec![0.0; rows * d]), Mem::bf16(&vec![0.0; rows * d]), Mem::f32(&vec![0.0; rows]));
    let (part_o, part_ml) = (Mem::f32(&vec![f32::NAN; rows * splits * d]), Mem::f32(&vec![f32::NAN; rows * splits * 2]));
    let lens = Mem::u32(&kv_lens.iter().map(|&l| l as u32).collect::<Vec<_>>());
    let out_arg = || if write_f32 { Arg::Buf(&out) } else { Arg::Null };
    let args = [
        out_arg(),
        Arg::Buf(&out16),
        Arg::Buf(&lse),
        Arg::Buf(&part_o),
        Arg::Buf(&part_ml),
        Arg::Buf(&q),
        Arg::Buf(&k),
        Arg::Buf(&v),
        Arg::Buf(&lens),
        Arg::I32(sh.q_heads as i32),
        Arg::I32(sh.kv_heads as i32),
        Arg::I32(sh.kv_cap as i32),
        Arg::I32(chunk as i32),
        Arg::F32(sh.scale()),
    ];
    let ops = if bf16_cache { Operands::Bf16Cache } else { Operands::F32 };
    let name = ops.name("attention_decode", d);
    let grid = (splits as u32, sh.kv_heads as u32, sh.batch as u32);
    emu.launch("decode", &name, grid, 32 * sh.group() as u32, &args, seed).unwrap_or_else(|e| panic!("{e}"));
    if splits > 1 {
        let args = [
            out_arg(),
            Arg::Buf(&out16),
            Arg::Buf(&lse),
            Arg::Buf(&part_o),
            Arg::Buf(&part_ml),
            Arg::I64(rows as i64),
            Arg::I32(splits as i32),
        ];
        let combine = format!("attention_decode_combine_d{d}");
        emu.launch("decode", &combine, (rows.div_ceil(8) as u32, 1, 1), 256, &args, seed).unwrap_or_else(|e| panic!("{e}"));
    }
    let (mut want, mut want_lse) = (vec![0.0; rows * d], vec![0.0; rows]);
    Cpu.attention_fwd(&mut want, Some(&mut want_lse), &q_v, &k_v, &v_v, sh, kv_lens);
    let what = format!("{name} {sh:?} lens {kv_lens:?} chunk {chunk}");
    if write_f32 {
        assert_close(&format!("{what} out"), &out.to_f32(), &want, 1e-4, 1e-5);
    } else {
        assert!(out.to_f32().iter().all(|&x| x == 0.0), "{what}: wrote the skipped f32 output");
    }
    assert_close(&format!("{what} out16"), &out16.bf16_to_f32(), &bf16_rounded(&want), 1e-2, 1e-3);
    assert_close(&format!("{what} lse"), &lse.to_f32(), &want_lse, 1e-4, 1e-5);
}

#[test]
fn decode_attention_matches_the_cpu_with_and_without_splits() {
    for d in [32, 64, 128] {
        // One split per row, group 1.
        check_decode(shape(2, 2, 2, 1, 80, d), &[80, 33], 96, false, true, d as u64);
        // Several splits, a row whose later splits are empty, GQA groups of 4.
        check_decode(shape(2, 8, 2, 1, 300, d), &[290, 40], 64, true, true, d as u64 + 1);
    }
    // A group of 7 query heads per kv head; only the bf16 copy written.
    check_decode(shape(1, 7, 1, 1, 200, 64), &[200], 32, true, false, 9);
}

/// `Backend::sample` on the device: one 1024-thread block per row, against
/// the CPU's `sample_row` with the same draws.
#[test]
fn device_sampling_picks_the_cpus_tokens() {
    use vul2safe::generate::SamplingConfig;
    let Some(emu) = emulator() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let cfgs = [
        SamplingConfig { temperature: 0.0, ..Default::default() },
        SamplingConfig { temperature: 1.0, ..Default::default() },
        SamplingConfig { temperature: 0.7, top_k: 40, ..Default::default() },
        SamplingConfig { temperature: 1.3, top_p: 0.9, ..Default::default() },
        SamplingConfig { temperature: 1.0, top_k: 300, top_p: 0.5, ..Default::default() },
    ];
    // A vocab below one block's threads, one that is not a multiple of it,
    // and logits on a coarse grid, so ties (broken by id) are everywhere.
    for (vocab, rows, coarse) in [(7usize, 4usize, false), (5_003, 4, false), (4_000, 6, true)] {
        let logits: Vec<f32> = (0..rows * vocab)
            .map(|_| {
                let x = rng.random_range(-6.0f32..6.0);
                if coarse {
                    (x * 2.0).round() / 2.0
                } else {
                    x
                }
            })
            .collect();
        for (c, cfg) in cfgs.iter().enumerate() {
            let draws: Vec<Option<f32>> = (0..rows).map(|r| if r % 4 == 3 { None } else { Some(rng.random()) }).collect();
            let want = Cpu.sample(&logits, vocab, cfg, &draws);
            let (z, scaled) = (Mem::f32(&logits), Mem::f32(&vec![0.0; rows * vocab]));
            let d = Mem::f32(&draws.iter().map(|u| u.unwrap_or(f32::NAN)).collect::<Vec<_>>());
            let (tokens, logprobs) = (Mem::u32(&vec![u32::MAX; rows]), Mem::f32(&vec![0.0; rows]));
            let args = [
                Arg::Buf(&z),
                Arg::Buf(&scaled),
                Arg::Buf(&d),
                Arg::Buf(&tokens),
                Arg::Buf(&logprobs),
                Arg::I32(vocab as i32),
                Arg::F32(cfg.temperature),
                Arg::I32(cfg.top_k.min(vocab) as i32),
                Arg::F32(cfg.top_p),
            ];
            emu.launch("sampling", "sample_rows_f32", (rows as u32, 1, 1), 1024, &args, c as u64).unwrap_or_else(|e| panic!("{e}"));
            let (tokens, logprobs) = (tokens.to_u32(), logprobs.to_f32());
            for (r, w) in want.iter().enumerate() {
                let Some((tok, lp)) = w else {
                    assert_eq!(tokens[r], u32::MAX, "row {r} is skipped but got a token");
                    continue;
                };
                assert_eq!(tokens[r], *tok, "{cfg:?} vocab {vocab} row {r}");
                assert!((logprobs[r] - lp).abs() < 1e-4, "{cfg:?} vocab {vocab} row {r}: logprob {} want {lp}", logprobs[r]);
            }
        }
    }
}

/// Blocks for a grid-stride loop over `n` items, as cuda/mod.rs's per_element.
fn per_element(n: usize) -> (u32, u32, u32) {
    (n.div_ceil(256).clamp(1, 1 << 16) as u32, 1, 1)
}

/// Attention's entry (bias, RoPE, head-major write at per-row cache offsets)
/// in f32 and into a bf16 cache, with and without bias and rotation.
#[test]
fn heads_from_tokens_matches_the_cpu_composition() {
    use vul2safe::backend::cpu::rope_tables;
    use vul2safe::backend::Rope;
    let Some(emu) = emulator() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let (batch, seq, heads, hd, cap) = (2, 5, 3, 8, 12);
    let starts = [4usize, 0];
    let positions: Vec<u32> = (0..batch * seq).map(|r| (starts[r / seq] + r % seq) as u32).collect();
    let (cos, sin) = rope_tables(32, hd, 10_000.0);
    let src = randv(&mut rng, batch * seq * heads * hd);
    let bias = randv(&mut rng, heads * hd);
    let prior: Vec<f32> = (0..batch * heads * cap * hd).map(|i| i as f32 * 0.01).collect();
    for bf16 in [false, true] {
        for (with_bias, with_rope) in [(true, true), (false, false), (false, true)] {
            let mut want = if bf16 { bf16_rounded(&prior) } else { prior.clone() };
            let rope = with_rope.then(|| Rope { cos: &cos, sin: &sin, positions: &positions });
            Cpu.heads_from_tokens(&mut want, &mut src.clone(), with_bias.then_some(&bias), rope, batch, seq, heads, hd, cap, &starts);
            let (dst, _) = stored(&prior, bf16);
            let (s, b, c, sn) = (Mem::f32(&src), Mem::f32(&bias), Mem::f32(&cos), Mem::f32(&sin));
            let (pos, st) = (Mem::u32(&positions), Mem::u32(&starts.map(|x| x as u32)));
            let opt = |on: bool, m| if on { Arg::Buf(m) } else { Arg::Null };
            let args = [
                Arg::Buf(&dst),
                Arg::Buf(&s),
                opt(with_bias, &b),
                opt(with_rope, &c),
                opt(with_rope, &sn),
                opt(with_rope, &pos),
                Arg::I32((batch * seq) as i32),
                Arg::I32(seq as i32),
                Arg::I32(heads as i32),
                Arg::I32(hd as i32),
                Arg::I32(cap as i32),
                Arg::Buf(&st),
            ];
            let name = if bf16 { "heads_from_tokens_bf16" } else { "heads_from_tokens_f32" };
            emu.launch("layout", name, per_element(batch * seq * heads * hd / 2), 256, &args, 1).unwrap_or_else(|e| panic!("{e}"));
            let tol = if bf16 { (1e-2, 1e-3) } else { (1e-6, 1e-6) };
            assert_close(&format!("{name} bias {with_bias} rope {with_rope}"), &read(&dst, bf16), &want, tol.0, tol.1);
        }
    }
}

/// Attention's exit: token-major with the inverse rotation, from f32 or bf16
/// operands, writing the f32 result and its bf16 copy.
#[test]
fn tokens_from_heads_matches_the_cpu_composition() {
    use vul2safe::backend::cpu::rope_tables;
    use vul2safe::backend::Rope;
    let Some(emu) = emulator() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(32);
    let (batch, seq, heads, hd) = (2, 6, 2, 16);
    let n = batch * seq * heads * hd;
    let positions: Vec<u32> = (0..batch * seq).map(|r| (r % seq) as u32 * 3).collect();
    let (cos, sin) = rope_tables(32, hd, 10_000.0);
    let src = randv(&mut rng, n);
    for bf16 in [false, true] {
        let (s, s_v) = stored(&src, bf16);
        let mut want = vec![0.0; n];
        Cpu.tokens_from_heads(&mut want, &s_v, Some(Rope { cos: &cos, sin: &sin, positions: &positions }), batch, seq, heads, hd);
        let (dst, dst16) = (Mem::f32(&vec![0.0; n]), Mem::bf16(&vec![0.0; n]));
        let (c, sn, pos) = (Mem::f32(&cos), Mem::f32(&sin), Mem::u32(&positions));
        let args = [
            Arg::Buf(&dst),
            Arg::Buf(&s),
            Arg::Buf(&c),
            Arg::Buf(&sn),
            Arg::Buf(&pos),
            Arg::I32((batch * seq) as i32),
            Arg::I32(seq as i32),
            Arg::I32(heads as i32),
            Arg::I32(hd as i32),
            Arg::Buf(&dst16),
        ];
        let name = if bf16 { "tokens_from_heads_bf16_to_f32" } else { "tokens_from_heads_f32" };
        emu.launch("layout", name, per_element(n / 2), 256, &args, 2).unwrap_or_else(|e| panic!("{e}"));
        assert_close(name, &dst.to_f32(), &want, 1e-6, 1e-6);
        assert_close(&format!("{name} bf16 copy"), &dst16.bf16_to_f32(), &bf16_rounded(&want), 0.0, 0.0);
    }
}

/// The four-at-a-time layout moves: into a (bf16) KV cache at row offsets,
/// and back to token-major with or without the bf16 copy.
#[test]
fn layout_moves_match_the_cpu() {
    let Some(emu) = emulator() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(33);
    let (batch, seq, heads, hd, cap) = (3, 7, 2, 12, 10);
    let starts = [0usize, 3, 2];
    let tokens = randv(&mut rng, batch * seq * heads * hd);
    let vectors = tokens.len() / 4;
    let dims = [(batch * seq) as i32, seq as i32, heads as i32, (hd / 4) as i32];
    let prior: Vec<f32> = (0..batch * heads * cap * hd).map(|i| -(i as f32)).collect();
    for (name, bf16) in [("to_head_major_f32", false), ("to_head_major_f32_to_bf16", true)] {
        let mut want = if bf16 { bf16_rounded(&prior) } else { prior.clone() };
        Cpu.to_head_major(&mut want, &tokens, batch, seq, heads, hd, cap, &starts);
        let (dst, _) = stored(&prior, bf16);
        let (src, st) = (Mem::f32(&tokens), Mem::u32(&starts.map(|x| x as u32)));
        let [r, t, h, hd4] = dims.map(Arg::I32);
        let args = [Arg::Buf(&dst), Arg::Buf(&src), r, t, h, hd4, Arg::I32(cap as i32), Arg::Buf(&st)];
        emu.launch("layout", name, per_element(vectors), 256, &args, 3).unwrap_or_else(|e| panic!("{e}"));
        assert_close(name, &read(&dst, bf16), &want, if bf16 { 1e-2 } else { 0.0 }, 0.0);
    }
    let heads_major = randv(&mut rng, tokens.len());
    let mut want = vec![0.0; tokens.len()];
    Cpu.to_token_major(&mut want, &heads_major, batch, seq, heads, hd);
    // f32 with its bf16 copy; bf16 into the bf16 copy alone (the f32 store skipped).
    for (name, bf16) in [("to_token_major_f32", false), ("to_token_major_bf16", true)] {
        let (src, _) = stored(&heads_major, bf16);
        let (dst, dst16) = (Mem::f32(&vec![0.0; tokens.len()]), Mem::bf16(&vec![0.0; tokens.len()]));
        let [r, t, h, hd4] = dims.map(Arg::I32);
        let args = if bf16 {
            [Arg::Buf(&dst16), Arg::Buf(&src), r, t, h, hd4, Arg::Null]
        } else {
            [Arg::Buf(&dst), Arg::Buf(&src), r, t, h, hd4, Arg::Buf(&dst16)]
        };
        emu.launch("layout", name, per_element(vectors), 256, &args, 4).unwrap_or_else(|e| panic!("{e}"));
        if !bf16 {
            assert_close(name, &dst.to_f32(), &want, 0.0, 0.0);
        }
        assert_close(&format!("{name} bf16"), &dst16.bf16_to_f32(), &bf16_rounded(&want), 0.0, 0.0);
    }
}

/// RMSNorm forward with its bf16 copy (and with the f32 store skipped, as
/// for matmul-only outputs), and the backward that adds into dx.
#[test]
fn rmsnorm_kernels_write_values_and_bf16_copies() {
    let Some(emu) = emulator() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let (rows, dim, eps) = (5, 300, 1e-5f32);
    let (x, w, dy, dx0) = (randv(&mut rng, rows * dim), randv(&mut rng, dim), randv(&mut rng, rows * dim), randv(&mut rng, rows * dim));
    let (mut want, mut want_rstd) = (vec![0.0; rows * dim], vec![0.0; rows]);
    Cpu.rmsnorm_fwd(&mut want, &mut want_rstd, &x, &w, dim, eps);
    for keep_f32 in [true, false] {
        let (out, out16, rstd) = (Mem::f32(&vec![0.0; rows * dim]), Mem::bf16(&vec![0.0; rows * dim]), Mem::f32(&vec![0.0; rows]));
        let (xm, wm) = (Mem::f32(&x), Mem::f32(&w));
        let out_arg = if keep_f32 { Arg::Buf(&out) } else { Arg::Null };
        let args = [out_arg, Arg::Buf(&rstd), Arg::Buf(&xm), Arg::Buf(&wm), Arg::I32(dim as i32), Arg::F32(eps), Arg::Buf(&out16)];
        emu.launch("norm", "rmsnorm_fwd_f32", (rows as u32, 1, 1), 256, &args, 5).unwrap_or_else(|e| panic!("{e}"));
        let expect_f32 = if keep_f32 { want.clone() } else { vec![0.0; rows * dim] };
        assert_close("rmsnorm_fwd out", &out.to_f32(), &expect_f32, 1e-5, 1e-6);
        assert_close("rmsnorm_fwd rstd", &rstd.to_f32(), &want_rstd, 1e-5, 1e-6);
        assert_close("rmsnorm_fwd bf16 copy", &out16.bf16_to_f32(), &bf16_rounded(&want), 1e-2, 1e-4);
    }
    let (mut want_dx, mut want_dw) = (dx0.clone(), vec![0.0; dim]);
    Cpu.rmsnorm_bwd(&mut want_dx, &mut want_dw, &dy, &x, &w, &want_rstd, dim);
    let (dx, dx16) = (Mem::f32(&dx0), Mem::bf16(&vec![0.0; rows * dim]));
    let (dym, xm, wm, rstd) = (Mem::f32(&dy), Mem::f32(&x), Mem::f32(&w), Mem::f32(&want_rstd));
    let args = [Arg::Buf(&dx), Arg::Buf(&dym), Arg::Buf(&xm), Arg::Buf(&wm), Arg::Buf(&rstd), Arg::I32(dim as i32), Arg::Buf(&dx16)];
    emu.launch("norm", "rmsnorm_bwd_dx_f32", (rows as u32, 1, 1), 256, &args, 6).unwrap_or_else(|e| panic!("{e}"));
    assert_close("rmsnorm_bwd dx", &dx.to_f32(), &want_dx, 1e-5, 1e-5);
    assert_close("rmsnorm_bwd dx bf16 copy", &dx16.bf16_to_f32(), &bf16_rounded(&want_dx), 1e-2, 1e-4);
}

/// SwiGLU forward and backward, each with the f32 store and the bf16 copy
/// or the copy alone.
#[test]
fn swiglu_kernels_write_values_and_bf16_copies() {
    let Some(emu) = emulator() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let n = 1000;
    let (gate, up, dh) = (randv(&mut rng, n), randv(&mut rng, n), randv(&mut rng, n));
    let mut want_h = vec![0.0; n];
    Cpu.swiglu_fwd(&mut want_h, &gate, &up);
    let (mut want_dg, mut want_du) = (vec![0.0; n], vec![0.0; n]);
    Cpu.swiglu_bwd(&mut want_dg, &mut want_du, &dh, &gate, &up);
    let (g, u, d) = (Mem::f32(&gate), Mem::f32(&up), Mem::f32(&dh));
    for keep_f32 in [true, false] {
        let (h, h16) = (Mem::f32(&vec![0.0; n]), Mem::bf16(&vec![0.0; n]));
        let opt = |m| if keep_f32 { Arg::Buf(m) } else { Arg::Null };
        let args = [opt(&h), Arg::Buf(&g), Arg::Buf(&u), Arg::I64(n as i64), Arg::Buf(&h16)];
        emu.launch("elementwise", "swiglu_fwd_f32", (2, 1, 1), 256, &args, 7).unwrap_or_else(|e| panic!("{e}"));
        let (dg, du, dg16, du16) = (Mem::f32(&vec![0.0; n]), Mem::f32(&vec![0.0; n]), Mem::bf16(&vec![0.0; n]), Mem::bf16(&vec![0.0; n]));
        let args = [opt(&dg), opt(&du), Arg::Buf(&d), Arg::Buf(&g), Arg::Buf(&u), Arg::I64(n as i64), Arg::Buf(&dg16), Arg::Buf(&du16)];
        emu.launch("elementwise", "swiglu_bwd_f32", (2, 1, 1), 256, &args, 8).unwrap_or_else(|e| panic!("{e}"));
        for (what, f32s, copy, want) in [("h", &h, &h16, &want_h), ("dgate", &dg, &dg16, &want_dg), ("dup", &du, &du16, &want_du)] {
            let expect = if keep_f32 { want.clone() } else { vec![0.0; n] };
            assert_close(&format!("swiglu {what}"), &f32s.to_f32(), &expect, 1e-5, 1e-6);
            assert_close(&format!("swiglu {what} bf16 copy"), &copy.bf16_to_f32(), &bf16_rounded(want), 1e-2, 1e-4);
        }
    }
}

/// The fused cross-entropy (loss and gradient in place, ignored and
/// zero-weight rows, optional f32 store), target logprobs with entropies,
/// and the policy-loss logit gradient.
#[test]
fn loss_kernels_match_the_cpu() {
    let Some(emu) = emulator() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(43);
    let (rows, vocab) = (4, 777);
    let logits: Vec<f32> = randv(&mut rng, rows * vocab).iter().map(|x| 4.0 * x).collect();
    let targets = [5u32, vul2safe::backend::IGNORE, 776, 0];
    let weights = [1.0f32, 1.0, 0.5, 0.0];
    let mut want = logits.clone();
    let want_loss = Cpu.cross_entropy_inplace(&mut want, &targets, &weights, vocab);
    for keep_f32 in [1, 0] {
        let (z, z16, loss) = (Mem::f32(&logits), Mem::bf16(&vec![0.0; rows * vocab]), Mem::f32(&vec![0.0; rows]));
        let (t, w) = (Mem::u32(&targets), Mem::f32(&weights));
        let args = [Arg::Buf(&z), Arg::Buf(&loss), Arg::Buf(&t), Arg::Buf(&w), Arg::I32(vocab as i32), Arg::Buf(&z16), Arg::I32(keep_f32)];
        emu.launch("loss", "cross_entropy_f32", (rows as u32, 1, 1), 256, &args, 9).unwrap_or_else(|e| panic!("{e}"));
        let got_loss: f64 = loss.to_f32().iter().map(|&x| x as f64).sum();
        assert!((got_loss - want_loss).abs() < 1e-4 * want_loss.abs().max(1.0), "cross-entropy loss {got_loss} want {want_loss}");
        let expect = if keep_f32 == 1 { want.clone() } else { logits.clone() };
        assert_close("cross_entropy gradient", &z.to_f32(), &expect, 1e-4, 1e-6);
        assert_close("cross_entropy bf16 copy", &z16.bf16_to_f32(), &bf16_rounded(&want), 1e-2, 1e-4);
    }
    let (want_lp, want_h) = Cpu.logprob_entropy(&logits, &targets, vocab);
    let (z, t, lp, h) = (Mem::f32(&logits), Mem::u32(&targets), Mem::f32(&vec![0.0; rows]), Mem::f32(&vec![0.0; rows]));
    let args = [Arg::Buf(&z), Arg::Buf(&lp), Arg::Buf(&h), Arg::Buf(&t), Arg::I32(vocab as i32)];
    emu.launch("loss", "logprob_entropy_f32", (rows as u32, 1, 1), 256, &args, 10).unwrap_or_else(|e| panic!("{e}"));
    assert_close("logprob", &lp.to_f32(), &want_lp, 1e-5, 1e-5);
    assert_close("entropy", &h.to_f32(), &want_h, 1e-4, 1e-5);
    let (c_logp, c_ent) = ([0.7f32, 1.0, -0.3, 0.0], [0.05f32, 0.0, 0.01, 0.0]);
    let mut want = logits.clone();
    Cpu.logit_grad_inplace(&mut want, &targets, &c_logp, &c_ent, vocab);
    let (z, z16, cl, ce) = (Mem::f32(&logits), Mem::bf16(&vec![0.0; rows * vocab]), Mem::f32(&c_logp), Mem::f32(&c_ent));
    let args = [Arg::Buf(&z), Arg::Buf(&t), Arg::Buf(&cl), Arg::Buf(&ce), Arg::I32(vocab as i32), Arg::Buf(&z16), Arg::I32(1)];
    emu.launch("loss", "logit_grad_f32", (rows as u32, 1, 1), 256, &args, 11).unwrap_or_else(|e| panic!("{e}"));
    assert_close("logit_grad", &z.to_f32(), &want, 1e-4, 1e-6);
    assert_close("logit_grad bf16 copy", &z16.bf16_to_f32(), &bf16_rounded(&want), 1e-2, 1e-4);
}

/// Multi-tensor AdamW through its pointer table: one block per 65,536-value
/// chunk, each tensor's decay, and the bf16 working copy where one is given.
#[test]
fn multi_tensor_adamw_matches_the_cpu() {
    use vul2safe::backend::AdamWStep;
    let Some(emu) = emulator() else { return };
    let mut rng = ChaCha8Rng::seed_from_u64(44);
    let hp = AdamWStep { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.0, step: 3 };
    let (sizes, decays, copies) = ([70_000usize, 10], [0.1f32, 0.0], [true, false]);
    let host: Vec<[Vec<f32>; 4]> = sizes
        .iter()
        .map(|&n| [randv(&mut rng, n), randv(&mut rng, n), randv(&mut rng, n), randv(&mut rng, n).iter().map(|x| x.abs()).collect()])
        .collect();
    let mems: Vec<[Mem; 5]> = host
        .iter()
        .zip(copies)
        .map(|(t, copy)| {
            [Mem::f32(&t[0]), Mem::f32(&t[1]), Mem::f32(&t[2]), Mem::f32(&t[3]), Mem::bf16(&vec![0.0; if copy { t[0].len() } else { 0 }])]
        })
        .collect();
    // The table holds raw addresses, so the launch cannot check these buffers: the test does.
    let table_entries: Vec<i64> = mems
        .iter()
        .zip(copies)
        .flat_map(|(m, copy)| {
            let addr = |i: usize| m[i].addr() as i64;
            [addr(0), addr(1), addr(2), addr(3), if copy { addr(4) } else { 0 }]
        })
        .collect();
    let (mut chunk_tensor, mut chunk_start) = (vec![], vec![]);
    for (t, &n) in sizes.iter().enumerate() {
        for s in (0..n).step_by(65_536) {
            chunk_tensor.push(t as u32);
            chunk_start.push(s as i64);
        }
    }
    let (ptrs, sz, dec) = (Mem::i64(&table_entries), Mem::i64(&sizes.map(|n| n as i64)), Mem::f32(&decays));
    let (ct, cs) = (Mem::u32(&chunk_tensor), Mem::i64(&chunk_start));
    let bc1 = 1.0 - hp.beta1.powi(hp.step as i32);
    let bc2 = 1.0 - hp.beta2.powi(hp.step as i32);
    let args = [
        Arg::Buf(&ptrs),
        Arg::Buf(&sz),
        Arg::Buf(&dec),
        Arg::Buf(&ct),
        Arg::Buf(&cs),
        Arg::F32(hp.lr),
        Arg::F32(hp.beta1),
        Arg::F32(hp.beta2),
        Arg::F32(hp.eps),
        Arg::F32(bc1),
        Arg::F32(bc2),
    ];
    emu.launch("adamw", "adamw_multi_f32", (chunk_tensor.len() as u32, 1, 1), 256, &args, 12).unwrap_or_else(|e| panic!("{e}"));
    for (t, (h, m)) in host.iter().zip(&mems).enumerate() {
        let [mut p, g, mut mo, mut v] = h.clone();
        Cpu.adamw(&mut p, &g, &mut mo, &mut v, AdamWStep { weight_decay: decays[t], ..hp });
        assert_close(&format!("tensor {t} param"), &m[0].to_f32(), &p, 1e-6, 1e-7);
        assert_close(&format!("tensor {t} m"), &m[2].to_f32(), &mo, 1e-6, 1e-7);
        assert_close(&format!("tensor {t} v"), &m[3].to_f32(), &v, 1e-6, 1e-7);
        if copies[t] {
            assert_close(&format!("tensor {t} bf16 copy"), &m[4].bf16_to_f32(), &bf16_rounded(&p), 0.0, 0.0);
        }
        assert!(m.iter().all(Mem::guards_intact), "tensor {t}: a write outside its buffers");
    }
}
