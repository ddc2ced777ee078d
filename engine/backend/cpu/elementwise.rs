//! Element-wise and row-wise ops: sum of squares, bias, embedding, SwiGLU, layout moves.

use crate::backend::rows_by_token;
use rayon::prelude::*;

/// Chunk length that keeps rayon's per-task overhead small for cheap element ops.
const CHUNK: usize = 1 << 14;

/// Sums fixed-size chunks in parallel, then the partials in order: the result
/// is bit-identical from run to run (rayon's own `sum` is not), which exact
/// resume depends on.
pub fn sum_squares(buf: &[f32]) -> f64 {
    let partials: Vec<f64> = buf.par_chunks(CHUNK).map(|c| c.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>()).collect();
    partials.iter().sum()
}

pub fn add_bias(y: &mut [f32], bias: &[f32], rows: usize) {
    let cols = bias.len();
    assert_eq!(y.len(), rows * cols);
    y.par_chunks_mut(cols).for_each(|row| row.iter_mut().zip(bias).for_each(|(y, b)| *y += b));
}

pub fn bias_grad(dbias: &mut [f32], dy: &[f32], rows: usize) {
    let cols = dbias.len();
    assert_eq!(dy.len(), rows * cols);
    // Column sums: each task owns a stripe of columns, so no reduction races.
    let stripe = cols.div_ceil(rayon::current_num_threads()).max(64);
    dbias.par_chunks_mut(stripe).enumerate().for_each(|(s, db)| {
        let (c0, w) = (s * stripe, db.len());
        for row in dy.chunks_exact(cols) {
            for (d, v) in db.iter_mut().zip(&row[c0..c0 + w]) {
                *d += v;
            }
        }
    });
}

pub fn embedding_fwd(out: &mut [f32], table: &[f32], ids: &[u32], dim: usize) {
    assert_eq!(out.len(), ids.len() * dim);
    out.par_chunks_mut(dim).zip(ids.par_iter()).for_each(|(row, &id)| {
        let id = id as usize;
        row.copy_from_slice(&table[id * dim..(id + 1) * dim]);
    });
}

pub fn embedding_bwd(dtable: &mut [f32], dout: &[f32], ids: &[u32], dim: usize) {
    assert_eq!(dout.len(), ids.len() * dim);
    // One task per table row: a hot token's rows are summed by a single owner,
    // with no atomics or races.
    let (starts, order) = rows_by_token(ids, dtable.len() / dim);
    dtable.par_chunks_mut(dim).enumerate().for_each(|(id, trow)| {
        for &r in &order[starts[id]..starts[id + 1]] {
            trow.iter_mut().zip(&dout[r * dim..(r + 1) * dim]).for_each(|(t, d)| *t += d);
        }
    });
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `h [rows, ff] = silu(gate) · up` from `gate_up [rows, 2·ff]` (gate first in each row).
pub fn swiglu_fwd(h: &mut [f32], gate_up: &[f32], ff: usize) {
    assert_eq!(gate_up.len(), 2 * h.len(), "gate_up holds two values per output");
    h.par_chunks_mut(ff).zip(gate_up.par_chunks(2 * ff)).for_each(|(h, gu)| {
        let (g, u) = gu.split_at(ff);
        for ((h, &g), &u) in h.iter_mut().zip(g).zip(u) {
            *h = g * sigmoid(g) * u;
        }
    });
}

pub fn swiglu_bwd(dgate_up: &mut [f32], dh: &[f32], gate_up: &[f32], ff: usize) {
    assert_eq!(gate_up.len(), 2 * dh.len(), "gate_up holds two values per output");
    assert_eq!(dgate_up.len(), gate_up.len());
    dgate_up.par_chunks_mut(2 * ff).zip(dh.par_chunks(ff).zip(gate_up.par_chunks(2 * ff))).for_each(|(dgu, (dh, gu))| {
        let (dg, du) = dgu.split_at_mut(ff);
        let (g, u) = gu.split_at(ff);
        for i in 0..ff {
            let s = sigmoid(g[i]);
            du[i] = dh[i] * (g[i] * s);
            dg[i] = dh[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
        }
    });
}

/// Token-major `[tokens, heads, hd]` into head-major `[rows, heads, cap, hd]`:
/// token `i` to row `slots[i] / cap`, position `slots[i] % cap`.
pub fn to_head_major(dst: &mut [f32], src: &[f32], heads: usize, hd: usize, cap: usize, slots: &[u32]) {
    assert_eq!(src.len(), slots.len() * heads * hd);
    assert!(
        dst.len().is_multiple_of(heads * cap * hd),
        "head-major buffer of {} values is not whole rows of {heads}×{cap}×{hd}",
        dst.len()
    );
    let rows = dst.len() / (heads * cap * hd);
    // Each row's (token, position) pairs, so the rows' planes fill in parallel.
    let mut by_row = vec![Vec::new(); rows];
    for (i, &slot) in slots.iter().enumerate() {
        let (b, pos) = (slot as usize / cap, slot as usize % cap);
        assert!(b < rows, "slot {slot} is past the {rows} rows of {cap} positions");
        by_row[b].push((i, pos));
    }
    dst.par_chunks_mut(cap * hd).enumerate().for_each(|(bh, plane)| {
        for &(i, pos) in &by_row[bh / heads] {
            let s = (i * heads + bh % heads) * hd;
            plane[pos * hd..(pos + 1) * hd].copy_from_slice(&src[s..s + hd]);
        }
    });
}

/// `[batch, a, b, inner]` to `[batch, b, a, inner]`: between token-major
/// `[batch, seq, heads, hd]` and head-major `[batch, heads, seq, hd]`, either way.
pub fn swap_middle(src: &[f32], batch: usize, a: usize, b: usize, inner: usize) -> Vec<f32> {
    assert_eq!(src.len(), batch * a * b * inner);
    let mut dst = vec![0.0; src.len()];
    dst.par_chunks_mut(a * inner).enumerate().for_each(|(nj, row)| {
        let (n, j) = (nj / b, nj % b);
        for i in 0..a {
            let s = ((n * a + i) * b + j) * inner;
            row[i * inner..(i + 1) * inner].copy_from_slice(&src[s..s + inner]);
        }
    });
    dst
}
