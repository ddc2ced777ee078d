//! `vul2safe ppo`: PPO on PrimeVul+ prompts with instance or token-level
//! rewards. Each iteration samples responses with the policy (batched KV-cache
//! generation), scores them with the built-in analyzer and the reference pair,
//! computes per-token KL against the frozen reference model, advantages with
//! GAE, then runs epochs of minibatch updates of the policy (clipped
//! surrogate, entropy bonus) and the critic (clipped value loss).

mod advantage;
mod batch;
mod rollout;
mod update;

use self::advantage::{advantages, Models};
use self::rollout::{load_examples, score_responses};
use self::update::{update, Learner};
use super::critic::Critic;
use super::kl::{AdaptiveKl, KlEstimator};
use super::ppo_loss::ClipMode;
use super::reward::{RewardConfig, RewardMode};
use crate::backend::Backend;
use crate::generate::{generate, SamplingConfig};
use crate::model::{Params, Transformer};
use crate::prompt::PromptFormat;
use crate::tokenizer::Tokenizer;
use crate::trace;
use crate::train::checkpoint::{load_optimizer, load_state, resume_from, save_model, save_optimizer, write_step, MetricsLog};
use crate::train::optimizer::{AdamW, AdamWConfig};
use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

/// Hyper-parameters; defaults follow common PPO-for-LM practice (clip 0.2,
/// γ 1, λ 0.95, value clip 0.2, 4 epochs, KL 0.05 with an adaptive controller).
#[derive(Clone, Debug)]
pub struct PpoOptions {
    pub policy: PathBuf,
    pub data: PathBuf,
    pub out: PathBuf,
    pub mode: RewardMode,
    pub reward: RewardConfig,
    pub iters: u64,
    pub rollout_batch: usize,
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub epochs: usize,
    pub minibatch: usize,
    pub lr: f32,
    pub critic_lr: f32,
    pub clip_eps: f32,
    pub clip: ClipMode,
    pub value_clip: f32,
    pub gamma: f32,
    pub lambda: f32,
    pub kl: AdaptiveKl,
    pub kl_estimator: KlEstimator,
    pub entropy_coef: f32,
    pub max_grad_norm: f32,
    pub seed: u64,
    pub save_every: u64,
    pub prompt_format: PromptFormat,
    pub resume: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PpoState {
    pub iter: u64,
    pub kl_coef: f32,
    pub epoch: u64,
    pub cursor: usize,
    pub metrics_offset: u64,
}

pub struct PpoSummary {
    pub iters: u64,
    pub last: serde_json::Value,
}

pub fn run<B: Backend>(be: &B, o: &PpoOptions, mut on_iter: impl FnMut(&serde_json::Value)) -> Result<PpoSummary> {
    ensure!(
        o.rollout_batch >= 1 && o.minibatch >= 1 && o.epochs >= 1 && o.max_new_tokens >= 1,
        "--rollout-batch, --minibatch, --epochs and --max-new-tokens must be ≥ 1"
    );
    // The ratios and the KL are of the policy that samples at this temperature; greedy decoding has none.
    ensure!(
        o.temperature.is_finite() && o.temperature > 0.0,
        "--temperature must be positive for PPO (the policy it trains samples at that temperature), got {}",
        o.temperature
    );
    let resume_dir = resume_from(&o.out, o.resume)?;
    let (tok, tok_bytes) = Tokenizer::load_with_json(&o.policy)?;
    // The answer's end pads the batches; sampling stops there or at the model's own ends.
    let end = o.prompt_format.answer_end(&tok)?;
    let examples = load_examples(&o.data, &tok, o.prompt_format)?;

    let mut state = match &resume_dir {
        Some(dir) => load_state(dir)?,
        None => PpoState { kl_coef: o.kl.coef, ..Default::default() },
    };
    let policy_dir = resume_dir.clone().unwrap_or_else(|| o.policy.clone());
    let mut policy = Transformer::load(be, &policy_dir)?;
    let reference = Transformer::load(be, &o.policy)?;
    let mut critic =
        Critic::new(be, Transformer::load(be, &resume_dir.as_ref().map(|d| d.join("critic")).unwrap_or_else(|| o.policy.clone()))?);
    let cfg = policy.cfg.clone();
    let stops = o.prompt_format.stop_tokens(&tok, &cfg.eos_token_ids)?;
    let mut opt = AdamW::new(be, &cfg, AdamWConfig { weight_decay: 0.0, ..AdamWConfig::default() });
    if let Some(dir) = &resume_dir {
        load_optimizer(be, &dir.join("trainer.safetensors"), &cfg, &mut opt)?;
        load_optimizer(be, &dir.join("critic/trainer.safetensors"), &cfg, &mut critic.opt)?;
        critic.load_head(be, &dir.join("critic/value_head.safetensors"))?;
    }
    let mut kl = AdaptiveKl { coef: state.kl_coef, ..o.kl };
    let mut grads = Params::build(&cfg, |s| be.zeros(s.numel()));
    let mut log = MetricsLog::open(&o.out, resume_dir.as_ref().map(|_| state.metrics_offset))?;
    let order = |epoch: u64| {
        let mut idx: Vec<usize> = (0..examples.len()).collect();
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(o.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        idx
    };
    let mut perm = order(state.epoch);
    let max_prompt = cfg.max_position_embeddings.saturating_sub(o.max_new_tokens).max(1);
    let mut last = json!({});

    while state.iter < o.iters {
        let t0 = Instant::now();
        // Next prompts in the seeded epoch order.
        let mut chosen = Vec::with_capacity(o.rollout_batch);
        while chosen.len() < o.rollout_batch {
            if state.cursor >= perm.len() {
                state.epoch += 1;
                state.cursor = 0;
                perm = order(state.epoch);
            }
            chosen.push(&examples[perm[state.cursor]]);
            state.cursor += 1;
        }
        let prompts: Vec<Vec<u32>> = chosen.iter().map(|e| e.prompt[e.prompt.len().saturating_sub(max_prompt)..].to_vec()).collect();
        let sampling = SamplingConfig {
            max_new_tokens: o.max_new_tokens,
            temperature: o.temperature,
            top_p: 1.0,
            top_k: 0,
            seed: o.seed ^ (state.iter + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
            stop_tokens: stops.clone(),
        };
        let rollout = trace::range("rollout");
        let gens = generate(be, &policy, &prompts, &sampling)?;
        drop(rollout);
        let gen_tokens: usize = gens.iter().map(|g| g.tokens.len()).sum();
        let gen_secs = t0.elapsed().as_secs_f64();

        let rewards = trace::range("rewards");
        let (rollouts, responses) = score_responses(&tok, &gens, &chosen, &prompts, &stops, &o.reward)?;
        drop(rewards);

        let models = Models { policy: &policy, reference: &reference, critic: &mut critic };
        let scored = advantages(be, models, &rollouts, end, kl.coef, o)?;
        let update_range = trace::range("ppo update");
        let learner = Learner { policy: &mut policy, opt: &mut opt, grads: &mut grads, critic: &mut critic };
        let u = update(be, learner, &rollouts, &scored, end, state.iter, o)?;
        drop(update_range);
        let n = rollouts.len() as f64;
        kl.update((scored.kl_sum / n) as f32, rollouts.len());
        state.kl_coef = kl.coef;
        state.iter += 1;
        let updates = (o.epochs * rollouts.len().div_ceil(o.minibatch)) as f64;
        last = json!({
            "iter": state.iter,
            "reward_instance": scored.instance_sum / n,
            "reward_secure_bonus": scored.bonus_sum / n,
            "reward_penalty": scored.penalty_sum / n,
            "vuln_rate": rollouts.iter().filter(|r| r.reward.high_medium > 0).count() as f64 / n,
            // A falling share of responses that define a function is reward hacking, not security.
            "code_rate": responses.code as f64 / n,
            // A falling similarity to the fix at a low vulnerability rate is a stub, not a repair.
            "similarity": responses.similarity / n,
            // On short functions a one-line body keeps a fair similarity; its length does not.
            "length_ratio": responses.length_ratio / n,
            "kl": scored.kl_sum / n,
            "kl_coef": kl.coef,
            "policy_loss": u.policy_loss / updates,
            "value_loss": u.value_loss / updates,
            "clip_frac": u.clipped as f64 / u.counted.max(1) as f64,
            "entropy": u.entropy / u.counted.max(1) as f64,
            "response_len": gen_tokens as f64 / n,
            "rollout_tok_s": gen_tokens as f64 / gen_secs.max(1e-9),
            "secs": t0.elapsed().as_secs_f64(),
        });
        log.append(&last)?;
        on_iter(&last);
        if (o.save_every > 0 && state.iter % o.save_every == 0) || state.iter == o.iters {
            state.metrics_offset = log.offset()?;
            let snapshot = serde_json::to_string_pretty(&state)?;
            write_step(&o.out, state.iter, |dir| {
                save_model(be, dir, &policy, Some(&tok_bytes))?;
                save_optimizer(be, &dir.join("trainer.safetensors"), &cfg, &opt)?;
                let cdir = dir.join("critic");
                save_model(be, &cdir, &critic.model, None)?;
                save_optimizer(be, &cdir.join("trainer.safetensors"), &cfg, &critic.opt)?;
                critic.save_head(be, &cdir.join("value_head.safetensors"))?;
                std::fs::write(dir.join("state.json"), &snapshot)?;
                Ok(())
            })?;
        }
    }
    let keys = [
        "reward_instance",
        "reward_secure_bonus",
        "reward_penalty",
        "vuln_rate",
        "code_rate",
        "similarity",
        "length_ratio",
        "kl",
        "clip_frac",
    ];
    if let Some(why) = crate::eval::plot::plot_metrics(&o.out, "iter", &keys, "ppo.png", "PPO") {
        eprintln!("note: no PPO plot: {why}");
    }
    Ok(PpoSummary { iters: state.iter, last })
}
