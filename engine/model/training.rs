//! The training pass: an explicit forward that keeps the activations the
//! backward needs (by name, per layer), a chunked fused LM head + cross-entropy
//! that never holds the full `[tokens, vocab]` logits, and the backward pass
//! that adds to the parameter gradients or writes them (`GradWrite`).
//!
//! Memory plan: by default every layer keeps the inputs of its weight
//! gradients' matmuls (the two norm outputs, the gate and up projections and
//! the SwiGLU product; the attention output is kept anyway, for attention's
//! backward), so the backward redoes nothing. With `recompute` one shared
//! set of them is recomputed in the backward instead (two norms, the gate/up
//! matmul and one SwiGLU more per layer), which frees the largest per-layer
//! activations.

use super::config::ModelConfig;
use super::params::Params;
use super::transformer::{check_ids, Transformer};
use crate::backend::{row_slots, AttnShape, Backend, HeadSlots, MatMul, Rope, IGNORE};
use crate::trace;
use anyhow::{ensure, Result};

/// One micro-batch of `batch × seq` tokens. `targets[i]` is the token the
/// model should predict at position `i` (or [`IGNORE`]); `weights[i]` scales
/// that position's loss, already divided by the normalizer the caller wants.
#[derive(Clone, Debug)]
pub struct Batch {
    pub batch: usize,
    pub seq: usize,
    pub ids: Vec<u32>,
    pub targets: Vec<u32>,
    pub weights: Vec<f32>,
}

impl Batch {
    /// Next-token prediction on `ids`, with loss where `loss_mask` is true,
    /// averaged over the `normalizer` counted tokens (pass the total over all
    /// micro-batches of an accumulated step).
    pub fn causal_lm(ids: Vec<u32>, loss_mask: &[bool], batch: usize, seq: usize, normalizer: f32) -> Batch {
        assert_eq!(ids.len(), batch * seq);
        assert_eq!(loss_mask.len(), ids.len());
        let mut targets = vec![IGNORE; ids.len()];
        let mut weights = vec![0.0; ids.len()];
        for r in 0..batch {
            for t in 0..seq - 1 {
                let i = r * seq + t;
                if loss_mask[i + 1] {
                    targets[i] = ids[i + 1];
                    weights[i] = 1.0 / normalizer;
                }
            }
        }
        Batch { batch, seq, ids, targets, weights }
    }

    /// Tokens that carry loss in this batch.
    pub fn counted(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE).count()
    }
}

/// How a training pass writes the parameter gradients.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GradWrite {
    /// Add to what the buffers hold (a step's further micro-batches).
    Add,
    /// Replace whatever they hold (a step's first micro-batch): nothing
    /// needs zeroing first, and each weight's first gradient matmul reads
    /// nothing back (with f32 gradients of 0.5B parameters, about 4 GB of
    /// traffic a step).
    Overwrite,
}

impl GradWrite {
    /// A weight-gradient matmul that writes or adds as this pass does.
    fn dw(self, mm: MatMul) -> MatMul {
        MatMul { accumulate: self == GradWrite::Add, ..mm }
    }
}

/// Activations kept from the forward pass for one layer, named as in the math.
struct LayerActs<Buf> {
    /// Pre-norm input of the attention block (the residual stream).
    x_in: Buf,
    rstd1: Buf,
    /// Queries `[tokens, heads, hd]` and keys and values `[batch, kv heads,
    /// seq, hd]`, after RoPE.
    q: Buf,
    k: Buf,
    v: Buf,
    /// Attention output `[tokens, heads, hd]`: also the output projection's
    /// input, so it is stored as a projection.
    att: Buf,
    lse: Buf,
    /// Residual stream between attention and MLP.
    x_mid: Buf,
    rstd2: Buf,
    /// Kept unless they are recomputed (`TrainState::recomputing`).
    inputs: Option<MatmulInputs<Buf>>,
}

/// One layer's matmul inputs that the backward reads again, stored as
/// projections (bf16 on a device, as autocast keeps them).
struct MatmulInputs<Buf> {
    ln1: Buf,
    ln2: Buf,
    /// The MLP's stacked gate and up projections.
    gate_up: Buf,
    /// SwiGLU output.
    act: Buf,
}

impl<Buf> MatmulInputs<Buf> {
    /// For `n` tokens, or empty (`n` = 0).
    fn new<B: Backend<Buf = Buf>>(be: &B, cfg: &ModelConfig, n: usize) -> MatmulInputs<Buf> {
        let (d, f) = (cfg.hidden_size, cfg.intermediate_size);
        MatmulInputs {
            ln1: be.zeros_projection(n * d),
            ln2: be.zeros_projection(n * d),
            gate_up: be.zeros_projection(n * 2 * f),
            act: be.zeros_projection(n * f),
        }
    }
}

/// Reusable buffers for training on one `(batch, seq)` shape: saved
/// activations plus the scratch of the backward pass. Allocated once.
pub struct TrainState<B: Backend> {
    batch: usize,
    seq: usize,
    layers: Vec<LayerActs<B::Buf>>,
    /// Every layer's matmul inputs when layers do not keep theirs, else empty.
    recomputed: MatmulInputs<B::Buf>,
    /// The fused q/k/v projection, before RoPE and the keys' and values' move head-major.
    qkv_tok: B::Buf,
    x_final: B::Buf,
    /// Final-norm hidden states `[tokens, hidden]`: what every head reads.
    pub(crate) ln_f: B::Buf,
    rstd_f: B::Buf,
    head_rows: usize,
    head_x: B::Buf,
    head_logits: B::Buf,
    head_dx: B::Buf,
    d_resid: B::Buf,
    /// A head writes `∂L/∂ln_f` here before the trunk's backward pass.
    pub(crate) d_ln: B::Buf,
    /// A layer norm's output gradient (bf16 on a device, as autocast keeps it).
    d_norm: B::Buf,
    /// The SwiGLU output's gradient (bf16 on a device, as autocast keeps it).
    d_act: B::Buf,
    d_gate_up: B::Buf,
    /// The attention output's gradient (bf16 on a device, as autocast keeps it).
    d_att: B::Buf,
    /// The fused q/k/v projection's gradient.
    dqkv_tok: B::Buf,
}

/// Rows of logits materialized at once by the fused LM head: as few chunks
/// as `chunk_elems` allows (each chunk's weight-gradient matmul reads and
/// writes the whole head gradient), of equal size up to the last, and a
/// multiple of 64 rows where the budget allows (whole matmul tiles).
fn head_chunk_rows(chunk_elems: usize, tokens: usize, vocab: usize) -> usize {
    let most = (chunk_elems / vocab).clamp(1, tokens);
    let even = tokens.div_ceil(tokens.div_ceil(most));
    Some(even.next_multiple_of(64)).filter(|&r| r <= most).unwrap_or(even)
}

impl<B: Backend> TrainState<B> {
    /// The `(batch, seq)` this state was sized for.
    pub fn shape(&self) -> (usize, usize) {
        (self.batch, self.seq)
    }

    pub fn new(be: &B, cfg: &ModelConfig, batch: usize, seq: usize) -> TrainState<B> {
        Self::with_plan(be, cfg, batch, seq, false)
    }

    /// As `new`, recomputing each layer's matmul inputs in the backward
    /// instead of keeping them (`--recompute`).
    pub fn recomputing(be: &B, cfg: &ModelConfig, batch: usize, seq: usize) -> TrainState<B> {
        Self::with_plan(be, cfg, batch, seq, true)
    }

    fn with_plan(be: &B, cfg: &ModelConfig, batch: usize, seq: usize, recompute: bool) -> TrainState<B> {
        let n = batch * seq;
        let (d, f, qd, kvd) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_dim(), cfg.kv_dim());
        let heads = batch * cfg.num_heads * seq;
        let layers = (0..cfg.num_layers)
            .map(|_| LayerActs {
                x_in: be.zeros(n * d),
                rstd1: be.zeros(n),
                q: be.zeros_attention(n * qd),
                k: be.zeros_attention(n * kvd),
                v: be.zeros_attention(n * kvd),
                att: be.zeros_projection(n * qd),
                lse: be.zeros(heads),
                x_mid: be.zeros(n * d),
                rstd2: be.zeros(n),
                inputs: (!recompute).then(|| MatmulInputs::new(be, cfg, n)),
            })
            .collect();
        let head_rows = head_chunk_rows(be.logits_chunk_elems(), n, cfg.vocab_size);
        let qkv = n * (qd + 2 * kvd);
        TrainState {
            batch,
            seq,
            layers,
            recomputed: MatmulInputs::new(be, cfg, if recompute { n } else { 0 }),
            qkv_tok: be.zeros_projection(qkv),
            x_final: be.zeros(n * d),
            ln_f: be.zeros(n * d),
            rstd_f: be.zeros(n),
            head_rows,
            head_x: be.zeros(head_rows * d),
            head_logits: be.zeros_projection(head_rows * cfg.vocab_size),
            head_dx: be.zeros(head_rows * d),
            d_resid: be.zeros(n * d),
            d_ln: be.zeros(n * d),
            d_norm: be.zeros_projection(n * d),
            d_act: be.zeros_projection(n * f),
            d_gate_up: be.zeros_projection(n * 2 * f),
            d_att: be.zeros_projection(n * qd),
            dqkv_tok: be.zeros_projection(qkv),
        }
    }
}

impl<B: Backend> Transformer<B> {
    /// Forward and backward on one micro-batch. Gradients are added to
    /// `grads` or replace them (`write`); returns `Σ weights · cross-entropy`
    /// (the weighted loss).
    pub fn forward_backward(
        &self,
        be: &B,
        batch: &Batch,
        st: &mut TrainState<B>,
        grads: &mut Params<B::Buf>,
        write: GradWrite,
    ) -> Result<f64> {
        self.forward_backward_with(be, batch, st, grads, write, |be, logits, r0, rows| {
            be.cross_entropy_inplace(logits, &batch.targets[r0..r0 + rows], &batch.weights[r0..r0 + rows], self.cfg.vocab_size)
        })
    }

    /// Forward and backward for a loss on each target token's logprob and
    /// entropy (policy gradients) under the policy that samples at
    /// `temperature`. `grad(row0, logp, entropy)` returns, per row,
    /// `∂L/∂logp`, `∂L/∂entropy`, and the chunk's loss.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_backward_policy(
        &self,
        be: &B,
        batch: &Batch,
        st: &mut TrainState<B>,
        grads: &mut Params<B::Buf>,
        write: GradWrite,
        temperature: f32,
        mut grad: impl FnMut(usize, &[f32], &[f32]) -> (Vec<f32>, Vec<f32>, f64),
    ) -> Result<f64> {
        let (vocab, inv_temp) = (self.cfg.vocab_size, temperature.recip());
        self.forward_backward_with(be, batch, st, grads, write, |be, logits, r0, rows| {
            let targets = &batch.targets[r0..r0 + rows];
            let (logp, ent) = be.logprob_entropy(logits, targets, vocab, inv_temp);
            let (c_logp, c_ent, loss) = grad(r0, &logp, &ent);
            be.logit_grad_inplace(logits, targets, &c_logp, &c_ent, vocab, inv_temp);
            loss
        })
    }

    fn check_batch(&self, batch: &Batch, st: &TrainState<B>) -> Result<()> {
        ensure!(
            batch.batch == st.batch && batch.seq == st.seq,
            "batch shape {}×{} does not match the training state's {}×{}",
            batch.batch,
            batch.seq,
            st.batch,
            st.seq
        );
        let n = batch.batch * batch.seq;
        ensure!(batch.ids.len() == n && batch.targets.len() == n && batch.weights.len() == n, "batch arrays must all hold {n} entries");
        check_ids(&batch.ids, self.cfg.vocab_size)?;
        if let Some(t) = batch.targets.iter().find(|&&t| t != IGNORE && t as usize >= self.cfg.vocab_size) {
            anyhow::bail!("target id {t} is out of range for vocab size {}", self.cfg.vocab_size);
        }
        Ok(())
    }

    /// The trunk's forward, then `head_chunk(be, logits, row0, rows)` turning
    /// each chunk of LM-head logits into their gradient in place (returning its
    /// loss), then the backward pass.
    fn forward_backward_with(
        &self,
        be: &B,
        batch: &Batch,
        st: &mut TrainState<B>,
        grads: &mut Params<B::Buf>,
        write: GradWrite,
        head_chunk: impl FnMut(&B, &mut B::Buf, usize, usize) -> f64,
    ) -> Result<f64> {
        self.check_batch(batch, st)?;
        let positions = Self::train_positions(batch);
        {
            let _r = trace::range("forward");
            self.train_forward(be, batch, &positions, st);
        }
        if write == GradWrite::Overwrite {
            Self::zero_added_grads(be, grads);
        }
        let loss = {
            let _r = trace::range("lm head and loss");
            self.lm_head_backward(be, batch, st, grads, write, head_chunk)
        };
        let _r = trace::range("backward");
        self.train_backward(be, batch, &positions, st, grads, write);
        Ok(loss)
    }

    /// The gradients ops add into rather than write: norm weights, q/k/v
    /// biases, and an untied embedding (only the batch's tokens' rows get
    /// gradient). A tied embedding's is the LM head's, which its first
    /// chunk writes.
    fn zero_added_grads(be: &B, grads: &mut Params<B::Buf>) {
        be.fill_zero(&mut grads.final_norm);
        for g in &mut grads.layers {
            be.fill_zero(&mut g.attn_norm);
            be.fill_zero(&mut g.mlp_norm);
            if let Some(b) = g.bqkv.as_mut() {
                be.fill_zero(b);
            }
        }
        if grads.lm_head.is_some() {
            be.fill_zero(&mut grads.embed);
        }
    }

    /// The trunk's forward and the final norm, leaving `st.ln_f` for a head.
    pub(crate) fn trunk_forward(&self, be: &B, batch: &Batch, st: &mut TrainState<B>) -> Result<Vec<u32>> {
        self.check_batch(batch, st)?;
        let positions = Self::train_positions(batch);
        self.train_forward(be, batch, &positions, st);
        Ok(positions)
    }

    /// The trunk's backward from `st.d_ln` (which a head has written),
    /// adding to `grads`.
    pub(crate) fn trunk_backward(&self, be: &B, batch: &Batch, positions: &[u32], st: &mut TrainState<B>, grads: &mut Params<B::Buf>) {
        self.train_backward(be, batch, positions, st, grads, GradWrite::Add);
    }

    /// Forward only: each row's target logprob and softmax entropy (targets
    /// IGNORE give 0 logprob) under the policy that samples at `temperature`,
    /// with the LM head in row chunks.
    pub fn score_batch(&self, be: &B, batch: &Batch, st: &mut TrainState<B>, temperature: f32) -> Result<(Vec<f32>, Vec<f32>)> {
        self.trunk_forward(be, batch, st)?;
        let (d, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let n = batch.batch * batch.seq;
        let (mut logp, mut ent) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for r0 in (0..n).step_by(st.head_rows) {
            let rows = st.head_rows.min(n - r0);
            let mut x = be.zeros(rows * d);
            be.copy_range(&mut x, 0, &st.ln_f, r0 * d, rows * d);
            // Stored as the training step stores them, so a policy's scored
            // logprobs and its training logprobs agree.
            let mut logits = be.zeros_projection(rows * v);
            self.logits_into(be, &x, rows, &mut logits);
            let (l, e) = be.logprob_entropy(&logits, &batch.targets[r0..r0 + rows], v, temperature.recip());
            logp.extend(l);
            ent.extend(e);
        }
        Ok((logp, ent))
    }

    fn train_positions(batch: &Batch) -> Vec<u32> {
        (0..batch.batch * batch.seq).map(|i| (i % batch.seq) as u32).collect()
    }

    fn attn_shape(&self, batch: usize, seq: usize) -> AttnShape {
        let c = &self.cfg;
        AttnShape { batch, q_heads: c.num_heads, kv_heads: c.num_kv_heads, q_len: seq, kv_cap: seq, head_dim: c.head_dim }
    }

    fn train_forward(&self, be: &B, batch: &Batch, positions: &[u32], st: &mut TrainState<B>) {
        let c = &self.cfg;
        let (bs, t) = (batch.batch, batch.seq);
        let n = bs * t;
        let (d, f, h, hd, heads) = (c.hidden_size, c.intermediate_size, c.num_heads, c.head_dim, c.qkv_heads());
        let slots = row_slots(t, t, &vec![0; bs]);
        let kv_lens = vec![t; bs];
        let shape = self.attn_shape(bs, t);
        let rope = Rope { cos: &self.rope_cos, sin: &self.rope_sin, positions };
        let at = HeadSlots { cap: t, slots: &slots };
        be.embedding_fwd(&mut st.layers[0].x_in, &self.params.embed, &batch.ids, d);
        for l in 0..c.num_layers {
            let p = &self.params.layers[l];
            let (done, rest) = st.layers.split_at_mut(l + 1);
            let a = &mut done[l];
            let w = a.inputs.as_mut().unwrap_or(&mut st.recomputed);
            be.rmsnorm_fwd(&mut w.ln1, &mut a.rstd1, &a.x_in, &p.attn_norm, d, c.rms_norm_eps);
            be.matmul(&mut st.qkv_tok, &w.ln1, &p.wqkv, MatMul::linear(n, d, heads.width()));
            be.qkv_from_tokens(&mut a.q, &mut a.k, &mut a.v, &st.qkv_tok, p.bqkv.as_ref(), rope, heads, at);
            be.attention_fwd(&mut a.att, Some(&mut a.lse), &a.q, &a.k, &a.v, shape, &kv_lens);
            // The output projections write the next residual value beside the one they add onto (the backward reads both).
            be.matmul_residual(&mut a.x_mid, &a.att, &p.wo, &a.x_in, MatMul::linear(n, h * hd, d));
            let x_out = match rest.first_mut() {
                Some(next) => &mut next.x_in,
                None => &mut st.x_final,
            };
            be.rmsnorm_fwd(&mut w.ln2, &mut a.rstd2, &a.x_mid, &p.mlp_norm, d, c.rms_norm_eps);
            be.matmul(&mut w.gate_up, &w.ln2, &p.w_gate_up, MatMul::linear(n, d, 2 * f));
            be.swiglu_fwd(&mut w.act, &w.gate_up, f);
            be.matmul_residual(x_out, &w.act, &p.w_down, &a.x_mid, MatMul::linear(n, f, d));
        }
        be.rmsnorm_fwd(&mut st.ln_f, &mut st.rstd_f, &st.x_final, &self.params.final_norm, d, c.rms_norm_eps);
    }

    /// The LM head in row chunks: logits → `head_chunk` (loss, and gradient in
    /// place) → d(ln_f) into `st.d_ln` and the head's weight gradient. The full
    /// `[tokens, vocab]` logits never exist at once.
    fn lm_head_backward(
        &self,
        be: &B,
        batch: &Batch,
        st: &mut TrainState<B>,
        grads: &mut Params<B::Buf>,
        write: GradWrite,
        mut head_chunk: impl FnMut(&B, &mut B::Buf, usize, usize) -> f64,
    ) -> f64 {
        let (d, v) = (self.cfg.hidden_size, self.cfg.vocab_size);
        let n = batch.batch * batch.seq;
        let head = self.head();
        let head_grad = match grads.lm_head.as_mut() {
            Some(g) => g,
            None => &mut grads.embed,
        };
        let mut loss = 0.0;
        for r0 in (0..n).step_by(st.head_rows) {
            let rows = st.head_rows.min(n - r0);
            be.copy_range(&mut st.head_x, 0, &st.ln_f, r0 * d, rows * d);
            be.matmul(&mut st.head_logits, &st.head_x, head, MatMul::linear(rows, d, v));
            // A last, shorter chunk uses the buffer's first `rows` rows.
            loss += head_chunk(be, &mut st.head_logits, r0, rows);
            be.matmul(&mut st.head_dx, &st.head_logits, head, MatMul::linear_dx(rows, d, v));
            // The first chunk writes the head's gradient as the pass does; the rest add.
            let chunk_write = if r0 == 0 { write } else { GradWrite::Add };
            be.matmul(head_grad, &st.head_logits, &st.head_x, chunk_write.dw(MatMul::linear_dw(rows, d, v)));
            be.copy_range(&mut st.d_ln, r0 * d, &st.head_dx, 0, rows * d);
        }
        loss
    }

    fn train_backward(
        &self,
        be: &B,
        batch: &Batch,
        positions: &[u32],
        st: &mut TrainState<B>,
        grads: &mut Params<B::Buf>,
        write: GradWrite,
    ) {
        let c = &self.cfg;
        let (bs, t) = (batch.batch, batch.seq);
        let n = bs * t;
        let (d, f, h, hd, heads) = (c.hidden_size, c.intermediate_size, c.num_heads, c.head_dim, c.qkv_heads());
        let shape = self.attn_shape(bs, t);
        let rope = Rope { cos: &self.rope_cos, sin: &self.rope_sin, positions };
        be.fill_zero(&mut st.d_resid);
        be.rmsnorm_bwd(&mut st.d_resid, &mut grads.final_norm, &st.d_ln, &st.x_final, &self.params.final_norm, &st.rstd_f, d);
        for l in (0..c.num_layers).rev() {
            let (p, g, a) = (&self.params.layers[l], &mut grads.layers[l], &mut st.layers[l]);
            let w = match a.inputs.as_ref() {
                Some(kept) => kept,
                None => {
                    self.recompute_matmul_inputs(be, l, a, &mut st.recomputed, n);
                    &st.recomputed
                }
            };
            // MLP: x_out = x_mid + swiglu(ln2·Wgᵀ, ln2·Wuᵀ)·Wdᵀ
            be.matmul(&mut g.w_down, &st.d_resid, &w.act, write.dw(MatMul::linear_dw(n, f, d)));
            be.matmul(&mut st.d_act, &st.d_resid, &p.w_down, MatMul::linear_dx(n, f, d));
            be.swiglu_bwd(&mut st.d_gate_up, &st.d_act, &w.gate_up, f);
            be.matmul(&mut st.d_norm, &st.d_gate_up, &p.w_gate_up, MatMul::linear_dx(n, d, 2 * f));
            be.matmul(&mut g.w_gate_up, &st.d_gate_up, &w.ln2, write.dw(MatMul::linear_dw(n, d, 2 * f)));
            be.rmsnorm_bwd(&mut st.d_resid, &mut g.mlp_norm, &st.d_norm, &a.x_mid, &p.mlp_norm, &a.rstd2, d);
            // Attention: x_mid = x_in + attn(ln1)·Woᵀ
            be.matmul(&mut g.wo, &st.d_resid, &a.att, write.dw(MatMul::linear_dw(n, h * hd, d)));
            be.matmul(&mut st.d_att, &st.d_resid, &p.wo, MatMul::linear_dx(n, h * hd, d));
            be.attention_bwd(&mut st.dqkv_tok, &st.d_att, &a.q, &a.k, &a.v, &a.att, &a.lse, shape, rope);
            if let Some(db) = g.bqkv.as_mut() {
                be.bias_grad(db, &st.dqkv_tok, n);
            }
            be.matmul(&mut st.d_norm, &st.dqkv_tok, &p.wqkv, MatMul::linear_dx(n, d, heads.width()));
            be.matmul(&mut g.wqkv, &st.dqkv_tok, &w.ln1, write.dw(MatMul::linear_dw(n, d, heads.width())));
            be.rmsnorm_bwd(&mut st.d_resid, &mut g.attn_norm, &st.d_norm, &a.x_in, &p.attn_norm, &a.rstd1, d);
        }
        be.embedding_bwd(&mut grads.embed, &st.d_resid, &batch.ids, d);
    }

    /// Layer `l`'s matmul inputs into `w`, as its forward computed them
    /// (the norms rewrite the saved rstd with the same values).
    fn recompute_matmul_inputs(&self, be: &B, l: usize, a: &mut LayerActs<B::Buf>, w: &mut MatmulInputs<B::Buf>, tokens: usize) {
        let (c, p) = (&self.cfg, &self.params.layers[l]);
        be.rmsnorm_fwd(&mut w.ln1, &mut a.rstd1, &a.x_in, &p.attn_norm, c.hidden_size, c.rms_norm_eps);
        be.rmsnorm_fwd(&mut w.ln2, &mut a.rstd2, &a.x_mid, &p.mlp_norm, c.hidden_size, c.rms_norm_eps);
        be.matmul(&mut w.gate_up, &w.ln2, &p.w_gate_up, MatMul::linear(tokens, c.hidden_size, 2 * c.intermediate_size));
        be.swiglu_fwd(&mut w.act, &w.gate_up, c.intermediate_size);
    }
}

#[cfg(test)]
mod tests {
    use super::head_chunk_rows;

    #[test]
    fn head_chunks_are_as_few_and_as_even_as_the_budget_allows() {
        // llama-124m B16×1024 and qwen2-0.5b B8×1024 at 256 Mi logits a chunk.
        assert_eq!(head_chunk_rows(256 << 20, 16384, 50304), 4096);
        // 8192 / 5 rounded up to whole 64-row tiles: four chunks of 1664 and one of 1536.
        assert_eq!(head_chunk_rows(256 << 20, 8192, 151936), 1664);
        // Where whole tiles would pass the budget (1640 rows here), the even split.
        assert_eq!(head_chunk_rows(256 << 20, 8192, 163_680), 1639);
        // Everything in one chunk, and at least a row when a row exceeds the budget.
        assert_eq!(head_chunk_rows(1 << 20, 100, 1000), 100);
        assert_eq!(head_chunk_rows(10, 7, 1000), 1);
    }
}
