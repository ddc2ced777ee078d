//! `vul2safe ppo`: PPO on PrimeVul+ prompts with instance or token-level
//! rewards. Each iteration samples responses with the policy (batched KV-cache
//! generation), scores them with the built-in analyzer and the reference pair,
//! computes per-token KL against the frozen reference model, advantages with
//! GAE, then runs epochs of minibatch updates of the policy (clipped
//! surrogate, entropy bonus) and the critic (clipped value loss).

use super::critic::Critic;
use super::gae::whiten;
use super::kl::{AdaptiveKl, KlEstimator};
use super::ppo_loss::{ClipMode, PolicyToken};
use super::reward::{token_rewards, Reference, RewardConfig, RewardMode, SampleReward, Verdict};
use crate::backend::{Backend, PackedRewards, IGNORE};
use crate::data::build::read_records;
use crate::data::record::PrimeVulPlus;
use crate::eval::analyzer::builtin::{analyze_text, defines_function};
use crate::eval::harness::fenced_block;
use crate::eval::similarity::{length_ratio, similarity};
use crate::generate::{generate, SamplingConfig};
use crate::lang::Lang;
use crate::model::{Batch, GradWrite, Params, TrainState, Transformer};
use crate::prompt::PromptFormat;
use crate::tokenizer::Tokenizer;
use crate::trace;
use crate::train::checkpoint::{latest, load_optimizer, load_state, save_model, save_optimizer, write_step, MetricsLog};
use crate::train::optimizer::{clip_scale, grad_norm, AdamW, AdamWConfig};
use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
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

struct Example {
    prompt: Vec<u32>,
    lang: Lang,
    reference: Reference,
    /// The fixed function's text, which a response's similarity is measured against.
    fixed: String,
}

fn load_examples(data: &Path, tok: &Tokenizer, format: PromptFormat) -> Result<Vec<Example>> {
    let path = if data.is_dir() { data.join("primevul_plus.jsonl") } else { data.to_path_buf() };
    let records: Vec<PrimeVulPlus> = read_records(&path)?;
    let mut out = Vec::new();
    for r in records.iter().filter(|r| r.split == "train") {
        let (s, v) = (tok.encode(&r.secure)?, tok.encode(&r.vulnerable)?);
        let reference = Reference::new(s.ids, &s.offsets, &r.secure_spans, v.ids, &v.offsets, &r.vulnerable_spans);
        for p in &r.prompts {
            let prompt = tok.encode(&format.instruction(p))?.ids;
            out.push(Example { prompt, lang: r.language(), reference: reference.clone(), fixed: r.secure.clone() });
        }
    }
    ensure!(!out.is_empty(), "{}: no train-split records with prompts", path.display());
    Ok(out)
}

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

/// One scored rollout.
struct Rollout {
    prompt: Vec<u32>,
    tokens: Vec<u32>,
    reward: SampleReward,
}

/// Byte range of each generated token in the decoded response.
fn token_offsets(tok: &Tokenizer, tokens: &[u32]) -> Result<(String, Vec<(usize, usize)>)> {
    let mut offsets = Vec::with_capacity(tokens.len());
    let mut prev = 0;
    for i in 0..tokens.len() {
        let len = tok.decode(&tokens[..=i])?.len();
        offsets.push((prev.min(len), len));
        prev = prev.max(len);
    }
    Ok((tok.decode(tokens)?, offsets))
}

/// Sequences as one right-padded batch whose targets are the response tokens.
fn to_batch(rollouts: &[&Rollout], pad: u32) -> Batch {
    let seq = rollouts.iter().map(|r| r.prompt.len() + r.tokens.len()).max().unwrap_or(2).max(2);
    let b = rollouts.len();
    let mut ids = vec![pad; b * seq];
    let mut targets = vec![IGNORE; b * seq];
    for (i, r) in rollouts.iter().enumerate() {
        let row = &mut ids[i * seq..(i + 1) * seq];
        row[..r.prompt.len()].copy_from_slice(&r.prompt);
        row[r.prompt.len()..r.prompt.len() + r.tokens.len()].copy_from_slice(&r.tokens);
        for (j, &t) in r.tokens.iter().enumerate() {
            targets[i * seq + r.prompt.len() + j - 1] = t;
        }
    }
    Batch { batch: b, seq, ids, targets, weights: vec![0.0; b * seq] }
}

/// Row of the batch that predicts response token `j` of sequence `i`.
fn row_of(seq: usize, r: &Rollout, i: usize, j: usize) -> usize {
    i * seq + r.prompt.len() + j - 1
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
    let (tok, tok_bytes) = Tokenizer::load_with_json(&o.policy)?;
    // The answer's end pads the batches; sampling stops there or at the model's own ends.
    let end = o.prompt_format.answer_end(&tok)?;
    let examples = load_examples(&o.data, &tok, o.prompt_format)?;

    let resume_dir = if o.resume { latest(&o.out)? } else { None };
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

        // Score each response: analyzer findings, reference alignment.
        let rewards = trace::range("rewards");
        let mut rollouts = Vec::with_capacity(gens.len());
        let (mut code_responses, mut similarity_sum, mut length_sum) = (0usize, 0f64, 0f64);
        for ((g, ex), p) in gens.iter().zip(&chosen).zip(&prompts) {
            let body: Vec<u32> = g.tokens.iter().copied().filter(|t| !stops.contains(t)).collect();
            let (text, offsets) = token_offsets(&tok, &body)?;
            let findings = analyze_text(ex.lang, &text, "response");
            // A chat answer's code is its fenced block, as eval reads it.
            let code = fenced_block(&text).unwrap_or(&text);
            let is_code = defines_function(ex.lang, code);
            let length = length_ratio(code, &ex.fixed);
            let verdict = Verdict { findings: &findings, is_code, length_ratio: Some(length as f32), passed: None };
            let mut reward = token_rewards(&body, &offsets, &verdict, &ex.reference, &o.reward);
            // The stop token (if any) carries no token-level reward.
            reward.secure_bonus.resize(g.tokens.len(), 0.0);
            reward.penalties.resize(g.tokens.len(), 0.0);
            if !g.tokens.is_empty() {
                code_responses += usize::from(is_code);
                similarity_sum += similarity(code, &ex.fixed);
                length_sum += length;
                rollouts.push(Rollout { prompt: p.clone(), tokens: g.tokens.clone(), reward });
            }
        }
        ensure!(!rollouts.is_empty(), "every response in the rollout batch was empty");
        drop(rewards);

        // Old policy, reference and value estimates on the sampled sequences.
        let all: Vec<&Rollout> = rollouts.iter().collect();
        let full = to_batch(&all, end);
        // Forward passes only: nothing need be kept per layer for a backward.
        let mut st = TrainState::recomputing(be, &cfg, full.batch, full.seq);
        let scoring = trace::range("scoring");
        let (old_logp, _) = policy.score_batch(be, &full, &mut st, o.temperature)?;
        let (ref_logp, _) = reference.score_batch(be, &full, &mut st, o.temperature)?;
        let values_all = critic.values(be, &full)?;
        drop(scoring);

        // Every rollout packed: sequence i holds its tokens at starts[i]..starts[i + 1].
        let mut starts = vec![0usize];
        let (mut kls, mut values, mut bonus, mut pens, mut instance) = (vec![], vec![], vec![], vec![], vec![]);
        let (mut kl_sum, mut inst_sum, mut bonus_sum, mut pen_sum) = (0f64, 0f64, 0f64, 0f64);
        for (i, r) in rollouts.iter().enumerate() {
            let rows: Vec<usize> = (0..r.tokens.len()).map(|j| row_of(full.seq, r, i, j)).collect();
            let seq_kls: Vec<f32> = rows.iter().map(|&row| o.kl_estimator.estimate(old_logp[row], ref_logp[row])).collect();
            kl_sum += seq_kls.iter().map(|&k| k as f64).sum::<f64>();
            inst_sum += r.reward.instance as f64;
            bonus_sum += r.reward.secure_bonus.iter().sum::<f32>() as f64;
            pen_sum += r.reward.penalties.iter().sum::<f32>() as f64;
            kls.extend(seq_kls);
            values.extend(rows.iter().map(|&row| values_all[row]));
            bonus.extend(&r.reward.secure_bonus);
            pens.extend(&r.reward.penalties);
            instance.push(r.reward.instance);
            starts.push(kls.len());
        }
        let packed = PackedRewards { starts: &starts, kl: &kls, secure_bonus: &bonus, penalties: &pens, instance: &instance };
        let (inst, tokr) = be.ppo_rewards(&packed, kl.coef, o.mode);
        let total: Vec<f32> = inst.iter().zip(&tokr).map(|(a, b)| a + b).collect();
        let (mut adv, rets) = be.ppo_gae(&total, &values, &starts, o.gamma, o.lambda);
        let (mut adv_tok, _) = be.ppo_gae(&tokr, &vec![0.0; tokr.len()], &starts, o.gamma, o.lambda);
        // Whiten the total advantage; scale the token part by the same factor.
        let scale = whiten(std::slice::from_mut(&mut adv));
        for a in adv_tok.iter_mut() {
            *a = (*a as f64 * scale) as f32;
        }

        // PPO epochs over minibatches of sequences.
        let update = trace::range("ppo update");
        let (mut pl_sum, mut vl_sum, mut clipped, mut counted, mut ent_sum) = (0f64, 0f64, 0usize, 0usize, 0f64);
        for epoch in 0..o.epochs {
            let mut idx: Vec<usize> = (0..rollouts.len()).collect();
            idx.shuffle(&mut ChaCha8Rng::seed_from_u64(o.seed ^ state.iter.wrapping_mul(1_000_003) ^ epoch as u64));
            for mb in idx.chunks(o.minibatch) {
                let group: Vec<&Rollout> = mb.iter().map(|&i| &rollouts[i]).collect();
                let batch = to_batch(&group, end);
                let n_tok: usize = group.iter().map(|r| r.tokens.len()).sum();
                let mut row_info: Vec<Option<TokenInfo>> = vec![None; batch.batch * batch.seq];
                for (k, &i) in mb.iter().enumerate() {
                    let r = &rollouts[i];
                    for j in 0..r.tokens.len() {
                        let has_tok = r.reward.secure_bonus[j] != 0.0 || r.reward.penalties[j] != 0.0;
                        let p = starts[i] + j;
                        row_info[row_of(batch.seq, r, k, j)] = Some(TokenInfo {
                            logp_old: old_logp[row_of(full.seq, r, i, j)],
                            adv: adv[p],
                            adv_tok: adv_tok[p],
                            has_token_reward: has_tok,
                            v_old: values[p],
                            ret: rets[p],
                        });
                    }
                }
                let scale = 1.0 / n_tok.max(1) as f32;
                let mut pst = TrainState::new(be, &cfg, batch.batch, batch.seq);
                let ploss = policy.forward_backward_policy(
                    be,
                    &batch,
                    &mut pst,
                    &mut grads,
                    GradWrite::Overwrite,
                    o.temperature,
                    |r0, logp, ent| {
                        let (mut c_logp, mut c_ent, mut loss) = (vec![0f32; logp.len()], vec![0f32; logp.len()], 0f64);
                        let (rows, tokens): (Vec<usize>, Vec<PolicyToken>) = (0..logp.len())
                            .filter_map(|k| {
                                let t = row_info[r0 + k]?;
                                let (logp_old, adv, adv_tok, has_token_reward) = (t.logp_old, t.adv, t.adv_tok, t.has_token_reward);
                                Some((k, PolicyToken { logp: logp[k], logp_old, adv, adv_tok, has_token_reward }))
                            })
                            .unzip();
                        for (k, (l, g, c)) in rows.into_iter().zip(be.ppo_policy_loss(&tokens, o.clip_eps, o.clip)) {
                            c_logp[k] = g * scale;
                            c_ent[k] = -o.entropy_coef * scale;
                            loss += ((l - o.entropy_coef * ent[k]) * scale) as f64;
                            clipped += usize::from(c);
                            counted += 1;
                            ent_sum += ent[k] as f64;
                        }
                        (c_logp, c_ent, loss)
                    },
                )?;
                let norm = grad_norm(be, &grads);
                if ploss.is_finite() && norm.is_finite() {
                    opt.update(be, &mut policy.params, &grads, o.lr, clip_scale(norm, o.max_grad_norm));
                }
                pl_sum += ploss;
                let vloss = critic.train_step(be, &batch, o.critic_lr, o.max_grad_norm, |v_new| {
                    let (mut dv, mut loss) = (vec![0f32; v_new.len()], 0f64);
                    let (rows, infos): (Vec<usize>, Vec<TokenInfo>) =
                        row_info.iter().enumerate().filter_map(|(row, t)| Some((row, (*t)?))).unzip();
                    let v: Vec<f32> = rows.iter().map(|&row| v_new[row]).collect();
                    let v_old: Vec<f32> = infos.iter().map(|t| t.v_old).collect();
                    let ret: Vec<f32> = infos.iter().map(|t| t.ret).collect();
                    let per_token = be.ppo_value_loss(&v, &v_old, &ret, o.value_clip);
                    for (&row, (l, g)) in rows.iter().zip(per_token) {
                        dv[row] = g * scale;
                        loss += (l * scale) as f64;
                    }
                    (dv, loss)
                })?;
                vl_sum += vloss;
            }
        }
        drop(update);
        let n = rollouts.len() as f64;
        kl.update((kl_sum / n) as f32, rollouts.len());
        state.kl_coef = kl.coef;
        state.iter += 1;
        let updates = (o.epochs * rollouts.len().div_ceil(o.minibatch)) as f64;
        last = json!({
            "iter": state.iter,
            "reward_instance": inst_sum / n,
            "reward_secure_bonus": bonus_sum / n,
            "reward_penalty": pen_sum / n,
            "vuln_rate": rollouts.iter().filter(|r| r.reward.high_medium > 0).count() as f64 / n,
            // A falling share of responses that define a function is reward hacking, not security.
            "code_rate": code_responses as f64 / n,
            // A falling similarity to the fix at a low vulnerability rate is a stub, not a repair.
            "similarity": similarity_sum / n,
            // On short functions a one-line body keeps a fair similarity; its length does not.
            "length_ratio": length_sum / n,
            "kl": kl_sum / n,
            "kl_coef": kl.coef,
            "policy_loss": pl_sum / updates,
            "value_loss": vl_sum / updates,
            "clip_frac": clipped as f64 / counted.max(1) as f64,
            "entropy": ent_sum / counted.max(1) as f64,
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
