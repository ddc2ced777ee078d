//! Kernels compiled in several variants of the same arithmetic in the same
//! order (other register budgets or tile shapes, so bit-identical results)
//! run the variant that is fastest on this card: the first launch of each
//! shape times every variant (its second run, after a warm-up) with CUDA
//! events and keeps the winner for the backend's life. A variant no block
//! of which fits on this card's SMs (the driver's occupancy is 0: its JIT
//! may take more registers than ptxas did) is left out, with a note, rather
//! than failing the run at its launch.

use super::profile::KernelResources;
use super::Cuda;
use cudarc::driver::LaunchConfig;
use std::collections::HashMap;
use std::sync::Mutex;

/// The chosen variant per (kernel, launch shape), and a variant every
/// tuned launch takes instead when one is pinned.
#[derive(Default)]
pub(crate) struct Choices {
    chosen: Mutex<HashMap<(String, Vec<usize>), usize>>,
    pinned: Mutex<Option<usize>>,
}

/// A variant's time in one tuning run: a kernel variant (`kernel` is its
/// name) with what the driver compiled for it, or a cuBLASLt algorithm
/// (`kernel` names the product, "gemm MxNxK OPS…", and `candidate` is the
/// algorithm's rank in the heuristic's list, 0 its first pick: gemm_tune.rs).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Timing {
    pub kernel: String,
    pub ms: f64,
    pub chosen: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<KernelResources>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate: Option<usize>,
}

impl Cuda {
    /// Runs `launch(kernel + suffix, config(kernel + suffix))` with the
    /// fastest of `suffixes` for `shape`, timing each first when this shape
    /// is new (outside a repeated step's pass, whose launches must not
    /// change: graph.rs). The chosen variant runs last, so its outputs are
    /// the ones left.
    pub(crate) fn launch_tuned(
        &self,
        kernel: &str,
        suffixes: &[&str],
        shape: &[usize],
        config: impl Fn(&str) -> LaunchConfig,
        launch: impl Fn(&str, LaunchConfig),
    ) {
        let key = (kernel.to_string(), shape.to_vec());
        let name = |i: usize| format!("{kernel}{}", suffixes[i]);
        let run = |i: usize| {
            let n = name(i);
            launch(&n, config(&n))
        };
        if let Some(i) = self.pinned() {
            return run(i.min(suffixes.len() - 1));
        }
        let known = self.choices.chosen.lock().expect("tuning lock").get(&key).copied();
        if let Some(i) = known {
            return run(i);
        }
        if suffixes.len() == 1 || self.in_pass() {
            return run(0);
        }
        let resources = |i: usize| {
            let kernel = name(i);
            let cfg = config(&kernel);
            self.resources(&kernel, cfg.block_dim.0, cfg.shared_mem_bytes)
        };
        let (fit, unfit): (Vec<_>, Vec<_>) = (0..suffixes.len()).map(|i| (i, resources(i))).partition(|(_, r)| r.blocks_per_sm > 0);
        for (_, r) in &unfit {
            eprintln!(
                "note: {} does not fit on an SM here ({} registers × {} threads, {} + {} bytes of shared memory); tuning leaves it out",
                r.kernel, r.registers, r.threads, r.static_smem_bytes, r.dynamic_smem_bytes
            );
        }
        assert!(!fit.is_empty(), "no variant of {kernel} fits on this card's SMs: {unfit:?}");
        let timed: Vec<(usize, f64, KernelResources)> = fit
            .into_iter()
            .map(|(i, r)| {
                run(i);
                (i, self.time_warm_run(|| run(i)), r)
            })
            .collect();
        let (best, _, _) = *timed.iter().min_by(|a, b| a.1.total_cmp(&b.1)).expect("at least one variant");
        self.choices.chosen.lock().expect("tuning lock").insert(key, best);
        let last = timed.last().expect("at least one variant").0;
        self.tunings.lock().expect("tuning lock").extend(timed.into_iter().map(|(i, ms, resources)| Timing {
            kernel: name(i),
            ms,
            chosen: i == best,
            resources: Some(resources),
            candidate: None,
        }));
        if best != last {
            run(best);
        }
    }

    /// Milliseconds `run` takes on the stream, timed with CUDA events. The
    /// caller has run it once before (a first run may load the function and
    /// finds cold caches).
    pub(crate) fn time_warm_run(&self, run: impl FnOnce()) -> f64 {
        let start = self.event();
        run();
        let end = self.event();
        end.synchronize().expect("waiting for a tuning run");
        start.elapsed_ms(&end).expect("reading a tuning run's time") as f64
    }

    /// The variant every tuned launch takes while one is pinned.
    pub(crate) fn pinned(&self) -> Option<usize> {
        *self.choices.pinned.lock().expect("tuning lock")
    }

    /// Makes every tuned launch take variant `i` (the last, if a kernel has
    /// fewer), or, with `None`, the timed choice again: for comparing the
    /// variants, and for profiles that must not depend on timing.
    pub fn pin_variant(&self, i: Option<usize>) {
        *self.choices.pinned.lock().expect("tuning lock") = i;
    }

    /// Every tuning run so far: each variant's time and which was kept.
    pub fn tunings(&self) -> Vec<Timing> {
        self.tunings.lock().expect("tuning lock").clone()
    }
}
