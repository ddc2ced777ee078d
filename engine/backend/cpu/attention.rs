//! Causal GQA attention, forward and backward, one task per (batch row, KV head).
//!
//! The reference keeps only the row log-sum-exp from the forward pass and
//! recomputes the probabilities in the backward pass, the same contract as the
//! flash-attention kernels on the GPU. Each task owns the query heads of one
//! GQA group, so the per-task outputs are contiguous and race-free.

use super::gemm::{gemm_strided, View};
use super::scratch::with_scratch;
use crate::backend::{AttnShape, SeqSpan};
use rayon::prelude::*;

/// `c (+)= a · b` for row-major (or transposed) operands, single-threaded:
/// the parallelism is across attention tasks.
#[allow(clippy::too_many_arguments)]
fn mm(m: usize, n: usize, k: usize, c: &mut [f32], a: &[f32], av: View, b: &[f32], bv: View, accumulate: bool) {
    gemm_strided(m, n, k, c, View::row_major(n), a, av, b, bv, accumulate, false);
}

/// Scaled, causally masked scores `S = q·kᵀ·scale` for one head; masked
/// entries are -inf. `q` is `[tq, hd]`, `k` is `[kv_len, hd]`.
fn masked_scores(s: &mut [f32], q: &[f32], k: &[f32], tq: usize, kv_len: usize, hd: usize, scale: f32) {
    mm(tq, kv_len, hd, s, q, View::row_major(hd), k, View::transposed(hd), false);
    for (i, row) in s.chunks_exact_mut(kv_len).enumerate() {
        let pos = kv_len - tq + i;
        for (j, v) in row.iter_mut().enumerate() {
            *v = if j <= pos { *v * scale } else { f32::NEG_INFINITY };
        }
    }
}

/// Softmax of each score row in place; writes the row log-sum-exp.
fn softmax_rows(s: &mut [f32], lse: &mut [f32], width: usize) {
    for (row, l) in s.chunks_exact_mut(width).zip(lse) {
        let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for v in row.iter_mut() {
            *v = (*v - m).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
        *l = m + sum.ln();
    }
}

#[allow(clippy::too_many_arguments)]
pub fn attention_fwd(out: &mut [f32], lse: Option<&mut [f32]>, q: &[f32], k: &[f32], v: &[f32], sh: AttnShape, kv_lens: &[usize]) {
    let (tq, hd, cap, group) = (sh.q_len, sh.head_dim, sh.kv_cap, sh.group());
    assert_eq!(sh.q_heads % sh.kv_heads, 0, "q_heads must be a multiple of kv_heads");
    assert_eq!(q.len(), sh.batch * sh.q_heads * tq * hd);
    assert_eq!(out.len(), q.len());
    assert_eq!(k.len(), sh.batch * sh.kv_heads * cap * hd);
    assert_eq!(kv_lens.len(), sh.batch);
    let mut lse_store = Vec::new();
    let lse = match lse {
        Some(l) => l,
        None => {
            lse_store.resize(sh.batch * sh.q_heads * tq, 0.0);
            &mut lse_store[..]
        }
    };
    let scale = sh.scale();
    out.par_chunks_mut(group * tq * hd).zip(lse.par_chunks_mut(group * tq)).enumerate().for_each(|(bg, (out, lse))| {
        let kv_len = kv_lens[bg / sh.kv_heads];
        assert!(kv_len >= tq && kv_len <= cap, "attention: kv_len {kv_len} outside [{tq}, {cap}]");
        let kp = &k[bg * cap * hd..][..kv_len * hd];
        let vp = &v[bg * cap * hd..][..kv_len * hd];
        with_scratch(tq * kv_len, |s| {
            for j in 0..group {
                let qh = &q[(bg * group + j) * tq * hd..][..tq * hd];
                masked_scores(s, qh, kp, tq, kv_len, hd, scale);
                softmax_rows(s, &mut lse[j * tq..(j + 1) * tq], kv_len);
                let oh = &mut out[j * tq * hd..(j + 1) * tq * hd];
                mm(tq, hd, kv_len, oh, s, View::row_major(kv_len), vp, View::row_major(hd), false);
            }
        });
    });
}

/// Packed sequences (`Backend::attention_packed_fwd`): each span is the
/// one-row attention above on its queries, gathered from `[q_heads, tokens,
/// hd]`, and its row of the keys and values.
pub fn attention_packed_fwd(out: &mut [f32], q: &[f32], k: &[f32], v: &[f32], sh: AttnShape, seqs: &[SeqSpan]) {
    let (tokens, hq, hd) = (sh.q_len, sh.q_heads, sh.head_dim);
    let row = sh.kv_heads * sh.kv_cap * hd;
    assert_eq!(q.len(), hq * tokens * hd);
    assert_eq!(out.len(), q.len());
    assert_eq!(k.len(), sh.batch * row);
    for s in seqs {
        assert!(
            s.q_start + s.q_len <= tokens && s.kv_row < sh.batch,
            "packed attention: span {s:?} outside {tokens} tokens and {} rows",
            sh.batch
        );
        let span = |h: usize| (h * tokens + s.q_start) * hd..(h * tokens + s.q_start + s.q_len) * hd;
        let qs: Vec<f32> = (0..hq).flat_map(|h| q[span(h)].iter().copied()).collect();
        let mut os = vec![0.0; qs.len()];
        let one = AttnShape { batch: 1, q_len: s.q_len, ..sh };
        let (kr, vr) = (&k[s.kv_row * row..][..row], &v[s.kv_row * row..][..row]);
        attention_fwd(&mut os, None, &qs, kr, vr, one, &[s.kv_len]);
        for (h, o) in os.chunks_exact(s.q_len * hd).enumerate() {
            out[span(h)].copy_from_slice(o);
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn attention_bwd(
    dq: &mut [f32],
    dk: &mut [f32],
    dv: &mut [f32],
    dout: &[f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &[f32],
    lse: &[f32],
    sh: AttnShape,
) {
    let (t, hd, group) = (sh.q_len, sh.head_dim, sh.group());
    assert_eq!(sh.kv_cap, t, "attention_bwd is for training: kv_cap must equal q_len");
    assert_eq!(dq.len(), q.len());
    assert_eq!(dk.len(), k.len());
    let scale = sh.scale();
    let tasks = dq.par_chunks_mut(group * t * hd).zip(dk.par_chunks_mut(t * hd).zip(dv.par_chunks_mut(t * hd)));
    tasks.enumerate().for_each(|(bg, (dq, (dk, dv)))| {
        let kp = &k[bg * t * hd..][..t * hd];
        let vp = &v[bg * t * hd..][..t * hd];
        with_scratch(2 * t * t, |buf| {
            let (p, dp) = buf.split_at_mut(t * t);
            for j in 0..group {
                let h = bg * group + j;
                let span = h * t * hd..(h + 1) * t * hd;
                let (qh, oh, doh) = (&q[span.clone()], &out[span.clone()], &dout[span]);
                masked_scores(p, qh, kp, t, t, hd, scale);
                for (row, &l) in p.chunks_exact_mut(t).zip(&lse[h * t..(h + 1) * t]) {
                    row.iter_mut().for_each(|s| *s = (*s - l).exp());
                }
                // dV += Pᵀ·dO; heads of a group share K and V, so they accumulate.
                mm(t, hd, t, dv, p, View::transposed(t), doh, View::row_major(hd), j > 0);
                // dP = dO·Vᵀ, then dS = P ⊙ (dP - rowsum(dO ⊙ O)), pre-scaled.
                mm(t, t, hd, dp, doh, View::row_major(hd), vp, View::transposed(hd), false);
                for i in 0..t {
                    let di: f32 = doh[i * hd..(i + 1) * hd].iter().zip(&oh[i * hd..(i + 1) * hd]).map(|(a, b)| a * b).sum();
                    for (d, &pv) in dp[i * t..(i + 1) * t].iter_mut().zip(&p[i * t..(i + 1) * t]) {
                        *d = pv * (*d - di) * scale;
                    }
                }
                mm(t, hd, t, &mut dq[j * t * hd..(j + 1) * t * hd], dp, View::row_major(t), kp, View::row_major(hd), false);
                mm(t, hd, t, dk, dp, View::transposed(t), qh, View::row_major(hd), j > 0);
            }
        });
    });
}
