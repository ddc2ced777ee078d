//! The critic: its own copy of the model with a linear value head on the
//! final hidden states, trained with the clipped value loss.

use crate::backend::{Backend, MatMul};
use crate::model::{Batch, Params, TrainState, Transformer};
use crate::train::optimizer::{clip_scale, zero_grads, AdamW, AdamWConfig};
use anyhow::{Context, Result};
use std::path::Path;

pub struct Critic<B: Backend> {
    pub model: Transformer<B>,
    /// Value head `[hidden]` and its bias `[1]`.
    pub w: B::Buf,
    pub b: B::Buf,
    pub opt: AdamW<B>,
    head_m: [B::Buf; 2],
    head_v: [B::Buf; 2],
    grads: Params<B::Buf>,
    state: Option<TrainState<B>>,
}

impl<B: Backend> Critic<B> {
    pub fn new(be: &B, model: Transformer<B>) -> Critic<B> {
        let d = model.cfg.hidden_size;
        let grads = Params::build(&model.cfg, |s| be.zeros(s.numel()));
        let opt = AdamW::new(be, &model.cfg, AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() });
        Critic {
            w: be.zeros(d),
            b: be.zeros(1),
            head_m: [be.zeros(d), be.zeros(1)],
            head_v: [be.zeros(d), be.zeros(1)],
            opt,
            grads,
            state: None,
            model,
        }
    }

    fn state(&mut self, be: &B, batch: &Batch) -> TrainState<B> {
        match self.state.take() {
            Some(s) if s.shape() == (batch.batch, batch.seq) => s,
            _ => TrainState::new(be, &self.model.cfg, batch.batch, batch.seq),
        }
    }

    fn head(&self, be: &B, st: &TrainState<B>, n: usize) -> Vec<f32> {
        let d = self.model.cfg.hidden_size;
        let mut v = be.zeros(n);
        be.matmul(&mut v, &st.ln_f, &self.w, MatMul { m: n, n: 1, k: d, trans_a: false, trans_b: false, accumulate: false });
        let bias = be.download(&self.b)[0];
        be.download(&v).into_iter().map(|x| x + bias).collect()
    }

    /// The head's four tensors (and the names they are saved under).
    fn head_tensors(&mut self) -> [(&'static str, &mut B::Buf); 6] {
        let [mw, mb] = &mut self.head_m;
        let [vw, vb] = &mut self.head_v;
        [("w", &mut self.w), ("b", &mut self.b), ("m.w", mw), ("m.b", mb), ("v.w", vw), ("v.b", vb)]
    }

    /// Saves the value head and its Adam moments (safetensors).
    pub fn save_head(&mut self, be: &B, path: &Path) -> Result<()> {
        let host: Vec<(&str, Vec<f32>)> = self.head_tensors().into_iter().map(|(n, b)| (n, be.download(b))).collect();
        let views = host
            .iter()
            .map(|(n, v)| {
                Ok((n.to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![v.len()], bytemuck::cast_slice(v))?))
            })
            .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
        std::fs::write(path, safetensors::serialize(views, None)?).with_context(|| format!("writing {}", path.display()))
    }

    pub fn load_head(&mut self, be: &B, path: &Path) -> Result<()> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
        for (name, buf) in self.head_tensors() {
            let t = st.tensor(name).map_err(|_| anyhow::anyhow!("{}: missing tensor {name}", path.display()))?;
            anyhow::ensure!(
                t.dtype() == safetensors::Dtype::F32 && t.shape() == [be.len(buf)],
                "{}: tensor {name} has the wrong shape",
                path.display()
            );
            *buf = be.upload(&crate::tensor::bytes_to_f32(t.data(), crate::tensor::DType::F32));
        }
        Ok(())
    }

    /// The value of every row (position) of the batch.
    pub fn values(&mut self, be: &B, batch: &Batch) -> Result<Vec<f32>> {
        // A forward only: a state that keeps nothing per layer for a backward.
        let mut st = TrainState::recomputing(be, &self.model.cfg, batch.batch, batch.seq);
        self.model.trunk_forward(be, batch, &mut st)?;
        Ok(self.head(be, &st, batch.batch * batch.seq))
    }

    /// One update: `grad(values)` gives `∂L/∂value` per row and the loss.
    pub fn train_step(
        &mut self,
        be: &B,
        batch: &Batch,
        lr: f32,
        max_grad_norm: f32,
        grad: impl FnOnce(&[f32]) -> (Vec<f32>, f64),
    ) -> Result<f64> {
        let (n, d) = (batch.batch * batch.seq, self.model.cfg.hidden_size);
        let mut st = self.state(be, batch);
        zero_grads(be, &mut self.grads);
        let positions = self.model.trunk_forward(be, batch, &mut st)?;
        let values = self.head(be, &st, n);
        let (dv, loss) = grad(&values);
        let dv_buf = be.upload(&dv);
        be.matmul(&mut st.d_ln, &dv_buf, &self.w, MatMul { m: n, n: d, k: 1, trans_a: false, trans_b: false, accumulate: false });
        let mut gw = be.zeros(d);
        be.matmul(&mut gw, &st.ln_f, &dv_buf, MatMul { m: d, n: 1, k: n, trans_a: true, trans_b: false, accumulate: false });
        let gb = be.upload(&[dv.iter().sum::<f32>()]);
        self.model.trunk_backward(be, batch, &positions, &mut st, &mut self.grads);
        self.state = Some(st);
        // Clip the trunk and the head together.
        let norm = be.sum_squares_many(&self.grads.iter().into_iter().chain([&gw, &gb]).collect::<Vec<_>>()).sqrt();
        if !(loss.is_finite() && norm.is_finite()) {
            return Ok(f64::NAN);
        }
        let scale = clip_scale(norm, max_grad_norm);
        self.opt.update(be, &mut self.model.params, &self.grads, lr, scale);
        // The head steps with the trunk's optimizer settings (no weight decay).
        let hp = self.opt.hyper(lr, scale);
        let [mw, mb] = &mut self.head_m;
        let [vw, vb] = &mut self.head_v;
        be.adamw(&mut self.w, &gw, mw, vw, hp);
        be.adamw(&mut self.b, &gb, mb, vb, hp);
        Ok(loss)
    }
}
