//! RMSNorm forward and backward (HF LlamaRMSNorm: `w · x / sqrt(mean(x²) + eps)`).

use rayon::prelude::*;

pub fn rmsnorm_fwd(out: &mut [f32], rstd: &mut [f32], x: &[f32], w: &[f32], dim: usize, eps: f32) {
    assert_eq!(w.len(), dim);
    assert_eq!(out.len(), x.len());
    assert_eq!(rstd.len(), x.len() / dim);
    out.par_chunks_mut(dim).zip(rstd.par_iter_mut()).zip(x.par_chunks(dim)).for_each(|((o, r), x)| {
        let ms = x.iter().map(|v| v * v).sum::<f32>() / dim as f32;
        *r = 1.0 / (ms + eps).sqrt();
        for ((o, &x), &w) in o.iter_mut().zip(x).zip(w) {
            *o = w * (x * *r);
        }
    });
}

/// `dx += ∂L/∂x` and `dw += ∂L/∂w`.
pub fn rmsnorm_bwd(dx: &mut [f32], dw: &mut [f32], dout: &[f32], x: &[f32], w: &[f32], rstd: &[f32], dim: usize) {
    let rows = x.len() / dim;
    assert!(dx.len() == x.len() && dout.len() == x.len() && rstd.len() == rows && dw.len() == dim);
    dx.par_chunks_mut(dim).zip(dout.par_chunks(dim)).zip(x.par_chunks(dim)).zip(rstd.par_iter()).for_each(|(((dx, dy), x), &r)| {
        // d(x·r)/dx = r·I - r³/d · x xᵀ, applied to g = w ⊙ dy.
        let gx: f32 = dy.iter().zip(w).zip(x).map(|((dy, w), x)| dy * w * x).sum();
        let c = r * r * r * gx / dim as f32;
        for (((dx, &dy), &w), &x) in dx.iter_mut().zip(dy).zip(w).zip(x) {
            *dx += r * w * dy - c * x;
        }
    });
    // Fixed row blocks, summed in order: deterministic, unlike a rayon fold.
    const BLOCK: usize = 64;
    let partials: Vec<Vec<f32>> = (0..rows.div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            let mut acc = vec![0f32; dim];
            for row in b * BLOCK..((b + 1) * BLOCK).min(rows) {
                let (dy, x, r) = (&dout[row * dim..][..dim], &x[row * dim..][..dim], rstd[row]);
                acc.iter_mut().zip(dy).zip(x).for_each(|((a, dy), x)| *a += dy * x * r);
            }
            acc
        })
        .collect();
    for p in &partials {
        dw.iter_mut().zip(p).for_each(|(d, p)| *d += p);
    }
}
