//! Rotary position embedding in the HF `rotate_half` convention, and its tables.

use rayon::prelude::*;

/// `cos` and `sin` tables `[max_pos, head_dim / 2]`, computed in f32 the way
/// HF does (f32 inverse frequencies, f32 angle products), so long greedy runs
/// agree with `transformers` bit for bit on the angles.
pub fn rope_tables(max_pos: usize, head_dim: usize, theta: f32) -> (Vec<f32>, Vec<f32>) {
    let half = head_dim / 2;
    let inv_freq: Vec<f32> = (0..half).map(|i| 1.0 / theta.powf((2 * i) as f32 / head_dim as f32)).collect();
    let mut cos = Vec::with_capacity(max_pos * half);
    let mut sin = Vec::with_capacity(max_pos * half);
    for p in 0..max_pos {
        for &f in &inv_freq {
            let a = p as f32 * f;
            cos.push(a.cos());
            sin.push(a.sin());
        }
    }
    (cos, sin)
}

/// Rotates each head of each token by its position; `sign = -1` applies the
/// inverse rotation, which is the backward pass (rotations are orthogonal).
fn rotate(x: &mut [f32], cos: &[f32], sin: &[f32], positions: &[u32], heads: usize, head_dim: usize, sign: f32) {
    let half = head_dim / 2;
    assert_eq!(x.len(), positions.len() * heads * head_dim);
    x.par_chunks_mut(heads * head_dim).zip(positions.par_iter()).for_each(|(tok, &p)| {
        let base = p as usize * half;
        assert!(base + half <= cos.len(), "position {p} beyond the RoPE table");
        let (c, s) = (&cos[base..base + half], &sin[base..base + half]);
        for head in tok.chunks_exact_mut(head_dim) {
            let (lo, hi) = head.split_at_mut(half);
            for i in 0..half {
                let (a, b) = (lo[i], hi[i]);
                let si = sign * s[i];
                lo[i] = a * c[i] - b * si;
                hi[i] = b * c[i] + a * si;
            }
        }
    });
}

pub fn rope_fwd(x: &mut [f32], cos: &[f32], sin: &[f32], positions: &[u32], heads: usize, head_dim: usize) {
    rotate(x, cos, sin, positions, heads, head_dim, 1.0);
}

pub fn rope_bwd(dx: &mut [f32], cos: &[f32], sin: &[f32], positions: &[u32], heads: usize, head_dim: usize) {
    rotate(dx, cos, sin, positions, heads, head_dim, -1.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backward_undoes_the_rotation_which_keeps_the_norm() {
        // A rotation: its backward is its transpose, so forward then backward is the identity.
        let (cos, sin) = rope_tables(16, 8, 10_000.0);
        let pos = [0u32, 5, 15];
        let x: Vec<f32> = (0..3 * 2 * 8).map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0).collect();
        let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>();
        let mut y = x.clone();
        rope_fwd(&mut y, &cos, &sin, &pos, 2, 8);
        assert!((norm(&y) - norm(&x)).abs() < 1e-4, "rotation keeps the norm");
        assert!(x.iter().zip(&y).any(|(a, b)| (a - b).abs() > 1e-3), "positions 5 and 15 rotate");
        rope_bwd(&mut y, &cos, &sin, &pos, 2, 8);
        assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 1e-5));
    }
}
