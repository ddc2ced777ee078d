//! Batched autoregressive generation over a KV cache: a packed prefill of
//! prompts of different lengths (no padding), then one token per row per
//! step. Sampling is greedy, temperature, top-k and top-p, seeded; stop
//! tokens end a row early.
//! Each sampled token comes with its log-probability, which PPO needs.

use crate::backend::Backend;
use crate::model::{KvCache, StepBuffers, Transformer};
use crate::trace;
use anyhow::{ensure, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
///
/// Sampling keeps every token, or with top-k / top-p a prefix of the tokens
/// in descending logit order (ties by id): the first k, then the shortest
/// prefix whose mass reaches p. The draw then walks the kept tokens in id
/// order: the pick is the first whose cumulative probability exceeds `u`
/// times the kept mass. (Id order needs no sort, so an untruncated row is
/// sampled in one pass over its probabilities; the device kernel does the
/// same.)
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
    let prob = |i: usize| (scaled[i] - log_z).exp();
    let kept = kept_tokens(&scaled, cfg, prob);
    let total: f32 = kept.iter().map(|&i| prob(i)).sum();
    let mut u = u * total;
    let mut pick = *kept.last().expect("at least one token is kept");
    for &i in &kept {
        let p = prob(i);
        if u < p {
            pick = i;
            break;
        }
        u -= p;
    }
    (pick as u32, scaled[pick] - log_z)
}

/// The ids `sample_row` draws from, ascending: all of them, or the top-k /
/// top-p prefix of the descending logit order (ties by id).
fn kept_tokens(scaled: &[f32], cfg: &SamplingConfig, prob: impl Fn(usize) -> f32) -> Vec<usize> {
    let top_k = cfg.top_k > 0 && cfg.top_k < scaled.len();
    if !top_k && cfg.top_p >= 1.0 {
        return (0..scaled.len()).collect();
    }
    // A total order, so selecting the top k first and sorting only those
    // gives the same list as a full sort.
    let by_logit = |a: &usize, b: &usize| scaled[*b].total_cmp(&scaled[*a]).then(a.cmp(b));
    let mut order: Vec<usize> = (0..scaled.len()).collect();
    if top_k {
        order.select_nth_unstable_by(cfg.top_k - 1, by_logit);
        order.truncate(cfg.top_k);
    }
    order.sort_unstable_by(by_logit);
    if cfg.top_p < 1.0 {
        // Smallest prefix whose mass reaches top_p (always at least one token).
        let mut mass = 0.0;
        if let Some(last) = order.iter().position(|&i| {
            mass += prob(i);
            mass >= cfg.top_p
        }) {
            order.truncate(last + 1);
        }
    }
    order.sort_unstable();
    order
}

/// Generates a continuation for every prompt, all in one batch.
pub fn generate<B: Backend>(be: &B, model: &Transformer<B>, prompts: &[Vec<u32>], cfg: &SamplingConfig) -> Result<Vec<Generation>> {
    generate_continuous(be, model, prompts, prompts.len(), cfg)
}

/// Continuous batching: `slots` rows decode together, and a row that finishes
/// (stop token or `max_new_tokens`) takes the next waiting prompt at once
/// (prefilled straight into that row of the KV cache), so one long
/// sample does not hold the others up. With `slots ≥ prompts.len()` this is
/// plain batched generation. Outputs follow `prompts`' order. Prompt `i`
/// samples from its own random stream (`cfg.seed`, stream `i`), so what it
/// generates does not depend on `slots` or on the other prompts.
///
/// Every decode step runs on the same buffers and writes the same logits
/// buffer (`Backend::repeated`: the CUDA backend replays it as a graph).
pub fn generate_continuous<B: Backend>(
    be: &B,
    model: &Transformer<B>,
    prompts: &[Vec<u32>],
    slots: usize,
    cfg: &SamplingConfig,
) -> Result<Vec<Generation>> {
    ensure!(!prompts.is_empty(), "no prompts to generate from");
    ensure!(prompts.iter().all(|p| !p.is_empty()), "every prompt needs at least one token");
    ensure!(slots > 0, "continuous batching needs at least one slot");
    let slots = slots.min(prompts.len());
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let cap = longest + cfg.max_new_tokens;
    let vocab = model.cfg.vocab_size;
    let mut out = vec![Generation { tokens: vec![], logprobs: vec![], stopped: false }; prompts.len()];
    if cfg.max_new_tokens == 0 {
        return Ok(out);
    }
    let mut cache = KvCache::new(be, &model.cfg, slots, cap);
    let mut step = StepBuffers::new(be, &model.cfg, slots);
    let mut rngs: Vec<ChaCha8Rng> = (0..prompts.len()).map(|i| prompt_rng(cfg.seed, i)).collect();
    let pad = prompts[0][0];
    // Which prompt each row is generating for (None: finished, nothing left to take).
    let mut owner: Vec<Option<usize>> = (0..slots).map(Some).collect();
    let mut waiting = slots..prompts.len();
    // Each row's next-token logits stay on the device; only picks come back.
    let mut logits = be.zeros(slots * vocab);
    // Refilled rows' first logits, moved into `logits` after the step that overwrites that row.
    let mut fresh: Option<B::Buf> = None;
    let first: Vec<&[u32]> = prompts[..slots].iter().map(Vec::as_slice).collect();
    prefill_rows(be, model, &first, &(0..slots).collect::<Vec<_>>(), &mut cache, &mut logits)?;

    loop {
        let draws: Vec<Option<f32>> =
            owner.iter().map(|o| o.map(|p| if cfg.temperature > 0.0 { rngs[p].random::<f32>() } else { 0.0 })).collect();
        let picks = {
            let _r = trace::range("sample");
            be.sample(&logits, vocab, cfg, &draws)
        };
        let mut next = vec![pad; slots];
        let mut advance = vec![false; slots];
        for (r, pick) in picks.into_iter().enumerate() {
            let (Some((tok, lp)), Some(p)) = (pick, owner[r]) else { continue };
            let g = &mut out[p];
            g.tokens.push(tok);
            g.logprobs.push(lp);
            g.stopped = cfg.stop_tokens.contains(&tok);
            if g.stopped || g.tokens.len() == cfg.max_new_tokens {
                owner[r] = None;
            } else {
                (next[r], advance[r]) = (tok, true);
            }
        }
        // Finished rows take waiting prompts, prefilled together; their first
        // logits come from that prefill.
        let (mut rows, mut taken) = (Vec::new(), Vec::new());
        for (r, o) in owner.iter_mut().enumerate() {
            if o.is_none() {
                if let Some(p) = waiting.next() {
                    rows.push(r);
                    taken.push(prompts[p].as_slice());
                    *o = Some(p);
                }
            }
        }
        if !rows.is_empty() {
            let fresh = fresh.get_or_insert_with(|| be.zeros(slots * vocab));
            prefill_rows(be, model, &taken, &rows, &mut cache, fresh)?;
        }
        if owner.iter().all(Option::is_none) {
            break;
        }
        if advance.contains(&true) {
            // Every row steps to keep one batch; rows that did not take a token
            // keep their length, so the position they wrote is overwritten later.
            let lens = cache.lens.clone();
            let _r = trace::range("decode step");
            be.repeated(&mut || {
                cache.lens.clone_from(&lens);
                model.forward_into(be, &next, 1, &mut cache, &mut step)?;
                model.logits_into(be, &step.hidden, slots, &mut logits);
                Ok(())
            })?;
            for r in (0..slots).filter(|&r| !advance[r]) {
                cache.lens[r] = lens[r];
            }
        }
        if let Some(fresh) = &fresh {
            for &r in &rows {
                be.copy_range(&mut logits, r * vocab, fresh, r * vocab, vocab);
            }
        }
    }
    Ok(out)
}

/// Prompt `i`'s sampling stream: the seed's ChaCha8 generator on stream `i`.
fn prompt_rng(seed: u64, i: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(i as u64);
    rng
}

/// Prefills `prompts[k]` into cache row `rows[k]` (all of them in one
/// forward over their tokens packed back to back, so no position is padding)
/// and writes its next-token logits into row `rows[k]` of `logits` (a buffer
/// of every row's).
fn prefill_rows<B: Backend>(
    be: &B,
    model: &Transformer<B>,
    prompts: &[&[u32]],
    rows: &[usize],
    cache: &mut KvCache<B>,
    logits: &mut B::Buf,
) -> Result<()> {
    let _r = trace::range("prefill");
    let (d, vocab) = (model.cfg.hidden_size, model.cfg.vocab_size);
    let hidden = model.prefill_packed(be, prompts, rows, cache)?;
    // Each prompt's last token, gathered as an embedding lookup gathers rows.
    let last_tokens: Vec<u32> = prompts
        .iter()
        .scan(0, |end, p| {
            *end += p.len();
            Some((*end - 1) as u32)
        })
        .collect();
    let mut last = be.zeros(prompts.len() * d);
    be.embedding_fwd(&mut last, &hidden, &last_tokens, d);
    if rows.iter().enumerate().all(|(k, &r)| k == r) {
        model.logits_into(be, &last, prompts.len(), logits);
        return Ok(());
    }
    let out = model.logits(be, &last, prompts.len());
    for (k, &r) in rows.iter().enumerate() {
        be.copy_range(logits, r * vocab, &out, k * vocab, vocab);
    }
    Ok(())
}
