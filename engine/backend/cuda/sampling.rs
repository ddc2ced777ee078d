//! Token sampling on the device (kernels-ptx/sampling.cu): one block per
//! row, so a decode step downloads each row's token and logprob instead of
//! its logits.

use super::profile::Work;
use super::Cuda;
use crate::generate::SamplingConfig;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};

/// Threads per row; must match SAMPLE_THREADS in sampling.cu.
const SAMPLE_THREADS: u32 = 1024;

impl Cuda {
    pub(crate) fn sample_rows(
        &self,
        logits: &CudaSlice<f32>,
        vocab: usize,
        cfg: &SamplingConfig,
        draws: &[Option<f32>],
    ) -> Vec<Option<(u32, f32)>> {
        let rows = draws.len();
        if rows == 0 {
            return vec![];
        }
        assert!(logits.len() >= rows * vocab, "sample: {rows} rows of {vocab} logits, buffer holds {}", logits.len());
        let d = self.floats(&draws.iter().map(|u| u.unwrap_or(f32::NAN)).collect::<Vec<f32>>());
        // At temperature 1 (and greedy) the kernel reads the logits in place.
        let scaled_len = if cfg.temperature > 0.0 && cfg.temperature != 1.0 { rows * vocab } else { 1 };
        // SAFETY: the kernel writes every scaled logit before reading it, and
        // a token for every sampled row; skipped rows' outputs are not read.
        let (scaled, tokens) = unsafe { (self.stream.alloc::<f32>(scaled_len), self.stream.alloc::<u32>(rows)) };
        let (mut scaled, mut tokens) = (scaled.expect("allocating sampling scratch"), tokens.expect("allocating sampled tokens"));
        let mut logprobs = self.scratch(rows);
        let (v, t, k, p) = (vocab as i32, cfg.temperature, cfg.top_k.min(vocab) as i32, cfg.top_p);
        let grid = LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (SAMPLE_THREADS, 1, 1), shared_mem_bytes: 0 };
        // Each row's logits read once (and its scaled copy written, when made), the draws in, tokens and logprobs out.
        let work = Work::bytes(4 * rows * vocab + 4 * scaled_len * (scaled_len > 1) as usize + 12 * rows);
        launch!(self, "sample_rows_f32", grid, work work; logits, &mut scaled, &d, &mut tokens, &mut logprobs, &v, &t, &k, &p);
        let tokens = self.stream.clone_dtoh(&tokens).expect("downloading sampled tokens");
        let logprobs = self.stream.clone_dtoh(&logprobs).expect("downloading sampled logprobs");
        draws.iter().enumerate().map(|(r, u)| u.map(|_| (tokens[r], logprobs[r]))).collect()
    }
}
