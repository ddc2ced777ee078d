//! The CUDA backend: cudarc (loaded at run time, so builds and CPU runs need
//! no CUDA), cuBLAS for the matrix products, and our kernels from
//! kernels-ptx/ for everything else. Buffers (`CudaBuf`, buf.rs) store f32
//! and keep the bf16 copy their last tensor-core matmul made; KV caches store
//! bf16. Token ids and per-row metadata arrive on the host and are uploaded
//! (once per forward: recent uploads are kept), or staged in one arena in a
//! repeated step, which runs as a CUDA graph (graph.rs). Math runs on the
//! tensor cores by default (`Math`, `set_math`).
//!
//! Attention (attention.rs) runs for head_dim 32, 64 and 128: flash tiles on
//! the tensor cores, one warp per row in exact f32 and for short prefills,
//! and the split-K decode kernel for single-token steps.

use super::kernels::{check_driver, entry_points, KERNEL_PTX};
use super::{rows_by_token, AdamWStep, AdamWTensor, AttnShape, Backend, HeadSlots, MatMul, PackedRewards, QkvHeads, Rope, SeqSpan};
use crate::generate::SamplingConfig;
use crate::model::ModelConfig;
use crate::rl::ppo_loss::{ClipMode, PolicyToken};
use crate::rl::reward::RewardMode;
use anyhow::{Context, Result};
pub use buf::CudaBuf;
use buf::Storage;
use cudarc::cublas::CudaBlas;
use cudarc::driver::{sys, CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, LaunchConfig, PushKernelArg};
pub use gemm::Math;
use profile::{rope_bytes, Work};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

const THREADS: u32 = 256;
/// Rows per block in the two-pass column sums (bias and norm-weight gradients).
const ROWS_PER_BLOCK: usize = 64;

pub struct Cuda {
    pub(crate) stream: Arc<CudaStream>,
    blas: CudaBlas,
    kernels: HashMap<String, CudaFunction>,
    pool: sys::CUmemoryPool,
    profile: profile::Recorder,
    math: AtomicU8,
    /// Streaming multiprocessors, for sizing grids that must fill the GPU.
    sms: usize,
    /// Recently uploaded id arrays, newest first: a forward passes the same
    /// positions, cache offsets and lengths to every layer, so each crosses
    /// the bus once. Kernels only read these, so equal contents mean equal data.
    recent_ids: Mutex<Vec<RecentIds>>,
    /// Multi-tensor tables kept on the device (multi_tensor.rs).
    tables: Mutex<Vec<multi_tensor::KeptTable>>,
    /// The decode kernel's split partials, kept so a step's launches repeat (graph.rs).
    decode_partials: Mutex<Option<CudaSlice<f32>>>,
    /// The flash backward's dQ-order counters (attention.rs), zero between launches.
    dq_counters: Mutex<Option<CudaSlice<u32>>>,
    /// Whether the flash backward adds dQ's shares in a fixed order (`set_ordered_dq`).
    ordered_dq: AtomicBool,
    /// cuBLAS's workspace, set once (left to itself cuBLAS would allocate
    /// one inside a captured graph), which the cuBLASLt calls share.
    blas_workspace: CudaSlice<u8>,
    lt: gemm_lt::Lt,
    /// A repeated step's pass in progress (graph.rs), and whether there is one.
    pass: Mutex<Option<graph::Pass>>,
    in_pass: AtomicBool,
    graphs: Mutex<graph::Graphs>,
    /// Kernel variants chosen per launch shape, and the timings behind them (tune.rs).
    choices: tune::Choices,
    tunings: Mutex<Vec<tune::Timing>>,
}

/// Set to 0, repeated steps run without CUDA graphs (graph.rs).
pub const GRAPHS_ENV: &str = "VUL2SAFE_CUDA_GRAPHS";

/// Set to 0, the flash backward adds dQ's shares in no fixed order (`Cuda::set_ordered_dq`).
pub const ORDERED_DQ_ENV: &str = "VUL2SAFE_ORDERED_DQ";

/// cuBLAS's workspace: what it takes on Hopper by default.
const BLAS_WORKSPACE_BYTES: usize = 32 << 20;

/// An id array on the device: its address, and the upload holding it (none
/// when it lives in a repeated step's arena, graph.rs).
pub(crate) struct DeviceIds {
    pub(crate) addr: u64,
    _held: Option<Arc<CudaSlice<u32>>>,
}

/// Where a producing kernel writes (`Cuda::produce`); `done` records it on the buffer.
struct Produced {
    f32: u64,
    bf16: u64,
    copy: Option<CudaSlice<half::bf16>>,
    keep_f32: bool,
}

impl Produced {
    /// Bytes written per value: the f32 data and the bf16 copy, each if kept.
    fn value_bytes(&self) -> usize {
        profile::output_bytes(self.f32, self.bf16)
    }

    fn done(self, buf: &mut CudaBuf) {
        match (self.copy, self.keep_f32) {
            (Some(c), true) => buf.keep_bf16(c),
            (Some(c), false) => buf.keep_bf16_only(c),
            (None, _) => {}
        }
    }
}

/// An id array's host contents and its device copy.
type RecentIds = (Vec<u32>, Arc<CudaSlice<u32>>);

/// How many id arrays `Cuda::ids` keeps on the device.
const RECENT_IDS: usize = 8;

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

/// Rows per block of the RMSNorm kernels (a warp each), as NORM_ROWS in kernels-ptx/norm.cu.
const NORM_ROWS: u32 = THREADS / 32;
/// The widest row the one-kernel RMSNorm backward takes (norm.cu asserts its NORM_BWD_VECS match).
const NORM_BWD_FUSED_DIM: usize = 1024;
/// Rows each warp of the one-kernel RMSNorm backward takes: 16 per block,
/// so 1024 blocks (and weight-gradient partials) for 16K tokens, several
/// waves at the three blocks an SM holds (82 registers a thread).
const NORM_BWD_ROWS_PER_WARP: usize = 2;

/// The RMSNorm kernels' launch: a warp per row, four values per lane and step.
fn per_norm_rows(dim: usize, rows: i64) -> LaunchConfig {
    assert!(dim.is_multiple_of(4), "the CUDA RMSNorm moves four values at a time: hidden size {dim} is not a multiple of 4");
    LaunchConfig { grid_dim: ((rows as u32).div_ceil(NORM_ROWS), 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// Enough blocks for a grid-stride loop over `n` elements.
pub(crate) fn per_element(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(THREADS as usize).clamp(1, 1 << 16) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
}

/// The fused attention entry and exit kernels' arguments: how many groups
/// of four rotation pairs they visit (a thread each), and (token rows, seq,
/// heads, head_dim, cap), in 32 bits.
fn pair_args(batch: usize, seq: usize, heads: usize, head_dim: usize, cap: usize) -> (usize, [i32; 5]) {
    assert!(
        head_dim.is_multiple_of(8),
        "the attention entry and exit move four RoPE pairs at a time: head_dim must be a multiple of 8, got {head_dim}"
    );
    let quads = batch * seq * heads * head_dim / 8;
    assert!(quads < (i32::MAX / 8) as usize, "{quads} groups of pairs are too many for 32-bit indexing");
    (quads, [(batch * seq) as i32, seq as i32, heads as i32, head_dim as i32, cap as i32])
}

/// Every slot of a head-major write must land inside `dst_len` values of
/// rows of `cap` positions of `width` (heads × head_dim) values: the kernels
/// do not check.
fn check_slots(slots: &[u32], dst_len: usize, width: usize, cap: usize) {
    let rows = dst_len / (width * cap).max(1);
    let last = slots.iter().copied().max().unwrap_or(0) as usize;
    assert!(slots.is_empty() || last < rows * cap, "slot {last} is past the {rows} rows of {cap} positions");
}

/// Launches a kernel, or in a repeated step's pass (graph.rs) notes it too;
/// `work w;` before the arguments declares what the launch moves and
/// computes (`profile::Work`, evaluated only while profiling), for the
/// profile's rates.
macro_rules! launch {
    ($self:expr, $name:expr, $cfg:expr, work $work:expr; $($arg:expr),+ $(,)?) => {{
        let cfg = $cfg;
        let f = $self.kernel($name);
        let mut note = $self.note(|| $crate::backend::cuda::graph::Call::launch(f.cu_function(), &cfg));
        let mut b = $self.stream.launch_builder(f);
        $(
            let a = $arg;
            if let Some(n) = note.as_mut() {
                n.arg(&a);
            }
            b.arg(a);
        )+
        if $self.issue(note) {
            let _timed = $self.timed($name, Some((cfg.block_dim.0, cfg.shared_mem_bytes)), || $work);
            // SAFETY: every kernel's argument list matches its extern "C" signature
            // in kernels-ptx/, and buffer sizes are checked by the callers.
            unsafe { b.launch(cfg) }.unwrap_or_else(|e| panic!("launching {}: {e}", $name));
        }
    }};
}

mod attention;
mod buf;
mod gemm;
mod gemm_lt;
mod gemm_tune;
mod graph;
mod memory;
mod multi_tensor;
pub mod profile;
pub mod rl;
mod sampling;
mod tune;

impl Cuda {
    /// Opens GPU `ordinal` and loads every kernel family. Errors (no driver,
    /// no GPU) say so, which is how tests decide to skip.
    pub fn new(ordinal: usize) -> Result<Cuda> {
        if !driver_present() {
            anyhow::bail!("no NVIDIA driver on this machine (libcuda.so could not be opened)");
        }
        // SAFETY: each only tries to open the library (cudarc panics on first use when it is missing).
        let (blas, blas_lt) = unsafe { (cudarc::cublas::sys::is_culib_present(), cudarc::cublaslt::sys::is_culib_present()) };
        anyhow::ensure!(
            blas && blas_lt,
            "cuBLAS (libcublas{}) not found: add the CUDA toolkit's lib64 or the nvidia-cublas wheel's lib to LD_LIBRARY_PATH",
            if blas { "Lt" } else { "" }
        );
        let mut driver = 0;
        // SAFETY: writes one int; needs no initialized driver.
        let status = unsafe { sys::cuDriverGetVersion(&mut driver) };
        anyhow::ensure!(status == sys::CUresult::CUDA_SUCCESS, "cuDriverGetVersion: {status:?}");
        check_driver(driver)?;
        let ctx = CudaContext::new(ordinal).with_context(|| format!("no usable CUDA device {ordinal}"))?;
        // SAFETY: all work goes to one stream, so cudarc's cross-stream event
        // tracking (an event record per buffer use) buys nothing.
        unsafe { ctx.disable_event_tracking() };
        // A stream of our own: the legacy default stream cannot be captured into a graph.
        let stream = ctx.new_stream().context("creating a CUDA stream")?;
        let pool = memory::caching_pool(&ctx)?;
        let blas = CudaBlas::new(stream.clone()).context("initializing cuBLAS")?;
        let blas_workspace = stream.alloc_zeros::<u8>(BLAS_WORKSPACE_BYTES).context("allocating cuBLAS's workspace")?;
        let (ws, _) = blas_workspace.device_ptr(&stream);
        // SAFETY: the workspace lives as long as the handle (both are fields of the backend).
        let status =
            unsafe { cudarc::cublas::sys::cublasSetWorkspace_v2(*blas.handle(), ws as *mut std::ffi::c_void, BLAS_WORKSPACE_BYTES) };
        anyhow::ensure!(status == cudarc::cublas::sys::cublasStatus_t::CUBLAS_STATUS_SUCCESS, "cublasSetWorkspace: {status:?}");
        let mut kernels = HashMap::new();
        for (family, ptx) in KERNEL_PTX {
            let module = ctx.load_module(cudarc::nvrtc::Ptx::from_src(*ptx)).with_context(|| format!("loading kernel family {family}"))?;
            for name in entry_points(ptx) {
                let f = module.load_function(name).with_context(|| format!("{family}: kernel {name}"))?;
                let smem = attention::dynamic_smem(name);
                if smem > 0 {
                    // Past the 48 KB a launch gets unless the function allows more.
                    let most = sys::CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES;
                    f.set_attribute(most, smem as i32).with_context(|| format!("{name}: allowing its shared memory"))?;
                }
                kernels.insert(name.to_string(), f);
            }
        }
        let sms =
            ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT).context("reading the SM count")? as usize;
        let cuda = Cuda {
            stream,
            blas,
            kernels,
            pool,
            profile: Default::default(),
            choices: Default::default(),
            tunings: Default::default(),
            math: AtomicU8::new(0),
            sms,
            recent_ids: Mutex::default(),
            tables: Mutex::default(),
            decode_partials: Mutex::default(),
            dq_counters: Mutex::default(),
            ordered_dq: AtomicBool::new(true),
            blas_workspace,
            lt: gemm_lt::Lt::new()?,
            pass: Mutex::default(),
            in_pass: AtomicBool::new(false),
            graphs: Mutex::default(),
        };
        cuda.set_math(Math::Bf16)?;
        // An escape hatch for any run (PPO, eval): decode steps launched one by one.
        match std::env::var(GRAPHS_ENV).as_deref() {
            Err(_) | Ok("1") => {}
            Ok("0") => cuda.set_graphs(false),
            Ok(other) => anyhow::bail!("{GRAPHS_ENV} must be 0 (decode steps launched kernel by kernel) or 1, not {other:?}"),
        }
        // Another, should a card break the dispatch order the fixed dQ order relies on.
        match std::env::var(ORDERED_DQ_ENV).as_deref() {
            Err(_) | Ok("1") => {}
            Ok("0") => cuda.set_ordered_dq(false),
            Ok(other) => anyhow::bail!("{ORDERED_DQ_ENV} must be 0 (dQ's shares added in any order) or 1, not {other:?}"),
        }
        Ok(cuda)
    }

    /// Chooses the arithmetic (`Math`); new backends start in `Math::Bf16`.
    pub fn set_math(&self, math: Math) -> Result<()> {
        use cudarc::cublas::sys::{cublasMath_t, cublasSetMathMode, cublasStatus_t};
        let mode = if math == Math::Tf32 { cublasMath_t::CUBLAS_TF32_TENSOR_OP_MATH } else { cublasMath_t::CUBLAS_DEFAULT_MATH };
        // SAFETY: the handle is live for as long as `self.blas`.
        let status = unsafe { cublasSetMathMode(*self.blas.handle(), mode) };
        anyhow::ensure!(status == cublasStatus_t::CUBLAS_STATUS_SUCCESS, "cublasSetMathMode: {status:?}");
        self.math.store(math as u8, Ordering::Relaxed);
        Ok(())
    }

    pub fn math(&self) -> Math {
        [Math::Exact, Math::Tf32, Math::Bf16][self.math.load(Ordering::Relaxed) as usize]
    }

    /// Flash attention on the tensor cores, in every mode but `Exact`.
    fn tensor_cores(&self) -> bool {
        self.math() != Math::Exact
    }

    /// The card's name, as the driver reports it.
    pub fn device_name(&self) -> String {
        self.stream.context().name().unwrap_or_else(|e| format!("unknown ({e})"))
    }

    pub(crate) fn kernel(&self, name: &str) -> &CudaFunction {
        self.kernels.get(name).unwrap_or_else(|| panic!("kernel {name} is not in the embedded PTX"))
    }

    /// `host` on the device: in a repeated step's arena (graph.rs), else
    /// uploaded unless one of the recent uploads holds it.
    pub(crate) fn ids(&self, host: &[u32]) -> DeviceIds {
        if let Some(addr) = self.arena_ids(host) {
            return DeviceIds { addr, _held: None };
        }
        let mut recent = self.recent_ids.lock().expect("id cache lock");
        let dev = match recent.iter().position(|(h, _)| h[..] == *host) {
            Some(i) => {
                let hit = recent.remove(i);
                let dev = hit.1.clone();
                recent.insert(0, hit);
                dev
            }
            None => {
                let dev = Arc::new(self.stream.clone_htod(host).expect("uploading ids"));
                recent.insert(0, (host.to_vec(), dev.clone()));
                recent.truncate(RECENT_IDS);
                dev
            }
        };
        DeviceIds { addr: self.ptr(&*dev), _held: Some(dev) }
    }

    /// Per-row lengths or offsets (`usize` on the host) as device `u32` ids.
    pub(crate) fn offsets(&self, host: &[usize]) -> DeviceIds {
        self.ids(&host.iter().map(|&x| x as u32).collect::<Vec<u32>>())
    }

    pub(crate) fn floats(&self, host: &[f32]) -> CudaSlice<f32> {
        self.stream.clone_htod(host).expect("uploading floats")
    }

    /// A buffer's device address, for kernel tables and optional (nullable) arguments.
    pub(crate) fn ptr<T>(&self, buf: &CudaSlice<T>) -> u64 {
        buf.device_ptr(&self.stream).0
    }

    /// A storage's device address, f32 or bf16.
    pub(crate) fn addr(&self, s: &Storage) -> u64 {
        match s {
            Storage::F32(d) => self.ptr(d),
            Storage::Bf16(d) => self.ptr(d),
        }
    }

    /// Room for the bf16 copy of an `n`-value output that matmuls read (norm,
    /// SwiGLU and token-major attention outputs and their gradients, logit
    /// gradients, updated weights), written by the kernel about to rewrite
    /// `buf`: the buffer's own previous copy when it fits and nothing else
    /// holds it (no allocator round trip per layer), else a new one; none
    /// unless matmuls run in bf16.
    fn output_copy(&self, buf: &mut CudaBuf, n: usize) -> Option<CudaSlice<half::bf16>> {
        if self.math() != Math::Bf16 {
            return None;
        }
        // SAFETY: the kernel given this buffer writes all n values.
        Some(buf.take_bf16(n).unwrap_or_else(|| unsafe { self.stream.alloc::<half::bf16>(n.max(1)) }.expect("allocating a bf16 copy")))
    }

    /// Output addresses for a kernel about to write `n` values of `buf` that
    /// matmuls read next: its bf16 copy (in bf16 math), and its f32 data
    /// unless `buf` is a matmul input, whose copy is all it needs; a buffer
    /// stored in bf16 (`Backend::zeros_projection`) is written in place. A
    /// kernel that also reads `buf` (`reads_output`) gets the f32 address
    /// either way and a flag saying whether to store there.
    fn produce(&self, buf: &mut CudaBuf, n: usize, reads_output: bool) -> Produced {
        if buf.is_bf16() {
            assert!(!reads_output, "a kernel that reads its output was given a bf16 buffer");
            return Produced { f32: 0, bf16: self.addr(buf.storage_mut()), copy: None, keep_f32: false };
        }
        let copy = self.output_copy(buf, n);
        let keep_f32 = copy.is_none() || !buf.is_matmul_input();
        let f32 = match (keep_f32, reads_output) {
            (true, _) => self.ptr(buf.write()),
            (false, true) => self.ptr(buf.data()),
            (false, false) => 0,
        };
        Produced { f32, bf16: copy.as_ref().map_or(0, |c| self.ptr(c)), copy, keep_f32 }
    }

    /// A buffer stored in bf16 in bf16 math (attention operands, KV caches,
    /// training projections). Exact mode is the tight comparison with the CPU,
    /// and the tf32 ablation keeps f32 operands: both store f32.
    fn zeros_bf16_in_bf16_math(&self, len: usize) -> CudaBuf {
        if self.math() != Math::Bf16 {
            return self.zeros(len);
        }
        CudaBuf::new_bf16(self.stream.alloc_zeros(len.max(1)).expect("allocating a bf16 buffer"))
    }

    /// Zeroed device memory for a kernel's own outputs and partials.
    pub(crate) fn scratch(&self, len: usize) -> CudaSlice<f32> {
        self.stream.alloc_zeros(len.max(1)).expect("allocating device memory")
    }

    pub(crate) fn fetch(&self, buf: &CudaSlice<f32>) -> Vec<f32> {
        self.stream.clone_dtoh(buf).expect("downloading device memory")
    }

    /// The first `n` values of a kernel's output (`scratch` allocates at least one).
    pub(crate) fn fetch_n(&self, buf: &CudaSlice<f32>, n: usize) -> Vec<f32> {
        let mut host = self.fetch(buf);
        host.truncate(n);
        host
    }

    fn fetch_bf16(&self, buf: &CudaSlice<half::bf16>) -> Vec<f32> {
        self.stream.clone_dtoh(buf).expect("downloading device memory").into_iter().map(f32::from).collect()
    }

    /// Runs loss kernel `stem` (loss.cu), which overwrites `n` logits with
    /// their gradient, through `launch(name, z, z16, keep_f32)`: on logits
    /// stored in bf16 (an LM-head chunk, `Backend::zeros_projection`) in
    /// place; on f32 logits writing the bf16 copy the head's backward matmuls
    /// read, and the f32 values unless the buffer is a matmul input.
    /// The launch also gets the bytes of the logits read and their gradient written.
    fn gradient_in_place(&self, stem: &str, logits: &mut CudaBuf, n: usize, launch: impl FnOnce(&str, u64, u64, i32, usize)) {
        if logits.is_bf16() {
            let z = self.addr(logits.storage_mut());
            return launch(&format!("{stem}_bf16"), z, 0, 1, 4 * n);
        }
        let o = self.produce(logits, n, true);
        // The kernel reads the f32 logits and stores there only when they are kept.
        let written = 4 * o.keep_f32 as usize + 2 * (o.bf16 != 0) as usize;
        launch(&format!("{stem}_f32"), o.f32, o.bf16, o.keep_f32 as i32, (4 + written) * n);
        o.done(logits);
    }

    /// `out[c] += Σ_b partial[b, c]`, the second pass of the column sums.
    fn add_column_partials(&self, out: &mut CudaSlice<f32>, partial: &CudaSlice<f32>, blocks: usize, cols: usize) {
        let (nb, c) = (blocks as i32, cols as i32);
        // 32 warps per 32 columns (COLUMN_WARPS in elementwise.cu, which asserts this block size).
        let cfg = LaunchConfig { grid_dim: (cols.div_ceil(32) as u32, 1, 1), block_dim: (1024, 1, 1), shared_mem_bytes: 0 };
        launch!(self, "column_partials_add_f32", cfg, work Work::bytes(4 * (blocks + 2) * cols); out, partial, &nb, &c);
    }

    /// The SwiGLU kernel `stem` for a gate/up projection `[rows, 2·ff]`
    /// stored in f32 or bf16 (`Backend::zeros_projection`), its address, its
    /// rows and ff in 32 bits, and the launch (a thread per four values of
    /// a row when ff is a multiple of 4, else per value).
    fn swiglu_input(&self, stem: &str, gate_up: &CudaBuf, outputs: usize, ff: usize) -> (String, u64, [i32; 2], LaunchConfig) {
        let n = gate_up.len();
        assert_eq!(n, 2 * outputs, "{stem}: a gate/up projection of {n} values for {outputs} outputs");
        assert!(ff > 0 && n.is_multiple_of(2 * ff), "{stem}: {n} values are not whole rows of 2 × {ff}");
        assert!(n < i32::MAX as usize, "{stem}: {n} values are too many for 32-bit indexing");
        let g = gate_up.storage();
        let name = if g.is_bf16() { format!("{stem}_bf16in_f32") } else { format!("{stem}_f32") };
        let threads = if ff.is_multiple_of(4) { outputs / 4 } else { outputs };
        (name, self.addr(g), [(n / (2 * ff)) as i32, ff as i32], per_element(threads))
    }

    /// RoPE tables and uploaded positions as raw addresses, and the
    /// positions' upload, which the caller keeps until it launches.
    fn rope_args(&self, rope: Rope<'_, CudaBuf>) -> ([u64; 3], DeviceIds) {
        let positions = self.ids(rope.positions);
        ([self.ptr(rope.cos.data()), self.ptr(rope.sin.data()), positions.addr], positions)
    }
}

impl Backend for Cuda {
    type Buf = CudaBuf;

    fn name(&self) -> &'static str {
        "cuda"
    }
    fn supports(&self, cfg: &ModelConfig) -> Result<()> {
        anyhow::ensure!(
            cfg.hidden_size.is_multiple_of(4),
            "its RMSNorm kernels move four values at a time; the model's hidden size {} is not a multiple of 4",
            cfg.hidden_size
        );
        attention::supports_head_dim(cfg.head_dim)
    }
    fn synchronize(&self) {
        self.stream.synchronize().expect("synchronizing the CUDA stream");
    }
    fn repeated(&self, step: &mut dyn FnMut() -> Result<()>) -> Result<()> {
        self.run_repeated(step)
    }
    fn logits_chunk_elems(&self) -> usize {
        // 512 MiB of bf16 logits: chunks of up to ~1,770 (vocab 152K) or ~5,300
        // (vocab 50K) rows keep the head's matmuls large, and few chunks mean
        // few passes of the weight-gradient matmul over the f32 head gradient
        // (545 MB at qwen2-0.5b, read and written once per chunk).
        256 << 20
    }
    fn zeros(&self, len: usize) -> CudaBuf {
        CudaBuf::new(self.scratch(len))
    }
    fn upload(&self, host: &[f32]) -> CudaBuf {
        if host.is_empty() {
            return self.zeros(0);
        }
        CudaBuf::new(self.floats(host))
    }
    fn zeros_matmul_input(&self, len: usize) -> CudaBuf {
        CudaBuf::new_matmul_input(self.scratch(len))
    }
    fn zeros_attention(&self, len: usize) -> CudaBuf {
        self.zeros_bf16_in_bf16_math(len)
    }
    fn zeros_projection(&self, len: usize) -> CudaBuf {
        self.zeros_bf16_in_bf16_math(len)
    }
    fn download(&self, buf: &CudaBuf) -> Vec<f32> {
        if let Some(copy) = buf.bf16_only() {
            return self.fetch_bf16(&copy);
        }
        match buf.storage() {
            Storage::F32(d) => self.fetch(d),
            Storage::Bf16(d) => self.fetch_bf16(d),
        }
    }
    fn len(&self, buf: &CudaBuf) -> usize {
        buf.len()
    }
    fn fill_zero(&self, buf: &mut CudaBuf) {
        match buf.storage_mut() {
            Storage::F32(d) => self.stream.memset_zeros(d),
            Storage::Bf16(d) => self.stream.memset_zeros(d),
        }
        .expect("memset");
    }
    fn copy_range(&self, dst: &mut CudaBuf, dst_off: usize, src: &CudaBuf, src_off: usize, len: usize) {
        if len == 0 {
            return;
        }
        let (to, from) = (dst_off..dst_off + len, src_off..src_off + len);
        match (dst.storage_mut(), src.storage()) {
            (Storage::F32(d), Storage::F32(s)) => self.stream.memcpy_dtod(&s.slice(from), &mut d.slice_mut(to)),
            (Storage::Bf16(d), Storage::Bf16(s)) => self.stream.memcpy_dtod(&s.slice(from), &mut d.slice_mut(to)),
            _ => panic!("copy_range between f32 and bf16 buffers"),
        }
        .expect("device copy");
    }
    fn sum_squares(&self, buf: &CudaBuf) -> f64 {
        let n = buf.len() as i64;
        let cfg = per_element(n as usize);
        let mut partial = self.scratch(cfg.grid_dim.0 as usize);
        launch!(self, "sum_squares_partial", cfg, work Work::bytes(4 * n as usize); &mut partial, buf.data(), &n);
        self.fetch(&partial).iter().map(|&x| x as f64).sum()
    }
    fn matmul(&self, c: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, mm: MatMul) {
        self.gemm(c.storage_mut(), a, b, mm);
    }
    fn matmul_residual(&self, d: &mut CudaBuf, a: &CudaBuf, b: &CudaBuf, residual: &CudaBuf, mm: MatMul) {
        self.gemm_residual(d, a, b, residual, mm);
    }
    fn bias_grad(&self, dbias: &mut CudaBuf, dy: &CudaBuf, rows: usize) {
        let cols = dbias.len();
        let blocks = rows.div_ceil(ROWS_PER_BLOCK);
        let mut partial = self.scratch(blocks * cols);
        let (r, c, rpb) = (rows as i64, cols as i32, ROWS_PER_BLOCK as i32);
        // A bf16 gradient (training's q/k/v projection) is summed in f32, as autocast does.
        let work = Work::bytes(dy.storage().value_bytes() * rows * cols + 4 * blocks * cols);
        let (name, dy) = match dy.storage() {
            Storage::F32(d) => ("bias_grad_partial_f32", self.ptr(d)),
            Storage::Bf16(d) => ("bias_grad_partial_bf16", self.ptr(d)),
        };
        launch!(self, name, per_row(blocks), work work; &mut partial, &dy, &r, &c, &rpb);
        self.add_column_partials(dbias.write(), &partial, blocks, cols);
    }
    fn embedding_fwd(&self, out: &mut CudaBuf, table: &CudaBuf, ids: &[u32], dim: usize) {
        let d_ids = self.ids(ids);
        let (rows, d) = (ids.len() as i64, dim as i32);
        let work = Work::bytes(ids.len() * (8 * dim + 4));
        launch!(self, "embedding_fwd_f32", per_element(ids.len() * dim), work work; out.write(), table.data(), &d_ids.addr, &rows, &d);
    }
    fn embedding_bwd(&self, dtable: &mut CudaBuf, dout: &CudaBuf, ids: &[u32], dim: usize) {
        // Rows grouped by token on the host, one block per token on the device.
        let vocab = dtable.len() / dim;
        let (starts, order) = rows_by_token(ids, vocab);
        let (d_order, d_starts, d) = (self.offsets(&order), self.offsets(&starts), dim as i32);
        // Each token's rows read and its table row read and written once; the order and starts.
        let work = || {
            let used = starts.windows(2).filter(|w| w[0] != w[1]).count();
            Work::bytes(ids.len() * (4 * dim + 4) + used * 8 * dim + 4 * starts.len())
        };
        launch!(self, "embedding_bwd_f32", per_row(vocab), work work(); dtable.write(), dout.data(), &d_order.addr, &d_starts.addr, &d);
    }
    fn rmsnorm_fwd(&self, out: &mut CudaBuf, rstd: &mut CudaBuf, x: &CudaBuf, w: &CudaBuf, dim: usize, eps: f32) {
        let d = dim as i32;
        let o = self.produce(out, x.len(), false);
        let rows = (x.len() / dim) as i64;
        let cfg = per_norm_rows(dim, rows);
        let work = Work::bytes(x.len() * (4 + o.value_bytes()) + 4 * (dim + rows as usize));
        launch!(self, "rmsnorm_fwd_f32", cfg, work work; &o.f32, rstd.write(), x.data(), w.data(), &rows, &d, &eps, &o.bf16);
        o.done(out);
    }
    fn rmsnorm_bwd(&self, dx: &mut CudaBuf, dw: &mut CudaBuf, dout: &CudaBuf, x: &CudaBuf, w: &CudaBuf, rstd: &CudaBuf, dim: usize) {
        let rows = x.len() / dim;
        let (r, d) = (rows as i64, dim as i32);
        // dx accumulates, so the kernel reads it: it stays in f32 too.
        assert!(!dx.is_matmul_input(), "rmsnorm_bwd accumulates into dx, which must not be a matmul-input buffer");
        let o = self.produce(dx, rows * dim, true);
        // The output gradient in f32, or bf16 (a training step's, written by a matmul).
        let dy = self.addr(dout.storage());
        let kernel = |stem: &str| if dout.is_bf16() { format!("{stem}_bf16in_f32") } else { format!("{stem}_f32") };
        // Per value: dy, x, and for dx its f32 read and its writes; w and rstd; the partials as counted below.
        let (dy_bytes, dx_bytes) = (dout.storage().value_bytes(), 4 + o.value_bytes());
        let values = rows * dim;
        let side = 4 * (dim + rows);
        let (x, w, rstd) = (x.data(), w.data(), rstd.data());
        let (blocks, partial) = if dim <= NORM_BWD_FUSED_DIM {
            // One kernel: dx and the weight gradient's partials from the same reads.
            let blocks = rows.div_ceil(NORM_ROWS as usize * NORM_BWD_ROWS_PER_WARP);
            let mut partial = self.scratch(blocks * dim);
            let rpw = NORM_BWD_ROWS_PER_WARP as i32;
            let work = Work::bytes(values * (dy_bytes + 4 + dx_bytes) + side + 4 * blocks * dim);
            launch!(self, &kernel("rmsnorm_bwd"), per_row(blocks), work work; &o.f32, &mut partial, &dy, x, w, rstd, &r, &d, &rpw, &o.bf16);
            (blocks, partial)
        } else {
            let work = Work::bytes(values * (dy_bytes + 4 + dx_bytes) + side);
            launch!(self, &kernel("rmsnorm_bwd_dx"), per_norm_rows(dim, r), work work; &o.f32, &dy, x, w, rstd, &r, &d, &o.bf16);
            let blocks = rows.div_ceil(ROWS_PER_BLOCK);
            let mut partial = self.scratch(blocks * dim);
            let rpb = ROWS_PER_BLOCK as i32;
            let work = Work::bytes(values * (dy_bytes + 4) + 4 * rows + 4 * blocks * dim);
            launch!(self, &kernel("rmsnorm_bwd_dw_partial"), per_row(blocks), work work; &mut partial, &dy, x, rstd, &r, &d, &rpb);
            (blocks, partial)
        };
        o.done(dx);
        self.add_column_partials(dw.write(), &partial, blocks, dim);
    }
    fn qkv_from_tokens(
        &self,
        q: &mut CudaBuf,
        k: &mut CudaBuf,
        v: &mut CudaBuf,
        qkv: &CudaBuf,
        bias: Option<&CudaBuf>,
        rope: Rope<'_, CudaBuf>,
        heads: QkvHeads,
        kv_at: HeadSlots<'_>,
    ) {
        let tokens = kv_at.slots.len();
        assert_eq!(qkv.len(), tokens * heads.width(), "qkv_from_tokens: a projection of {} values for {tokens} tokens", qkv.len());
        assert_eq!(q.len(), tokens * heads.q * heads.dim, "qkv_from_tokens: queries [tokens, heads, dim] hold {} values", q.len());
        for dst in [&*k, &*v] {
            check_slots(kv_at.slots, dst.len(), heads.kv * heads.dim, kv_at.cap);
        }
        assert_eq!(k.is_bf16(), v.is_bf16(), "qkv_from_tokens: keys and values stored differently");
        let kv_slots = self.ids(kv_at.slots);
        let bias = bias.map_or(0, |b| self.ptr(b.data()));
        let token_positions = rope.positions;
        let ([cos, sin, positions], _uploaded) = self.rope_args(rope);
        let (quads, [rows, _, _, hd, _]) = pair_args(1, tokens, heads.q + 2 * heads.kv, heads.dim, 0);
        let [hq, hkv, kv_cap] = [heads.q, heads.kv, kv_at.cap].map(|x| x as i32);
        let ty = |bf16: bool| if bf16 { "bf16" } else { "f32" };
        let name = format!("qkv_from_tokens_{}_{}_from_{}", ty(q.is_bf16()), ty(k.is_bf16()), ty(qkv.is_bf16()));
        // The projection (and bias) read, queries, keys and values written, the tables and slots.
        let [q_bytes, kv_bytes, src_bytes] = [&*q, &*k, qkv].map(|b| b.storage().value_bytes());
        let work = || {
            let moved = qkv.len() * src_bytes + tokens * heads.dim * (heads.q * q_bytes + 2 * heads.kv * kv_bytes);
            let bias_bytes = if bias == 0 { 0 } else { 4 * heads.width() };
            Work::bytes(moved + bias_bytes + rope_bytes(token_positions, heads.dim) + 4 * tokens)
        };
        let [qp, kp, vp] = [q, k, v].map(|b| self.addr(b.storage_mut()));
        let src = self.addr(qkv.storage());
        let cfg = per_element(quads);
        launch!(self, &name, cfg, work work(); &qp, &kp, &vp, &src, &bias, &cos, &sin, &positions, &rows, &hq, &hkv, &hd, &kv_cap, &kv_slots.addr);
    }
    fn attention_fwd(
        &self,
        out: &mut CudaBuf,
        lse: Option<&mut CudaBuf>,
        q: &CudaBuf,
        k: &CudaBuf,
        v: &CudaBuf,
        sh: AttnShape,
        kv_lens: &[usize],
    ) {
        // A single-query step's output feeds the output projection directly:
        // the decode kernels write its bf16 copy.
        let lse = lse.map(CudaBuf::write);
        if sh.q_len == 1 && !q.is_bf16() {
            let o = self.produce(out, q.len(), false);
            self.attention_forward(o.f32, o.bf16, lse, q.storage(), k.storage(), v.storage(), sh, kv_lens);
            o.done(out);
        } else {
            assert_eq!(out.is_bf16(), q.is_bf16(), "attention_fwd: the output must be stored like the queries");
            let o = self.addr(out.storage_mut());
            self.attention_forward(o, 0, lse, q.storage(), k.storage(), v.storage(), sh, kv_lens);
        }
    }
    fn attention_packed_fwd(&self, out: &mut CudaBuf, q: &CudaBuf, k: &CudaBuf, v: &CudaBuf, sh: AttnShape, seqs: &[SeqSpan]) {
        assert_eq!(out.is_bf16(), q.is_bf16(), "attention_packed_fwd: the output must be stored like the queries");
        assert_eq!(q.len(), sh.q_len * sh.q_heads * sh.head_dim, "attention_packed_fwd: queries must be [tokens, q_heads, head_dim]");
        let o = self.addr(out.storage_mut());
        self.attention_spans(o, 0, q.storage(), k.storage(), v.storage(), sh, seqs);
    }
    fn attention_bwd(
        &self,
        dqkv: &mut CudaBuf,
        dout: &CudaBuf,
        q: &CudaBuf,
        k: &CudaBuf,
        v: &CudaBuf,
        out: &CudaBuf,
        lse: &CudaBuf,
        sh: AttnShape,
        rope: Rope<'_, CudaBuf>,
    ) {
        let n = sh.batch * sh.q_len * (sh.q_heads + 2 * sh.kv_heads) * sh.head_dim;
        assert_eq!(dqkv.len(), n, "attention_bwd: the projection's gradient holds {} values, not {n}", dqkv.len());
        let positions = rope.positions;
        let (rope, _uploaded) = self.rope_args(rope);
        // Into a bf16-stored or matmul-input buffer only bf16 is written.
        let o = self.produce(dqkv, n, false);
        let dst = attention::ProjectionGrad { f32: o.f32, bf16: o.bf16, rope, positions };
        self.attention_backward(&dst, dout.storage(), q.storage(), k.storage(), v.storage(), out.storage(), lse.data(), sh);
        o.done(dqkv);
    }
    fn swiglu_fwd(&self, h: &mut CudaBuf, gate_up: &CudaBuf, ff: usize) {
        let (name, gu, [rows, f], cfg) = self.swiglu_input("swiglu_fwd", gate_up, h.len(), ff);
        let o = self.produce(h, h.len(), false);
        let work = Work::bytes(gate_up.len() * gate_up.storage().value_bytes() + h.len() * o.value_bytes());
        launch!(self, &name, cfg, work work; &o.f32, &gu, &rows, &f, &o.bf16);
        o.done(h);
    }
    fn swiglu_bwd(&self, dgate_up: &mut CudaBuf, dh: &CudaBuf, gate_up: &CudaBuf, ff: usize) {
        let (name, gu, [rows, f], cfg) = self.swiglu_input("swiglu_bwd", gate_up, dh.len(), ff);
        let (name, d) = match dh.storage() {
            Storage::F32(d) => (name, self.ptr(d)),
            Storage::Bf16(d) => {
                assert!(gate_up.is_bf16(), "swiglu_bwd: a bf16 output gradient with an f32 gate/up projection");
                ("swiglu_bwd_bf16".to_string(), self.ptr(d))
            }
        };
        let o = self.produce(dgate_up, gate_up.len(), false);
        let work = Work::bytes(gate_up.len() * (gate_up.storage().value_bytes() + o.value_bytes()) + dh.len() * dh.storage().value_bytes());
        launch!(self, &name, cfg, work work; &o.f32, &d, &gu, &rows, &f, &o.bf16);
        o.done(dgate_up);
    }
    fn cross_entropy_inplace(&self, logits: &mut CudaBuf, targets: &[u32], weights: &[f32], vocab: usize) -> f64 {
        let (t, w, v) = (self.ids(targets), self.floats(weights), vocab as i32);
        let mut loss = self.scratch(targets.len());
        self.gradient_in_place("cross_entropy", logits, targets.len() * vocab, |name, z, z16, keep, bytes| {
            // With the targets and weights read and the losses written.
            let work = Work::bytes(bytes + 12 * targets.len());
            launch!(self, name, per_row(targets.len()), work work; &z, &mut loss, &t.addr, &w, &v, &z16, &keep);
        });
        self.fetch(&loss).iter().map(|&x| x as f64).sum()
    }
    fn logprob_entropy(&self, logits: &CudaBuf, targets: &[u32], vocab: usize, inv_temp: f32) -> (Vec<f32>, Vec<f32>) {
        let (t, v) = (self.ids(targets), vocab as i32);
        let (mut lp, mut h) = (self.scratch(targets.len()), self.scratch(targets.len()));
        let z = logits.storage();
        let name = if z.is_bf16() { "logprob_entropy_bf16" } else { "logprob_entropy_f32" };
        let work = Work::bytes(targets.len() * (vocab * z.value_bytes() + 12));
        launch!(self, name, per_row(targets.len()), work work; &self.addr(z), &mut lp, &mut h, &t.addr, &v, &inv_temp);
        (self.fetch_n(&lp, targets.len()), self.fetch_n(&h, targets.len()))
    }
    fn logit_grad_inplace(&self, logits: &mut CudaBuf, targets: &[u32], c_logp: &[f32], c_ent: &[f32], vocab: usize, inv_temp: f32) {
        let (t, cl, ce, v) = (self.ids(targets), self.floats(c_logp), self.floats(c_ent), vocab as i32);
        self.gradient_in_place("logit_grad", logits, targets.len() * vocab, |name, z, z16, keep, bytes| {
            let work = Work::bytes(bytes + 12 * targets.len());
            launch!(self, name, per_row(targets.len()), work work; &z, &t.addr, &cl, &ce, &v, &inv_temp, &z16, &keep);
        });
    }
    fn sample(&self, logits: &CudaBuf, vocab: usize, cfg: &SamplingConfig, draws: &[Option<f32>]) -> Vec<Option<(u32, f32)>> {
        self.sample_rows(logits.data(), vocab, cfg, draws)
    }
    fn adamw(&self, param: &mut CudaBuf, grad: &CudaBuf, m: &mut CudaBuf, v: &mut CudaBuf, hp: AdamWStep) {
        let n = param.len() as i64;
        let bc1 = 1.0 - hp.beta1.powi(hp.step as i32);
        let bc2 = 1.0 - hp.beta2.powi(hp.step as i32);
        launch!(
            self,
            "adamw_f32",
            per_element(n as usize),
            work Work::bytes(28 * n as usize);
            param.write(),
            grad.data(),
            m.write(),
            v.write(),
            &n,
            &hp.lr,
            &hp.beta1,
            &hp.beta2,
            &hp.eps,
            &hp.weight_decay,
            &bc1,
            &bc2,
            &hp.grad_scale
        );
    }
    fn adamw_many(&self, tensors: Vec<AdamWTensor<'_, CudaBuf>>, hp: AdamWStep) {
        self.adamw_all(tensors, hp);
    }
    fn sum_squares_many(&self, bufs: &[&CudaBuf]) -> f64 {
        self.sum_squares_all(bufs)
    }
    fn ppo_rewards(&self, r: &PackedRewards<'_>, kl_coef: f32, mode: RewardMode) -> (Vec<f32>, Vec<f32>) {
        self.packed_rewards(r, kl_coef, mode)
    }
    fn ppo_gae(&self, rewards: &[f32], values: &[f32], starts: &[usize], gamma: f32, lambda: f32) -> (Vec<f32>, Vec<f32>) {
        self.packed_gae(rewards, values, starts, gamma, lambda)
    }
    fn ppo_policy_loss(&self, tokens: &[PolicyToken], eps: f32, mode: ClipMode) -> Vec<(f32, f32, bool)> {
        self.token_policy_loss(tokens, eps, mode)
    }
    fn ppo_value_loss(&self, v: &[f32], v_old: &[f32], ret: &[f32], eps: f32) -> Vec<(f32, f32)> {
        self.token_value_loss(v, v_old, ret, eps)
    }
}

#[cfg(test)]
mod tests {
    /// The launch shape must match the rows per block the kernels assume.
    #[test]
    fn norm_rows_match_the_kernels() {
        let src = include_str!("../../../kernels-ptx/norm.cu");
        assert!(src.contains(&format!("#define NORM_ROWS {}  ", super::NORM_ROWS)));
    }
}
