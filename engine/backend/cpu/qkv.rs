//! Attention's entry and exit around the fused q/k/v projection
//! `[tokens, (q + 2·kv) · dim]`, composed from the plain ops: each part's
//! columns are copied out, biased and rotated, keys and values moved
//! head-major (and back).

use super::elementwise::{add_bias, swap_middle, to_head_major};
use super::rope::{rope_bwd, rope_fwd};
use crate::backend::{HeadSlots, QkvHeads};

/// One part of the fused projection: where its columns start, its heads,
/// whether RoPE rotates it (queries and keys, not values), and whether
/// attention takes it head-major (keys and values, not queries).
struct Part {
    start: usize,
    heads: usize,
    rotated: bool,
    head_major: bool,
}

fn parts(heads: QkvHeads) -> [Part; 3] {
    let (q, kv) = (heads.q * heads.dim, heads.kv * heads.dim);
    [
        Part { start: 0, heads: heads.q, rotated: true, head_major: false },
        Part { start: q, heads: heads.kv, rotated: true, head_major: true },
        Part { start: q + kv, heads: heads.kv, rotated: false, head_major: true },
    ]
}

#[allow(clippy::too_many_arguments)]
pub fn qkv_from_tokens(
    [q, k, v]: [&mut [f32]; 3],
    qkv: &[f32],
    bias: Option<&[f32]>,
    (cos, sin, positions): (&[f32], &[f32], &[u32]),
    heads: QkvHeads,
    kv_at: HeadSlots<'_>,
) {
    let width = heads.width();
    assert_eq!(qkv.len(), positions.len() * width, "fused projection of {} values for {} tokens", qkv.len(), positions.len());
    for (dst, part) in [q, k, v].into_iter().zip(parts(heads)) {
        let cols = part.start..part.start + part.heads * heads.dim;
        let mut x: Vec<f32> = qkv.chunks_exact(width).flat_map(|row| &row[cols.clone()]).copied().collect();
        if let Some(b) = bias {
            add_bias(&mut x, &b[cols], positions.len());
        }
        if part.rotated {
            rope_fwd(&mut x, cos, sin, positions, part.heads, heads.dim);
        }
        if part.head_major {
            to_head_major(dst, &x, part.heads, heads.dim, kv_at.cap, kv_at.slots);
        } else {
            assert_eq!(dst.len(), x.len(), "queries [tokens, heads, dim] hold {} values", dst.len());
            dst.copy_from_slice(&x);
        }
    }
}

pub fn tokens_from_qkv(
    dqkv: &mut [f32],
    [dq, dk, dv]: [&[f32]; 3],
    (cos, sin, positions): (&[f32], &[f32], &[u32]),
    (batch, seq): (usize, usize),
    heads: QkvHeads,
) {
    let width = heads.width();
    assert_eq!(dqkv.len(), batch * seq * width);
    for (src, part) in [dq, dk, dv].into_iter().zip(parts(heads)) {
        let cols = part.heads * heads.dim;
        let mut x = if part.head_major { swap_middle(src, batch, part.heads, seq, heads.dim) } else { src.to_vec() };
        if part.rotated {
            rope_bwd(&mut x, cos, sin, positions, part.heads, heads.dim);
        }
        for (row, g) in dqkv.chunks_exact_mut(width).zip(x.chunks_exact(cols)) {
            row[part.start..part.start + cols].copy_from_slice(g);
        }
    }
}
