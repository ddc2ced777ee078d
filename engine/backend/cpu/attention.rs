//! Causal GQA attention, forward and backward, one task per (batch row, KV head).
//!
//! The reference keeps only the row log-sum-exp from the forward pass and
//! recomputes the probabilities in the backward pass, the same contract as the
//! flash-attention kernels on the GPU. Each task owns the query heads of one
//! GQA group, so the per-task outputs are contiguous and race-free.

use super::gemm::{gemm_strided, View};
use crate::backend::AttnShape;
use rayon::prelude::*;

/// Scaled, causally masked scores `S = q·kᵀ·scale` for one head; masked
/// entries are -inf. `q` is `[tq, hd]`, `k` is `[kv_len, hd]`.
fn masked_scores(
    s: &mut [f32],
    q: &[f32],
    k: &[f32],
    tq: usize,
    kv_len: usize,
    hd: usize,
    scale: f32,
) {
    gemm_strided(
        tq,
        kv_len,
        hd,
        s,
        View::row_major(kv_len),
        q,
        View::row_major(hd),
        k,
        View::transposed(hd),
        false,
        false,
    );
    for (i, row) in s.chunks_exact_mut(kv_len).enumerate() {
        let pos = kv_len - tq + i;
        for (j, v) in row.iter_mut().enumerate() {
            *v = if j <= pos {
                *v * scale
            } else {
                f32::NEG_INFINITY
            };
        }
    }
}

#[allow(clippy::too_many_arguments)]
pub fn attention_fwd(
    out: &mut [f32],
    lse: Option<&mut [f32]>,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    sh: AttnShape,
    kv_lens: &[usize],
) {
    let (tq, hd, cap, group) = (sh.q_len, sh.head_dim, sh.kv_cap, sh.group());
    assert_eq!(
        sh.q_heads % sh.kv_heads,
        0,
        "q_heads must be a multiple of kv_heads"
    );
    assert_eq!(q.len(), sh.batch * sh.q_heads * tq * hd);
    assert_eq!(out.len(), q.len());
    assert_eq!(k.len(), sh.batch * sh.kv_heads * cap * hd);
    assert_eq!(kv_lens.len(), sh.batch);
    let mut lse_store;
    let lse = match lse {
        Some(l) => l,
        None => {
            lse_store = vec![0f32; sh.batch * sh.q_heads * tq];
            &mut lse_store[..]
        }
    };
    let scale = sh.scale();
    out.par_chunks_mut(group * tq * hd)
        .zip(lse.par_chunks_mut(group * tq))
        .enumerate()
        .for_each(|(bg, (out, lse))| {
            let b = bg / sh.kv_heads;
            let kv_len = kv_lens[b];
            assert!(
                kv_len >= tq && kv_len <= cap,
                "attention: kv_len {kv_len} outside [{tq}, {cap}]"
            );
            let kp = &k[bg * cap * hd..][..kv_len * hd];
            let vp = &v[bg * cap * hd..][..kv_len * hd];
            let mut s = vec![0f32; tq * kv_len];
            for j in 0..group {
                let h = bg * group + j;
                let qh = &q[h * tq * hd..][..tq * hd];
                masked_scores(&mut s, qh, kp, tq, kv_len, hd, scale);
                for (row, l) in s
                    .chunks_exact_mut(kv_len)
                    .zip(&mut lse[j * tq..(j + 1) * tq])
                {
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
                let oh = &mut out[j * tq * hd..(j + 1) * tq * hd];
                gemm_strided(
                    tq,
                    hd,
                    kv_len,
                    oh,
                    View::row_major(hd),
                    &s,
                    View::row_major(kv_len),
                    vp,
                    View::row_major(hd),
                    false,
                    false,
                );
            }
        });
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
    assert_eq!(
        sh.kv_cap, t,
        "attention_bwd is for training: kv_cap must equal q_len"
    );
    assert_eq!(dq.len(), q.len());
    assert_eq!(dk.len(), k.len());
    let scale = sh.scale();
    dq.par_chunks_mut(group * t * hd)
        .zip(dk.par_chunks_mut(t * hd).zip(dv.par_chunks_mut(t * hd)))
        .enumerate()
        .for_each(|(bg, (dq, (dk, dv)))| {
            let kp = &k[bg * t * hd..][..t * hd];
            let vp = &v[bg * t * hd..][..t * hd];
            let mut p = vec![0f32; t * t];
            let mut dp = vec![0f32; t * t];
            for j in 0..group {
                let h = bg * group + j;
                let off = h * t * hd;
                let (qh, oh, doh) = (
                    &q[off..off + t * hd],
                    &out[off..off + t * hd],
                    &dout[off..off + t * hd],
                );
                masked_scores(&mut p, qh, kp, t, t, hd, scale);
                for (row, &l) in p.chunks_exact_mut(t).zip(&lse[h * t..(h + 1) * t]) {
                    row.iter_mut().for_each(|s| *s = (*s - l).exp());
                }
                // dV += Pᵀ·dO
                gemm_strided(
                    t,
                    hd,
                    t,
                    dv,
                    View::row_major(hd),
                    &p,
                    View::transposed(t),
                    doh,
                    View::row_major(hd),
                    j > 0,
                    false,
                );
                // dP = dO·Vᵀ, then dS = P ⊙ (dP - rowsum(dO ⊙ O)), pre-scaled.
                gemm_strided(
                    t,
                    t,
                    hd,
                    &mut dp,
                    View::row_major(t),
                    doh,
                    View::row_major(hd),
                    vp,
                    View::transposed(hd),
                    false,
                    false,
                );
                for i in 0..t {
                    let di: f32 = doh[i * hd..(i + 1) * hd]
                        .iter()
                        .zip(&oh[i * hd..(i + 1) * hd])
                        .map(|(a, b)| a * b)
                        .sum();
                    for (d, &pv) in dp[i * t..(i + 1) * t]
                        .iter_mut()
                        .zip(&p[i * t..(i + 1) * t])
                    {
                        *d = pv * (*d - di) * scale;
                    }
                }
                let dqh = &mut dq[j * t * hd..(j + 1) * t * hd];
                gemm_strided(
                    t,
                    hd,
                    t,
                    dqh,
                    View::row_major(hd),
                    &dp,
                    View::row_major(t),
                    kp,
                    View::row_major(hd),
                    false,
                    false,
                );
                gemm_strided(
                    t,
                    hd,
                    t,
                    dk,
                    View::row_major(hd),
                    &dp,
                    View::transposed(t),
                    qh,
                    View::row_major(hd),
                    j > 0,
                    false,
                );
            }
        });
}
