//! AdamW (Loshchilov & Hutter): decoupled weight decay, bias-corrected
//! moments, gradients read scaled (clipping folded in).

use crate::backend::AdamWStep;
use rayon::prelude::*;

pub fn adamw(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], hp: AdamWStep) {
    assert!(grad.len() == param.len() && m.len() == param.len() && v.len() == param.len());
    assert!(hp.step >= 1, "AdamW steps count from 1");
    let bc1 = 1.0 - hp.beta1.powi(hp.step as i32);
    let bc2 = 1.0 - hp.beta2.powi(hp.step as i32);
    let step_size = hp.lr / bc1;
    let decay = 1.0 - hp.lr * hp.weight_decay;
    param.par_chunks_mut(4096).zip(grad.par_chunks(4096)).zip(m.par_chunks_mut(4096).zip(v.par_chunks_mut(4096))).for_each(
        |((p, g), (m, v))| {
            for i in 0..p.len() {
                let g = g[i] * hp.grad_scale;
                m[i] = hp.beta1 * m[i] + (1.0 - hp.beta1) * g;
                v[i] = hp.beta2 * v[i] + (1.0 - hp.beta2) * g * g;
                let denom = (v[i] / bc2).sqrt() + hp.eps;
                p[i] = p[i] * decay - step_size * m[i] / denom;
            }
        },
    );
}
