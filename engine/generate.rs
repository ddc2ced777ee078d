//! Batched autoregressive generation over a KV cache: right-padded prefill of
//! prompts of different lengths, then one token per row per step. Sampling is
//! greedy, temperature, top-k and top-p, seeded; stop tokens end a row early.
//! Each sampled token comes with its log-probability, which PPO needs.

use crate::backend::Backend;
use crate::model::{KvCache, Transformer};
use anyhow::{ensure, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

#[derive(Clone, Debug)]
pub struct SamplingConfig {
    pub max_new_tokens: usize,
    /// 0 means greedy.
    pub temperature: f32,
    /// 0 disables top-k.
    pub top_k: usize,
    /// 1.0 disables nucleus sampling.
    pub top_p: f32,
    pub seed: u64,
    pub stop_tokens: Vec<u32>,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig { max_new_tokens: 64, temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0, stop_tokens: vec![] }
    }
}

/// One row's output. `logprobs[i]` is `log softmax(logits / T)[tokens[i]]`
/// over the full distribution (before top-k/top-p truncation), the quantity
/// a training forward recomputes; with T = 0 it uses T = 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub tokens: Vec<u32>,
    pub logprobs: Vec<f32>,
    /// True when a stop token ended the row (it is included in `tokens`).
    pub stopped: bool,
}

/// Picks the next token from one row of logits with the uniform draw `u` in
/// [0, 1) (unused when greedy); returns it and its logprob.
pub fn sample_row(logits: &[f32], cfg: &SamplingConfig, u: f32) -> (u32, f32) {
    let t = if cfg.temperature > 0.0 { cfg.temperature } else { 1.0 };
    let scaled: Vec<f32> = logits.iter().map(|&x| x / t).collect();
    let m = scaled.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let log_z = m + scaled.iter().map(|&x| (x - m).exp()).sum::<f32>().ln();
    if cfg.temperature <= 0.0 {
        // First maximum, as torch.argmax picks.
        let best = scaled.iter().enumerate().fold(0, |b, (i, &x)| if x > scaled[b] { i } else { b });
        return (best as u32, scaled[best] - log_z);
    }
    // Descending by logit, ties by index: a total order, so selecting the top k
    // first and sorting only those gives the same list as a full sort.
    let by_logit = |a: &usize, b: &usize| scaled[*b].total_cmp(&scaled[*a]).then(a.cmp(b));
    let mut order: Vec<usize> = (0..scaled.len()).collect();
    if cfg.top_k > 0 && cfg.top_k < order.len() {
        order.select_nth_unstable_by(cfg.top_k - 1, by_logit);
        order.truncate(cfg.top_k);
    }
    order.sort_unstable_by(by_logit);
    let probs: Vec<f32> = order.iter().map(|&i| (scaled[i] - log_z).exp()).collect();
    let mut keep = probs.len();
    if cfg.top_p < 1.0 {
        // Smallest prefix whose mass reaches top_p (always at least one token).
        let mut mass = 0.0;
        for (i, p) in probs.iter().enumerate() {
            mass += p;
            if mass >= cfg.top_p {
                keep = i + 1;
                break;
            }
        }
    }
    let total: f32 = probs[..keep].iter().sum();
    let mut u = u * total;
    let mut pick = order[keep - 1];
    for (&i, &p) in order[..keep].iter().zip(&probs) {
        if u < p {
            pick = i;
            break;
        }
        u -= p;
    }
    (pick as u32, scaled[pick] - log_z)
}

/// Generates a continuation for every prompt in one batch.
pub fn generate<B: Backend>(be: &B, model: &Transformer<B>, prompts: &[Vec<u32>], cfg: &SamplingConfig) -> Result<Vec<Generation>> {
    ensure!(!prompts.is_empty(), "no prompts to generate from");
    ensure!(prompts.iter().all(|p| !p.is_empty()), "every prompt needs at least one token");
    let batch = prompts.len();
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let cap = longest + cfg.max_new_tokens;
    let vocab = model.cfg.vocab_size;
    let mut cache = KvCache::new(be, &model.cfg, batch, cap);
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut out = vec![Generation { tokens: vec![], logprobs: vec![], stopped: false }; batch];
    if cfg.max_new_tokens == 0 {
        return Ok(out);
    }

    // Prefill, right-padded: pads sit after each prompt, so causal attention
    // keeps them out of every real position; their cache slots are reused.
    let pad = prompts[0][0];
    let ids: Vec<u32> = prompts.iter().flat_map(|p| p.iter().copied().chain(std::iter::repeat(pad)).take(longest)).collect();
    let hidden = model.forward_cached(be, &ids, longest, &mut cache)?;
    let d = model.cfg.hidden_size;
    let mut last = be.zeros(batch * d);
    for (r, p) in prompts.iter().enumerate() {
        be.copy_range(&mut last, r * d, &hidden, (r * longest + p.len() - 1) * d, d);
    }
    cache.lens = prompts.iter().map(Vec::len).collect();
    let mut logits = be.download(&model.logits(be, &last, batch));

    for step in 0..cfg.max_new_tokens {
        // One draw per live row in row order, as a sequential sampler makes
        // them; the rows then sample in parallel with the same results.
        let draws: Vec<Option<f32>> =
            out.iter().map(|g| (!g.stopped).then(|| if cfg.temperature > 0.0 { rng.random::<f32>() } else { 0.0 })).collect();
        let picks: Vec<Option<(u32, f32)>> =
            draws.par_iter().enumerate().map(|(r, u)| u.map(|u| sample_row(&logits[r * vocab..(r + 1) * vocab], cfg, u))).collect();
        let mut next = vec![pad; batch];
        for ((row, pick), next) in out.iter_mut().zip(picks).zip(&mut next) {
            let Some((tok, lp)) = pick else { continue };
            row.tokens.push(tok);
            row.logprobs.push(lp);
            row.stopped = cfg.stop_tokens.contains(&tok);
            *next = tok;
        }
        if step + 1 == cfg.max_new_tokens || out.iter().all(|g| g.stopped) {
            break;
        }
        // Finished rows still step (their output is discarded) to keep one batch.
        let hidden = model.forward_cached(be, &next, 1, &mut cache)?;
        logits = be.download(&model.logits(be, &hidden, batch));
    }
    Ok(out)
}
