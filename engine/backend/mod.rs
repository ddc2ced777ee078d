//! The `Backend` trait: every op the model and the trainers need, forward and
//! backward, over a device buffer type. The CPU f32 reference lives in [`cpu`].
//!
//! Conventions shared by all ops:
//! - buffers are flat, row-major f32 (the CUDA backend may store bf16 inside);
//! - "tokens" are `rows = batch * seq`, laid out batch-major;
//! - attention's queries and outputs are token-major `[tokens, heads,
//!   head_dim]`, its keys and values head-major `[rows, heads, cap, head_dim]`;
//! - backward ops that produce parameter gradients *accumulate* into them, so
//!   gradient accumulation over micro-batches needs no extra buffers.

use crate::generate::SamplingConfig;
use crate::rl::ppo_loss::{ClipMode, PolicyToken};
use crate::rl::reward::RewardMode;

pub mod cpu;
pub mod cuda;
pub mod kernels;

/// A row-major matrix product `c (+)= op(a) · op(b)` with `op(a)` of shape `[m, k]`
/// and `op(b)` of shape `[k, n]`. `trans_*` means the buffer stores the transpose.
#[derive(Clone, Copy, Debug)]
pub struct MatMul {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub trans_a: bool,
    pub trans_b: bool,
    pub accumulate: bool,
}

impl MatMul {
    /// `y[rows, out] = x[rows, in] · wᵀ` with `w` stored `[out, in]` (HF Linear layout).
    pub fn linear(rows: usize, d_in: usize, d_out: usize) -> MatMul {
        MatMul { m: rows, n: d_out, k: d_in, trans_a: false, trans_b: true, accumulate: false }
    }
    /// `dx[rows, in] = dy[rows, out] · w`.
    pub fn linear_dx(rows: usize, d_in: usize, d_out: usize) -> MatMul {
        MatMul { m: rows, n: d_in, k: d_out, trans_a: false, trans_b: false, accumulate: false }
    }
    /// `dw[out, in] += dyᵀ · x`.
    pub fn linear_dw(rows: usize, d_in: usize, d_out: usize) -> MatMul {
        MatMul { m: d_out, n: d_in, k: rows, trans_a: true, trans_b: false, accumulate: true }
    }
    pub fn accumulating(self) -> MatMul {
        MatMul { accumulate: true, ..self }
    }
}

/// Shapes of one attention call. Queries are `[batch, q_heads, q_len, head_dim]`;
/// keys and values are `[batch, kv_heads, kv_cap, head_dim]`, of which the first
/// `kv_lens[b]` positions are valid. Query `i` of row `b` sits at position
/// `kv_lens[b] - q_len + i` and sees keys up to and including that position.
#[derive(Clone, Copy, Debug)]
pub struct AttnShape {
    pub batch: usize,
    pub q_heads: usize,
    pub kv_heads: usize,
    pub q_len: usize,
    pub kv_cap: usize,
    pub head_dim: usize,
}

impl AttnShape {
    /// Queries per key/value head (GQA group size).
    pub fn group(&self) -> usize {
        self.q_heads / self.kv_heads
    }
    pub fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
    /// FLOPs of a causal forward over `q_len` queries per row, as
    /// FlashAttention counts them: QKᵀ and PV over the visible half of each
    /// row's scores.
    pub fn causal_fwd_flops(&self) -> f64 {
        2.0 * (self.batch * self.q_len * self.q_len * self.q_heads * self.head_dim) as f64
    }
}

/// One sequence of a packed attention call: its queries are tokens
/// `q_start..q_start + q_len` of the packed queries `[tokens, q_heads,
/// head_dim]`, and it attends the first `kv_len` positions of row `kv_row`
/// of the keys and values, its queries sitting at the last `q_len` of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqSpan {
    pub q_start: usize,
    pub q_len: usize,
    pub kv_row: usize,
    pub kv_len: usize,
}

/// The key/value slots (see [`HeadSlots`]) of `starts.len()` rows of `seq`
/// tokens each, row `b` written from position `starts[b]` of its `cap`.
pub fn row_slots(seq: usize, cap: usize, starts: &[usize]) -> Vec<u32> {
    assert!(starts.len() * cap <= u32::MAX as usize, "{} rows of {cap} positions overflow 32-bit slots", starts.len());
    let mut slots = Vec::with_capacity(starts.len() * seq);
    for (b, &s) in starts.iter().enumerate() {
        assert!(s + seq <= cap, "KV cache overflow: start {s} + {seq} > {cap}");
        slots.extend((0..seq).map(|t| (b * cap + s + t) as u32));
    }
    slots
}

/// The RoPE tables (`[max_pos, head_dim / 2]`) and each token's position.
pub struct Rope<'a, Buf> {
    pub cos: &'a Buf,
    pub sin: &'a Buf,
    pub positions: &'a [u32],
}

/// Head counts of a fused q/k/v projection `[tokens, (q + 2·kv) · dim]`:
/// each token's query heads, then its key heads, then its value heads.
#[derive(Clone, Copy, Debug)]
pub struct QkvHeads {
    pub q: usize,
    pub kv: usize,
    pub dim: usize,
}

impl QkvHeads {
    /// Values per token of the fused projection.
    pub fn width(&self) -> usize {
        (self.q + 2 * self.kv) * self.dim
    }
}

/// Where tokens go in a head-major operand `[rows, heads, cap, head_dim]`:
/// token `i` to row `slots[i] / cap`, position `slots[i] % cap` ([`row_slots`]).
#[derive(Clone, Copy, Debug)]
pub struct HeadSlots<'a> {
    pub cap: usize,
    pub slots: &'a [u32],
}

impl<Buf> Clone for Rope<'_, Buf> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<Buf> Copy for Rope<'_, Buf> {}

/// One AdamW update's hyper-parameters; `step` starts at 1. The update
/// reads each gradient times `grad_scale` (gradient clipping's factor, 1
/// for none), so clipping costs no pass of its own over the gradients.
#[derive(Clone, Copy, Debug)]
pub struct AdamWStep {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub step: u64,
    pub grad_scale: f32,
}

/// One tensor of a multi-tensor AdamW step, with its own weight decay.
pub struct AdamWTensor<'a, Buf> {
    pub param: &'a mut Buf,
    pub grad: &'a Buf,
    pub m: &'a mut Buf,
    pub v: &'a mut Buf,
    pub weight_decay: f32,
}

/// Every op the transformer and its trainers run. Token ids and per-token
/// metadata travel as host slices; a device backend uploads them itself.
pub trait Backend: Sync {
    type Buf: Send + Sync;

    fn name(&self) -> &'static str;
    /// Refuses a model whose shape this backend's kernels do not cover
    /// (checked at load, before any weight is read).
    fn supports(&self, _cfg: &crate::model::ModelConfig) -> anyhow::Result<()> {
        Ok(())
    }
    /// Waits for queued device work (a no-op on the CPU); timings call it.
    fn synchronize(&self);
    /// Runs one step of a loop whose every step issues the same work on the
    /// same buffers, only its token ids and lengths changing (the decode
    /// step), so a backend may record the step once and replay it (the CUDA
    /// backend's graphs). `step` may run more than once, so it must set up
    /// its own host state each time; its ops write device buffers only
    /// (nothing is downloaded or allocated inside). The default just runs it.
    fn repeated(&self, step: &mut dyn FnMut() -> anyhow::Result<()>) -> anyhow::Result<()> {
        step()
    }
    /// Logits the fused LM head materializes at once: small enough to stay
    /// near the caches on a CPU, large enough to fill a GPU.
    fn logits_chunk_elems(&self) -> usize;

    // Memory.
    fn zeros(&self, len: usize) -> Self::Buf;
    /// A zeroed buffer whose values, between writes, are read only as matmul
    /// operands (norm and SwiGLU outputs, token-major attention outputs,
    /// logit and SwiGLU gradients, q/k/v gradients without a bias). A device
    /// backend may then keep what its norm, SwiGLU, layout, attention and
    /// loss kernels write there in bf16 alone; reading those values any
    /// other way is a bug it reports. Anything written by a matmul or
    /// `copy_range` stays readable as usual.
    fn zeros_matmul_input(&self, len: usize) -> Self::Buf {
        self.zeros(len)
    }
    /// A zeroed buffer for an attention operand: a KV cache, or the
    /// queries, keys, values and their gradients of a training step. A
    /// device backend may store it in bf16 (half the memory and traffic);
    /// only the ops around attention take it: `qkv_from_tokens` (as a
    /// destination), `attention_fwd` and `attention_bwd`, `copy_range`
    /// between such buffers, `fill_zero`, `download`.
    fn zeros_attention(&self, len: usize) -> Self::Buf {
        self.zeros(len)
    }
    /// A zeroed buffer for a projection a training step keeps or consumes in
    /// place: the q/k/v projections, the MLP's gate and up projections, the
    /// LM head's logits, the matmul inputs a layer keeps for its backward
    /// (norm outputs, attention output, SwiGLU product), and the
    /// gradients only matmuls and the ops below read (of the attention
    /// output, the SwiGLU output, a layer norm's output, the gate/up and
    /// q/k/v projections). A device
    /// backend may store it in bf16, as it stores attention operands (as
    /// PyTorch's autocast keeps these outputs). Only these take it: `matmul`
    /// (as the output, not accumulating, or as an input); as the destination
    /// `rmsnorm_fwd` (`out`), `attention_fwd`
    /// (`out`, with attention operands), `swiglu_fwd`, `swiglu_bwd` and
    /// `attention_bwd` (`dqkv`); as the source `qkv_from_tokens` (into attention
    /// operands), `attention_bwd` (`out` and `dout`), `swiglu_fwd` and
    /// `swiglu_bwd` (`gate_up`, and `dh` when `gate_up` is one too),
    /// `rmsnorm_bwd` (`dout`), `bias_grad` (`dy`); the loss ops (`cross_entropy_inplace`,
    /// `logprob_entropy`, `logit_grad_inplace`, which write the gradient in
    /// its storage); `copy_range` between such buffers, `fill_zero` and
    /// `download`.
    fn zeros_projection(&self, len: usize) -> Self::Buf {
        self.zeros(len)
    }
    fn upload(&self, host: &[f32]) -> Self::Buf;
    fn download(&self, buf: &Self::Buf) -> Vec<f32>;
    fn len(&self, buf: &Self::Buf) -> usize;
    fn fill_zero(&self, buf: &mut Self::Buf);
    /// `dst[dst_off..dst_off+len] = src[src_off..src_off+len]`.
    fn copy_range(&self, dst: &mut Self::Buf, dst_off: usize, src: &Self::Buf, src_off: usize, len: usize);
    /// Σ buf², accumulated in f64.
    fn sum_squares(&self, buf: &Self::Buf) -> f64;

    // Dense algebra.
    fn matmul(&self, c: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, mm: MatMul);
    /// `d = residual + op(a)·op(b)` (`mm` not accumulating): a block's
    /// output projection onto the residual stream it read, writing the next
    /// value of the stream beside it. A device backend does it in one pass.
    fn matmul_residual(&self, d: &mut Self::Buf, a: &Self::Buf, b: &Self::Buf, residual: &Self::Buf, mm: MatMul) {
        assert!(!mm.accumulate, "matmul_residual adds the residual; the product itself must not accumulate");
        self.copy_range(d, 0, residual, 0, self.len(residual));
        self.matmul(d, a, b, mm.accumulating());
    }
    /// `dbias += Σ_r dy[r, :]`.
    fn bias_grad(&self, dbias: &mut Self::Buf, dy: &Self::Buf, rows: usize);

    // Embedding.
    fn embedding_fwd(&self, out: &mut Self::Buf, table: &Self::Buf, ids: &[u32], dim: usize);
    /// `dtable[ids[r]] += dout[r]`.
    fn embedding_bwd(&self, dtable: &mut Self::Buf, dout: &Self::Buf, ids: &[u32], dim: usize);

    // RMSNorm over rows of length `dim`: `out = x · rstd · w`, `rstd` saved per row.
    fn rmsnorm_fwd(&self, out: &mut Self::Buf, rstd: &mut Self::Buf, x: &Self::Buf, w: &Self::Buf, dim: usize, eps: f32);
    /// Accumulates into both `dx` (the residual stream's gradient) and `dw`.
    #[allow(clippy::too_many_arguments)]
    fn rmsnorm_bwd(
        &self,
        dx: &mut Self::Buf,
        dw: &mut Self::Buf,
        dout: &Self::Buf,
        x: &Self::Buf,
        w: &Self::Buf,
        rstd: &Self::Buf,
        dim: usize,
    );

    // Attention takes queries, outputs and their gradients token-major,
    // `[tokens, q_heads, head_dim]` (as the projections around it), with the
    // log-sum-exp `[tokens, q_heads]`, and keys and values head-major, `[rows,
    // kv_heads, cap, head_dim]` (a KV cache's layout). Its entry and the
    // backward's exit each write the fused q/k/v projection's layout (the
    // CPU composes bias, RoPE and the layout moves).
    /// Fused projection `[tokens, (q + 2·kv) · dim]` to attention operands:
    /// adds `bias` (`[(q + 2·kv) · dim]`), rotates queries and keys by
    /// `rope`, and writes queries into `q` `[tokens, q, dim]`, keys and
    /// values head-major into `k` and `v` at `kv_at` (a KV-cache write at
    /// each row's length, or every token of a training batch in place).
    #[allow(clippy::too_many_arguments)]
    fn qkv_from_tokens(
        &self,
        q: &mut Self::Buf,
        k: &mut Self::Buf,
        v: &mut Self::Buf,
        qkv: &Self::Buf,
        bias: Option<&Self::Buf>,
        rope: Rope<'_, Self::Buf>,
        heads: QkvHeads,
        kv_at: HeadSlots<'_>,
    );
    /// Causal GQA attention of `shape.batch` rows of `q_len` queries (`q` and
    /// `out` `[batch · q_len, q_heads, head_dim]`), row `b` attending the
    /// first `kv_lens[b]` keys of its row, its queries the last of them;
    /// writes `out` and, when given, the log-sum-exp `lse[batch · q_len,
    /// q_heads]` that the backward needs.
    #[allow(clippy::too_many_arguments)]
    fn attention_fwd(
        &self,
        out: &mut Self::Buf,
        lse: Option<&mut Self::Buf>,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        shape: AttnShape,
        kv_lens: &[usize],
    );
    /// Causal GQA attention over packed sequences of different lengths (a
    /// prefill without padding): `q` and `out` are `[tokens, q_heads,
    /// head_dim]` with `tokens == shape.q_len`, split into `seqs`; keys and
    /// values are `[shape.batch, kv_heads, kv_cap, head_dim]`, each span
    /// reading its own row. Inference only (no log-sum-exp).
    fn attention_packed_fwd(&self, out: &mut Self::Buf, q: &Self::Buf, k: &Self::Buf, v: &Self::Buf, shape: AttnShape, seqs: &[SeqSpan]);
    /// Training backward (`q_len == kv_cap == kv_lens[b]`, operands in the
    /// forward's layouts), through `qkv_from_tokens` too: overwrites `dqkv`
    /// with the gradient of the fused projection it read, `[batch · q_len,
    /// (q_heads + 2·kv_heads) · head_dim]`, its query and key parts rotated
    /// back by `rope`'s inverse.
    #[allow(clippy::too_many_arguments)]
    fn attention_bwd(
        &self,
        dqkv: &mut Self::Buf,
        dout: &Self::Buf,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        out: &Self::Buf,
        lse: &Self::Buf,
        shape: AttnShape,
        rope: Rope<'_, Self::Buf>,
    );

    /// `h = silu(gate) · up` `[rows, ff]` over the stacked projection
    /// `gate_up` `[rows, 2·ff]` (each row's gate values, then its up values).
    fn swiglu_fwd(&self, h: &mut Self::Buf, gate_up: &Self::Buf, ff: usize);
    /// Overwrites `dgate_up` `[rows, 2·ff]`.
    fn swiglu_bwd(&self, dgate_up: &mut Self::Buf, dh: &Self::Buf, gate_up: &Self::Buf, ff: usize);

    /// Fused softmax cross-entropy over `[rows, vocab]` logits (one row per
    /// target; the buffer may hold more, which stay as they are), in place:
    /// the logits are overwritten by `weights[r] · (softmax - onehot)`. Rows
    /// whose target is [`IGNORE`] get zero gradient. Returns `Σ_r weights[r] · ce_r`.
    fn cross_entropy_inplace(&self, logits: &mut Self::Buf, targets: &[u32], weights: &[f32], vocab: usize) -> f64;

    /// Per row (one per target, as in `cross_entropy_inplace`):
    /// `log softmax(z)[target]` and the entropy of the softmax, where
    /// `z = logits · inv_temp` (a policy sampling at temperature
    /// `1 / inv_temp`), in one pass over the logits (no second softmax is
    /// materialized).
    fn logprob_entropy(&self, logits: &Self::Buf, targets: &[u32], vocab: usize, inv_temp: f32) -> (Vec<f32>, Vec<f32>);
    /// Overwrites logits with `∂L/∂logits` for a loss whose per-row gradient
    /// is `c_logp[r]` with respect to the target's logprob and `c_ent[r]` with
    /// respect to the entropy, both of `z = logits · inv_temp`:
    /// `inv_temp (c_logp (onehot - p) - c_ent p (log p + H))`.
    fn logit_grad_inplace(&self, logits: &mut Self::Buf, targets: &[u32], c_logp: &[f32], c_ent: &[f32], vocab: usize, inv_temp: f32);

    /// Picks one token per row of `[rows, vocab]` logits as
    /// [`crate::generate::sample_row`] defines it, row `r` with the uniform
    /// draw `draws[r]` (`None` skips the row); returns each token and its
    /// logprob. A device backend downloads only those, never the logits.
    fn sample(&self, logits: &Self::Buf, vocab: usize, cfg: &SamplingConfig, draws: &[Option<f32>]) -> Vec<Option<(u32, f32)>>;

    /// One decoupled-weight-decay Adam update of `param` in place.
    fn adamw(&self, param: &mut Self::Buf, grad: &Self::Buf, m: &mut Self::Buf, v: &mut Self::Buf, hp: AdamWStep);

    // Whole-model optimizer ops: a device backend does each in one launch
    // (and the norm with one download) instead of one per tensor.
    /// AdamW over many tensors; each tensor's `weight_decay` replaces `hp`'s.
    fn adamw_many(&self, tensors: Vec<AdamWTensor<'_, Self::Buf>>, hp: AdamWStep) {
        for t in tensors {
            self.adamw(t.param, t.grad, t.m, t.v, AdamWStep { weight_decay: t.weight_decay, ..hp });
        }
    }
    /// Σ x² over many buffers (the squared global gradient norm).
    fn sum_squares_many(&self, bufs: &[&Self::Buf]) -> f64 {
        bufs.iter().map(|b| self.sum_squares(b)).sum()
    }

    // PPO's per-token reductions over packed sequences (engine/rl/ holds the
    // math; a device backend runs its kernels-ptx/rl.cu twins). Host in, host out.
    /// The instance and token reward streams (`rl::reward::assemble` per sequence).
    fn ppo_rewards(&self, r: &PackedRewards<'_>, kl_coef: f32, mode: RewardMode) -> (Vec<f32>, Vec<f32>);
    /// Advantages and returns (`rl::gae::gae` per sequence).
    fn ppo_gae(&self, rewards: &[f32], values: &[f32], starts: &[usize], gamma: f32, lambda: f32) -> (Vec<f32>, Vec<f32>);
    /// `(loss, ∂loss/∂logp, clipped)` per token (`rl::ppo_loss::policy_token`).
    fn ppo_policy_loss(&self, tokens: &[PolicyToken], eps: f32, mode: ClipMode) -> Vec<(f32, f32, bool)>;
    /// `(loss, ∂loss/∂v)` per token (`rl::ppo_loss::value_token`).
    fn ppo_value_loss(&self, v: &[f32], v_old: &[f32], ret: &[f32], eps: f32) -> Vec<(f32, f32)>;
}

/// One PPO batch's per-token reward parts, packed: sequence `s` holds tokens
/// `starts[s]..starts[s + 1]` of `kl`, `secure_bonus` and `penalties`.
pub struct PackedRewards<'a> {
    pub starts: &'a [usize],
    pub kl: &'a [f32],
    pub secure_bonus: &'a [f32],
    pub penalties: &'a [f32],
    /// One instance score per sequence.
    pub instance: &'a [f32],
}

/// Target id that marks a position with no loss.
pub const IGNORE: u32 = u32::MAX;

/// Rows grouped by token id (a counting sort): the rows of token `v` are
/// `order[starts[v]..starts[v + 1]]`, in row order. Both backends' embedding
/// backward use it so each token's rows have one owner (no atomics).
pub fn rows_by_token(ids: &[u32], vocab: usize) -> (Vec<usize>, Vec<usize>) {
    let mut starts = vec![0usize; vocab + 1];
    for &id in ids {
        assert!((id as usize) < vocab, "embedding_bwd: id {id} >= vocab {vocab}");
        starts[id as usize + 1] += 1;
    }
    for i in 0..vocab {
        starts[i + 1] += starts[i];
    }
    let mut fill = starts.clone();
    let mut order = vec![0usize; ids.len()];
    for (r, &id) in ids.iter().enumerate() {
        order[fill[id as usize]] = r;
        fill[id as usize] += 1;
    }
    (starts, order)
}
