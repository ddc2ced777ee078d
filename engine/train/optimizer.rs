//! AdamW over a whole [`Params`] set, plus global gradient-norm clipping
//! (a factor the update reads the gradients with).

use crate::backend::{AdamWStep, AdamWTensor, Backend};
use crate::model::{param_specs, ModelConfig, Params};

#[derive(Clone, Copy, Debug)]
pub struct AdamWConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Applied to matrices only; norms and biases are not decayed.
    pub weight_decay: f32,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 }
    }
}

pub struct AdamW<B: Backend> {
    pub cfg: AdamWConfig,
    pub m: Params<B::Buf>,
    pub v: Params<B::Buf>,
    /// Updates taken so far.
    pub step: u64,
    decays: Vec<bool>,
}

impl<B: Backend> AdamW<B> {
    pub fn new(be: &B, model: &ModelConfig, cfg: AdamWConfig) -> AdamW<B> {
        let zeros = || Params::build(model, |s| be.zeros(s.numel()));
        AdamW { cfg, m: zeros(), v: zeros(), step: 0, decays: param_specs(model).iter().map(|s| s.decays()).collect() }
    }

    /// One update from `grads` times `grad_scale` (see [`clip_scale`]).
    pub fn update(&mut self, be: &B, params: &mut Params<B::Buf>, grads: &Params<B::Buf>, lr: f32, grad_scale: f32) {
        self.step += 1;
        let hp = self.hyper(lr, grad_scale);
        let (ps, gs, ms, vs) = (params.iter_mut(), grads.iter(), self.m.iter_mut(), self.v.iter_mut());
        let tensors = ps
            .into_iter()
            .zip(gs)
            .zip(ms)
            .zip(vs)
            .zip(&self.decays)
            .map(|((((param, grad), m), v), &decays)| AdamWTensor {
                param,
                grad,
                m,
                v,
                weight_decay: if decays { self.cfg.weight_decay } else { 0.0 },
            })
            .collect();
        be.adamw_many(tensors, hp);
    }

    /// This step's hyper-parameters (each tensor brings its own weight decay).
    pub fn hyper(&self, lr: f32, grad_scale: f32) -> AdamWStep {
        let AdamWConfig { beta1, beta2, eps, weight_decay: _ } = self.cfg;
        AdamWStep { lr, beta1, beta2, eps, weight_decay: 0.0, step: self.step, grad_scale }
    }
}

/// The global L2 norm of all gradients.
pub fn grad_norm<B: Backend>(be: &B, grads: &Params<B::Buf>) -> f64 {
    be.sum_squares_many(&grads.iter()).sqrt()
}

/// The factor that brings gradients of global norm `norm` to a norm of at
/// most `max_norm`, as `torch.nn.utils.clip_grad_norm_` scales them (1 when
/// they are within it). AdamW reads the gradients times it, so clipping
/// writes nothing.
pub fn clip_scale(norm: f64, max_norm: f32) -> f32 {
    (max_norm as f64 / (norm + 1e-6)).min(1.0) as f32
}

pub fn zero_grads<B: Backend>(be: &B, grads: &mut Params<B::Buf>) {
    for g in grads.iter_mut() {
        be.fill_zero(g);
    }
}
