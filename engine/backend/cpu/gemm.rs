//! Strided f32 matrix products through the `gemm` crate (AVX2/AVX-512 kernels).

use crate::backend::MatMul;
use gemm::Parallelism;

/// A row-major matrix view: element `(i, j)` is at `data[i * row_stride + j * col_stride]`.
#[derive(Clone, Copy)]
pub struct View {
    pub row_stride: usize,
    pub col_stride: usize,
}

impl View {
    pub fn row_major(cols: usize) -> View {
        View { row_stride: cols, col_stride: 1 }
    }
    /// A `[rows, cols]` view of a buffer that stores `[cols, rows]`.
    pub fn transposed(rows: usize) -> View {
        View { row_stride: 1, col_stride: rows }
    }
}

/// `c = (accumulate ? c : 0) + a · b` over strided views, with `a: [m, k]`, `b: [k, n]`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_strided(
    m: usize,
    n: usize,
    k: usize,
    c: &mut [f32],
    cv: View,
    a: &[f32],
    av: View,
    b: &[f32],
    bv: View,
    accumulate: bool,
    parallel: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(c.len() > (m - 1) * cv.row_stride + (n - 1) * cv.col_stride, "gemm: c too small");
    if k > 0 {
        assert!(a.len() > (m - 1) * av.row_stride + (k - 1) * av.col_stride, "gemm: a too small");
        assert!(b.len() > (k - 1) * bv.row_stride + (n - 1) * bv.col_stride, "gemm: b too small");
    }
    let par = if parallel && m * n * k >= 1 << 15 { Parallelism::Rayon(0) } else { Parallelism::None };
    // SAFETY: the asserts above keep every strided access in bounds, and `c`
    // is exclusively borrowed so it cannot alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            cv.col_stride as isize,
            cv.row_stride as isize,
            accumulate,
            a.as_ptr(),
            av.col_stride as isize,
            av.row_stride as isize,
            b.as_ptr(),
            bv.col_stride as isize,
            bv.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

/// The backend's dense `matmul`, multi-threaded.
pub fn matmul(c: &mut [f32], a: &[f32], b: &[f32], mm: MatMul) {
    let av = if mm.trans_a { View::transposed(mm.m) } else { View::row_major(mm.k) };
    let bv = if mm.trans_b { View::transposed(mm.k) } else { View::row_major(mm.n) };
    assert!(a.len() >= mm.m * mm.k && b.len() >= mm.k * mm.n && c.len() >= mm.m * mm.n, "matmul: {mm:?} does not fit its buffers");
    gemm_strided(mm.m, mm.n, mm.k, c, View::row_major(mm.n), a, av, b, bv, mm.accumulate, true);
}
