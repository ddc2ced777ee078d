//! PPO's update: epochs over seeded minibatches of the rollouts, each a
//! policy step on the clipped surrogate with an entropy bonus and a critic
//! step on the clipped value loss.

use super::advantage::Advantages;
use super::batch::{row_of, to_batch};
use super::rollout::Rollout;
use super::PpoOptions;
use crate::backend::Backend;
use crate::model::{Batch, GradWrite, Params, TrainState, Transformer};
use crate::rl::critic::Critic;
use crate::rl::ppo_loss::PolicyToken;
use crate::train::optimizer::{clip_scale, grad_norm, AdamW};
use anyhow::Result;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What the PPO losses need of one generated token.
#[derive(Clone, Copy)]
struct TokenInfo {
    logp_old: f32,
    adv: f32,
    adv_tok: f32,
    has_token_reward: bool,
    v_old: f32,
    ret: f32,
}

/// The trained models and their optimizer state.
pub(super) struct Learner<'a, B: Backend> {
    pub policy: &'a mut Transformer<B>,
    pub opt: &'a mut AdamW<B>,
    pub grads: &'a mut Params<B::Buf>,
    pub critic: &'a mut Critic<B>,
}

/// Sums over the update's minibatches and tokens, for the metrics.
#[derive(Default)]
pub(super) struct UpdateStats {
    pub policy_loss: f64,
    pub value_loss: f64,
    pub clipped: usize,
    pub counted: usize,
    pub entropy: f64,
}

/// `o.epochs` passes over the rollouts in minibatches of `o.minibatch`,
/// shuffled by the seed and iteration.
pub(super) fn update<B: Backend>(
    be: &B,
    mut l: Learner<'_, B>,
    rollouts: &[Rollout],
    a: &Advantages,
    pad: u32,
    iter: u64,
    o: &PpoOptions,
) -> Result<UpdateStats> {
    let mut s = UpdateStats::default();
    for epoch in 0..o.epochs {
        let mut idx: Vec<usize> = (0..rollouts.len()).collect();
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(o.seed ^ iter.wrapping_mul(1_000_003) ^ epoch as u64));
        for mb in idx.chunks(o.minibatch) {
            let group: Vec<&Rollout> = mb.iter().map(|&i| &rollouts[i]).collect();
            let batch = to_batch(&group, pad);
            let rows = token_rows(&batch, mb, rollouts, a);
            // Each minibatch's losses are means over its response tokens.
            let scale = 1.0 / group.iter().map(|r| r.tokens.len()).sum::<usize>().max(1) as f32;
            policy_step(be, &mut l, &batch, &rows, scale, o, &mut s)?;
            s.value_loss += critic_step(be, l.critic, &batch, &rows, scale, o)?;
        }
    }
    Ok(s)
}

/// Each row of the minibatch's batch that predicts a response token, with
/// that token's PPO inputs; `None` for prompt and padding rows.
fn token_rows(batch: &Batch, mb: &[usize], rollouts: &[Rollout], a: &Advantages) -> Vec<Option<TokenInfo>> {
    let mut rows = vec![None; batch.batch * batch.seq];
    for (k, &i) in mb.iter().enumerate() {
        let r = &rollouts[i];
        for j in 0..r.tokens.len() {
            let p = a.starts[i] + j;
            rows[row_of(batch.seq, r, k, j)] = Some(TokenInfo {
                logp_old: a.logp_old[p],
                adv: a.adv[p],
                adv_tok: a.adv_tok[p],
                has_token_reward: r.reward.secure_bonus[j] != 0.0 || r.reward.penalties[j] != 0.0,
                v_old: a.values[p],
                ret: a.returns[p],
            });
        }
    }
    rows
}

/// One policy step on the clipped surrogate and entropy bonus, its loss,
/// tokens, clipped tokens and entropy summed into `s`.
fn policy_step<B: Backend>(
    be: &B,
    l: &mut Learner<'_, B>,
    batch: &Batch,
    rows: &[Option<TokenInfo>],
    scale: f32,
    o: &PpoOptions,
    s: &mut UpdateStats,
) -> Result<()> {
    let mut st = TrainState::new(be, &l.policy.cfg, batch.batch, batch.seq);
    let loss = l.policy.forward_backward_policy(be, batch, &mut st, l.grads, GradWrite::Overwrite, o.temperature, |r0, logp, ent| {
        let (mut c_logp, mut c_ent, mut loss) = (vec![0f32; logp.len()], vec![0f32; logp.len()], 0f64);
        let (ks, tokens): (Vec<usize>, Vec<PolicyToken>) = (0..logp.len())
            .filter_map(|k| {
                let t = rows[r0 + k]?;
                let (logp_old, adv, adv_tok, has_token_reward) = (t.logp_old, t.adv, t.adv_tok, t.has_token_reward);
                Some((k, PolicyToken { logp: logp[k], logp_old, adv, adv_tok, has_token_reward }))
            })
            .unzip();
        for (k, (loss_k, g, c)) in ks.into_iter().zip(be.ppo_policy_loss(&tokens, o.clip_eps, o.clip)) {
            c_logp[k] = g * scale;
            c_ent[k] = -o.entropy_coef * scale;
            loss += ((loss_k - o.entropy_coef * ent[k]) * scale) as f64;
            s.clipped += usize::from(c);
            s.counted += 1;
            s.entropy += ent[k] as f64;
        }
        (c_logp, c_ent, loss)
    })?;
    let norm = grad_norm(be, l.grads);
    if loss.is_finite() && norm.is_finite() {
        l.opt.update(be, &mut l.policy.params, l.grads, o.lr, clip_scale(norm, o.max_grad_norm));
    }
    s.policy_loss += loss;
    Ok(())
}

/// One critic step on the clipped value loss; returns the loss.
fn critic_step<B: Backend>(
    be: &B,
    critic: &mut Critic<B>,
    batch: &Batch,
    rows: &[Option<TokenInfo>],
    scale: f32,
    o: &PpoOptions,
) -> Result<f64> {
    critic.train_step(be, batch, o.critic_lr, o.max_grad_norm, |v_new| {
        let (mut dv, mut loss) = (vec![0f32; v_new.len()], 0f64);
        let (idx, infos): (Vec<usize>, Vec<TokenInfo>) = rows.iter().enumerate().filter_map(|(row, t)| Some((row, (*t)?))).unzip();
        let v: Vec<f32> = idx.iter().map(|&row| v_new[row]).collect();
        let v_old: Vec<f32> = infos.iter().map(|t| t.v_old).collect();
        let ret: Vec<f32> = infos.iter().map(|t| t.ret).collect();
        for (&row, (loss_row, g)) in idx.iter().zip(be.ppo_value_loss(&v, &v_old, &ret, o.value_clip)) {
            dv[row] = g * scale;
            loss += (loss_row * scale) as f64;
        }
        (dv, loss)
    })
}
