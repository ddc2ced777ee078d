//! The CPU f32 reference backend: plain, readable loops for the light ops,
//! the `gemm` crate for matrix products, and rayon across the two cores.

mod adamw;
mod attention;
mod elementwise;
mod gemm;
mod loss;
mod norm;
mod ppo;
mod qkv;
mod rope;
mod scratch;

pub use rope::rope_tables;

use super::{AdamWStep, AttnShape, Backend, HeadSlots, MatMul, PackedRewards, QkvHeads, Rope, SeqSpan};
use crate::generate::{sample_row, SamplingConfig};
use crate::rl::ppo_loss::{ClipMode, PolicyToken};
use crate::rl::reward::RewardMode;
use rayon::prelude::*;

/// The CPU backend. Buffers are plain `Vec<f32>`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu;

impl Backend for Cpu {
    type Buf = Vec<f32>;

    fn name(&self) -> &'static str {
        "cpu"
    }
    fn synchronize(&self) {}
    fn logits_chunk_elems(&self) -> usize {
        8 << 20 // 32 MiB
    }
    fn zeros(&self, len: usize) -> Vec<f32> {
        vec![0.0; len]
    }
    fn upload(&self, host: &[f32]) -> Vec<f32> {
        host.to_vec()
    }
    fn download(&self, buf: &Vec<f32>) -> Vec<f32> {
        buf.clone()
    }
    fn len(&self, buf: &Vec<f32>) -> usize {
        buf.len()
    }
    fn fill_zero(&self, buf: &mut Vec<f32>) {
        buf.fill(0.0);
    }
    fn copy_range(&self, dst: &mut Vec<f32>, dst_off: usize, src: &Vec<f32>, src_off: usize, len: usize) {
        dst[dst_off..dst_off + len].copy_from_slice(&src[src_off..src_off + len]);
    }
    fn sum_squares(&self, buf: &Vec<f32>) -> f64 {
        elementwise::sum_squares(buf)
    }
    fn matmul(&self, c: &mut Vec<f32>, a: &Vec<f32>, b: &Vec<f32>, mm: MatMul) {
        gemm::matmul(c, a, b, mm)
    }
    fn bias_grad(&self, dbias: &mut Vec<f32>, dy: &Vec<f32>, rows: usize) {
        elementwise::bias_grad(dbias, dy, rows)
    }
    fn embedding_fwd(&self, out: &mut Vec<f32>, table: &Vec<f32>, ids: &[u32], dim: usize) {
        elementwise::embedding_fwd(out, table, ids, dim)
    }
    fn embedding_bwd(&self, dtable: &mut Vec<f32>, dout: &Vec<f32>, ids: &[u32], dim: usize) {
        elementwise::embedding_bwd(dtable, dout, ids, dim)
    }
    fn rmsnorm_fwd(&self, out: &mut Vec<f32>, rstd: &mut Vec<f32>, x: &Vec<f32>, w: &Vec<f32>, dim: usize, eps: f32) {
        norm::rmsnorm_fwd(out, rstd, x, w, dim, eps)
    }
    fn rmsnorm_bwd(&self, dx: &mut Vec<f32>, dw: &mut Vec<f32>, dout: &Vec<f32>, x: &Vec<f32>, w: &Vec<f32>, rstd: &Vec<f32>, dim: usize) {
        norm::rmsnorm_bwd(dx, dw, dout, x, w, rstd, dim)
    }
    fn qkv_from_tokens(
        &self,
        q: &mut Vec<f32>,
        k: &mut Vec<f32>,
        v: &mut Vec<f32>,
        qkv: &Vec<f32>,
        bias: Option<&Vec<f32>>,
        rope: Rope<'_, Vec<f32>>,
        heads: QkvHeads,
        kv_at: HeadSlots<'_>,
    ) {
        let tables = (&rope.cos[..], &rope.sin[..], rope.positions);
        qkv::qkv_from_tokens([q, k, v], qkv, bias.map(|b| &b[..]), tables, heads, kv_at)
    }
    fn attention_fwd(
        &self,
        out: &mut Vec<f32>,
        lse: Option<&mut Vec<f32>>,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        shape: AttnShape,
        kv_lens: &[usize],
    ) {
        attention::attention_fwd(out, lse.map(|l| &mut l[..]), q, k, v, shape, kv_lens)
    }
    fn attention_packed_fwd(&self, out: &mut Vec<f32>, q: &Vec<f32>, k: &Vec<f32>, v: &Vec<f32>, shape: AttnShape, seqs: &[SeqSpan]) {
        attention::attention_packed_fwd(out, q, k, v, shape, seqs)
    }
    fn attention_bwd(
        &self,
        dqkv: &mut Vec<f32>,
        dout: &Vec<f32>,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        out: &Vec<f32>,
        lse: &Vec<f32>,
        shape: AttnShape,
        rope: Rope<'_, Vec<f32>>,
    ) {
        // dq, dk and dv in this thread's reused scratch (a step's worth of fresh pages costs more than the moves).
        scratch::with_scratch(q.len() + 2 * k.len(), |buf| {
            let (dq, dkv) = buf.split_at_mut(q.len());
            let (dk, dv) = dkv.split_at_mut(k.len());
            attention::attention_bwd(dq, dk, dv, dout, q, k, v, out, lse, shape);
            let heads = QkvHeads { q: shape.q_heads, kv: shape.kv_heads, dim: shape.head_dim };
            let tables = (&rope.cos[..], &rope.sin[..], rope.positions);
            qkv::tokens_from_qkv(dqkv, [&*dq, &*dk, &*dv], tables, (shape.batch, shape.q_len), heads)
        })
    }
    fn swiglu_fwd(&self, h: &mut Vec<f32>, gate_up: &Vec<f32>, ff: usize) {
        elementwise::swiglu_fwd(h, gate_up, ff)
    }
    fn swiglu_bwd(&self, dgate_up: &mut Vec<f32>, dh: &Vec<f32>, gate_up: &Vec<f32>, ff: usize) {
        elementwise::swiglu_bwd(dgate_up, dh, gate_up, ff)
    }
    fn cross_entropy_inplace(&self, logits: &mut Vec<f32>, targets: &[u32], weights: &[f32], vocab: usize) -> f64 {
        loss::cross_entropy_inplace(logits, targets, weights, vocab)
    }
    fn logprob_entropy(&self, logits: &Vec<f32>, targets: &[u32], vocab: usize, inv_temp: f32) -> (Vec<f32>, Vec<f32>) {
        loss::logprob_entropy(logits, targets, vocab, inv_temp)
    }
    fn logit_grad_inplace(&self, logits: &mut Vec<f32>, targets: &[u32], c_logp: &[f32], c_ent: &[f32], vocab: usize, inv_temp: f32) {
        loss::logit_grad_inplace(logits, targets, c_logp, c_ent, vocab, inv_temp)
    }
    fn sample(&self, logits: &Vec<f32>, vocab: usize, cfg: &SamplingConfig, draws: &[Option<f32>]) -> Vec<Option<(u32, f32)>> {
        draws.par_iter().enumerate().map(|(r, u)| u.map(|u| sample_row(&logits[r * vocab..(r + 1) * vocab], cfg, u))).collect()
    }
    fn adamw(&self, param: &mut Vec<f32>, grad: &Vec<f32>, m: &mut Vec<f32>, v: &mut Vec<f32>, hp: AdamWStep) {
        adamw::adamw(param, grad, m, v, hp)
    }
    fn ppo_rewards(&self, r: &PackedRewards<'_>, kl_coef: f32, mode: RewardMode) -> (Vec<f32>, Vec<f32>) {
        ppo::rewards(r, kl_coef, mode)
    }
    fn ppo_gae(&self, rewards: &[f32], values: &[f32], starts: &[usize], gamma: f32, lambda: f32) -> (Vec<f32>, Vec<f32>) {
        ppo::gae_packed(rewards, values, starts, gamma, lambda)
    }
    fn ppo_policy_loss(&self, tokens: &[PolicyToken], eps: f32, mode: ClipMode) -> Vec<(f32, f32, bool)> {
        ppo::policy_loss(tokens, eps, mode)
    }
    fn ppo_value_loss(&self, v: &[f32], v_old: &[f32], ret: &[f32], eps: f32) -> Vec<(f32, f32)> {
        ppo::value_loss(v, v_old, ret, eps)
    }
}
