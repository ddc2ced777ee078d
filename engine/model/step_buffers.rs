//! The buffers an inference forward over `n` tokens works in. A decode loop
//! keeps one set for all its steps, so every step runs on the same buffers
//! (what `Backend::repeated` needs to replay a step); a prefill makes its own.

use super::config::ModelConfig;
use crate::backend::Backend;

pub struct StepBuffers<B: Backend> {
    /// Tokens the buffers are sized for.
    pub(crate) tokens: usize,
    pub(crate) x: B::Buf,
    pub(crate) ln: B::Buf,
    pub(crate) rstd: B::Buf,
    /// The fused q/k/v projection.
    pub(crate) qkv_tok: B::Buf,
    pub(crate) q: B::Buf,
    /// The attention output (the output projection's input).
    pub(crate) att: B::Buf,
    /// The stacked gate and up projections.
    pub(crate) gate_up: B::Buf,
    pub(crate) act: B::Buf,
    /// The final-norm hidden states `[n, hidden]`, the forward's output.
    pub hidden: B::Buf,
}

impl<B: Backend> StepBuffers<B> {
    pub fn new(be: &B, cfg: &ModelConfig, n: usize) -> StepBuffers<B> {
        let (d, q_dim, kv_dim, ff) =
            (cfg.hidden_size, cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim, cfg.intermediate_size);
        // Buffers only matmuls read between writes (see Backend::zeros_matmul_input);
        // the gate/up projection, which only SwiGLU reads, stored as training stores
        // it (Backend::zeros_projection: bf16 in bf16 math, half the traffic of the
        // widest activation).
        StepBuffers {
            tokens: n,
            x: be.zeros(n * d),
            ln: be.zeros_matmul_input(n * d),
            rstd: be.zeros(n),
            qkv_tok: be.zeros(n * (q_dim + 2 * kv_dim)),
            q: be.zeros(n * q_dim),
            att: be.zeros_matmul_input(n * q_dim),
            gate_up: be.zeros_projection(n * 2 * ff),
            act: be.zeros_matmul_input(n * ff),
            // The final hidden states are copied and scored, not only multiplied.
            hidden: be.zeros(n * d),
        }
    }
}
