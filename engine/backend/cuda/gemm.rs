//! Matrix products in three math modes. Storage stays f32; `Bf16` reads
//! both operands as bf16 (as PyTorch's autocast does: each buffer's copy is
//! made once and kept until the buffer is written, see buf.rs) and runs on
//! cuBLASLt (gemm_lt.rs, its algorithm tuned per shape: gemm_tune.rs) with
//! f32 accumulation and f32 output, or bf16 output into a bf16 buffer (the
//! MLP's gate and up projections). `Exact` and `Tf32` run cuBLAS's sgemm.

use super::gemm_lt::{AddC, LtCall};
use super::graph::Call;
use super::profile::Work;
use super::{per_element, Cuda, CudaBuf, Storage};
use crate::backend::MatMul;
use anyhow::{bail, Result};
use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t};
use cudarc::cublas::{Gemm, GemmConfig};
use cudarc::driver::{CudaSlice, PushKernelArg};
use std::ffi::c_void;
use std::sync::{Arc, Once};

/// How the CUDA backend does its arithmetic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Math {
    /// Plain f32 everywhere: the reference the tests hold to tight tolerances.
    Exact,
    /// TF32 matmuls (10-bit mantissa) and bf16 flash attention.
    Tf32,
    /// bf16 matmul inputs and bf16 flash attention, f32 accumulation (the default).
    Bf16,
}

impl Math {
    pub fn parse(s: &str) -> Result<Math> {
        Ok(match s {
            "exact" => Math::Exact,
            "tf32" => Math::Tf32,
            "bf16" => Math::Bf16,
            other => bail!("unknown math mode {other:?} (exact, tf32, bf16)"),
        })
    }
}

pub(super) fn op(transposed: bool) -> cublasOperation_t {
    if transposed {
        cublasOperation_t::CUBLAS_OP_T
    } else {
        cublasOperation_t::CUBLAS_OP_N
    }
}

/// cuBLAS's leading dimensions of its A (our b) and B (our a), row-major buffers seen column-major.
pub(super) fn leading_dims(mm: MatMul) -> (i32, i32) {
    let lda = if mm.trans_b { mm.k } else { mm.n };
    let ldb = if mm.trans_a { mm.m } else { mm.k };
    (lda as i32, ldb as i32)
}

impl Cuda {
    /// Row-major `C (+)= op(A)·op(B)`, which cuBLAS (column-major) sees as `Cᵀ = op(B)ᵀ·op(A)ᵀ`.
    pub(crate) fn gemm(&self, c: &mut Storage, a: &CudaBuf, b: &CudaBuf, mm: MatMul) {
        let flags = mm.trans_a as u32 | (mm.trans_b as u32) << 1 | (mm.accumulate as u32) << 2 | (c.is_bf16() as u32) << 3;
        let mut note = self.note(|| Call::gemm(mm.m, mm.n, mm.k, flags));
        if self.math() == Math::Bf16 {
            let (pa, _a16) = self.bf16_operand(a, mm.m * mm.k);
            let (pb, _b16) = self.bf16_operand(b, mm.k * mm.n);
            let pc = self.addr(c);
            if let Some(n) = note.as_mut() {
                [pa, pb, pc].iter().for_each(|p| n.arg(p));
            }
            let add_c = if mm.accumulate { AddC::InPlace } else { AddC::No };
            let call = LtCall { mm, math: Math::Bf16, a: pa, b: pb, c: pc, d: pc, out_bf16: c.is_bf16(), add_c };
            let out_bytes = c.value_bytes();
            let work = || Work::gemm(mm.m, mm.n, mm.k, 2, if mm.accumulate { out_bytes } else { 0 }, out_bytes);
            if let Err(e) = self.lt_queue(&call, note, work) {
                static SAID: Once = Once::new();
                SAID.call_once(|| eprintln!("warning: cuBLASLt declined {mm:?} ({e}); bf16 matmuls of its shape run on cublasGemmEx"));
                let _timed = self.timed("gemm", None, work);
                self.gemm_ex_bf16(&call);
            }
            return;
        }
        let Storage::F32(c) = c else { panic!("bf16 matmul outputs exist only in bf16 math") };
        let (lda, ldb) = leading_dims(mm);
        let cfg = GemmConfig {
            transa: op(mm.trans_b),
            transb: op(mm.trans_a),
            m: mm.n as i32,
            n: mm.m as i32,
            k: mm.k as i32,
            alpha: 1.0f32,
            lda,
            ldb,
            beta: if mm.accumulate { 1.0 } else { 0.0 },
            ldc: mm.n as i32,
        };
        if let Some(n) = note.as_mut() {
            [b.data(), a.data(), &*c].iter().for_each(|p| n.arg(p));
        }
        if !self.issue(note) {
            return;
        }
        let work = Work::gemm(mm.m, mm.n, mm.k, 4, if mm.accumulate { 4 } else { 0 }, 4);
        let _timed = self.timed("gemm", None, || work);
        // SAFETY: the shapes index within a (m·k), b (k·n) and c (m·n), which the callers size.
        unsafe { self.blas.gemm(cfg, b.data(), a.data(), c) }.expect("cuBLAS sgemm");
    }

    /// `call` on cublasGemmEx (its choice of algorithm), for products cuBLASLt declines.
    fn gemm_ex_bf16(&self, call: &LtCall) {
        let mm = call.mm;
        let (lda, ldb) = leading_dims(mm);
        let (alpha, beta) = (1.0f32, if mm.accumulate { 1.0f32 } else { 0.0 });
        let c_type = if call.out_bf16 { cudaDataType_t::CUDA_R_16BF } else { cudaDataType_t::CUDA_R_32F };
        // SAFETY: the shapes index within a (m·k), b (k·n) and c (m·n), which the callers
        // size; the bf16 copies live until the call is queued and the stream orders their reuse.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.blas.handle(),
                op(mm.trans_b),
                op(mm.trans_a),
                mm.n as i32,
                mm.m as i32,
                mm.k as i32,
                &alpha as *const f32 as *const c_void,
                call.b as *const c_void,
                cudaDataType_t::CUDA_R_16BF,
                lda,
                call.a as *const c_void,
                cudaDataType_t::CUDA_R_16BF,
                ldb,
                &beta as *const f32 as *const c_void,
                call.d as *mut c_void,
                c_type,
                mm.n as i32,
                cublasComputeType_t::CUBLAS_COMPUTE_32F,
                cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
            )
        }
        .expect("cublasGemmEx (bf16)");
    }

    /// The address of a matmul operand's first `n` values in bf16: its own
    /// storage when it stores bf16 (an LM-head logits chunk), else its kept
    /// bf16 copy (made now if it has none), which the caller holds until
    /// the call is queued.
    pub(super) fn bf16_operand(&self, x: &CudaBuf, n: usize) -> (u64, Option<Arc<CudaSlice<half::bf16>>>) {
        if x.is_bf16() {
            return (self.addr(x.storage()), None);
        }
        let copy = x.bf16(n, |f| self.bf16_copy(f, n));
        (self.ptr(&*copy), Some(copy))
    }

    /// The first `n` values of `x` as bf16, in pool-cached scratch.
    fn bf16_copy(&self, x: &CudaSlice<f32>, n: usize) -> CudaSlice<half::bf16> {
        // SAFETY: the cast below writes all n elements before any read.
        let mut out = unsafe { self.stream.alloc::<half::bf16>(n.max(1)) }.expect("allocating bf16 scratch");
        let len = n as i64;
        launch!(self, "cast_f32_to_bf16", per_element(n.div_ceil(4)), work Work::bytes(6 * n); &mut out, x, &len);
        out
    }
}
