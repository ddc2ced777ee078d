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
