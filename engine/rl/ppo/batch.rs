//! Rollouts as right-padded training batches, and the row of such a batch
//! that predicts a given response token.

use super::rollout::Rollout;
use crate::backend::IGNORE;
use crate::model::Batch;

/// Sequences as one right-padded batch whose targets are the response tokens.
pub(super) fn to_batch(rollouts: &[&Rollout], pad: u32) -> Batch {
    let seq = rollouts.iter().map(|r| r.prompt.len() + r.tokens.len()).max().unwrap_or(2).max(2);
    let b = rollouts.len();
    let mut ids = vec![pad; b * seq];
    let mut targets = vec![IGNORE; b * seq];
    for (i, r) in rollouts.iter().enumerate() {
        let row = &mut ids[i * seq..(i + 1) * seq];
        row[..r.prompt.len()].copy_from_slice(&r.prompt);
        row[r.prompt.len()..r.prompt.len() + r.tokens.len()].copy_from_slice(&r.tokens);
        for (j, &t) in r.tokens.iter().enumerate() {
            targets[i * seq + r.prompt.len() + j - 1] = t;
        }
    }
    Batch { batch: b, seq, ids, targets, weights: vec![0.0; b * seq] }
}

/// Row of the batch that predicts response token `j` of sequence `i`.
pub(super) fn row_of(seq: usize, r: &Rollout, i: usize, j: usize) -> usize {
    i * seq + r.prompt.len() + j - 1
}
