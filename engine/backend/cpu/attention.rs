//! Causal GQA attention, forward and backward, one task per (batch row, KV head).
//!
//! The reference keeps only the row log-sum-exp from the forward pass and
//! recomputes the probabilities in the backward pass, the same contract as the
//! flash-attention kernels on the GPU. Queries, outputs and their gradients
//! are token-major (`[tokens, q_heads, hd]`): a task reads its heads' rows
//! in place, `q_heads · hd` apart, and computes its query-side results
//! head-major in its own buffer, which are then gathered into the
//! token-major outputs (so tasks never share an output).
//!
//! Queries go in blocks of `QUERY_BLOCK` rows, each block's products taken
//! over the keys its last row sees: a causal pass does about half the
//! products of the full square. Each product still sums over its keys (or
//! queries) in order, only without the masked zeros, so the results are
//! those of the full square.

use super::gemm::{gemm_strided, View};
use super::scratch::with_scratch;
use crate::backend::{AttnShape, SeqSpan};
use rayon::prelude::*;

/// `c (+)= a · b` for row-major (or transposed) operands, `c`'s rows `cs`
/// apart; single-threaded: the parallelism is across attention tasks.
#[allow(clippy::too_many_arguments)]
fn mm(m: usize, n: usize, k: usize, c: &mut [f32], cs: usize, a: &[f32], av: View, b: &[f32], bv: View, accumulate: bool) {
    gemm_strided(m, n, k, c, View::row_major(cs), a, av, b, bv, accumulate, false);
}

/// Query rows per block of the causal products.
const QUERY_BLOCK: usize = 64;

/// The query blocks of `tq` rows: `(first, end)` row pairs.
fn query_blocks(tq: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..tq).step_by(QUERY_BLOCK).map(move |i0| (i0, (i0 + QUERY_BLOCK).min(tq)))
}

/// Scaled, causally masked scores `S = q·kᵀ·scale` for one head into rows
/// `stride` apart; masked entries are -inf. `q` is `[tq, hd]` (rows `qv`
/// apart), `k` is `[kv_len, hd]`, query `i` sits at position `kv_len - tq + i`.
#[allow(clippy::too_many_arguments)]
fn masked_scores(s: &mut [f32], stride: usize, q: &[f32], qv: View, k: &[f32], tq: usize, kv_len: usize, hd: usize, scale: f32) {
    mm(tq, kv_len, hd, s, stride, q, qv, k, View::transposed(hd), false);
    for (i, row) in s.chunks_mut(stride).take(tq).enumerate() {
        let pos = kv_len - tq + i;
        for (j, v) in row[..kv_len].iter_mut().enumerate() {
            *v = if j <= pos { *v * scale } else { f32::NEG_INFINITY };
        }
    }
}

/// Softmax of each causally masked score row in place (row `i` of `tq`
/// sees its first `width - tq + i + 1` keys); writes the row log-sum-exp.
/// The masked tail is set to 0, the exp of its -inf, without calling exp.
fn softmax_rows(s: &mut [f32], lse: &mut [f32], width: usize) {
    let tq = lse.len();
    for (i, (row, l)) in s.chunks_exact_mut(width).zip(lse).enumerate() {
        let (seen, masked) = row.split_at_mut(width - tq + i + 1);
        let m = seen.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0f32;
        for v in seen.iter_mut() {
            *v = (*v - m).exp();
            sum += *v;
        }
        let inv = 1.0 / sum;
        seen.iter_mut().for_each(|v| *v *= inv);
        masked.fill(0.0);
        *l = m + sum.ln();
    }
}

/// Token-major `dst` `[batch · seq, heads, width]` from the tasks' results,
/// task `b · kv + g` holding its group's heads head-major `[group, seq, width]`.
fn gather_tasks(dst: &mut [f32], parts: &[Vec<f32>], seq: usize, heads: usize, group: usize, width: usize) {
    let kv = heads / group;
    dst.par_chunks_mut(width).enumerate().for_each(|(r, row)| {
        let (token, h) = (r / heads, r % heads);
        let (b, i) = (token / seq, token % seq);
        row.copy_from_slice(&parts[b * kv + h / group][((h % group) * seq + i) * width..][..width]);
    });
}

/// Where query head `h` of batch row `b`'s first token starts in a
/// token-major `[batch · seq, heads, hd]` tensor, and its rows' view.
fn head_rows(b: usize, seq: usize, heads: usize, h: usize, hd: usize) -> (usize, View) {
    ((b * seq * heads + h) * hd, View::row_major(heads * hd))
}

pub fn attention_fwd(out: &mut [f32], lse: Option<&mut [f32]>, q: &[f32], k: &[f32], v: &[f32], sh: AttnShape, kv_lens: &[usize]) {
    let (tq, hd, cap, group, hq) = (sh.q_len, sh.head_dim, sh.kv_cap, sh.group(), sh.q_heads);
    assert_eq!(sh.q_heads % sh.kv_heads, 0, "q_heads must be a multiple of kv_heads");
    assert_eq!(q.len(), sh.batch * tq * hq * hd);
    assert_eq!(out.len(), q.len());
    assert_eq!(k.len(), sh.batch * sh.kv_heads * cap * hd);
    assert_eq!(kv_lens.len(), sh.batch);
    let scale = sh.scale();
    let (outs, lses): (Vec<Vec<f32>>, Vec<Vec<f32>>) = (0..sh.batch * sh.kv_heads)
        .into_par_iter()
        .map(|bg| {
            let (b, g) = (bg / sh.kv_heads, bg % sh.kv_heads);
            let kv_len = kv_lens[b];
            assert!(kv_len >= tq && kv_len <= cap, "attention: kv_len {kv_len} outside [{tq}, {cap}]");
            let kp = &k[bg * cap * hd..][..kv_len * hd];
            let vp = &v[bg * cap * hd..][..kv_len * hd];
            let (mut o, mut l) = (vec![0.0; group * tq * hd], vec![0.0; group * tq]);
            with_scratch(QUERY_BLOCK.min(tq) * kv_len, |s| {
                for j in 0..group {
                    let (at, rows) = head_rows(b, tq, hq, g * group + j, hd);
                    for (i0, i1) in query_blocks(tq) {
                        // The block's last query sees `seen` keys; its first ones fewer.
                        let (n, seen) = (i1 - i0, kv_len - tq + i1);
                        let sb = &mut s[..n * seen];
                        masked_scores(sb, seen, &q[at + i0 * rows.row_stride..], rows, kp, n, seen, hd, scale);
                        softmax_rows(sb, &mut l[j * tq + i0..j * tq + i1], seen);
                        let ob = &mut o[(j * tq + i0) * hd..(j * tq + i1) * hd];
                        mm(n, hd, seen, ob, hd, sb, View::row_major(seen), vp, View::row_major(hd), false);
                    }
                }
            });
            (o, l)
        })
        .unzip();
    gather_tasks(out, &outs, tq, hq, group, hd);
    if let Some(lse) = lse {
        gather_tasks(lse, &lses, tq, hq, group, 1);
    }
}

/// Packed sequences (`Backend::attention_packed_fwd`): each span is the
/// one-row attention above on its tokens of `[tokens, q_heads, hd]` and its
/// row of the keys and values.
pub fn attention_packed_fwd(out: &mut [f32], q: &[f32], k: &[f32], v: &[f32], sh: AttnShape, seqs: &[SeqSpan]) {
    let (tokens, hq, hd) = (sh.q_len, sh.q_heads, sh.head_dim);
    let row = sh.kv_heads * sh.kv_cap * hd;
    assert_eq!(q.len(), tokens * hq * hd);
    assert_eq!(out.len(), q.len());
    assert_eq!(k.len(), sh.batch * row);
    for s in seqs {
        assert!(
            s.q_start + s.q_len <= tokens && s.kv_row < sh.batch,
            "packed attention: span {s:?} outside {tokens} tokens and {} rows",
            sh.batch
        );
        let span = s.q_start * hq * hd..(s.q_start + s.q_len) * hq * hd;
        let one = AttnShape { batch: 1, q_len: s.q_len, ..sh };
        let (kr, vr) = (&k[s.kv_row * row..][..row], &v[s.kv_row * row..][..row]);
        attention_fwd(&mut out[span.clone()], None, &q[span], kr, vr, one, &[s.kv_len]);
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
    let (t, hd, group, hq) = (sh.q_len, sh.head_dim, sh.group(), sh.q_heads);
    assert_eq!(sh.kv_cap, t, "attention_bwd is for training: kv_cap must equal q_len");
    assert_eq!(dq.len(), q.len());
    assert_eq!(dk.len(), k.len());
    let scale = sh.scale();
    let tasks = dk.par_chunks_mut(t * hd).zip(dv.par_chunks_mut(t * hd));
    let dqs: Vec<Vec<f32>> = tasks
        .enumerate()
        .map(|(bg, (dk, dv))| {
            let (b, g) = (bg / sh.kv_heads, bg % sh.kv_heads);
            let kp = &k[bg * t * hd..][..t * hd];
            let vp = &v[bg * t * hd..][..t * hd];
            let mut dqg = vec![0.0; group * t * hd];
            with_scratch(2 * t * t, |buf| {
                let (p, dp) = buf.split_at_mut(t * t);
                for j in 0..group {
                    let h = g * group + j;
                    let (at, rows) = head_rows(b, t, hq, h, hd);
                    let (qh, oh, doh) = (&q[at..], &out[at..], &dout[at..]);
                    // P and dS `[t, t]` (rows t apart), zero past each row's diagonal;
                    // query block [i0, i1) sees keys [0, i1).
                    for (i0, i1) in query_blocks(t) {
                        let (qb, dob) = (&qh[i0 * rows.row_stride..], &doh[i0 * rows.row_stride..]);
                        masked_scores(&mut p[i0 * t..], t, qb, rows, kp, i1 - i0, i1, hd, scale);
                        // dP = dO·Vᵀ, then dS = P ⊙ (dP - rowsum(dO ⊙ O)), pre-scaled.
                        mm(i1 - i0, i1, hd, &mut dp[i0 * t..], t, dob, rows, vp, View::transposed(hd), false);
                    }
                    for i in 0..t {
                        let r = i * rows.row_stride;
                        let l = lse[(b * t + i) * hq + h];
                        let di: f32 = doh[r..r + hd].iter().zip(&oh[r..r + hd]).map(|(a, b)| a * b).sum();
                        let (prow, dsrow) = (&mut p[i * t..(i + 1) * t], &mut dp[i * t..(i + 1) * t]);
                        for (pv, d) in prow[..=i].iter_mut().zip(&mut dsrow[..=i]) {
                            *pv = (*pv - l).exp();
                            *d = *pv * (*d - di) * scale;
                        }
                        prow[i + 1..].fill(0.0);
                        dsrow[i + 1..].fill(0.0);
                    }
                    for (i0, i1) in query_blocks(t) {
                        // dQ = dS·K over the block's keys [0, i1).
                        let dqb = &mut dqg[(j * t + i0) * hd..(j * t + i1) * hd];
                        mm(i1 - i0, hd, i1, dqb, hd, &dp[i0 * t..], View::row_major(t), kp, View::row_major(hd), false);
                        // Keys [i0, i1) are seen by queries [i0, t): dV += Pᵀ·dO and
                        // dK += dSᵀ·Q (heads of a group share K and V, so they accumulate).
                        let (n, m) = (i1 - i0, t - i0);
                        let (qb, dob) = (&qh[i0 * rows.row_stride..], &doh[i0 * rows.row_stride..]);
                        let keys = i0 * hd..i1 * hd;
                        mm(n, hd, m, &mut dv[keys.clone()], hd, &p[i0 * t + i0..], View::transposed(t), dob, rows, j > 0);
                        mm(n, hd, m, &mut dk[keys], hd, &dp[i0 * t + i0..], View::transposed(t), qb, rows, j > 0);
                    }
                }
            });
            dqg
        })
        .collect();
    gather_tasks(dq, &dqs, t, hq, group, hd);
}
