//! One optimizer step: gradients written by the first micro-batch and added by the rest, clip, update.

use super::optimizer::{clip_scale, grad_norm, AdamW, AdamWConfig};
use super::schedule::LrSchedule;
use crate::backend::Backend;
use crate::model::{Batch, GradWrite, Params, TrainState, Transformer};
use crate::trace;
use anyhow::{ensure, Result};
use std::time::Instant;

#[derive(Clone, Copy, Debug)]
pub struct StepStats {
    pub step: u64,
    pub loss: f64,
    pub grad_norm: f64,
    pub lr: f32,
    pub tokens: usize,
    pub secs: f64,
    /// True when the loss or gradients were NaN/inf and the update was skipped.
    pub skipped: bool,
}

pub struct Trainer<B: Backend> {
    pub model: Transformer<B>,
    pub grads: Params<B::Buf>,
    pub opt: AdamW<B>,
    pub schedule: LrSchedule,
    pub max_grad_norm: f32,
    state: TrainState<B>,
}

/// What a trainer is built with besides the model.
#[derive(Clone, Copy, Debug)]
pub struct TrainerConfig {
    pub batch: usize,
    pub seq: usize,
    pub opt: AdamWConfig,
    pub schedule: LrSchedule,
    pub max_grad_norm: f32,
    /// Recompute each layer's matmul inputs in the backward instead of
    /// keeping them (less memory; two more matmuls per layer, and more traffic).
    pub recompute: bool,
}

impl<B: Backend> Trainer<B> {
    pub fn new(be: &B, model: Transformer<B>, c: TrainerConfig) -> Trainer<B> {
        let TrainerConfig { batch, seq, opt, schedule, max_grad_norm, recompute } = c;
        let grads = Params::build(&model.cfg, |s| be.zeros(s.numel()));
        let state =
            if recompute { TrainState::recomputing(be, &model.cfg, batch, seq) } else { TrainState::new(be, &model.cfg, batch, seq) };
        let opt = AdamW::new(be, &model.cfg, opt);
        Trainer { model, grads, opt, schedule, max_grad_norm, state }
    }

    /// Accumulates gradients over `micro` (whose weights share one normalizer),
    /// then clips and applies one AdamW update. A non-finite loss or gradient
    /// skips the update (the step is reported with `skipped`), so one bad batch
    /// cannot poison the weights.
    pub fn step(&mut self, be: &B, micro: &[Batch]) -> Result<StepStats> {
        ensure!(!micro.is_empty(), "a training step needs at least one micro-batch");
        let t0 = Instant::now();
        let mut loss = 0.0;
        for (i, b) in micro.iter().enumerate() {
            // The first micro-batch writes the gradients (no zeroing pass), the rest add.
            let write = if i == 0 { GradWrite::Overwrite } else { GradWrite::Add };
            loss += self.model.forward_backward(be, b, &mut self.state, &mut self.grads, write)?;
        }
        let optimizer = trace::range("optimizer");
        let grad_norm = grad_norm(be, &self.grads);
        let lr = self.schedule.lr_at(self.opt.step);
        let skipped = !(loss.is_finite() && grad_norm.is_finite());
        if !skipped {
            self.opt.update(be, &mut self.model.params, &self.grads, lr, clip_scale(grad_norm, self.max_grad_norm));
        }
        drop(optimizer);
        // Device backends queue work: the step's time includes finishing it.
        be.synchronize();
        Ok(StepStats {
            skipped,
            step: self.opt.step,
            loss,
            grad_norm,
            lr,
            tokens: micro.iter().map(|b| b.ids.len()).sum(),
            secs: t0.elapsed().as_secs_f64(),
        })
    }
}
