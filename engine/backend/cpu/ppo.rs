//! PPO's reductions on the CPU: engine/rl/'s functions, one sequence or token
//! at a time, over the packed layout of `PackedRewards`.

use crate::backend::PackedRewards;
use crate::rl::gae::gae;
use crate::rl::ppo_loss::{policy_token, value_token, ClipMode, PolicyToken};
use crate::rl::reward::{assemble, RewardMode, SampleReward};

fn spans(starts: &[usize]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    starts.windows(2).map(|w| w[0]..w[1])
}

pub fn rewards(r: &PackedRewards<'_>, kl_coef: f32, mode: RewardMode) -> (Vec<f32>, Vec<f32>) {
    let (mut inst, mut tok) = (Vec::with_capacity(r.kl.len()), Vec::with_capacity(r.kl.len()));
    for (s, span) in spans(r.starts).enumerate() {
        let sample = SampleReward {
            instance: r.instance[s],
            secure_bonus: r.secure_bonus[span.clone()].to_vec(),
            penalties: r.penalties[span.clone()].to_vec(),
            high_medium: 0,
        };
        let (i, t) = assemble(&sample, &r.kl[span], kl_coef, mode);
        inst.extend(i);
        tok.extend(t);
    }
    (inst, tok)
}

pub fn gae_packed(rewards: &[f32], values: &[f32], starts: &[usize], gamma: f32, lambda: f32) -> (Vec<f32>, Vec<f32>) {
    let (mut adv, mut ret) = (Vec::with_capacity(rewards.len()), Vec::with_capacity(rewards.len()));
    for span in spans(starts) {
        let (a, r) = gae(&rewards[span.clone()], &values[span], gamma, lambda);
        adv.extend(a);
        ret.extend(r);
    }
    (adv, ret)
}

pub fn policy_loss(tokens: &[PolicyToken], eps: f32, mode: ClipMode) -> Vec<(f32, f32, bool)> {
    tokens.iter().map(|&t| policy_token(t, eps, mode)).collect()
}

pub fn value_loss(v: &[f32], v_old: &[f32], ret: &[f32], eps: f32) -> Vec<(f32, f32)> {
    v.iter().zip(v_old).zip(ret).map(|((&v, &vo), &r)| value_token(v, vo, r, eps)).collect()
}
