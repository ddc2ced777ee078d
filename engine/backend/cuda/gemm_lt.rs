//! The residual matmuls on cuBLASLt: `D = C + op(A)·op(B)` with C and D
//! apart, which cublasGemmEx (C is D there) cannot do. A block's output
//! projection adds onto the residual stream it read while writing the next
//! one, so no kernel copies the stream first (the backward keeps both).
//! Operands are read as `Cuda::gemm` reads them; C and D are f32.

use super::gemm::{op, Math};
use super::graph::Call;
use super::profile::Work;
use super::{Cuda, CudaBuf};
use crate::backend::{Backend, MatMul};
use anyhow::{Context, Result};
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys::{
    cublasComputeType_t, cublasLtHandle_t, cublasLtMatmulAlgo_t, cublasLtMatmulDescAttributes_t, cublasLtMatmulDesc_t,
    cublasLtMatmulPreferenceAttributes_t, cublasLtMatrixLayout_t, cudaDataType, cudaStream_t,
};
use cudarc::driver::DevicePtr;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Mutex, Once};

/// The cuBLASLt handle, and the algorithm its heuristic picked per problem
/// (none: cuBLASLt offered none, or its call failed).
pub(super) struct Lt {
    handle: cublasLtHandle_t,
    algos: Mutex<HashMap<Problem, Option<cublasLtMatmulAlgo_t>>>,
}

/// A product's shape, transposes and math.
type Problem = (usize, usize, usize, bool, bool, u8);

// SAFETY: the handle is used from one thread at a time (calls are queued under the backend's `&self`).
unsafe impl Send for Lt {}
unsafe impl Sync for Lt {}

impl Lt {
    pub(super) fn new() -> Result<Lt> {
        let handle = lt::create_handle().context("initializing cuBLASLt")?;
        Ok(Lt { handle, algos: Mutex::default() })
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

/// A column-major matrix layout, destroyed when dropped.
struct Layout(cublasLtMatrixLayout_t);

impl Layout {
    fn new(ty: cudaDataType, rows: usize, cols: usize, ld: usize) -> Layout {
        Layout(lt::create_matrix_layout(ty, rows as u64, cols as u64, ld as i64).expect("cublasLtMatrixLayoutCreate"))
    }
}

impl Drop for Layout {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        let _ = unsafe { lt::destroy_matrix_layout(self.0) };
    }
}

/// A matmul descriptor with its transposes, destroyed when dropped.
struct Desc(cublasLtMatmulDesc_t);

impl Desc {
    fn new(compute: cublasComputeType_t, ta: cublasOperation_t, tb: cublasOperation_t) -> Desc {
        let d = lt::create_matmul_desc(compute, cudaDataType::CUDA_R_32F).expect("cublasLtMatmulDescCreate");
        for (attr, op) in [
            (cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA, ta),
            (cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSB, tb),
        ] {
            // SAFETY: the attribute is a cublasOperation_t, passed by address with its size.
            unsafe { lt::set_matmul_desc_attribute(d, attr, &op as *const _ as *const c_void, size_of::<cublasOperation_t>()) }
                .expect("cublasLtMatmulDescSetAttribute");
        }
        Desc(d)
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        let _ = unsafe { lt::destroy_matmul_desc(self.0) };
    }
}

/// The layout of a matrix stored `rows × cols` before `op` (column-major, as cuBLAS sees a row-major buffer).
fn stored(ty: cudaDataType, transposed: bool, rows: usize, cols: usize, ld: usize) -> Layout {
    if transposed {
        Layout::new(ty, cols, rows, ld)
    } else {
        Layout::new(ty, rows, cols, ld)
    }
}

impl Cuda {
    /// Row-major `d = residual + op(a)·op(b)`. A product cuBLASLt declines
    /// (no algorithm, or a failed call: said once on stderr) is a copy and an
    /// in-place cuBLAS product instead, as the CPU's does it.
    pub(crate) fn gemm_residual(&self, d: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, residual: &CudaBuf, mm: MatMul) {
        assert!(!mm.accumulate, "matmul_residual adds the residual; the product itself must not accumulate");
        assert_eq!(residual.len(), d.len(), "matmul_residual: the residual and the output differ in size");
        if let Err(e) = self.lt_residual(d, a, b, residual, mm) {
            static SAID: Once = Once::new();
            SAID.call_once(|| eprintln!("warning: cuBLASLt declined {mm:?} ({e}); residual matmuls copy the residual first"));
            self.copy_range(d, 0, residual, 0, residual.len());
            self.gemm(d.storage_mut(), a, b, mm.accumulating());
        }
    }

    /// `gemm_residual` on cuBLASLt, which (column-major) sees it as `dᵀ =
    /// residualᵀ + op(b)ᵀ·op(a)ᵀ`, as `Cuda::gemm` does.
    fn lt_residual(&self, d: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, residual: &CudaBuf, mm: MatMul) -> Result<(), String> {
        let math = self.math();
        let bf16 = math == Math::Bf16;
        let (ab_type, compute) = match math {
            Math::Bf16 => (cudaDataType::CUDA_R_16BF, cublasComputeType_t::CUBLAS_COMPUTE_32F),
            Math::Tf32 => (cudaDataType::CUDA_R_32F, cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32),
            Math::Exact => (cudaDataType::CUDA_R_32F, cublasComputeType_t::CUBLAS_COMPUTE_32F),
        };
        let (pa, _a16) = if bf16 { self.bf16_operand(a, mm.m * mm.k) } else { (self.ptr(a.data()), None) };
        let (pb, _b16) = if bf16 { self.bf16_operand(b, mm.k * mm.n) } else { (self.ptr(b.data()), None) };
        let pc = self.ptr(residual.data());
        let pd = self.ptr(d.write());
        let flags = mm.trans_a as u32 | (mm.trans_b as u32) << 1 | 1 << 4;
        let mut note = self.note(|| Call::gemm(mm.m, mm.n, mm.k, flags));
        if let Some(n) = note.as_mut() {
            [pa, pb, pc, pd].iter().for_each(|p| n.arg(p));
        }
        if !self.issue(note) {
            return Ok(());
        }
        let ab_bytes = if bf16 { 2 } else { 4 };
        let _timed = self.timed("gemm", None, || Work::gemm(mm.m, mm.n, mm.k, ab_bytes, 4, 4));
        // Cuda::gemm's operands: cuBLAS's A is our b, its B our a.
        let lda = if mm.trans_b { mm.k } else { mm.n };
        let ldb = if mm.trans_a { mm.m } else { mm.k };
        let a_layout = stored(ab_type, mm.trans_b, mm.n, mm.k, lda);
        let b_layout = stored(ab_type, mm.trans_a, mm.k, mm.m, ldb);
        let cd_layout = Layout::new(cudaDataType::CUDA_R_32F, mm.n, mm.m, mm.n);
        let desc = Desc::new(compute, op(mm.trans_b), op(mm.trans_a));
        let problem = (mm.m, mm.n, mm.k, mm.trans_a, mm.trans_b, math as u8);
        let mut algos = self.lt.algos.lock().expect("cuBLASLt algorithms lock");
        let algo = *algos.entry(problem).or_insert_with(|| {
            let pref = lt::create_matmul_pref().expect("cublasLtMatmulPreferenceCreate");
            let most = self.blas_workspace.len();
            // SAFETY: every handle below is live; the attribute is a size_t passed by address.
            let found = unsafe {
                let max = cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES;
                lt::set_matmul_pref_attribute(pref, max, &most as *const usize as *const c_void, size_of::<usize>())
                    .expect("cublasLtMatmulPreferenceSetAttribute");
                let found = lt::get_matmul_algo_heuristic(self.lt.handle, desc.0, a_layout.0, b_layout.0, cd_layout.0, cd_layout.0, pref);
                let _ = lt::destroy_matmul_pref(pref);
                found
            };
            found.ok().map(|h| h.algo)
        });
        let Some(algo) = algo else { return Err(format!("no algorithm in {math:?} math")) };
        let (alpha, beta) = (1.0f32, 1.0f32);
        let (ws, _) = self.blas_workspace.device_ptr(&self.stream);
        // SAFETY: the shapes index within a (m·k), b (k·n), residual and d (m·n), which the
        // callers size; bf16 copies live until the call returns and the stream orders their reuse.
        let done = unsafe {
            lt::matmul(
                self.lt.handle,
                desc.0,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                pb as *const c_void,
                a_layout.0,
                pa as *const c_void,
                b_layout.0,
                pc as *const c_void,
                cd_layout.0,
                pd as *mut c_void,
                cd_layout.0,
                &algo,
                ws as *mut c_void,
                self.blas_workspace.len(),
                self.stream.cu_stream() as cudaStream_t,
            )
        };
        done.map_err(|e| {
            algos.insert(problem, None);
            format!("cublasLtMatmul: {e:?}")
        })
    }
}
