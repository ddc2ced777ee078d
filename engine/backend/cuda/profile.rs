//! Per-kernel-family GPU time for `bench train --profile`: a pair of CUDA
//! events around every launch and cuBLAS call while profiling is on, summed
//! by family once the work is done; and what the driver compiled for each
//! kernel launched (registers, spills, shared memory, resident blocks per
//! SM), which the committed PTX alone cannot tell. Off, it costs one
//! uncontended lock.

use cudarc::driver::sys::{CUevent_flags, CUfunction_attribute};
use cudarc::driver::CudaEvent;
use std::collections::BTreeMap;
use std::sync::Mutex;

use super::Cuda;

struct Span {
    family: String,
    start: CudaEvent,
    end: CudaEvent,
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
    start: Option<CudaEvent>,
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        let (Some(start), end) = (self.start.take(), self.cuda.event()) else { return };
        let span = Span { family: std::mem::take(&mut self.family), start, end };
        if let Some(c) = self.cuda.profile.0.lock().expect("profile lock").as_mut() {
            c.spans.push(span);
        }
    }
}

/// One row of the profile table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FamilyTime {
    pub family: String,
    pub calls: usize,
    pub ms: f64,
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
    /// bytes of dynamic shared memory.
    pub(crate) fn timed(&self, kernel: &str, launch: Option<(u32, u32)>) -> Option<Timed<'_>> {
        let mut collected = self.profile.0.lock().expect("profile lock");
        let c = collected.as_mut()?;
        if let Some(l) = launch.filter(|_| !c.launched.contains_key(kernel)) {
            c.launched.insert(kernel.to_string(), l);
        }
        drop(collected);
        Some(Timed { cuda: self, family: family_of(kernel).to_string(), start: Some(self.event()) })
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
        let mut by_family: BTreeMap<String, (usize, f64)> = BTreeMap::new();
        for s in c.spans {
            let ms = s.start.elapsed_ms(&s.end).expect("reading CUDA event times") as f64;
            let e = by_family.entry(s.family).or_default();
            e.0 += 1;
            e.1 += ms;
        }
        let mut rows: Vec<FamilyTime> = by_family.into_iter().map(|(family, (calls, ms))| FamilyTime { family, calls, ms }).collect();
        rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
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

#[cfg(test)]
mod tests {
    use super::family_of;

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
