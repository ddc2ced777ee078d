//! One iteration's rollouts scored per token: the old policy's and the
//! reference's logprobs and the critic's values from forward passes, then
//! per-token KL, the rewards and GAE advantages, all packed (rollout `i`'s
//! tokens at `starts[i]..starts[i + 1]`).

use super::batch::{row_of, to_batch};
use super::rollout::Rollout;
use super::PpoOptions;
use crate::backend::{Backend, PackedRewards};
use crate::model::{TrainState, Transformer};
use crate::rl::critic::Critic;
use crate::rl::gae::whiten;
use crate::trace;
use anyhow::Result;

pub(super) struct Advantages {
    pub starts: Vec<usize>,
    pub logp_old: Vec<f32>,
    pub values: Vec<f32>,
    /// Whitened advantage of the total reward.
    pub adv: Vec<f32>,
    /// Advantage of the token-level reward alone, scaled as `adv` was.
    pub adv_tok: Vec<f32>,
    pub returns: Vec<f32>,
    /// Sums over the rollouts, for the metrics.
    pub kl_sum: f64,
    pub instance_sum: f64,
    pub bonus_sum: f64,
    pub penalty_sum: f64,
}

pub(super) struct Models<'a, B: Backend> {
    pub policy: &'a Transformer<B>,
    pub reference: &'a Transformer<B>,
    pub critic: &'a mut Critic<B>,
}

pub(super) fn advantages<B: Backend>(
    be: &B,
    m: Models<'_, B>,
    rollouts: &[Rollout],
    pad: u32,
    kl_coef: f32,
    o: &PpoOptions,
) -> Result<Advantages> {
    let all: Vec<&Rollout> = rollouts.iter().collect();
    let full = to_batch(&all, pad);
    // Forward passes only: nothing need be kept per layer for a backward.
    let mut st = TrainState::recomputing(be, &m.policy.cfg, full.batch, full.seq);
    let scoring = trace::range("scoring");
    let (old_logp, _) = m.policy.score_batch(be, &full, &mut st, o.temperature)?;
    let (ref_logp, _) = m.reference.score_batch(be, &full, &mut st, o.temperature)?;
    let values_all = m.critic.values(be, &full)?;
    drop(scoring);

    let mut starts = vec![0usize];
    let (mut logp_old, mut kls, mut values, mut bonus, mut pens, mut instance) = (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut kl_sum, mut instance_sum, mut bonus_sum, mut penalty_sum) = (0f64, 0f64, 0f64, 0f64);
    for (i, r) in rollouts.iter().enumerate() {
        let rows: Vec<usize> = (0..r.tokens.len()).map(|j| row_of(full.seq, r, i, j)).collect();
        let seq_kls: Vec<f32> = rows.iter().map(|&row| o.kl_estimator.estimate(old_logp[row], ref_logp[row])).collect();
        kl_sum += seq_kls.iter().map(|&k| k as f64).sum::<f64>();
        instance_sum += r.reward.instance as f64;
        bonus_sum += r.reward.secure_bonus.iter().sum::<f32>() as f64;
        penalty_sum += r.reward.penalties.iter().sum::<f32>() as f64;
        kls.extend(seq_kls);
        logp_old.extend(rows.iter().map(|&row| old_logp[row]));
        values.extend(rows.iter().map(|&row| values_all[row]));
        bonus.extend(&r.reward.secure_bonus);
        pens.extend(&r.reward.penalties);
        instance.push(r.reward.instance);
        starts.push(kls.len());
    }
    let packed = PackedRewards { starts: &starts, kl: &kls, secure_bonus: &bonus, penalties: &pens, instance: &instance };
    let (inst, tokr) = be.ppo_rewards(&packed, kl_coef, o.mode);
    let total: Vec<f32> = inst.iter().zip(&tokr).map(|(a, b)| a + b).collect();
    let (mut adv, returns) = be.ppo_gae(&total, &values, &starts, o.gamma, o.lambda);
    let (mut adv_tok, _) = be.ppo_gae(&tokr, &vec![0.0; tokr.len()], &starts, o.gamma, o.lambda);
    // Whiten the total advantage; scale the token part by the same factor.
    let scale = whiten(std::slice::from_mut(&mut adv));
    for a in adv_tok.iter_mut() {
        *a = (*a as f64 * scale) as f32;
    }
    Ok(Advantages { starts, logp_old, values, adv, adv_tok, returns, kl_sum, instance_sum, bonus_sum, penalty_sum })
}
