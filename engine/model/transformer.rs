//! The decoder (Llama / Qwen2) on any backend: loading, saving, and the
//! inference forward pass over a KV cache. Training passes are in `training.rs`.

use super::config::ModelConfig;
use super::kv_cache::KvCache;
use super::params::Params;
use super::step_buffers::StepBuffers;
use super::weights::{load_params, save_params};
use crate::backend::{cpu::rope_tables, row_slots, AttnShape, Backend, HeadSlots, MatMul, Rope, SeqSpan};
use anyhow::{ensure, Context, Result};
use std::path::Path;

/// Where a forward's tokens sit: their RoPE positions, their KV-cache
/// slots ([`HeadSlots`]), and how their queries attend.
struct Placement {
    positions: Vec<u32>,
    kv_slots: Vec<u32>,
    attend: Attend,
}

enum Attend {
    /// `tq` tokens per cache row, every row.
    Rows { tq: usize, kv_lens: Vec<usize> },
    /// Packed prompts of their own lengths, each in its own row.
    Packed(Vec<SeqSpan>),
}

pub struct Transformer<B: Backend> {
    pub cfg: ModelConfig,
    pub params: Params<B::Buf>,
    pub(crate) rope_cos: B::Buf,
    pub(crate) rope_sin: B::Buf,
}

/// Rejects token ids the embedding table does not have.
pub fn check_ids(ids: &[u32], vocab: usize) -> Result<()> {
    if let Some((i, id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= vocab) {
        anyhow::bail!("token id {id} at position {i} is out of range for vocab size {vocab}");
    }
    Ok(())
}

impl<B: Backend> Transformer<B> {
    pub fn from_host(be: &B, cfg: ModelConfig, host: &Params<Vec<f32>>) -> Transformer<B> {
        let params = host.map(&cfg, |t| be.upload(t));
        let (cos, sin) = rope_tables(cfg.max_position_embeddings, cfg.head_dim, cfg.rope_theta);
        Transformer { rope_cos: be.upload(&cos), rope_sin: be.upload(&sin), cfg, params }
    }

    /// Loads `config.json` and the safetensors weights of an HF folder.
    pub fn load(be: &B, dir: &Path) -> Result<Transformer<B>> {
        let cfg = ModelConfig::load(dir)?;
        be.supports(&cfg).with_context(|| format!("the {} backend cannot run {}", be.name(), dir.display()))?;
        let host = load_params(dir, &cfg).with_context(|| format!("loading weights from {}", dir.display()))?;
        Ok(Transformer::from_host(be, cfg, &host))
    }

    pub fn to_host(&self, be: &B) -> Params<Vec<f32>> {
        self.params.map(&self.cfg, |b| be.download(b))
    }

    /// Writes an HF folder (config.json + model.safetensors) in f32.
    pub fn save(&self, be: &B, dir: &Path) -> Result<()> {
        save_params(dir, &self.cfg, &self.to_host(be))
    }

    /// The LM head matrix `[vocab, hidden]` (the embedding when tied).
    pub fn head(&self) -> &B::Buf {
        self.params.lm_head.as_ref().unwrap_or(&self.params.embed)
    }

    /// Runs `tq` new tokens per row through the model, appending their keys and
    /// values to `cache` at each row's current length. Returns the final-norm
    /// hidden states `[batch * tq, hidden]`.
    pub fn forward_cached(&self, be: &B, ids: &[u32], tq: usize, cache: &mut KvCache<B>) -> Result<B::Buf> {
        let mut bufs = StepBuffers::new(be, &self.cfg, ids.len());
        self.forward_into(be, ids, tq, cache, &mut bufs)?;
        Ok(bufs.hidden)
    }

    /// `forward_cached` in `bufs` (sized for `batch * tq` tokens), leaving
    /// the hidden states in `bufs.hidden`.
    pub fn forward_into(&self, be: &B, ids: &[u32], tq: usize, cache: &mut KvCache<B>, bufs: &mut StepBuffers<B>) -> Result<()> {
        let batch = cache.batch;
        let n = batch * tq;
        ensure!(ids.len() == n, "expected {n} token ids ({batch} rows × {tq}), got {}", ids.len());
        let need = cache.lens.iter().max().copied().unwrap_or(0) + tq;
        self.check_length(need, cache.cap)?;
        let kv_lens: Vec<usize> = cache.lens.iter().map(|l| l + tq).collect();
        let plan = Placement {
            positions: (0..n).map(|i| (cache.lens[i / tq] + i % tq) as u32).collect(),
            kv_slots: row_slots(tq, cache.cap, &cache.lens),
            attend: Attend::Rows { tq, kv_lens: kv_lens.clone() },
        };
        self.forward_placed(be, ids, &plan, cache, bufs)?;
        cache.lens = kv_lens;
        Ok(())
    }

    /// Prefills `prompts[k]` into cache row `rows[k]` from position 0, all
    /// in one forward over their tokens packed back to back (no padding).
    /// Returns the final-norm hidden states `[Σ lengths, hidden]`.
    pub fn prefill_packed(&self, be: &B, prompts: &[&[u32]], rows: &[usize], cache: &mut KvCache<B>) -> Result<B::Buf> {
        ensure!(prompts.len() == rows.len(), "{} prompts for {} cache rows", prompts.len(), rows.len());
        let (mut positions, mut kv_slots, mut seqs) = (vec![], vec![], vec![]);
        let mut taken = vec![false; cache.batch];
        for (p, &row) in prompts.iter().zip(rows) {
            ensure!(!p.is_empty(), "every prompt needs at least one token");
            ensure!(row < cache.batch, "cache row {row} is past the cache's {} rows", cache.batch);
            ensure!(!std::mem::replace(&mut taken[row], true), "cache row {row} is prefilled twice");
            self.check_length(p.len(), cache.cap)?;
            seqs.push(SeqSpan { q_start: positions.len(), q_len: p.len(), kv_row: row, kv_len: p.len() });
            positions.extend(0..p.len() as u32);
            kv_slots.extend((0..p.len()).map(|t| (row * cache.cap + t) as u32));
        }
        let plan = Placement { positions, kv_slots, attend: Attend::Packed(seqs) };
        let ids: Vec<u32> = prompts.concat();
        let mut bufs = StepBuffers::new(be, &self.cfg, ids.len());
        self.forward_placed(be, &ids, &plan, cache, &mut bufs)?;
        for (p, &row) in prompts.iter().zip(rows) {
            cache.lens[row] = p.len();
        }
        Ok(bufs.hidden)
    }

    fn check_length(&self, need: usize, cap: usize) -> Result<()> {
        ensure!(need <= cap, "sequence length {need} exceeds the KV cache capacity {cap}");
        let max = self.cfg.max_position_embeddings;
        ensure!(need <= max, "sequence length {need} exceeds max_position_embeddings {max}");
        Ok(())
    }

    /// The layers' forward over `ids`, each token at the RoPE position and
    /// KV-cache slot `plan` gives it, attending as `plan.attend` says.
    fn forward_placed(&self, be: &B, ids: &[u32], plan: &Placement, cache: &mut KvCache<B>, bufs: &mut StepBuffers<B>) -> Result<()> {
        let cfg = &self.cfg;
        let d = cfg.hidden_size;
        let (h, hkv, hd) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let n = ids.len();
        ensure!(bufs.tokens == n, "step buffers for {} tokens, the forward has {n}", bufs.tokens);
        check_ids(ids, cfg.vocab_size)?;
        let shape = AttnShape { batch: cache.batch, q_heads: h, kv_heads: hkv, q_len: n, kv_cap: cache.cap, head_dim: hd };
        let kv_at = HeadSlots { cap: cache.cap, slots: &plan.kv_slots };
        let heads = cfg.qkv_heads();
        let StepBuffers { x, ln, rstd, qkv_tok, q, att, gate_up, act, hidden, .. } = bufs;

        be.embedding_fwd(x, &self.params.embed, ids, d);
        for (l, p) in self.params.layers.iter().enumerate() {
            be.rmsnorm_fwd(ln, rstd, x, &p.attn_norm, d, cfg.rms_norm_eps);
            be.matmul(qkv_tok, ln, &p.wqkv, MatMul::linear(n, d, heads.width()));
            let rope = Rope { cos: &self.rope_cos, sin: &self.rope_sin, positions: &plan.positions };
            let (k, v) = (&mut cache.k[l], &mut cache.v[l]);
            be.qkv_from_tokens(q, k, v, qkv_tok, p.bqkv.as_ref(), rope, heads, kv_at);
            match &plan.attend {
                Attend::Rows { tq, kv_lens } => {
                    be.attention_fwd(att, None, q, &cache.k[l], &cache.v[l], AttnShape { q_len: *tq, ..shape }, kv_lens)
                }
                Attend::Packed(seqs) => be.attention_packed_fwd(att, q, &cache.k[l], &cache.v[l], shape, seqs),
            }
            be.matmul(x, att, &p.wo, MatMul::linear(n, h * hd, d).accumulating());
            be.rmsnorm_fwd(ln, rstd, x, &p.mlp_norm, d, cfg.rms_norm_eps);
            be.matmul(gate_up, ln, &p.w_gate_up, MatMul::linear(n, d, 2 * cfg.intermediate_size));
            be.swiglu_fwd(act, gate_up, cfg.intermediate_size);
            be.matmul(x, act, &p.w_down, MatMul::linear(n, cfg.intermediate_size, d).accumulating());
        }
        be.rmsnorm_fwd(hidden, rstd, x, &self.params.final_norm, d, cfg.rms_norm_eps);
        Ok(())
    }

    /// Logits `[rows, vocab]` for `rows` final hidden states.
    pub fn logits(&self, be: &B, hidden: &B::Buf, rows: usize) -> B::Buf {
        let mut out = be.zeros(rows * self.cfg.vocab_size);
        self.logits_into(be, hidden, rows, &mut out);
        out
    }

    /// `logits` into `out` (at least `rows * vocab` long).
    pub fn logits_into(&self, be: &B, hidden: &B::Buf, rows: usize, out: &mut B::Buf) {
        be.matmul(out, hidden, self.head(), MatMul::linear(rows, self.cfg.hidden_size, self.cfg.vocab_size));
    }

    /// Full-sequence logits `[batch * seq, vocab]` for equal-length rows.
    pub fn forward_logits(&self, be: &B, ids: &[u32], batch: usize, seq: usize) -> Result<B::Buf> {
        let mut cache = KvCache::new(be, &self.cfg, batch, seq);
        let hidden = self.forward_cached(be, ids, seq, &mut cache)?;
        Ok(self.logits(be, &hidden, batch * seq))
    }

    /// `log p(ids[t+1] | ids[..=t])` for each row (length `len - 1` per row),
    /// of the distribution sampled at `temperature` (softmax of logits / T).
    pub fn score(&self, be: &B, rows: &[Vec<u32>], temperature: f32) -> Result<Vec<Vec<f32>>> {
        rows.iter()
            .map(|row| {
                ensure!(!row.is_empty(), "cannot score an empty token row");
                let logits = self.forward_logits(be, row, 1, row.len())?;
                let mut targets: Vec<u32> = row[1..].to_vec();
                targets.push(crate::backend::IGNORE);
                let (mut lp, _) = be.logprob_entropy(&logits, &targets, self.cfg.vocab_size, temperature.recip());
                lp.pop();
                Ok(lp)
            })
            .collect()
    }
}
