//! Per-kernel-family GPU time for `bench train --profile`: a pair of CUDA
//! events around every launch and cuBLAS call while profiling is on, summed
//! by family once the work is done. Off, it costs one uncontended lock.

use cudarc::driver::{sys::CUevent_flags, CudaEvent};
use std::collections::BTreeMap;
use std::sync::Mutex;

use super::Cuda;

struct Span {
    family: String,
    start: CudaEvent,
    end: CudaEvent,
}

/// Collected spans; `None` while profiling is off.
#[derive(Default)]
pub(crate) struct Recorder(Mutex<Option<Vec<Span>>>);

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
        if let Some(spans) = self.cuda.profile.0.lock().expect("profile lock").as_mut() {
            spans.push(span);
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

/// `attention_fwd_d64_f32` → `attention_fwd`: the dtype and head-dim
/// instantiations of a kernel belong to one family.
pub fn family_of(kernel: &str) -> &str {
    let mut name = kernel;
    for suffix in ["_f32", "_bf16"] {
        name = name.strip_suffix(suffix).unwrap_or(name);
    }
    for suffix in ["_d32", "_d64", "_d128"] {
        name = name.strip_suffix(suffix).unwrap_or(name);
    }
    name
}

impl Cuda {
    fn event(&self) -> CudaEvent {
        self.stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).expect("recording a CUDA event")
    }

    /// A guard timing the work queued until it drops, when profiling is on.
    pub(crate) fn timed(&self, kernel: &str) -> Option<Timed<'_>> {
        if !self.profiling() {
            return None;
        }
        Some(Timed { cuda: self, family: family_of(kernel).to_string(), start: Some(self.event()) })
    }

    /// Whether per-family times are being collected (repeated steps then run
    /// eagerly, launch by launch, graph.rs).
    pub(crate) fn profiling(&self) -> bool {
        self.profile.0.lock().expect("profile lock").is_some()
    }

    /// Starts (or restarts) collecting per-family times.
    pub fn start_profile(&self) {
        *self.profile.0.lock().expect("profile lock") = Some(Vec::new());
    }

    /// Stops collecting and returns the families, slowest first.
    pub fn take_profile(&self) -> Vec<FamilyTime> {
        let spans = self.profile.0.lock().expect("profile lock").take().unwrap_or_default();
        let mut by_family: BTreeMap<String, (usize, f64)> = BTreeMap::new();
        for s in spans {
            let ms = s.start.elapsed_ms(&s.end).expect("reading CUDA event times") as f64;
            let e = by_family.entry(s.family).or_default();
            e.0 += 1;
            e.1 += ms;
        }
        let mut rows: Vec<FamilyTime> = by_family.into_iter().map(|(family, (calls, ms))| FamilyTime { family, calls, ms }).collect();
        rows.sort_by(|a, b| b.ms.total_cmp(&a.ms));
        rows
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
    }
}
