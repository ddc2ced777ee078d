//! Matrix products on cuBLASLt: every bf16 product (`Cuda::gemm`), and the
//! residual ones in any math, `D = C + op(A)·op(B)` with C and D apart,
//! which cublasGemmEx (C is D there) cannot do: a block's output projection
//! adds onto the residual stream it read while writing the next one, so no
//! kernel copies the stream first (the backward keeps both). Operands are
//! read as `Cuda::gemm` reads them. Which of cuBLASLt's algorithms runs is
//! gemm_tune.rs's choice.

use super::gemm::{leading_dims, op, Math};
use super::graph::Call;
use super::profile::Work;
use super::{Cuda, CudaBuf};
use crate::backend::{Backend, MatMul};
use anyhow::{Context, Result};
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys::{
    cublasComputeType_t, cublasLtHandle_t, cublasLtMatmulAlgo_t, cublasLtMatmulDescAttributes_t, cublasLtMatmulDesc_t,
    cublasLtMatrixLayout_t, cudaDataType, cudaStream_t,
};
use cudarc::driver::DevicePtr;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex, Once};

/// The cuBLASLt handle, each problem's descriptors (built once: a product
/// then costs one lookup of host time, as cublasGemmEx's does), the
/// algorithm each problem runs with (none: cuBLASLt offered none, or its
/// call failed), and the one timing kept for each problem's size class
/// (gemm_tune.rs).
pub(super) struct Lt {
    pub(super) handle: cublasLtHandle_t,
    descs: Mutex<HashMap<Problem, Arc<LtDescs>>>,
    pub(super) algos: Mutex<HashMap<Problem, Option<cublasLtMatmulAlgo_t>>>,
    pub(super) timed: Mutex<HashMap<Problem, cublasLtMatmulAlgo_t>>,
}

/// A product's shape, transposes and math, whether D is bf16, and whether
/// C is read from a buffer apart from D. Whether C is added (beta) is not
/// part of it: it is a scalar of the call, so an algorithm (and the
/// descriptors) run either way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Problem {
    m: usize,
    n: usize,
    k: usize,
    trans_a: bool,
    trans_b: bool,
    math: Math,
    out_bf16: bool,
    c_apart: bool,
}

/// How C joins a product: not at all, added onto D in place, or read from a buffer apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AddC {
    No,
    InPlace,
    Apart,
}

// SAFETY: the handle and the descriptors are used from one thread at a time (calls are queued under the backend's `&self`).
unsafe impl Send for Lt {}
unsafe impl Sync for Lt {}

impl Lt {
    pub(super) fn new() -> Result<Lt> {
        let handle = lt::create_handle().context("initializing cuBLASLt")?;
        Ok(Lt { handle, descs: Mutex::default(), algos: Mutex::default(), timed: Mutex::default() })
    }
}

impl Drop for Lt {
    fn drop(&mut self) {
        // SAFETY: created in `new`, destroyed once.
        let _ = unsafe { lt::destroy_handle(self.handle) };
    }
}

/// A column-major matrix layout, destroyed when dropped.
pub(super) struct Layout(pub(super) cublasLtMatrixLayout_t);

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
pub(super) struct Desc(pub(super) cublasLtMatmulDesc_t);

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

/// One product as cuBLASLt runs it: the operands' addresses (bf16 in bf16
/// math), C's and D's, and whether D (and so C) is bf16.
pub(super) struct LtCall {
    pub(super) mm: MatMul,
    pub(super) math: Math,
    pub(super) a: u64,
    pub(super) b: u64,
    pub(super) c: u64,
    pub(super) d: u64,
    pub(super) out_bf16: bool,
    pub(super) add_c: AddC,
}

impl LtCall {
    pub(super) fn problem(&self) -> Problem {
        let MatMul { m, n, k, trans_a, trans_b, accumulate: _ } = self.mm;
        Problem { m, n, k, trans_a, trans_b, math: self.math, out_bf16: self.out_bf16, c_apart: self.add_c == AddC::Apart }
    }

    /// The problem's size class: its token count rounded up to a power of
    /// two, so prompts and batches of other lengths share one timing. A is
    /// the activations in every product (x, or dy): its rows are the tokens,
    /// which are m, or k where A is transposed (a weight gradient, dyᵀ·x).
    /// The model's own sizes stay exact, so two projections of one layer
    /// never share a class.
    pub(super) fn size_class(&self) -> Problem {
        let p = self.problem();
        if p.trans_a {
            Problem { k: p.k.next_power_of_two(), ..p }
        } else {
            Problem { m: p.m.next_power_of_two(), ..p }
        }
    }

    /// Bytes of D.
    pub(super) fn out_bytes(&self) -> usize {
        self.mm.m * self.mm.n * if self.out_bf16 { 2 } else { 4 }
    }

    fn beta(&self) -> f32 {
        if self.add_c == AddC::No {
            0.0
        } else {
            1.0
        }
    }
}

/// An `LtCall`'s descriptors, column-major: cuBLAS sees the row-major
/// product as `dᵀ = op(b)ᵀ·op(a)ᵀ`, so its A is our b and its B our a.
pub(super) struct LtDescs {
    pub(super) desc: Desc,
    pub(super) a: Layout,
    pub(super) b: Layout,
    /// C's and D's (the same shape and type).
    pub(super) cd: Layout,
}

// SAFETY: descriptors are host-side objects cuBLASLt only reads while a
// product is queued, which happens under the backend's `&self`, one thread at a time.
unsafe impl Send for LtDescs {}
unsafe impl Sync for LtDescs {}

impl LtDescs {
    fn new(call: &LtCall) -> LtDescs {
        let mm = call.mm;
        let (ab_type, compute) = match call.math {
            Math::Bf16 => (cudaDataType::CUDA_R_16BF, cublasComputeType_t::CUBLAS_COMPUTE_32F),
            Math::Tf32 => (cudaDataType::CUDA_R_32F, cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32),
            Math::Exact => (cudaDataType::CUDA_R_32F, cublasComputeType_t::CUBLAS_COMPUTE_32F),
        };
        let out_type = if call.out_bf16 { cudaDataType::CUDA_R_16BF } else { cudaDataType::CUDA_R_32F };
        let (lda, ldb) = leading_dims(mm);
        LtDescs {
            desc: Desc::new(compute, op(mm.trans_b), op(mm.trans_a)),
            a: stored(ab_type, mm.trans_b, mm.n, mm.k, lda as usize),
            b: stored(ab_type, mm.trans_a, mm.k, mm.m, ldb as usize),
            cd: Layout::new(out_type, mm.n, mm.m, mm.n),
        }
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

    fn lt_residual(&self, d: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, residual: &CudaBuf, mm: MatMul) -> Result<(), String> {
        let math = self.math();
        let bf16 = math == Math::Bf16;
        let (pa, _a16) = if bf16 { self.bf16_operand(a, mm.m * mm.k) } else { (self.ptr(a.data()), None) };
        let (pb, _b16) = if bf16 { self.bf16_operand(b, mm.k * mm.n) } else { (self.ptr(b.data()), None) };
        let pc = self.ptr(residual.data());
        let pd = self.ptr(d.write());
        let flags = mm.trans_a as u32 | (mm.trans_b as u32) << 1 | 1 << 4;
        let mut note = self.note(|| Call::gemm(mm.m, mm.n, mm.k, flags));
        if let Some(n) = note.as_mut() {
            [pa, pb, pc, pd].iter().for_each(|p| n.arg(p));
        }
        let call = LtCall { mm, math, a: pa, b: pb, c: pc, d: pd, out_bf16: false, add_c: AddC::Apart };
        let ab_bytes = if bf16 { 2 } else { 4 };
        self.lt_queue(&call, note, || Work::gemm(mm.m, mm.n, mm.k, ab_bytes, 4, 4))
    }

    /// Queues `call` (noted in a pass, timed while profiling) with the
    /// algorithm gemm_tune.rs keeps for it; an error says why cuBLASLt
    /// declined, and the caller runs the product another way.
    pub(super) fn lt_queue(&self, call: &LtCall, note: Option<Call>, work: impl FnOnce() -> Work) -> Result<(), String> {
        if !self.issue(note) {
            return Ok(());
        }
        let descs = self.lt_descs(call);
        let algo = self.lt_algo(call, &descs)?;
        let timed = self.timed("gemm", None, work);
        let run = self.lt_run(call, &descs, &algo, call.c, call.d);
        if run.is_err() {
            // The caller's fallback counts the product's work.
            if let Some(t) = timed {
                t.cancel();
            }
            self.lt.algos.lock().expect("cuBLASLt algorithms lock").insert(call.problem(), None);
        }
        run
    }

    /// `call`'s descriptors, built the first time its problem runs.
    fn lt_descs(&self, call: &LtCall) -> Arc<LtDescs> {
        let mut descs = self.lt.descs.lock().expect("cuBLASLt descriptors lock");
        descs.entry(call.problem()).or_insert_with(|| Arc::new(LtDescs::new(call))).clone()
    }

    /// Runs `call` with `algo`, reading C at `c` and writing D at `d` (the
    /// call's own, or a tuning run's scratch).
    pub(super) fn lt_run(&self, call: &LtCall, descs: &LtDescs, algo: &cublasLtMatmulAlgo_t, c: u64, d: u64) -> Result<(), String> {
        let (alpha, beta) = (1.0f32, call.beta());
        let (ws, _) = self.blas_workspace.device_ptr(&self.stream);
        // SAFETY: the shapes index within a (m·k), b (k·n), c and d (m·n), which the callers
        // size; bf16 copies live until the call is queued and the stream orders their reuse.
        unsafe {
            lt::matmul(
                self.lt.handle,
                descs.desc.0,
                &alpha as *const f32 as *const c_void,
                &beta as *const f32 as *const c_void,
                call.b as *const c_void,
                descs.a.0,
                call.a as *const c_void,
                descs.b.0,
                c as *const c_void,
                descs.cd.0,
                d as *mut c_void,
                descs.cd.0,
                algo,
                ws as *mut c_void,
                self.blas_workspace.len(),
                self.stream.cu_stream() as cudaStream_t,
            )
        }
        .map_err(|e| format!("cublasLtMatmul: {e:?}"))
    }
}
