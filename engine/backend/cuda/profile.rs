//! Per-kernel-family GPU time for `bench train --profile`: a pair of CUDA
//! events around every launch and cuBLAS call while profiling is on, summed
//! by family once the work is done, with the work each launch declared
//! (`Work`: bytes it must move, FLOPs it does) so the table can say how
//! close each family runs to the card's memory or tensor-core roofline;
//! and what the driver compiled for each kernel launched (registers,
//! spills, shared memory, resident blocks per SM), which the committed PTX
//! alone cannot tell. Off, it costs one uncontended lock.

use cudarc::driver::sys::{CUevent_flags, CUfunction_attribute};
use cudarc::driver::CudaEvent;
use std::collections::BTreeMap;
use std::sync::Mutex;

use super::Cuda;

struct Span {
    family: String,
    work: Work,
    start: CudaEvent,
    end: CudaEvent,
}

/// What one launch must move through device memory at least (each input
/// read once, each output written once: the compulsory traffic, so re-reads
/// the caches serve are not counted) and the FLOPs it does, as its caller
/// counts them from the shapes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Work {
    pub bytes: f64,
    pub flops: f64,
}

impl Work {
    /// A memory-bound launch's traffic.
    pub fn bytes(bytes: usize) -> Work {
        Work { bytes: bytes as f64, flops: 0.0 }
    }

    /// `D = op(A)·op(B) (+ C)` for `m × k` by `k × n`: A and B of
    /// `ab_bytes` per value, C (when `c_bytes` > 0, read) and D of
    /// `c_bytes` and `d_bytes` per value.
    pub fn gemm(m: usize, n: usize, k: usize, ab_bytes: usize, c_bytes: usize, d_bytes: usize) -> Work {
        let bytes = (m * k + k * n) * ab_bytes + m * n * (c_bytes + d_bytes);
        Work { bytes: bytes as f64, flops: 2.0 * (m * n * k) as f64 }
    }
}

#[derive(Default)]
struct Collected {
    spans: Vec<Span>,
    /// Each kernel launched, with its threads per block and dynamic shared memory.
    launched: BTreeMap<String, (u32, u32)>,
}

/// What profiling collects; `None` while it is off.
#[derive(Default)]
pub(crate) struct Recorder(Mutex<Option<Collected>>);

/// Records the end event of one launch when dropped.
pub(crate) struct Timed<'a> {
    cuda: &'a Cuda,
    family: String,
    work: Work,
    start: Option<CudaEvent>,
}

impl Timed<'_> {
    /// Records nothing: the call it timed failed, and its caller runs the work another way.
    pub(crate) fn cancel(mut self) {
        self.start = None;
    }
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        let (Some(start), end) = (self.start.take(), self.cuda.event()) else { return };
        let span = Span { family: std::mem::take(&mut self.family), work: self.work, start, end };
        if let Some(c) = self.cuda.profile.0.lock().expect("profile lock").as_mut() {
            c.spans.push(span);
        }
    }
}

/// Bytes written per value to an output given as its f32 and bf16
/// addresses, each 0 when that form is not kept.
pub(crate) fn output_bytes(f32: u64, bf16: u64) -> usize {
    4 * (f32 != 0) as usize + 2 * (bf16 != 0) as usize
}

/// Bytes of the RoPE tables a launch reads for `positions`: a cos and a sin
/// row of `head_dim / 2` f32 values per distinct position, and the positions.
pub fn rope_bytes(positions: &[u32], head_dim: usize) -> usize {
    let mut distinct = positions.to_vec();
    distinct.sort_unstable();
    distinct.dedup();
    distinct.len() * head_dim * 4 + positions.len() * 4
}

/// One row of the profile table: a family's calls, time, and the bytes and
/// FLOPs its calls declared.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FamilyTime {
    pub family: String,
    pub calls: usize,
    pub ms: f64,
    pub bytes: f64,
    pub flops: f64,
}

/// The card's peaks a profile's rates are held against.
#[derive(Debug, Clone, Copy)]
pub struct Peaks {
    pub bytes_per_s: f64,
    pub flops_per_s: f64,
}

impl FamilyTime {
    /// GB/s over the family's time.
    pub fn gb_per_s(&self) -> Option<f64> {
        (self.ms > 0.0).then(|| self.bytes / (self.ms * 1e-3) / 1e9)
    }

    /// TFLOP/s over the family's time, for families that do arithmetic on
    /// the tensor cores (matmuls, flash attention).
    pub fn tflop_per_s(&self) -> Option<f64> {
        (self.flops > 0.0 && self.ms > 0.0).then(|| self.flops / (self.ms * 1e-3) / 1e12)
    }

    /// The share of the family's time that its bytes at peak bandwidth, or
    /// its FLOPs at the peak tensor-core rate, whichever takes longer, would
    /// need: 1.0 runs at the roofline.
    pub fn roofline_share(&self, peaks: Peaks) -> Option<f64> {
        let bound_s = (self.bytes / peaks.bytes_per_s).max(self.flops / peaks.flops_per_s);
        (self.ms > 0.0).then(|| bound_s / (self.ms * 1e-3))
    }
}

/// What the driver made of one launched kernel.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelResources {
    pub kernel: String,
    pub threads: u32,
    pub dynamic_smem_bytes: u32,
    pub registers: i32,
    /// Local memory per thread: register spills (and local arrays).
    pub spill_bytes: i32,
    pub static_smem_bytes: i32,
    /// Blocks of `threads` that fit on one SM at once.
    pub blocks_per_sm: u32,
}

/// A profiled run: time per kernel family, slowest first, and the resources
/// of every kernel launched.
pub struct Profile {
    pub families: Vec<FamilyTime>,
    pub kernels: Vec<KernelResources>,
}

/// `attention_fwd_d64_f32` → `attention_fwd`, `qkv_from_tokens_bf16_bf16_from_bf16`
/// → `qkv_from_tokens`: a kernel's storage-type and head-dim instantiations
/// belong to one family (its name up to the first such part).
pub fn family_of(kernel: &str) -> &str {
    const INSTANCE: [&str; 7] = ["f32", "bf16", "bf16in", "bf16kv", "d32", "d64", "d128"];
    let mut end = kernel.len();
    for (i, _) in kernel.match_indices('_') {
        let part = kernel[i + 1..].split('_').next().unwrap_or("");
        if INSTANCE.contains(&part) {
            end = i;
            break;
        }
    }
    &kernel[..end]
}

impl Cuda {
    pub(super) fn event(&self) -> CudaEvent {
        self.stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).expect("recording a CUDA event")
    }

    /// A guard timing the work queued until it drops, when profiling is on;
    /// `launch`: a kernel of ours, launched with these threads per block and
    /// bytes of dynamic shared memory; `work`: what the call moves and
    /// computes (asked only while profiling: counting may walk host arrays).
    pub(crate) fn timed(&self, kernel: &str, launch: Option<(u32, u32)>, work: impl FnOnce() -> Work) -> Option<Timed<'_>> {
        let mut collected = self.profile.0.lock().expect("profile lock");
        let c = collected.as_mut()?;
        if let Some(l) = launch.filter(|_| !c.launched.contains_key(kernel)) {
            c.launched.insert(kernel.to_string(), l);
        }
        drop(collected);
        Some(Timed { cuda: self, family: family_of(kernel).to_string(), work: work(), start: Some(self.event()) })
    }

    /// Whether per-family times are being collected (repeated steps then run
    /// eagerly, launch by launch, graph.rs).
    pub(crate) fn profiling(&self) -> bool {
        self.profile.0.lock().expect("profile lock").is_some()
    }

    /// Starts (or restarts) collecting per-family times.
    pub fn start_profile(&self) {
        *self.profile.0.lock().expect("profile lock") = Some(Collected::default());
    }

    /// Stops collecting and returns what was collected.
    pub fn take_profile(&self) -> Profile {
        let c = self.profile.0.lock().expect("profile lock").take().unwrap_or_default();
        let spans = c.spans.into_iter().map(|s| {
            let ms = s.start.elapsed_ms(&s.end).expect("reading CUDA event times") as f64;
            (s.family, ms, s.work)
        });
        let rows = family_rows(spans);
        let kernels = c.launched.into_iter().map(|(kernel, (threads, dynamic))| self.resources(&kernel, threads, dynamic)).collect();
        Profile { families: rows, kernels }
    }

    /// What the driver compiled for `kernel`, and how many blocks of
    /// `threads` with `dynamic_smem` bytes fit on an SM.
    pub(crate) fn resources(&self, kernel: &str, threads: u32, dynamic_smem: u32) -> KernelResources {
        let f = self.kernel(kernel);
        let attr = |a| f.get_attribute(a).unwrap_or_else(|e| panic!("reading {kernel}'s attributes: {e}"));
        KernelResources {
            registers: attr(CUfunction_attribute::CU_FUNC_ATTRIBUTE_NUM_REGS),
            spill_bytes: attr(CUfunction_attribute::CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES),
            static_smem_bytes: attr(CUfunction_attribute::CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES),
            blocks_per_sm: f
                .occupancy_max_active_blocks_per_multiprocessor(threads, dynamic_smem as usize, None)
                .unwrap_or_else(|e| panic!("reading {kernel}'s occupancy: {e}")),
            kernel: kernel.to_string(),
            threads,
            dynamic_smem_bytes: dynamic_smem,
        }
    }
}

/// Sums timed calls `(family, ms, work)` by family, slowest family first.
pub fn family_rows(spans: impl IntoIterator<Item = (String, f64, Work)>) -> Vec<FamilyTime> {
    let mut by_family: BTreeMap<String, FamilyTime> = BTreeMap::new();
    for (family, ms, work) in spans {
        let row = by_family.entry(family.clone()).or_insert_with(|| FamilyTime { family, ..Default::default() });
        row.calls += 1;
        row.ms += ms;
        row.bytes += work.bytes;
        row.flops += work.flops;
    }
    let mut rows: Vec<FamilyTime> = by_family.into_values().collect();
    rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    rows
}

#[cfg(test)]
mod tests {
    use super::{family_of, family_rows, Peaks, Work};

    /// A family's rates count every call's work; the roofline share takes
    /// the slower of the two bounds.
    #[test]
    fn family_rows_sum_work_and_rates_follow() {
        let peaks = Peaks { bytes_per_s: 4e12, flops_per_s: 1e15 };
        let spans = [
            ("norm".to_string(), 1.0, Work::bytes(2_000_000_000)),
            ("gemm".to_string(), 4.0, Work::gemm(8192, 8192, 8192, 2, 0, 4)),
            ("norm".to_string(), 1.0, Work::bytes(2_000_000_000)),
        ];
        let rows = family_rows(spans);
        assert_eq!(rows.iter().map(|r| r.family.as_str()).collect::<Vec<_>>(), ["gemm", "norm"]);
        let (gemm, norm) = (&rows[0], &rows[1]);
        assert_eq!((norm.calls, norm.ms, norm.bytes), (2, 2.0, 4e9));
        assert_eq!(norm.gb_per_s(), Some(2000.0));
        assert_eq!(norm.tflop_per_s(), None, "a memory-bound family has no FLOP rate");
        assert_eq!(norm.roofline_share(peaks), Some(0.5));
        let flops = 2.0 * 8192f64.powi(3);
        assert_eq!(gemm.flops, flops);
        assert_eq!(gemm.bytes, (2 * 8192 * 8192 * 2 + 8192 * 8192 * 4) as f64);
        assert!((gemm.tflop_per_s().unwrap() - flops / 4e-3 / 1e12).abs() < 1e-9);
        assert!((gemm.roofline_share(peaks).unwrap() - flops / 1e15 / 4e-3).abs() < 1e-12, "compute-bound: the FLOP bound");
    }

    #[test]
    fn instantiations_share_a_family() {
        assert_eq!(family_of("attention_fwd_d64_f32"), "attention_fwd");
        assert_eq!(family_of("attention_bwd_dkdv_d128_bf16"), "attention_bwd_dkdv");
        assert_eq!(family_of("rmsnorm_bwd_dw_partial_f32"), "rmsnorm_bwd_dw_partial");
        assert_eq!(family_of("gemm"), "gemm");
        assert_eq!(family_of("qkv_from_tokens_bf16_bf16_from_bf16"), "qkv_from_tokens");
        assert_eq!(family_of("flash_fwd_bf16kv_d64_f32"), "flash_fwd");
        assert_eq!(family_of("swiglu_bwd_bf16in_f32"), "swiglu_bwd");
        assert_eq!(family_of("swiglu_bwd_bf16"), "swiglu_bwd");
        assert_eq!(family_of("rmsnorm_bwd_bf16in_f32"), "rmsnorm_bwd");
        assert_eq!(family_of("rmsnorm_bwd_dx_bf16in_f32"), "rmsnorm_bwd_dx");
        assert_eq!(family_of("tokens_from_qkv_bf16_to_f32"), "tokens_from_qkv");
    }
}
