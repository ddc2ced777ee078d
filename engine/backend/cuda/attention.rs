//! Attention dispatch: the tensor-core flash kernels (kernels-ptx/flash.cu)
//! in the bf16 and tf32 modes, the one-warp-per-row kernels
//! (kernels-ptx/attention.cu) in exact mode and for short prefills, and the
//! split-K decode kernels (kernels-ptx/decode.cu) for single-query steps.
//! Operands are passed as raw addresses; their storage (f32, a bf16 KV
//! cache, or all-bf16 training operands) picks the instantiation.

use super::profile::{output_bytes, rope_bytes, Work};
use super::{pair_args, per_element, Cuda, Storage, THREADS};
use crate::backend::{AttnShape, SeqSpan};
use cudarc::driver::result::memset_d8_async;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use std::sync::atomic::Ordering;
use std::sync::Mutex;

/// One warp per row: `rows` rows in blocks of 8 warps, on a `(y, z)` grid.
fn per_warp_row(rows: usize, y: usize, z: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows.div_ceil(8) as u32, y as u32, z as u32), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// Queries per block of the flash forward, as FWD_ROWS in kernels-ptx/flash.cu.
const FLASH_FWD_ROWS: usize = 128;

/// 16-row tiles per warp of the flash forward, as FWD_TILES in kernels-ptx/flash.cu.
fn flash_fwd_tiles(head_dim: usize) -> usize {
    if head_dim <= 64 {
        2
    } else {
        1
    }
}

/// Keys per block of the flash backward, as BWD_KEYS in kernels-ptx/flash.cu.
fn flash_bwd_keys(head_dim: usize) -> usize {
    if head_dim <= 64 {
        128
    } else {
        64
    }
}

/// The flash backward's variants at head_dim 64 (kernels-ptx/flash.cu): its
/// natural register budget, held to two blocks per SM, and 64-query tiles in
/// dynamic shared memory; `Cuda::launch_tuned` keeps the fastest.
const FLASH_BWD_D64_VARIANTS: [&str; 3] = ["", "_two_blocks", "_wide"];

/// The flash forward's variants: at head_dim 64 two 16-row tiles per warp or
/// one; at 128 one stage of K/V tiles in static shared memory or two in
/// dynamic ("staged", the next tile's copy overlapping the current one's
/// products). The backward at 128 likewise.
fn flash_fwd_variants(head_dim: usize) -> &'static [&'static str] {
    match head_dim {
        64 => &["", "_one_tile"],
        128 => &STAGED_VARIANTS,
        _ => &[""],
    }
}
fn flash_bwd_variants(head_dim: usize) -> &'static [&'static str] {
    match head_dim {
        64 => &FLASH_BWD_D64_VARIANTS,
        128 => &STAGED_VARIANTS,
        _ => &[""],
    }
}
const STAGED_VARIANTS: [&str; 2] = ["", "_staged"];

/// Bytes of flash.cu's `BwdSmem<d, qt, stages>`: K and dSᵀ tiles for `keys`
/// keys, and `stages` stages of `qt`-query Q and dO tiles (bf16 rows padded
/// by 8) and their row statistics (f32).
const fn bwd_smem(d: usize, qt: usize, keys: usize, stages: usize) -> u32 {
    (2 * (stages * 2 * qt * (d + 8) + keys * (d + 8) + keys * (qt + 8)) + 4 * stages * 2 * qt) as u32
}

/// Bytes of flash.cu's `FwdSmem<d, stages>`: `stages` stages of K and V
/// tiles of 64 keys (BK), bf16 rows padded by 8.
const fn fwd_smem(d: usize, stages: usize) -> u32 {
    (2 * stages * 2 * 64 * (d + 8)) as u32
}

/// Dynamic shared memory of the wide head_dim-64 backward (`WideBwdSmem`)
/// and the staged head_dim-128 kernels (`StagedBwdSmem`, `StagedFwdSmem`),
/// whose sizes flash.cu asserts.
const FLASH_BWD_WIDE_SMEM: u32 = bwd_smem(64, 64, 128, 2);
const FLASH_BWD_STAGED_SMEM: u32 = bwd_smem(128, 32, 64, 2);
const FLASH_FWD_STAGED_SMEM: u32 = fwd_smem(128, 2);

/// Bytes of dynamic shared memory kernel `name` is launched with (0 for
/// all but the wide and staged flash variants).
pub(super) fn dynamic_smem(name: &str) -> u32 {
    let flash = |stem: &str, d: &str, suffix: &str| name.starts_with(stem) && name.contains(d) && name.ends_with(suffix);
    if flash("flash_bwd", "_d64_", "_wide") {
        FLASH_BWD_WIDE_SMEM
    } else if flash("flash_bwd", "_d128_", "_staged") {
        FLASH_BWD_STAGED_SMEM
    } else if flash("flash_fwd", "_d128_", "_staged") {
        FLASH_FWD_STAGED_SMEM
    } else {
        0
    }
}

/// One block of `block_rows / (16 · tiles)` warps per `block_rows` rows of a
/// flash kernel whose warps take `tiles` 16-row tiles, on a `(heads, batch)`
/// grid (batch: rows, or query spans).
fn per_flash_tile(rows: usize, block_rows: usize, tiles: usize, heads: usize, batch: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (rows.div_ceil(block_rows) as u32, heads as u32, batch as u32),
        block_dim: ((block_rows / (16 * tiles) * 32) as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// What a forward over `spans` moves and computes: queries read and outputs
/// written (`q_bytes` per value), each span's visible keys and values read
/// (`kv_bytes`), the log-sum-exp written when kept, the span table; FLOPs
/// as FlashAttention counts them (QKᵀ and PV over the visible scores, a
/// causal square at half).
fn spans_work(sh: AttnShape, spans: &[SeqSpan], q_bytes: usize, kv_bytes: usize, lse: bool) -> Work {
    let (queries, keys) = spans.iter().fold((0, 0), |(q, k), s| (q + s.q_len, k + s.kv_len));
    let scores: f64 = spans.iter().map(|s| (s.q_len * (s.kv_len - s.q_len)) as f64 + (s.q_len * s.q_len) as f64 / 2.0).sum();
    let bytes = queries * sh.q_heads * (2 * sh.head_dim * q_bytes + 4 * lse as usize)
        + 2 * keys * sh.kv_heads * sh.head_dim * kv_bytes
        + 16 * spans.len();
    Work { bytes: bytes as f64, flops: 4.0 * (sh.head_dim * sh.q_heads) as f64 * scores }
}

/// The attention kernels are instantiated for these head sizes.
pub(super) fn supports_head_dim(head_dim: usize) -> anyhow::Result<()> {
    anyhow::ensure!(matches!(head_dim, 32 | 64 | 128), "its attention kernels take head_dim 32, 64 or 128; the model's is {head_dim}");
    Ok(())
}

/// The instantiation of attention kernel `stem` for `head_dim`, queries and
/// keys/values each in f32 or bf16: all f32 (`_d64_f32`), f32 against a
/// bf16 KV cache (`_bf16kv_d64_f32`), or all bf16 (`_d64_bf16`, training
/// with bf16 attention operands).
fn kernel_name(stem: &str, head_dim: usize, q_bf16: bool, kv_bf16: bool) -> String {
    supports_head_dim(head_dim).unwrap_or_else(|e| panic!("CUDA attention: {e}"));
    match (q_bf16, kv_bf16) {
        (false, false) => format!("{stem}_d{head_dim}_f32"),
        (false, true) => format!("{stem}_bf16kv_d{head_dim}_f32"),
        (true, true) => format!("{stem}_d{head_dim}_bf16"),
        (true, false) => panic!("attention: bf16 queries against f32 keys and values"),
    }
}

/// Where the backward writes: the fused q/k/v projection's gradient (its
/// f32 data and its bf16 copy, each 0 when not kept), and the RoPE tables
/// and token positions (`Cuda::rope_args`) that rotate its query and key
/// parts back.
pub(super) struct ProjectionGrad<'a> {
    pub(super) f32: u64,
    pub(super) bf16: u64,
    pub(super) rope: [u64; 3],
    /// The tokens' positions on the host (for the profile's traffic).
    pub(super) positions: &'a [u32],
}

impl ProjectionGrad<'_> {
    /// Bytes written per value.
    fn value_bytes(&self) -> usize {
        output_bytes(self.f32, self.bf16)
    }
}

/// Keys per staged tile of the decode kernel (TILE in warp_attention.cuh).
const DECODE_TILE: usize = 32;
/// Fewest keys a decode split takes: below this, merging costs more than it spreads.
const DECODE_MIN_KEYS: usize = 128;

/// How many key splits a decode step uses: enough blocks for `target` (two
/// per SM) over `blocks` (rows × kv heads), each split at least
/// `DECODE_MIN_KEYS` of the cache's `cap` positions.
fn decode_splits(target: usize, blocks: usize, cap: usize) -> usize {
    target.div_ceil(blocks.max(1)).min(cap.div_ceil(DECODE_MIN_KEYS)).max(1)
}

impl Cuda {
    /// `Backend::attention_fwd` into the address `out`: flash for 16 or more
    /// queries on the tensor cores, decode.cu for one f32 query (which also
    /// writes the output's bf16 copy to `out16` unless it is 0, and skips
    /// `out` when it is 0), the per-row kernel otherwise. Keys and values may
    /// be a bf16 cache; all of q, k, v and out may be bf16 (training).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_forward(
        &self,
        out: u64,
        out16: u64,
        lse: Option<&mut CudaSlice<f32>>,
        q: &Storage,
        k: &Storage,
        v: &Storage,
        sh: AttnShape,
        kv_lens: &[usize],
    ) {
        assert_eq!(k.is_bf16(), v.is_bf16(), "attention: keys and values in different storage");
        // The kernels skip the log-sum-exp when its address is 0.
        let lse = lse.map_or(0, |l| self.ptr(l));
        if let (1, Storage::F32(qf)) = (sh.q_len, q) {
            let keys = kv_lens.iter().sum();
            return self.decode(out, out16, lse, qf, k, v, sh, self.offsets(kv_lens).addr, keys);
        }
        let spans: Vec<SeqSpan> =
            (0..sh.batch).map(|b| SeqSpan { q_start: b * sh.q_len, q_len: sh.q_len, kv_row: b, kv_len: kv_lens[b] }).collect();
        self.attention_spans(out, lse, q, k, v, sh, &spans);
    }

    /// The flash (16 or more queries in the longest span, on the tensor
    /// cores) or per-row forward over query spans: span `s`'s query `i` is
    /// token `s.q_start + i` of `q` and `out` `[tokens, q_heads, head_dim]`,
    /// against key row `s.kv_row`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_spans(&self, out: u64, lse: u64, q: &Storage, k: &Storage, v: &Storage, sh: AttnShape, spans: &[SeqSpan]) {
        assert_eq!(k.is_bf16(), v.is_bf16(), "attention: keys and values in different storage");
        for s in spans {
            assert!(
                s.q_len <= s.kv_len && s.kv_len <= sh.kv_cap && s.kv_row < sh.batch,
                "attention span {s:?} does not fit {} rows of {} keys",
                sh.batch,
                sh.kv_cap
            );
        }
        let longest = spans.iter().map(|s| s.q_len).max().unwrap_or(0);
        if longest == 0 {
            return;
        }
        let table: Vec<u32> = spans.iter().flat_map(|s| [s.q_start, s.q_len, s.kv_row, s.kv_len].map(|x| x as u32)).collect();
        let d_spans = self.ids(&table);
        let (hq, hkv, cap, scale) = (sh.q_heads as i32, sh.kv_heads as i32, sh.kv_cap as i32, sh.scale());
        let (bf16_q, bf16_kv) = (q.is_bf16(), k.is_bf16());
        let work = || spans_work(sh, spans, q.value_bytes(), k.value_bytes(), lse != 0);
        let (q, k, v) = (self.addr(q), self.addr(k), self.addr(v));
        // A flash block covers 128 queries: short prefills stay on the per-row kernel.
        if !(self.tensor_cores() && longest >= 16) {
            let (name, cfg) = (kernel_name("attention_fwd", sh.head_dim, bf16_q, bf16_kv), per_warp_row(longest, sh.q_heads, spans.len()));
            launch!(self, &name, cfg, work work(); &out, &lse, &q, &k, &v, &d_spans.addr, &hq, &hkv, &cap, &scale);
            return;
        }
        let variants = flash_fwd_variants(sh.head_dim);
        // Queries within a power of two share a choice (prefills and training batches vary).
        let shape = [(sh.q_heads * spans.len()).next_power_of_two(), longest.next_power_of_two()];
        let config = |kernel: &str| {
            let tiles = if kernel.ends_with("_one_tile") { 1 } else { flash_fwd_tiles(sh.head_dim) };
            let cfg = per_flash_tile(longest, FLASH_FWD_ROWS, tiles, sh.q_heads, spans.len());
            LaunchConfig { shared_mem_bytes: dynamic_smem(kernel), ..cfg }
        };
        self.launch_tuned(
            &kernel_name("flash_fwd", sh.head_dim, bf16_q, bf16_kv),
            variants,
            &shape,
            config,
            |kernel, cfg| launch!(self, kernel, cfg, work work(); &out, &lse, &q, &k, &v, &d_spans.addr, &hq, &hkv, &cap, &scale),
        );
    }

    /// One query per row (kernels-ptx/decode.cu): a block per (key split,
    /// kv head, row) with a warp per query head of the group; splits are
    /// merged by a second kernel when there are several. Splits divide the
    /// cache's capacity, not its longest row, so a decode step launches the
    /// same grid with the same arguments every step (graph.rs replays it);
    /// splits past a row's keys end at once. `keys`: the rows' visible keys,
    /// summed (for the profile's traffic).
    #[allow(clippy::too_many_arguments)]
    fn decode(
        &self,
        out: u64,
        out16: u64,
        lse: u64,
        q: &CudaSlice<f32>,
        k: &Storage,
        v: &Storage,
        sh: AttnShape,
        d_lens: u64,
        keys: usize,
    ) {
        let group = sh.group();
        assert!(group <= 32, "decode attention runs one warp per query head of a GQA group: at most 32, got {group}");
        let rows = sh.batch * sh.q_heads;
        let splits = decode_splits(self.sms * 2, sh.batch * sh.kv_heads, sh.kv_cap);
        let chunk = sh.kv_cap.div_ceil(splits).next_multiple_of(DECODE_TILE).max(DECODE_TILE);
        let splits = sh.kv_cap.div_ceil(chunk).max(1);
        let part_len = rows * splits * (sh.head_dim + 2);
        // SAFETY: each split writes its partials before the combine reads them.
        let part = self
            .kept(&self.decode_partials, part_len, || unsafe { self.stream.alloc::<f32>(part_len) }.expect("allocating decode partials"));
        let (part_o, part_ml) = (part, part + 4 * (rows * splits * sh.head_dim) as u64);
        let (hq, hkv, cap, chunk_i, scale) = (sh.q_heads as i32, sh.kv_heads as i32, sh.kv_cap as i32, chunk as i32, sh.scale());
        let cfg = LaunchConfig {
            grid_dim: (splits as u32, sh.kv_heads as u32, sh.batch as u32),
            block_dim: (32 * group as u32, 1, 1),
            shared_mem_bytes: 0,
        };
        let name = kernel_name("attention_decode", sh.head_dim, false, k.is_bf16());
        // Outputs (f32 and bf16, each if kept) and the log-sum-exp, or the splits' partials.
        let finished = rows * (sh.head_dim * output_bytes(out, out16) + 4 * (lse != 0) as usize);
        let partials = 4 * rows * splits * (sh.head_dim + 2);
        let written = if splits > 1 { partials } else { finished };
        let read = 4 * rows * sh.head_dim + 2 * keys * sh.kv_heads * sh.head_dim * k.value_bytes() + 4 * sh.batch;
        let work = Work { bytes: (read + written) as f64, flops: 4.0 * (sh.head_dim * sh.group() * sh.kv_heads * keys) as f64 };
        let (k, v) = (self.addr(k), self.addr(v));
        launch!(self, &name, cfg, work work; &out, &out16, &lse, &part_o, &part_ml, q, &k, &v, &d_lens, &hq, &hkv, &cap, &chunk_i, &scale);
        if splits > 1 {
            let (r, n) = (rows as i64, splits as i32);
            let name = format!("attention_decode_combine_d{}", sh.head_dim);
            let work = Work::bytes(partials + finished);
            launch!(self, &name, per_warp_row(rows, 1, 1), work work; &out, &out16, &lse, &part_o, &part_ml, &r, &n);
        }
    }

    /// The address of the buffer kept in `slot`, made by `alloc` when there
    /// is none or it holds fewer than `n` values: kept for the backend's
    /// life, so repeated launches see the same address.
    fn kept<T>(&self, slot: &Mutex<Option<CudaSlice<T>>>, n: usize, alloc: impl FnOnce() -> CudaSlice<T>) -> u64 {
        let mut kept = slot.lock().expect("kept buffer lock");
        if kept.as_ref().is_none_or(|b| b.len() < n) {
            *kept = Some(alloc());
        }
        kept.as_ref().map_or(0, |b| self.ptr(b))
    }

    /// Whether the flash backward adds each key block's share of dQ in a
    /// fixed order (the default: the same bits every run), which relies on
    /// the GPU dispatching a grid's blocks in index order (flash.cu's
    /// wait_count traps after seconds of waiting if it does not); off, the
    /// shares are added as they come, onto zeroed sums, and their last bits
    /// may differ between runs. Also `VUL2SAFE_ORDERED_DQ=0`.
    pub fn set_ordered_dq(&self, on: bool) {
        self.ordered_dq.store(on, Ordering::Relaxed);
    }

    /// Whether dQ's shares are added in a fixed order (`set_ordered_dq`).
    pub fn ordered_dq(&self) -> bool {
        self.ordered_dq.load(Ordering::Relaxed)
    }

    /// `Backend::attention_bwd`: the row dot, then the backward into `dst`.
    /// Every operand is f32, or every one bf16 (training with bf16 attention
    /// operands).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn attention_backward(
        &self,
        dst: &ProjectionGrad<'_>,
        dout: &Storage,
        q: &Storage,
        k: &Storage,
        v: &Storage,
        out: &Storage,
        lse: &CudaSlice<f32>,
        sh: AttnShape,
    ) {
        assert_eq!(sh.kv_cap, sh.q_len, "attention_bwd is for training: kv_cap must equal q_len");
        let bf16 = q.is_bf16();
        assert!([dout, k, v, out].iter().all(|s| s.is_bf16() == bf16), "attention_bwd: operands must all be f32 or all bf16");
        let name = |stem: &str| kernel_name(stem, sh.head_dim, bf16, bf16);
        let [dout, q, k, v, out] = [dout, q, k, v, out].map(|s| self.addr(s));
        let tokens = sh.batch * sh.q_len;
        let rows = tokens * sh.q_heads;
        // For the profile: bytes per operand value, a query-heads-wide and a
        // key-heads-wide tensor's values, the q/k/v/dO reads and the
        // log-sum-exp and row-dot reads, the RoPE tables, and the forward's FLOPs.
        let es = if bf16 { 2 } else { 4 };
        let (q_wide, kv_wide) = (rows * sh.head_dim, tokens * sh.kv_heads * sh.head_dim);
        let operands = es * (2 * q_wide + 2 * kv_wide) + 8 * rows;
        let rope = || rope_bytes(dst.positions, sh.head_dim);
        let fwd_flops = sh.causal_fwd_flops();
        let mut rowdot = self.scratch(rows);
        let r = rows as i64;
        let work = Work::bytes(2 * es * q_wide + 4 * rows);
        launch!(self, &name("attention_rowdot"), per_warp_row(rows, 1, 1), work work; &mut rowdot, &dout, &out, &r);
        let (hq, hkv, t, scale) = (sh.q_heads as i32, sh.kv_heads as i32, sh.q_len as i32, sh.scale());
        let (quads, [_, _, _, d, _]) = pair_args(sh.batch, sh.q_len, sh.q_heads + 2 * sh.kv_heads, sh.head_dim, 0);
        let pitch = (sh.q_heads + 2 * sh.kv_heads) as i32 * d;
        let [cos, sin, positions] = dst.rope;
        // Gradients of `heads` heads per token, stored as the operands are.
        let heads_scratch = |heads: usize| {
            let len = tokens * heads * sh.head_dim;
            if bf16 {
                Storage::Bf16(self.stream.alloc_zeros(len).expect("allocating attention gradients"))
            } else {
                Storage::F32(self.scratch(len))
            }
        };
        if !self.tensor_cores() {
            // dQ, dK and dV one warp per row, then the exit kernel into the projection's gradient.
            let held = [sh.q_heads, sh.kv_heads, sh.kv_heads].map(heads_scratch);
            let [dq, dk, dv] = [&held[0], &held[1], &held[2]].map(|s| self.addr(s));
            // dQ: three products per score (S, dP, dS·K), dK/dV four (S, dP, PᵀdO, dSᵀQ).
            let cfg = per_warp_row(sh.q_len, sh.q_heads, sh.batch);
            let work = Work { bytes: (operands + es * q_wide) as f64, flops: 1.5 * fwd_flops };
            launch!(self, &name("attention_bwd_dq"), cfg, work work; &dq, &dout, &q, &k, &v, lse, &rowdot, &hq, &hkv, &t, &scale);
            let cfg = per_warp_row(sh.q_len, sh.kv_heads, sh.batch);
            let work = Work { bytes: (operands + 2 * es * kv_wide) as f64, flops: 2.0 * fwd_flops };
            launch!(self, &name("attention_bwd_dkdv"), cfg, work work; &dk, &dv, &dout, &q, &k, &v, lse, &rowdot, &hq, &hkv, &t, &scale);
            let exit = if bf16 { "tokens_from_qkv_bf16_to_f32" } else { "tokens_from_qkv_f32" };
            let n = tokens as i32;
            let work = || Work::bytes((q_wide + 2 * kv_wide) * (es + dst.value_bytes()) + rope());
            launch!(self, exit, per_element(quads), work work(); &dst.f32, &dq, &dk, &dv, &cos, &sin, &positions, &n, &t, &hq, &hkv, &d, &dst.bf16);
            return;
        }
        // One pass: dK/dV per query head (straight into the projection's
        // gradient when each has its own key head, else into scratch that
        // the group sums add up), and dQ's sums in f32, to which each key
        // block adds its share in a fixed order (or, `set_ordered_dq(false)`, in any).
        let keys = flash_bwd_keys(sh.head_dim);
        let cfg = per_flash_tile(sh.q_len, keys, 1, sh.q_heads, sh.batch);
        let ordered = self.ordered_dq();
        // SAFETY: ordered, every query's sum is first written by a key block, then added to
        // (flash.cu's flash_bwd); unordered, each launch below zeroes them first.
        let dq_sums = unsafe { self.stream.alloc::<f32>(rows * sh.head_dim) }.expect("allocating dQ sums");
        let sums = self.ptr(&dq_sums);
        // Per (row, head, query tile, warp); 16-query tiles bound every variant's. Each launch
        // leaves them zeroed again, so they are cleared once, when allocated. None (0): unordered.
        let n_counters = sh.batch * sh.q_heads * sh.q_len.div_ceil(16) * cfg.block_dim.0 as usize / 32;
        let counters = if ordered {
            self.kept(&self.dq_counters, n_counters, || self.stream.alloc_zeros(n_counters).expect("allocating dQ counters"))
        } else {
            0
        };
        let group = sh.group();
        let scratch = (group > 1).then(|| [heads_scratch(sh.q_heads), heads_scratch(sh.q_heads)]);
        // An output as its (f32, bf16) addresses, one of them 0 for scratch.
        let as_output = |s: &Storage| if s.is_bf16() { (0, self.addr(s)) } else { (self.addr(s), 0) };
        let ((dk32, dk16), (dv32, dv16), out_pitch, k_off, v_off, [c, s, p]) = match &scratch {
            None => ((dst.f32, dst.bf16), (dst.f32, dst.bf16), pitch, hq * d, (hq + hkv) * d, [cos, sin, positions]),
            Some([dkh, dvh]) => (as_output(dkh), as_output(dvh), hq * d, 0, 0, [0; 3]),
        };
        let (dkdv_bytes, into_dst) = match &scratch {
            None => (2 * kv_wide * dst.value_bytes(), true),
            Some(_) => (2 * q_wide * es, false),
        };
        // The dQ sums leave once: the key blocks' additions meet in the L2 cache.
        let work =
            || Work { bytes: (operands + dkdv_bytes + 4 * q_wide + if into_dst { rope() } else { 0 }) as f64, flops: 2.5 * fwd_flops };
        let variants = flash_bwd_variants(sh.head_dim);
        // Shapes within a power of two share a choice (PPO's lengths vary from batch to batch).
        let shape = [(sh.batch * sh.q_heads).next_power_of_two(), sh.group(), sh.q_len.next_power_of_two()];
        let config = |kernel: &str| LaunchConfig { shared_mem_bytes: dynamic_smem(kernel), ..cfg };
        self.launch_tuned(&name("flash_bwd"), variants, &shape, config, |kernel, cfg| {
            if !ordered {
                // Zeroed per launch: tuning runs every variant onto the same sums.
                // SAFETY: `sums` holds rows · head_dim f32 values, queued on this stream.
                unsafe { memset_d8_async(sums, 0, 4 * rows * sh.head_dim, self.stream.cu_stream()) }.expect("zeroing dQ sums");
            }
            launch!(
                self, kernel, cfg, work work(); &dk32, &dk16, &dv32, &dv16, &out_pitch, &k_off, &v_off, &c, &s, &p, &sums, &counters, &dout,
                &q, &k, &v, lse, &rowdot, &hq, &hkv, &t, &scale
            )
        });
        let n = tokens as i64;
        let cfg = per_element(rows * sh.head_dim / 8);
        let work = || Work::bytes(4 * q_wide + q_wide * dst.value_bytes() + rope());
        launch!(self, "flash_dq_finish", cfg, work work(); &dst.f32, &dst.bf16, &pitch, &sums, &n, &hq, &d, &scale, &cos, &sin, &positions);
        if let Some([dkh, dvh]) = &scratch {
            let sum = if bf16 { "flash_group_sum_bf16" } else { "flash_group_sum_f32" };
            let cfg = per_element(tokens * sh.kv_heads * sh.head_dim / 8);
            // Keys rotate back; values were never rotated.
            for (part, off, [c, s, p]) in [(dkh, hq * d, [cos, sin, positions]), (dvh, (hq + hkv) * d, [0; 3])] {
                let work = || Work::bytes(es * q_wide + kv_wide * dst.value_bytes() + if c != 0 { rope() } else { 0 });
                let part = self.addr(part);
                launch!(self, sum, cfg, work work(); &dst.f32, &dst.bf16, &pitch, &off, &part, &n, &hq, &hkv, &d, &c, &s, &p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The launch shapes here must match the block shapes the kernels assume.
    #[test]
    fn flash_block_rows_match_the_kernels() {
        let src = include_str!("../../../kernels-ptx/flash.cu");
        assert!(src.contains(&format!("#define FWD_ROWS {}\n", super::FLASH_FWD_ROWS)));
        let (small, large) = (super::flash_fwd_tiles(64), super::flash_fwd_tiles(128));
        assert_eq!(super::flash_fwd_tiles(32), small);
        assert!(src.contains(&format!("#define FWD_TILES(D) ((D) <= 64 ? {small} : {large})")), "flash.cu's FWD_TILES must match");
        let (small, large) = (super::flash_bwd_keys(64), super::flash_bwd_keys(128));
        assert_eq!(super::flash_bwd_keys(32), small);
        assert!(src.contains(&format!("#define BWD_KEYS(D) ((D) <= 64 ? {small} : {large})")), "flash.cu's BWD_KEYS must match");
        let warp = include_str!("../../../kernels-ptx/warp_attention.cuh");
        assert!(warp.contains(&format!("#define TILE {}\n", super::DECODE_TILE)));
    }

    /// The dynamic shared memory launches give is what flash.cu's layouts take.
    #[test]
    fn dynamic_shared_memory_matches_the_kernels_layouts() {
        let src = include_str!("../../../kernels-ptx/flash.cu");
        for (layout, bytes, kernel) in [
            ("WideBwdSmem", super::FLASH_BWD_WIDE_SMEM, "flash_bwd_d64_bf16_wide"),
            ("StagedBwdSmem", super::FLASH_BWD_STAGED_SMEM, "flash_bwd_d128_f32_staged"),
            ("StagedFwdSmem", super::FLASH_FWD_STAGED_SMEM, "flash_fwd_bf16kv_d128_f32_staged"),
        ] {
            assert!(src.contains(&format!("static_assert(sizeof({layout}) == {bytes},")), "flash.cu's {layout} is not {bytes} bytes");
            assert_eq!(super::dynamic_smem(kernel), bytes, "{kernel}");
        }
        for kernel in ["flash_bwd_d64_bf16", "flash_fwd_d128_bf16", "flash_bwd_d128_bf16", "flash_fwd_d64_bf16_one_tile"] {
            assert_eq!(super::dynamic_smem(kernel), 0, "{kernel}");
        }
    }

    #[test]
    fn decode_splits_fill_the_gpu_without_tiny_splits() {
        // 64 rows × 2 kv heads on 132 SMs: 3 splits once the cache is long enough.
        assert_eq!(super::decode_splits(264, 128, 384), 3);
        assert_eq!(super::decode_splits(264, 128, 200), 2);
        // One row of a long cache spreads widely; short caches never split.
        assert_eq!(super::decode_splits(264, 2, 8192), 64);
        assert_eq!(super::decode_splits(264, 2, 100), 1);
        // A full GPU does not split.
        assert_eq!(super::decode_splits(264, 768, 4096), 1);
    }
}
