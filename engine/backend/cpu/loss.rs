//! Fused softmax cross-entropy (in place: logits become their gradient),
//! target log-probabilities with entropies, and the logit gradient of any
//! loss on those two, all over rows of `vocab` logits: one row per target,
//! the first rows of a buffer that may hold more (a chunk's last rows). The
//! last two read the logits times `inv_temp`: the distribution a policy
//! samples from at temperature `1 / inv_temp`.

use crate::backend::IGNORE;
use rayon::prelude::*;

fn check_target(t: u32, vocab: usize) {
    assert!(t == IGNORE || (t as usize) < vocab, "target id {t} outside vocab {vocab}");
}

pub fn cross_entropy_inplace(logits: &mut [f32], targets: &[u32], weights: &[f32], vocab: usize) -> f64 {
    let logits = &mut logits[..targets.len() * vocab];
    assert_eq!(weights.len(), targets.len());
    logits
        .par_chunks_mut(vocab)
        .zip(targets.par_iter().zip(weights.par_iter()))
        .map(|(row, (&t, &w))| {
            check_target(t, vocab);
            if t == IGNORE || w == 0.0 {
                row.fill(0.0);
                return 0.0;
            }
            // One exp per logit: row becomes exp(x - max), then w·softmax - w·onehot.
            let target_logit = row[t as usize];
            let m = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for x in row.iter_mut() {
                *x = (*x - m).exp();
                sum += *x;
            }
            let ce = m + sum.ln() - target_logit;
            let scale = w / sum;
            row.iter_mut().for_each(|x| *x *= scale);
            row[t as usize] -= w;
            (w as f64) * (ce as f64)
        })
        .collect::<Vec<f64>>()
        .iter()
        .sum()
}

/// Softmax statistics of one row times `inv_temp`: `(log Z, entropy)`.
fn log_z_and_entropy(row: &[f32], inv_temp: f32) -> (f32, f32) {
    let m = row.iter().map(|&x| x * inv_temp).fold(f32::NEG_INFINITY, f32::max);
    let (mut s, mut sx) = (0f32, 0f32);
    for &x in row {
        let x = x * inv_temp;
        let e = (x - m).exp();
        s += e;
        sx += e * (x - m);
    }
    // H = log Z - E[x] with both taken around the max.
    (m + s.ln(), s.ln() - sx / s)
}

pub fn logprob_entropy(logits: &[f32], targets: &[u32], vocab: usize, inv_temp: f32) -> (Vec<f32>, Vec<f32>) {
    let logits = &logits[..targets.len() * vocab];
    logits
        .par_chunks(vocab)
        .zip(targets.par_iter())
        .map(|(row, &t)| {
            check_target(t, vocab);
            let (log_z, h) = log_z_and_entropy(row, inv_temp);
            (if t == IGNORE { 0.0 } else { row[t as usize] * inv_temp - log_z }, h)
        })
        .unzip()
}

pub fn logit_grad_inplace(logits: &mut [f32], targets: &[u32], c_logp: &[f32], c_ent: &[f32], vocab: usize, inv_temp: f32) {
    assert!(c_logp.len() == targets.len() && c_ent.len() == targets.len());
    let logits = &mut logits[..targets.len() * vocab];
    logits.par_chunks_mut(vocab).zip(targets.par_iter()).zip(c_logp.par_iter().zip(c_ent.par_iter())).for_each(
        |((row, &t), (&cl, &ce))| {
            check_target(t, vocab);
            if t == IGNORE || (cl == 0.0 && ce == 0.0) {
                row.fill(0.0);
                return;
            }
            let (log_z, h) = log_z_and_entropy(row, inv_temp);
            for x in row.iter_mut() {
                let logp = *x * inv_temp - log_z;
                let p = logp.exp();
                // d logp_t / dz = onehot - p;  dH / dz = -p (log p + H); z = x · inv_temp
                *x = inv_temp * (-cl * p - ce * p * (logp + h));
            }
            row[t as usize] += inv_temp * cl;
        },
    );
}
