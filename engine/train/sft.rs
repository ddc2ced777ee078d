//! `vul2safe sft`: supervised fine-tuning on PrimeVul+ repairs, prompt →
//! secure function, with loss on the function's tokens only. Examples are
//! packed into fixed windows (EOS between them) in a seeded order per epoch;
//! a held-out split gives the eval loss. Checkpoints are atomic and a run
//! resumes bit-exactly from the newest one.

use super::checkpoint::{load_optimizer, load_state, resume_from, save_model, save_optimizer, write_step, MetricsLog};
use super::optimizer::AdamWConfig;
use super::schedule::{LrSchedule, ScheduleKind};
use super::trainer::{Trainer, TrainerConfig};
use crate::backend::{Backend, IGNORE};
use crate::data::build::read_records;
use crate::model::{Batch, Transformer};
use crate::prompt::PromptFormat;
use crate::tokenizer::Tokenizer;
use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug)]
pub struct SftOptions {
    pub model: PathBuf,
    /// `primevul_plus.jsonl`, or a folder holding it.
    pub data: PathBuf,
    pub out: PathBuf,
    pub steps: u64,
    pub batch: usize,
    pub seq: usize,
    pub grad_accum: usize,
    pub lr: f32,
    pub warmup: u64,
    pub max_grad_norm: f32,
    pub eval_every: u64,
    pub save_every: u64,
    pub seed: u64,
    pub prompt_format: PromptFormat,
    pub resume: bool,
    /// Recompute the MLP projections in the backward (less activation memory).
    pub recompute: bool,
}

/// One tokenized example: the prompt (no loss) then the secure function and EOS.
#[derive(Clone, Debug)]
pub struct Example {
    pub ids: Vec<u32>,
    pub loss: Vec<bool>,
}

/// Examples of one split: every (record, prompt) pair.
pub fn examples(data: &Path, tok: &Tokenizer, split: &str, format: PromptFormat) -> Result<Vec<Example>> {
    let end = format.answer_end(tok)?;
    let path = if data.is_dir() { data.join("primevul_plus.jsonl") } else { data.to_path_buf() };
    let mut out = Vec::new();
    for r in read_records(&path)?.iter().filter(|r| r.split == split) {
        let answer = tok.encode(&r.secure)?.ids;
        for p in &r.prompts {
            let prompt = tok.encode(&format.instruction(p))?.ids;
            let mut ids = prompt.clone();
            ids.extend(&answer);
            ids.push(end);
            let mut loss = vec![false; prompt.len()];
            loss.resize(ids.len(), true);
            out.push(Example { ids, loss });
        }
    }
    Ok(out)
}

/// Packs examples, in order, into windows of `seq` tokens (the last partial
/// window is dropped). Loss flags travel with their tokens.
pub fn pack(examples: &[&Example], seq: usize) -> Vec<(Vec<u32>, Vec<bool>)> {
    let (mut ids, mut loss) = (Vec::new(), Vec::new());
    for e in examples {
        ids.extend(&e.ids);
        loss.extend(&e.loss);
    }
    ids.chunks_exact(seq).zip(loss.chunks_exact(seq)).map(|(i, l)| (i.to_vec(), l.to_vec())).collect()
}

/// The windows of one epoch, in its seeded order.
fn epoch_windows(train: &[Example], seq: usize, seed: u64, epoch: u64) -> Vec<(Vec<u32>, Vec<bool>)> {
    let mut order: Vec<&Example> = train.iter().collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    pack(&order, seq)
}

/// Turns windows into one batch whose weights average over `normalizer` tokens.
fn to_batch(windows: &[(Vec<u32>, Vec<bool>)], seq: usize, normalizer: f32) -> Batch {
    let ids: Vec<u32> = windows.iter().flat_map(|(i, _)| i.iter().copied()).collect();
    let mask: Vec<bool> = windows.iter().flat_map(|(_, l)| l.iter().copied()).collect();
    Batch::causal_lm(ids, &mask, windows.len(), seq, normalizer)
}

fn counted(windows: &[(Vec<u32>, Vec<bool>)]) -> usize {
    windows.iter().map(|(_, l)| l[1..].iter().filter(|&&x| x).count()).sum()
}

/// Mean cross-entropy over the loss tokens of `windows` (forward only).
pub fn eval_loss<B: Backend>(be: &B, model: &Transformer<B>, windows: &[(Vec<u32>, Vec<bool>)], seq: usize) -> Result<f64> {
    let (mut total, mut n) = (0.0f64, 0usize);
    for w in windows.chunks(8) {
        let b = to_batch(w, seq, 1.0);
        let logits = model.forward_logits(be, &b.ids, b.batch, seq)?;
        for (lp, t) in be.logprob_entropy(&logits, &b.targets, model.cfg.vocab_size, 1.0).0.iter().zip(&b.targets) {
            if *t != IGNORE {
                total -= *lp as f64;
                n += 1;
            }
        }
    }
    Ok(total / n.max(1) as f64)
}

/// What a checkpoint records beyond tensors.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SftState {
    pub step: u64,
    pub epoch: u64,
    /// Next window of the epoch's order.
    pub cursor: usize,
    pub seed: u64,
    pub metrics_offset: u64,
}

pub struct SftSummary {
    pub steps: u64,
    pub final_loss: f64,
    pub eval_loss: f64,
    pub skipped: u64,
    pub tokens_per_sec: f64,
    pub resumed_from: Option<u64>,
}

pub fn run<B: Backend>(be: &B, o: &SftOptions, mut on_step: impl FnMut(&serde_json::Value)) -> Result<SftSummary> {
    ensure!(o.batch >= 1 && o.seq >= 2 && o.grad_accum >= 1 && o.steps >= 1, "--batch, --grad-accum and --steps must be ≥ 1 and --seq ≥ 2");
    let resume_dir = resume_from(&o.out, o.resume)?;
    let (tok, tok_bytes) = Tokenizer::load_with_json(&o.model)?;
    let train = examples(&o.data, &tok, "train", o.prompt_format)?;
    let test = examples(&o.data, &tok, "test", o.prompt_format)?;
    ensure!(!train.is_empty(), "{}: no train-split records", o.data.display());
    let eval_windows = pack(&test.iter().collect::<Vec<_>>(), o.seq);

    let (model_dir, mut state) = match &resume_dir {
        Some(dir) => {
            let s: SftState = load_state(dir)?;
            (dir.clone(), s)
        }
        None => (o.model.clone(), SftState { seed: o.seed, ..Default::default() }),
    };
    let model = Transformer::load(be, &model_dir)?;
    ensure!(
        tok.vocab_size() <= model.cfg.vocab_size,
        "tokenizer has {} tokens but the model only {}",
        tok.vocab_size(),
        model.cfg.vocab_size
    );
    let schedule = LrSchedule { kind: ScheduleKind::Cosine, peak: o.lr, min: o.lr / 10.0, warmup_steps: o.warmup, total_steps: o.steps };
    let cfg = model.cfg.clone();
    let mut trainer = Trainer::new(
        be,
        model,
        TrainerConfig {
            batch: o.batch,
            seq: o.seq,
            opt: AdamWConfig::default(),
            schedule,
            max_grad_norm: o.max_grad_norm,
            recompute: o.recompute,
        },
    );
    if let Some(dir) = &resume_dir {
        load_optimizer(be, &dir.join("trainer.safetensors"), &cfg, &mut trainer.opt)?;
    }
    let mut log = MetricsLog::open(&o.out, resume_dir.as_ref().map(|_| state.metrics_offset))?;
    let mut windows = epoch_windows(&train, o.seq, state.seed, state.epoch);
    ensure!(
        windows.len() >= o.batch,
        "the train split packs into {} windows of {} tokens, fewer than --batch {}",
        windows.len(),
        o.seq,
        o.batch
    );
    let (t0, mut tokens, mut skipped, mut last_loss, mut last_eval) = (Instant::now(), 0usize, 0u64, f64::NAN, f64::NAN);
    while state.step < o.steps {
        // Gather grad_accum micro-batches, moving to the next epoch as needed.
        let mut micro_windows = Vec::new();
        for _ in 0..o.grad_accum {
            if state.cursor + o.batch > windows.len() {
                state.epoch += 1;
                state.cursor = 0;
                windows = epoch_windows(&train, o.seq, state.seed, state.epoch);
            }
            micro_windows.push(windows[state.cursor..state.cursor + o.batch].to_vec());
            state.cursor += o.batch;
        }
        let normalizer = micro_windows.iter().map(|w| counted(w)).sum::<usize>().max(1) as f32;
        let micro: Vec<Batch> = micro_windows.iter().map(|w| to_batch(w, o.seq, normalizer)).collect();
        let s = trainer.step(be, &micro)?;
        state.step += 1;
        tokens += s.tokens;
        skipped += u64::from(s.skipped);
        last_loss = s.loss;
        let mut row = json!({"step": state.step, "loss": s.loss, "lr": s.lr, "grad_norm": s.grad_norm, "tok_s": s.tokens as f64 / s.secs.max(1e-9), "skipped": s.skipped, "epoch": state.epoch});
        if o.eval_every > 0 && (state.step % o.eval_every == 0 || state.step == o.steps) && !eval_windows.is_empty() {
            last_eval = eval_loss(be, &trainer.model, &eval_windows, o.seq)?;
            row["eval_loss"] = json!(last_eval);
        }
        log.append(&row)?;
        on_step(&row);
        if (o.save_every > 0 && state.step % o.save_every == 0) || state.step == o.steps {
            state.metrics_offset = log.offset()?;
            let snapshot = serde_json::to_string_pretty(&state)?;
            write_step(&o.out, state.step, |dir| {
                save_model(be, dir, &trainer.model, Some(&tok_bytes))?;
                save_optimizer(be, &dir.join("trainer.safetensors"), &cfg, &trainer.opt)?;
                std::fs::write(dir.join("state.json"), &snapshot)?;
                Ok(())
            })?;
        }
    }
    if let Some(why) = crate::eval::plot::plot_metrics(&o.out, "step", &["loss", "eval_loss"], "loss.png", "SFT loss") {
        eprintln!("note: no loss plot: {why}");
    }
    Ok(SftSummary {
        steps: state.step,
        final_loss: last_loss,
        eval_loss: last_eval,
        skipped,
        tokens_per_sec: tokens as f64 / t0.elapsed().as_secs_f64().max(1e-9),
        resumed_from: resume_dir
            .and_then(|d| d.file_name().and_then(|n| n.to_str()).and_then(|n| n.trim_start_matches("step-").parse().ok())),
    })
}
