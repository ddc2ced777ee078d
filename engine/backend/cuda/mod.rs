//! The CUDA backend: cudarc (loaded at run time, so builds and CPU runs need
//! no CUDA), cuBLAS for the matrix products, and our kernels from
//! kernels-ptx/ for everything else. Storage is f32 for now; the kernels also
//! exist for bf16 storage with f32 math, which the mixed-precision path will
//! use. Token ids and per-row metadata arrive on the host and are uploaded.
//!
//! Attention runs for head_dim 32, 64 and 128 (one warp per row).

use super::kernels::{entry_points, KERNEL_PTX};
use super::{rows_by_token, AdamWStep, AttnShape, Backend, MatMul};
use anyhow::{Context, Result};
use cudarc::cublas::{sys::cublasOperation_t, CudaBlas, Gemm, GemmConfig};
use cudarc::driver::{sys, CudaContext, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use std::collections::HashMap;
use std::sync::Arc;

const THREADS: u32 = 256;

pub struct Cuda {
    pub(crate) stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: HashMap<String, CudaFunction>,
    pool: sys::CUmemoryPool,
    profile: profile::Recorder,
}

// SAFETY: the memory pool handle is only passed to thread-safe driver calls.
unsafe impl Send for Cuda {}
unsafe impl Sync for Cuda {}

/// Whether libcuda can be opened (cudarc panics when it cannot, so ask first).
fn driver_present() -> bool {
    ["libcuda.so.1", "libcuda.so"].iter().any(|name| {
        let c = std::ffi::CString::new(*name).expect("no NUL");
        // SAFETY: dlopen with a valid C string; the handle is closed at once.
        unsafe {
            let h = libc::dlopen(c.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL);
            if h.is_null() {
                false
            } else {
                libc::dlclose(h);
                true
            }
        }
    })
}

/// One block per row of `rows`.
pub(crate) fn per_row(rows: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// One warp per row: `rows` rows in blocks of 8 warps, on a `(y, z)` grid.
fn per_warp_row(rows: usize, y: usize, z: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows.div_ceil(8) as u32, y as u32, z as u32), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// Enough blocks for a grid-stride loop over `n` elements.
pub(crate) fn per_element(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 1 << 16) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

macro_rules! launch {
    ($self:expr, $name:expr, $cfg:expr, $($arg:expr),+ $(,)?) => {{
        let cfg = $cfg;
        let f = $self.kernel($name);
        let _timed = $self.timed($name);
        let mut b = $self.stream.launch_builder(f);
        $(b.arg($arg);)+
        // SAFETY: every kernel's argument list matches its extern "C" signature
        // in kernels-ptx/, and buffer sizes are checked by the callers.
        unsafe { b.launch(cfg) }.unwrap_or_else(|e| panic!("launching {}: {e}", $name));
    }};
}

mod memory;
pub mod profile;
pub mod rl;

impl Cuda {
    /// Opens GPU `ordinal` and loads every kernel family. Errors (no driver,
    /// no GPU) say so, which is how tests decide to skip.
    pub fn new(ordinal: usize) -> Result<Cuda> {
        if !driver_present() {
            anyhow::bail!("no NVIDIA driver on this machine (libcuda.so could not be opened)");
        }
        let ctx = CudaContext::new(ordinal).with_context(|| format!("no usable CUDA device {ordinal}"))?;
        // SAFETY: all work goes to one stream, so cudarc's cross-stream event
        // tracking (an event record per buffer use) buys nothing.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let pool = memory::caching_pool(&ctx)?;
        let blas = CudaBlas::new(stream.clone()).context("initializing cuBLAS")?;
        let mut kernels = HashMap::new();
        for (family, ptx) in KERNEL_PTX {
            let module = ctx.load_module(cudarc::nvrtc::Ptx::from_src(*ptx)).with_context(|| format!("loading kernel family {family}"))?;
            for name in entry_points(ptx) {
                kernels.insert(name.to_string(), module.load_function(name).with_context(|| format!("{family}: kernel {name}"))?);
            }
        }
        Ok(Cuda { stream, blas, kernels, pool, profile: Default::default() })
    }

    /// Lets cuBLAS round f32 matmul inputs to TF32 on the tensor cores (a
    /// 10-bit mantissa, about 7× the plain f32 rate). Off by default, so the
    /// tests compare plain f32 with the CPU.
    pub fn set_tf32(&self, on: bool) -> Result<()> {
        use cudarc::cublas::sys::{cublasMath_t, cublasSetMathMode, cublasStatus_t};
        let mode = if on { cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH } else { cublasMath_t::CUBLAS_DEFAULT_MATH };
        // SAFETY: the handle is live for as long as `self.blas`.
        let status = unsafe { cublasSetMathMode(*self.blas.handle(), mode) };
        anyhow::ensure!(status == cublasStatus_t::CUBLAS_STATUS_SUCCESS, "cublasSetMathMode: {status:?}");
        Ok(())
    }

    /// The card's name, as the driver reports it.
    pub fn device_name(&self) -> String {
        self.stream.context().name().unwrap_or_else(|e| format!("unknown ({e})"))
    }

    pub(crate) fn kernel(&self, name: &str) -> &CudaFunction {
        self.kernels.get(name).unwrap_or_else(|| panic!("kernel {name} is not in the embedded PTX"))
    }

    pub(crate) fn ids(&self, host: &[u32]) -> CudaSlice<u32> {
        self.stream.clone_htod(host).expect("uploading ids")
    }

    pub(crate) fn floats(&self, host: &[f32]) -> CudaSlice<f32> {
        self.stream.clone_htod(host).expect("uploading floats")
    }

    /// The attention kernel `stem` instantiated for `head_dim`.
    fn attention_kernel_name(stem: &str, head_dim: usize) -> String {
        match head_dim {
            32 | 64 | 128 => format!("{stem}_d{head_dim}_f32"),
            d => panic!("CUDA attention supports head_dim 32, 64 and 128, not {d}"),
        }
    }

    /// Rotates in place; `sign = -1` is the inverse rotation (the backward).
    #[allow(clippy::too_many_arguments)]
    fn rope(
        &self,
        x: &mut CudaSlice<f32>,
        cos: &CudaSlice<f32>,
        sin: &CudaSlice<f32>,
        positions: &[u32],
        heads: usize,
        head_dim: usize,
        sign: f32,
    ) {
        let p = self.ids(positions);
        let (rows, h, hd) = (positions.len() as i64, heads as i32, head_dim as i32);
        launch!(self, "rope_f32", per_element(positions.len() * heads * head_dim / 2), x, cos, sin, &p, &rows, &h, &hd, &sign);
    }
}

impl Backend for Cuda {
    type Buf = CudaSlice<f32>;

    fn name(&self) -> &'static str {
        "cuda"
    }
    fn synchronize(&self) {
        self.stream.synchronize().expect("synchronizing the CUDA stream");
    }
    fn zeros(&self, len: usize) -> CudaSlice<f32> {
        self.stream.alloc_zeros(len.max(1)).expect("allocating device memory")
    }
    fn upload(&self, host: &[f32]) -> CudaSlice<f32> {
        if host.is_empty() {
            return self.zeros(0);
        }
        self.floats(host)
    }
    fn download(&self, buf: &CudaSlice<f32>) -> Vec<f32> {
        self.stream.clone_dtoh(buf).expect("downloading device memory")
    }
    fn len(&self, buf: &CudaSlice<f32>) -> usize {
        buf.len()
    }
    fn fill_zero(&self, buf: &mut CudaSlice<f32>) {
        self.stream.memset_zeros(buf).expect("memset");
    }
    fn copy_range(&self, dst: &mut CudaSlice<f32>, dst_off: usize, src: &CudaSlice<f32>, src_off: usize, len: usize) {
        if len > 0 {
            self.stream.memcpy_dtod(&src.slice(src_off..src_off + len), &mut dst.slice_mut(dst_off..dst_off + len)).expect("device copy");
        }
    }
    fn add_inplace(&self, y: &mut CudaSlice<f32>, x: &CudaSlice<f32>) {
        let n = y.len() as i64;
        launch!(self, "add_inplace_f32", per_element(n as usize), y, x, &n);
    }
    fn scale(&self, buf: &mut CudaSlice<f32>, s: f32) {
        let n = buf.len() as i64;
        launch!(self, "scale_f32", per_element(n as usize), buf, &s, &n);
    }
    fn sum_squares(&self, buf: &CudaSlice<f32>) -> f64 {
        let n = buf.len() as i64;
        let cfg = per_element(n as usize);
        let mut partial = self.zeros(cfg.grid_dim.0 as usize);
        launch!(self, "sum_squares_partial", cfg, &mut partial, buf, &n);
        self.download(&partial).iter().map(|&x| x as f64).sum()
    }
    fn matmul(&self, c: &mut CudaSlice<f32>, a: &CudaSlice<f32>, b: &CudaSlice<f32>, mm: MatMul) {
        // Row-major C = op(A)·op(B) is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ.
        let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
        let cfg = GemmConfig {
            transa: op(mm.trans_b),
            transb: op(mm.trans_a),
            m: mm.n as i32,
            n: mm.m as i32,
            k: mm.k as i32,
            alpha: 1.0f32,
            lda: if mm.trans_b { mm.k } else { mm.n } as i32,
            ldb: if mm.trans_a { mm.m } else { mm.k } as i32,
            beta: if mm.accumulate { 1.0 } else { 0.0 },
            ldc: mm.n as i32,
        };
        let _timed = self.timed("gemm");
        // SAFETY: the shapes above index within a (m·k), b (k·n) and c (m·n), which the callers size.
        unsafe { self.blas.gemm(cfg, b, a, c) }.expect("cuBLAS sgemm");
    }
    fn add_bias(&self, y: &mut CudaSlice<f32>, bias: &CudaSlice<f32>, rows: usize) {
        let (r, cols) = (rows as i64, bias.len() as i64);
        launch!(self, "add_bias_f32", per_element(rows * bias.len()), y, bias, &r, &cols);
    }
    fn bias_grad(&self, dbias: &mut CudaSlice<f32>, dy: &CudaSlice<f32>, rows: usize) {
        let (r, cols) = (rows as i64, dbias.len() as i64);
        launch!(self, "bias_grad_f32", per_element(dbias.len()), dbias, dy, &r, &cols);
    }
    fn embedding_fwd(&self, out: &mut CudaSlice<f32>, table: &CudaSlice<f32>, ids: &[u32], dim: usize) {
        let d_ids = self.ids(ids);
        let (rows, d) = (ids.len() as i64, dim as i32);
        launch!(self, "embedding_fwd_f32", per_element(ids.len() * dim), out, table, &d_ids, &rows, &d);
    }
    fn embedding_bwd(&self, dtable: &mut CudaSlice<f32>, dout: &CudaSlice<f32>, ids: &[u32], dim: usize) {
        // Rows grouped by token on the host, one block per token on the device.
        let vocab = dtable.len() / dim;
        let (starts, order) = rows_by_token(ids, vocab);
        let to_u32 = |v: Vec<usize>| v.into_iter().map(|x| x as u32).collect::<Vec<u32>>();
        let (d_order, d_starts, d) = (self.ids(&to_u32(order)), self.ids(&to_u32(starts)), dim as i32);
        launch!(self, "embedding_bwd_f32", per_row(vocab), dtable, dout, &d_order, &d_starts, &d);
    }
    fn rmsnorm_fwd(
        &self,
        out: &mut CudaSlice<f32>,
        rstd: &mut CudaSlice<f32>,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        dim: usize,
        eps: f32,
    ) {
        let d = dim as i32;
        launch!(self, "rmsnorm_fwd_f32", per_row(x.len() / dim), out, rstd, x, w, &d, &eps);
    }
    fn rmsnorm_bwd(
        &self,
        dx: &mut CudaSlice<f32>,
        dw: &mut CudaSlice<f32>,
        dout: &CudaSlice<f32>,
        x: &CudaSlice<f32>,
        w: &CudaSlice<f32>,
        rstd: &CudaSlice<f32>,
        dim: usize,
    ) {
        const ROWS_PER_BLOCK: usize = 64;
        let rows = x.len() / dim;
        let d = dim as i32;
        launch!(self, "rmsnorm_bwd_dx_f32", per_row(rows), dx, dout, x, w, rstd, &d);
        let blocks = rows.div_ceil(ROWS_PER_BLOCK);
        let mut partial = self.zeros(blocks * dim);
        let (r, rpb, nb) = (rows as i64, ROWS_PER_BLOCK as i32, blocks as i32);
        launch!(self, "rmsnorm_bwd_dw_partial_f32", per_row(blocks), &mut partial, dout, x, rstd, &r, &d, &rpb);
        launch!(self, "rmsnorm_bwd_dw_reduce_f32", per_element(dim), dw, &partial, &nb, &d);
    }
    fn rope_fwd(
        &self,
        x: &mut CudaSlice<f32>,
        cos: &CudaSlice<f32>,
        sin: &CudaSlice<f32>,
        positions: &[u32],
        heads: usize,
        head_dim: usize,
    ) {
        self.rope(x, cos, sin, positions, heads, head_dim, 1.0);
    }
    fn rope_bwd(
        &self,
        dx: &mut CudaSlice<f32>,
        cos: &CudaSlice<f32>,
        sin: &CudaSlice<f32>,
        positions: &[u32],
        heads: usize,
        head_dim: usize,
    ) {
        self.rope(dx, cos, sin, positions, heads, head_dim, -1.0);
    }
    fn to_head_major(
        &self,
        dst: &mut CudaSlice<f32>,
        src: &CudaSlice<f32>,
        batch: usize,
        seq: usize,
        heads: usize,
        head_dim: usize,
        cap: usize,
        starts: &[usize],
    ) {
        let s: Vec<u32> = starts.iter().map(|&x| x as u32).collect();
        let d_s = self.ids(&s);
        let (b, t, h, hd, c) = (batch as i32, seq as i32, heads as i32, head_dim as i32, cap as i32);
        launch!(self, "to_head_major_f32", per_element(src.len()), dst, src, &b, &t, &h, &hd, &c, &d_s);
    }
    fn to_token_major(&self, dst: &mut CudaSlice<f32>, src: &CudaSlice<f32>, batch: usize, seq: usize, heads: usize, head_dim: usize) {
        let (b, t, h, hd) = (batch as i32, seq as i32, heads as i32, head_dim as i32);
        launch!(self, "to_token_major_f32", per_element(src.len()), dst, src, &b, &t, &h, &hd);
    }
    fn attention_fwd(
        &self,
        out: &mut CudaSlice<f32>,
        lse: Option<&mut CudaSlice<f32>>,
        q: &CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        sh: AttnShape,
        kv_lens: &[usize],
    ) {
        let lens: Vec<u32> = kv_lens.iter().map(|&x| x as u32).collect();
        let d_lens = self.ids(&lens);
        let mut scratch;
        let lse = match lse {
            Some(l) => l,
            None => {
                scratch = self.zeros(sh.batch * sh.q_heads * sh.q_len);
                &mut scratch
            }
        };
        let (hq, hkv, tq, cap, scale) = (sh.q_heads as i32, sh.kv_heads as i32, sh.q_len as i32, sh.kv_cap as i32, sh.scale());
        let name = Self::attention_kernel_name("attention_fwd", sh.head_dim);
        let cfg = per_warp_row(sh.q_len, sh.q_heads, sh.batch);
        launch!(self, &name, cfg, out, lse, q, k, v, &d_lens, &hq, &hkv, &tq, &cap, &scale);
    }
    fn attention_bwd(
        &self,
        dq: &mut CudaSlice<f32>,
        dk: &mut CudaSlice<f32>,
        dv: &mut CudaSlice<f32>,
        dout: &CudaSlice<f32>,
        q: &CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        out: &CudaSlice<f32>,
        lse: &CudaSlice<f32>,
        sh: AttnShape,
    ) {
        assert_eq!(sh.kv_cap, sh.q_len, "attention_bwd is for training: kv_cap must equal q_len");
        let rows = sh.batch * sh.q_heads * sh.q_len;
        let mut rowdot = self.zeros(rows);
        let r = rows as i64;
        let name = Self::attention_kernel_name("attention_rowdot", sh.head_dim);
        launch!(self, &name, per_warp_row(rows, 1, 1), &mut rowdot, dout, out, &r);
        let (hq, hkv, t, scale) = (sh.q_heads as i32, sh.kv_heads as i32, sh.q_len as i32, sh.scale());
        let name = Self::attention_kernel_name("attention_bwd_dq", sh.head_dim);
        launch!(self, &name, per_warp_row(sh.q_len, sh.q_heads, sh.batch), dq, dout, q, k, v, lse, &rowdot, &hq, &hkv, &t, &scale);
        let name = Self::attention_kernel_name("attention_bwd_dkdv", sh.head_dim);
        launch!(self, &name, per_warp_row(sh.q_len, sh.kv_heads, sh.batch), dk, dv, dout, q, k, v, lse, &rowdot, &hq, &hkv, &t, &scale);
    }
    fn swiglu_fwd(&self, h: &mut CudaSlice<f32>, gate: &CudaSlice<f32>, up: &CudaSlice<f32>) {
        let n = h.len() as i64;
        launch!(self, "swiglu_fwd_f32", per_element(n as usize), h, gate, up, &n);
    }
    fn swiglu_bwd(
        &self,
        dgate: &mut CudaSlice<f32>,
        dup: &mut CudaSlice<f32>,
        dh: &CudaSlice<f32>,
        gate: &CudaSlice<f32>,
        up: &CudaSlice<f32>,
    ) {
        let n = dh.len() as i64;
        launch!(self, "swiglu_bwd_f32", per_element(n as usize), dgate, dup, dh, gate, up, &n);
    }
    fn cross_entropy_inplace(&self, logits: &mut CudaSlice<f32>, targets: &[u32], weights: &[f32], vocab: usize) -> f64 {
        let (t, w, v) = (self.ids(targets), self.floats(weights), vocab as i32);
        let mut loss = self.zeros(targets.len());
        launch!(self, "cross_entropy_f32", per_row(targets.len()), logits, &mut loss, &t, &w, &v);
        self.download(&loss).iter().map(|&x| x as f64).sum()
    }
    fn logprob_entropy(&self, logits: &CudaSlice<f32>, targets: &[u32], vocab: usize) -> (Vec<f32>, Vec<f32>) {
        let (t, v) = (self.ids(targets), vocab as i32);
        let (mut lp, mut h) = (self.zeros(targets.len()), self.zeros(targets.len()));
        launch!(self, "logprob_entropy_f32", per_row(targets.len()), logits, &mut lp, &mut h, &t, &v);
        let (mut lp, mut h) = (self.download(&lp), self.download(&h));
        lp.truncate(targets.len());
        h.truncate(targets.len());
        (lp, h)
    }
    fn logit_grad_inplace(&self, logits: &mut CudaSlice<f32>, targets: &[u32], c_logp: &[f32], c_ent: &[f32], vocab: usize) {
        let (t, cl, ce, v) = (self.ids(targets), self.floats(c_logp), self.floats(c_ent), vocab as i32);
        launch!(self, "logit_grad_f32", per_row(targets.len()), logits, &t, &cl, &ce, &v);
    }
    fn adamw(&self, param: &mut CudaSlice<f32>, grad: &CudaSlice<f32>, m: &mut CudaSlice<f32>, v: &mut CudaSlice<f32>, hp: AdamWStep) {
        let n = param.len() as i64;
        let bc1 = 1.0 - hp.beta1.powi(hp.step as i32);
        let bc2 = 1.0 - hp.beta2.powi(hp.step as i32);
        launch!(
            self,
            "adamw_f32",
            per_element(n as usize),
            param,
            grad,
            m,
            v,
            &n,
            &hp.lr,
            &hp.beta1,
            &hp.beta2,
            &hp.eps,
            &hp.weight_decay,
            &bc1,
            &bc2
        );
    }
}
