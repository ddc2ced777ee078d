//! Which cuBLASLt algorithm runs each product. cuBLASLt's heuristic ranks
//! its algorithms by a model of the card, and for a given shape its first
//! pick can trail the fastest (what PyTorch's TunableOp is for). So the
//! first product of each size class (a problem with each size rounded up to
//! a power of two, so packed prompts of other lengths or an LM head's
//! shorter last chunk cost no new timing) times the heuristic's top
//! candidates, the second of two runs each, and the fastest is kept for the
//! backend's life, as tune.rs does for our own kernels. Every problem asks
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
//! Candidates that split K are left out: their partial sums add in another
//! order, so the kept algorithm, whichever wins on a given run, sums as the
//! others do. The GPU test `gemm_algorithms_agree_bit_for_bit_and_tuning_keeps_one`
//! holds the card's candidates to that.

use super::gemm_lt::{AddC, LtCall, LtDescs};
use super::tune::Timing;
use super::Cuda;
use cudarc::cublaslt::result as lt;
use cudarc::cublaslt::sys::{
    cublasLtMatmulAlgoConfigAttributes_t, cublasLtMatmulAlgoConfigGetAttribute, cublasLtMatmulAlgoGetHeuristic, cublasLtMatmulAlgo_t,
    cublasLtMatmulHeuristicResult_t, cublasLtMatmulPreferenceAttributes_t, cublasStatus_t,
};
use std::ffi::c_void;

/// Algorithms asked of the heuristic per problem.
const ASKED: usize = 8;

/// The largest output a product that adds in place is timed on a scratch
/// copy of: generation's output projections (a step's rows × hidden size),
/// not an LM head's weight gradient (vocabulary × hidden size), whose
/// scratch would add to a training step's peak memory.
const SCRATCH_MOST: usize = 64 << 20;

impl Cuda {
    /// The algorithm `call` runs with: the one its problem ran with before;
    /// else (pinned) the pinned candidate; else the candidate that is the
    /// algorithm timed fastest for its size class (the heuristic's first
    /// when no candidate is); else, where timing may run, the fastest now.
    pub(super) fn lt_algo(&self, call: &LtCall, descs: &LtDescs) -> Result<cublasLtMatmulAlgo_t, String> {
        let problem = call.problem();
        let known = self.lt.algos.lock().expect("cuBLASLt algorithms lock").get(&problem).copied();
        if let Some(known) = known {
            return known.ok_or_else(|| format!("no algorithm in {:?} math", call.math));
        }
        let candidates = self.lt_candidates(descs);
        if candidates.is_empty() {
            self.lt.algos.lock().expect("cuBLASLt algorithms lock").insert(problem, None);
            return Err(format!("no algorithm in {:?} math", call.math));
        }
        let first = candidates[0].1;
        if let Some(i) = self.pinned() {
            // A pinned run keeps nothing: unpinned, the problem is chosen for as if new.
            return Ok(candidates[i.min(candidates.len() - 1)].1);
        }
        let class = call.size_class();
        let timed = self.lt.timed.lock().expect("cuBLASLt algorithms lock").get(&class).copied();
        let chosen = match timed {
            Some(t) => candidates.iter().find(|c| c.1 == t).map_or(first, |c| c.1),
            // Not timed where a graph is captured or checked, nor on scratch
            // too large: the heuristic's pick, kept for nothing (timed later).
            None if !self.eager() || (call.add_c == AddC::InPlace && call.out_bytes() > SCRATCH_MOST) => return Ok(first),
            None if candidates.len() == 1 => first,
            None => {
                let fastest = candidates[self.fastest_candidate(call, descs, &candidates)].1;
                self.lt.timed.lock().expect("cuBLASLt algorithms lock").insert(class, fastest);
                fastest
            }
        };
        self.lt.algos.lock().expect("cuBLASLt algorithms lock").insert(problem, Some(chosen));
        Ok(chosen)
    }

    /// The heuristic's best `ASKED` algorithms for `descs`, each with its
    /// rank there (0 the best), less those that split K.
    fn lt_candidates(&self, descs: &LtDescs) -> Vec<(usize, cublasLtMatmulAlgo_t)> {
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
        let usable = |h: &cublasLtMatmulHeuristicResult_t| h.state == cublasStatus_t::CUBLAS_STATUS_SUCCESS && split_k(&h.algo) <= 1;
        found.into_iter().enumerate().filter(|(_, h)| usable(h)).map(|(rank, h)| (rank, h.algo)).collect()
    }

    /// Times each candidate on `call` (the second of two runs) and returns
    /// the fastest one's index; each timing goes to `tunings`. A product
    /// that adds onto D in place is timed on scratch, so D gets its sum
    /// once, from the call itself.
    fn fastest_candidate(&self, call: &LtCall, descs: &LtDescs, candidates: &[(usize, cublasLtMatmulAlgo_t)]) -> usize {
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
            .filter_map(|(i, (_, algo))| {
                self.lt_run(call, descs, algo, c, d).ok()?;
                Some((i, self.time_second_run(|| drop(self.lt_run(call, descs, algo, c, d)))))
            })
            .collect();
        let best = timed.iter().min_by(|a, b| a.1.total_cmp(&b.1)).map_or(0, |t| t.0);
        let mm = call.mm;
        let ops = format!("{}{}", if mm.trans_a { "T" } else { "N" }, if mm.trans_b { "T" } else { "N" });
        let out = if call.out_bf16 { " bf16-out" } else { "" };
        let add = if call.add_c == AddC::Apart { " onto-residual" } else { "" };
        self.tunings.lock().expect("tuning lock").extend(timed.into_iter().map(|(i, ms)| Timing {
            kernel: format!("gemm {}x{}x{} {ops}{out}{add} heuristic #{}", mm.m, mm.n, mm.k, candidates[i].0),
            ms,
            chosen: i == best,
            resources: None,
        }));
        best
    }
}

/// How many parts an algorithm splits K into (1: none).
fn split_k(algo: &cublasLtMatmulAlgo_t) -> u32 {
    let mut parts = 1u32;
    let mut written = 0usize;
    let attr = cublasLtMatmulAlgoConfigAttributes_t::CUBLASLT_ALGO_CONFIG_SPLITK_NUM;
    // SAFETY: the attribute is a uint32_t, read into one by address with its size.
    let status =
        unsafe { cublasLtMatmulAlgoConfigGetAttribute(algo, attr, &mut parts as *mut u32 as *mut c_void, size_of::<u32>(), &mut written) };
    if status == cublasStatus_t::CUBLAS_STATUS_SUCCESS {
        parts
    } else {
        u32::MAX
    }
}
