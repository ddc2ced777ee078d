//! Which cuBLASLt algorithm runs each product. cuBLASLt's heuristic ranks
//! its algorithms by a model of the card, and for a given shape its first
//! pick can trail the fastest (what PyTorch's TunableOp is for). So the
//! first product of each size class (a problem with its token count rounded
//! up to a power of two, so packed prompts of other lengths or an LM head's
//! shorter last chunk cost no new timing) times the heuristic's top
//! candidates (the fastest of three runs each, after a warm-up) and one is
//! kept for the backend's life, as tune.rs does for our own kernels (below:
//! which). Every problem asks
//! the heuristic for its own candidates once and runs the kept algorithm
//! when it is among them, else the heuristic's first.
//!
//! The timing runs are nobody's notes: they happen outside repeated steps'
//! passes or in record passes, which run eagerly, never while a graph is
//! captured or checked (graph.rs). A product that adds onto its output in
//! place (generation's output projections, later passes' weight gradients)
//! is timed on a scratch output, up to 64 MiB of it; past that it runs
//! the heuristic's pick until a product of its class writes its output (a
//! step's first pass writes its weight gradients).
//!
//! The heuristic's first pick stays unless another candidate beats it by
//! more than `MARGIN` (5 %), so the choice does not follow timing noise:
//! on one card the same algorithms run every time (bar a candidate within
//! noise of the margin), and where tuning does not clearly pay the products
//! give the bits cuBLASLt's own pick gives. Candidates may sum in other orders
//! (split K, a different reduction), so a kept algorithm other than the
//! first can change results at rounding level, as a new cuBLAS version can.

use super::gemm_lt::{AddC, LtCall, LtDescs};
use super::tune::Timing;
use super::Cuda;
use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys::{
    cublasLtMatmulAlgoGetHeuristic, cublasLtMatmulAlgo_t, cublasLtMatmulHeuristicResult_t, cublasLtMatmulPreferenceAttributes_t,
    cublasStatus_t,
};
use std::ffi::c_void;

/// Algorithms asked of the heuristic per problem.
const ASKED: usize = 8;

/// How much faster than the heuristic's first pick another candidate must
/// be to replace it: above timing noise (a percent or two for the fastest
/// of three runs), below what tuning is for.
const MARGIN: f64 = 0.05;

/// Timed runs per candidate, after a warm-up run: the fastest counts.
const TIMED_RUNS: usize = 3;

/// The largest output a product that adds in place is timed on a scratch
/// copy of: generation's output projections (a step's rows × hidden size),
/// not an LM head's weight gradient (vocabulary × hidden size), whose
/// scratch would add to a training step's peak memory.
const SCRATCH_MOST: usize = 64 << 20;

impl Cuda {
    /// The algorithm `call` runs with: the one its problem ran with before;
    /// else (pinned) the pinned candidate; else the candidate that is the
    /// algorithm kept for its size class (the heuristic's first when no
    /// candidate is); else, where timing may run, the one timing keeps now.
    pub(super) fn lt_algo(&self, call: &LtCall, descs: &LtDescs) -> Result<cublasLtMatmulAlgo_t, String> {
        let problem = call.problem();
        let none = || format!("no algorithm in {:?} math", call.math);
        let known = self.lt.algos.lock().expect("cuBLASLt algorithms lock").get(&problem).copied();
        if let Some(known) = known {
            return known.ok_or_else(none);
        }
        let candidates = self.lt_candidates(descs);
        if candidates.is_empty() {
            self.lt.algos.lock().expect("cuBLASLt algorithms lock").insert(problem, None);
            return Err(none());
        }
        let first = candidates[0];
        if let Some(i) = self.pinned() {
            // A pinned run keeps nothing: unpinned, the problem is chosen for as if new.
            return Ok(candidates[i.min(candidates.len() - 1)]);
        }
        let class = call.size_class();
        let timed = self.lt.timed.lock().expect("cuBLASLt algorithms lock").get(&class).copied();
        let chosen = match timed {
            Some(t) => candidates.into_iter().find(|&c| c == t).unwrap_or(first),
            // Not timed where a graph is captured or checked, nor on scratch
            // too large: the heuristic's pick, kept for nothing (timed later).
            None if !self.eager() || (call.add_c == AddC::InPlace && call.out_bytes() > SCRATCH_MOST) => return Ok(first),
            None if candidates.len() == 1 => first,
            None => {
                let kept = candidates[self.timed_choice(call, descs, &candidates)];
                self.lt.timed.lock().expect("cuBLASLt algorithms lock").insert(class, kept);
                kept
            }
        };
        self.lt.algos.lock().expect("cuBLASLt algorithms lock").insert(problem, Some(chosen));
        Ok(chosen)
    }

    /// The heuristic's best `ASKED` algorithms for `descs`, best first.
    fn lt_candidates(&self, descs: &LtDescs) -> Vec<cublasLtMatmulAlgo_t> {
        let pref = lt::create_matmul_pref().expect("cublasLtMatmulPreferenceCreate");
        let most = self.blas_workspace.len();
        let empty = cublasLtMatmulHeuristicResult_t {
            algo: cublasLtMatmulAlgo_t { data: [0; 8] },
            workspaceSize: 0,
            state: cublasStatus_t::CUBLAS_STATUS_SUCCESS,
            wavesCount: 0.0,
            reserved: [0; 4],
        };
        let mut found = vec![empty; ASKED];
        let mut count = 0i32;
        // SAFETY: every handle below is live; the attribute is a size_t passed by
        // address; `found` has room for the ASKED results asked for.
        let status = unsafe {
            let max = cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES;
            lt::set_matmul_pref_attribute(pref, max, &most as *const usize as *const c_void, size_of::<usize>())
                .expect("cublasLtMatmulPreferenceSetAttribute");
            let status = cublasLtMatmulAlgoGetHeuristic(
                self.lt.handle,
                descs.desc.0,
                descs.a.0,
                descs.b.0,
                descs.cd.0,
                descs.cd.0,
                pref,
                ASKED as i32,
                found.as_mut_ptr(),
                &mut count,
            );
            let _ = lt::destroy_matmul_pref(pref);
            status
        };
        if status != cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            return Vec::new();
        }
        found.truncate(count.clamp(0, ASKED as i32) as usize);
        found.into_iter().filter(|h| h.state == cublasStatus_t::CUBLAS_STATUS_SUCCESS).map(|h| h.algo).collect()
    }

    /// Times each candidate on `call` and returns the index of the one to
    /// keep: the heuristic's first (index 0), unless another is more than
    /// `MARGIN` faster; each timing goes to `tunings`. A product that adds
    /// onto D in place is timed on scratch, so D gets its sum once, from
    /// the call itself.
    fn timed_choice(&self, call: &LtCall, descs: &LtDescs, candidates: &[cublasLtMatmulAlgo_t]) -> usize {
        let scratch = (call.add_c == AddC::InPlace)
            .then(|| self.stream.alloc_zeros::<u8>(call.out_bytes()).expect("allocating a matmul timing run's output"));
        let (c, d) = match &scratch {
            Some(s) => (self.ptr(s), self.ptr(s)),
            None => (call.c, call.d),
        };
        // A candidate whose warm-up run fails is left out.
        let timed: Vec<(usize, f64)> = candidates
            .iter()
            .enumerate()
            .filter_map(|(i, algo)| {
                self.lt_run(call, descs, algo, c, d).ok()?;
                let ms = (0..TIMED_RUNS).map(|_| self.time_warm_run(|| drop(self.lt_run(call, descs, algo, c, d))));
                Some((i, ms.fold(f64::INFINITY, f64::min)))
            })
            .collect();
        let fastest = timed.iter().min_by(|a, b| a.1.total_cmp(&b.1)).copied();
        let kept = match (timed.first().filter(|t| t.0 == 0), fastest) {
            (Some(first), Some(fast)) if fast.1 * (1.0 + MARGIN) >= first.1 => 0,
            (_, fast) => fast.map_or(0, |f| f.0),
        };
        let mm = call.mm;
        let ops = format!("{}{}", if mm.trans_a { "T" } else { "N" }, if mm.trans_b { "T" } else { "N" });
        let out = if call.out_bf16 { " bf16-out" } else { "" };
        let add = if call.add_c == AddC::Apart { " onto-residual" } else { "" };
        let kernel = format!("gemm {}x{}x{} {ops}{out}{add}", mm.m, mm.n, mm.k);
        self.tunings.lock().expect("tuning lock").extend(timed.into_iter().map(|(i, ms)| Timing {
            kernel: kernel.clone(),
            ms,
            chosen: i == kept,
            resources: None,
            candidate: Some(i),
        }));
        kept
    }
}
