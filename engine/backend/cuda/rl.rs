//! GPU twins of the RL reductions in engine/rl/ (kernels-ptx/rl.cu), on
//! packed sequences: `starts[s]..starts[s+1]` are sequence `s`'s tokens.
//! Host slices in, host vectors out, like the CPU functions they mirror.

use super::profile::Work;
use super::{per_element, per_row, Cuda};
use crate::backend::PackedRewards;
use crate::rl::ppo_loss::{ClipMode, PolicyToken};
use crate::rl::reward::RewardMode;
use cudarc::driver::{LaunchConfig, PushKernelArg};

fn starts_i32(starts: &[usize]) -> Vec<i32> {
    starts.iter().map(|&s| s as i32).collect()
}

/// Per-token results of the policy loss.
pub struct PolicyLoss {
    pub loss: Vec<f32>,
    pub dlogp: Vec<f32>,
    pub clipped: Vec<bool>,
}

impl Cuda {
    fn starts(&self, starts: &[usize]) -> cudarc::driver::CudaSlice<i32> {
        self.stream.clone_htod(&starts_i32(starts)).expect("uploading sequence starts")
    }

    /// Per-sequence sums (the sequence-penalty reduction).
    pub fn rl_segment_sum(&self, values: &[f32], starts: &[usize]) -> Vec<f32> {
        let nseq = starts.len() - 1;
        let (v, st) = (self.floats(values), self.starts(starts));
        let mut out = self.scratch(nseq);
        let work = Work::bytes(4 * (values.len() + starts.len() + nseq));
        launch!(self, "rl_segment_sum", per_row(nseq), work work; &mut out, &v, &st);
        self.fetch_n(&out, nseq)
    }

    /// The instance and token reward streams (see `rl::reward::assemble`).
    #[allow(clippy::too_many_arguments)]
    pub fn rl_assemble(
        &self,
        kl: &[f32],
        bonus: &[f32],
        penalty: &[f32],
        instance: &[f32],
        token_total: &[f32],
        starts: &[usize],
        kl_coef: f32,
        tlr: bool,
    ) -> (Vec<f32>, Vec<f32>) {
        let n = kl.len();
        let nseq = starts.len() - 1;
        let (k, b, p, i, t, st) = (
            self.floats(kl),
            self.floats(bonus),
            self.floats(penalty),
            self.floats(instance),
            self.floats(token_total),
            self.starts(starts),
        );
        let (mut inst, mut tok) = (self.scratch(n), self.scratch(n));
        let (ns, mode) = (nseq as i32, i32::from(tlr));
        // Three per-token streams and two per-sequence ones in, two per-token streams out.
        let work = Work::bytes(4 * (5 * n + 3 * nseq + 1));
        launch!(self, "rl_assemble", per_row(nseq), work work; &mut inst, &mut tok, &k, &b, &p, &i, &t, &st, &ns, &kl_coef, &mode);
        (self.fetch_n(&inst, n), self.fetch_n(&tok, n))
    }

    /// GAE advantages and returns per sequence.
    pub fn rl_gae(&self, rewards: &[f32], values: &[f32], starts: &[usize], gamma: f32, lambda: f32) -> (Vec<f32>, Vec<f32>) {
        let n = rewards.len();
        let nseq = starts.len() - 1;
        let (r, v, st) = (self.floats(rewards), self.floats(values), self.starts(starts));
        let (mut adv, mut ret) = (self.scratch(n), self.scratch(n));
        let ns = nseq as i32;
        let cfg = LaunchConfig { grid_dim: (nseq.div_ceil(128) as u32, 1, 1), block_dim: (128, 1, 1), shared_mem_bytes: 0 };
        let work = Work::bytes(4 * (4 * n + starts.len()));
        launch!(self, "rl_gae", cfg, work work; &mut adv, &mut ret, &r, &v, &st, &ns, &gamma, &lambda);
        (self.fetch_n(&adv, n), self.fetch_n(&ret, n))
    }

    /// The clipped policy loss per token (see `rl::ppo_loss::policy_token`).
    #[allow(clippy::too_many_arguments)]
    pub fn rl_policy_loss(
        &self,
        logp: &[f32],
        logp_old: &[f32],
        adv: &[f32],
        adv_tok: &[f32],
        has_tok: &[bool],
        eps: f32,
        mode: ClipMode,
    ) -> PolicyLoss {
        let n = logp.len();
        let (code, param) = match mode {
            ClipMode::Standard => (0i32, 0.0f32),
            ClipMode::Dual { c } => (1, c),
            ClipMode::TokenAware { eps_tok } => (2, eps_tok),
            ClipMode::Decoupled { eps_tok } => (3, eps_tok),
        };
        let flags: Vec<u8> = has_tok.iter().map(|&h| u8::from(h)).collect();
        let (lp, lo, a, at) = (self.floats(logp), self.floats(logp_old), self.floats(adv), self.floats(adv_tok));
        let ht = self.stream.clone_htod(&flags).expect("uploading flags");
        let (mut loss, mut dlogp) = (self.scratch(n), self.scratch(n));
        let mut clipped = self.stream.alloc_zeros::<i32>(n.max(1)).expect("allocating");
        let len = n as i64;
        launch!(
            self,
            "rl_policy_loss",
            per_element(n),
            work Work::bytes(n * (4 * 4 + 1 + 3 * 4));
            &mut loss,
            &mut dlogp,
            &mut clipped,
            &lp,
            &lo,
            &a,
            &at,
            &ht,
            &len,
            &eps,
            &code,
            &param
        );
        let c: Vec<i32> = self.stream.clone_dtoh(&clipped).expect("downloading");
        PolicyLoss {
            loss: self.fetch_n(&loss, n),
            dlogp: self.fetch_n(&dlogp, n),
            clipped: c.into_iter().take(n).map(|x| x != 0).collect(),
        }
    }

    /// The clipped value loss per token: `(loss, ∂loss/∂v)`.
    pub fn rl_value_loss(&self, v: &[f32], v_old: &[f32], ret: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
        let n = v.len();
        let (dv_in, vo, r) = (self.floats(v), self.floats(v_old), self.floats(ret));
        let (mut loss, mut dv) = (self.scratch(n), self.scratch(n));
        let len = n as i64;
        launch!(self, "rl_value_loss", per_element(n), work Work::bytes(20 * n); &mut loss, &mut dv, &dv_in, &vo, &r, &len, &eps);
        (self.fetch_n(&loss, n), self.fetch_n(&dv, n))
    }

    // The Backend trait's PPO reductions, on the kernels above.

    pub(crate) fn packed_rewards(&self, r: &PackedRewards<'_>, kl_coef: f32, mode: RewardMode) -> (Vec<f32>, Vec<f32>) {
        if r.kl.is_empty() {
            return (vec![], vec![]);
        }
        // Instance mode folds each sequence's token rewards into its last token: their sum first.
        let per_token: Vec<f32> = r.secure_bonus.iter().zip(r.penalties).map(|(b, p)| b + p).collect();
        let token_total = self.rl_segment_sum(&per_token, r.starts);
        self.rl_assemble(r.kl, r.secure_bonus, r.penalties, r.instance, &token_total, r.starts, kl_coef, mode == RewardMode::Tlr)
    }

    pub(crate) fn packed_gae(&self, rewards: &[f32], values: &[f32], starts: &[usize], gamma: f32, lambda: f32) -> (Vec<f32>, Vec<f32>) {
        if rewards.is_empty() {
            return (vec![], vec![]);
        }
        self.rl_gae(rewards, values, starts, gamma, lambda)
    }

    pub(crate) fn token_policy_loss(&self, tokens: &[PolicyToken], eps: f32, mode: ClipMode) -> Vec<(f32, f32, bool)> {
        if tokens.is_empty() {
            return vec![];
        }
        let column = |f: fn(&PolicyToken) -> f32| tokens.iter().map(f).collect::<Vec<f32>>();
        let has: Vec<bool> = tokens.iter().map(|t| t.has_token_reward).collect();
        let out =
            self.rl_policy_loss(&column(|t| t.logp), &column(|t| t.logp_old), &column(|t| t.adv), &column(|t| t.adv_tok), &has, eps, mode);
        out.loss.into_iter().zip(out.dlogp).zip(out.clipped).map(|((l, d), c)| (l, d, c)).collect()
    }

    pub(crate) fn token_value_loss(&self, v: &[f32], v_old: &[f32], ret: &[f32], eps: f32) -> Vec<(f32, f32)> {
        if v.is_empty() {
            return vec![];
        }
        let (loss, grad) = self.rl_value_loss(v, v_old, ret, eps);
        loss.into_iter().zip(grad).collect()
    }
}
