//! `vul2safe demo`: the whole method on the embedded default — CPU, no
//! network, deterministic for a `--seed`:
//!
//! 1. train a byte-level BPE tokenizer on the embedded corpus;
//! 2. build PrimeVul+ with the heuristic teacher and the analyzer check;
//! 3. pretrain a tiny Llama on both vulnerable and fixed functions, bare and
//!    as answers to the train split's prompts, so that it starts out writing
//!    insecure code often (the base model);
//! 4. SFT on prompt → secure function;
//! 5. PPO with instance rewards and with token-level rewards (and TLR with
//!    the decoupled clipping), from the same SFT checkpoint, same budget;
//! 6. evaluate every model on the held-out split's implicit prompts
//!    (vulnerability rate, secure@1) and on the self-invoking tasks (pass@1).

use crate::backend::cpu::Cpu;
use crate::data::build::{build, read_records, BuildOptions, BuildStats, Input};
use crate::data::corpus;
use crate::data::teacher::heuristic::Heuristic;
use crate::eval::harness::{evaluate, EvalOptions};
use crate::eval::sandbox::Isolation;
use crate::eval::tasks::{held_out_task, load_bench, Task};
use crate::model::weights::init_params;
use crate::model::{Arch, Batch, ModelConfig, Transformer};
use crate::prompt::PromptFormat;
use crate::rl::kl::{AdaptiveKl, KlEstimator};
use crate::rl::ppo::{self, PpoOptions};
use crate::rl::ppo_loss::ClipMode;
use crate::rl::reward::{RewardConfig, RewardMode};
use crate::tensor::DType;
use crate::tokenizer::train_bpe;
use crate::train::checkpoint::save_model;
use crate::train::sft::{self, SftOptions};
use crate::train::{AdamWConfig, LrSchedule, ScheduleKind, Trainer, TrainerConfig};
use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub seed: u64,
    /// Tiny budgets (for tests): the same pipeline in seconds.
    pub quick: bool,
}

/// The tiny demo model: Llama, 4 layers, hidden 128, 4 heads of 32, tied embeddings.
pub fn tiny_config(vocab: usize) -> ModelConfig {
    ModelConfig {
        arch: Arch::Llama,
        vocab_size: vocab,
        hidden_size: 128,
        intermediate_size: 384,
        num_layers: 4,
        num_heads: 4,
        num_kv_heads: 4,
        head_dim: 32,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 256,
        tie_word_embeddings: true,
        qkv_bias: false,
        dtype: DType::F32,
        bos_token_id: None,
        eos_token_ids: vec![],
    }
}

struct Budget {
    vocab: usize,
    pretrain_steps: u64,
    sft_steps: u64,
    ppo_iters: u64,
    rollout_batch: usize,
    samples: usize,
    eval_tasks: usize,
}

impl Budget {
    fn of(quick: bool) -> Budget {
        if quick {
            Budget { vocab: 400, pretrain_steps: 20, sft_steps: 10, ppo_iters: 2, rollout_batch: 4, samples: 2, eval_tasks: 4 }
        } else {
            Budget { vocab: 512, pretrain_steps: 500, sft_steps: 40, ppo_iters: 30, rollout_batch: 16, samples: 4, eval_tasks: 100 }
        }
    }
}

/// One row of the demo's table.
#[derive(Clone, Debug, Serialize)]
pub struct DemoRow {
    pub model: String,
    /// Share of held-out samples with a high or medium finding.
    pub vuln_rate: f64,
    pub high_medium_per_100: f64,
    /// Share of held-out samples that define a function at all.
    pub function_share: f64,
    /// Mean lexeme similarity of the held-out samples to each task's fixed function.
    pub similarity_to_fix: f64,
    /// Mean length of the held-out samples over their fixed function's, in lexemes.
    pub length_to_fix: f64,
    pub secure_at_1: f64,
    /// pass@1 on the self-invoking tasks.
    pub pass_at_1: f64,
    /// Final per-sequence KL to the SFT model during PPO (none for base and SFT).
    pub kl: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    pub seed: u64,
    pub data: BuildStats,
    pub rows: Vec<DemoRow>,
    pub seconds: f64,
}

/// Renders the table the demo prints and the README shows.
pub fn table(rows: &[DemoRow]) -> String {
    let mut s = String::from(
        "| model | vuln rate (high+medium) | high+medium / 100 samples | writes a function | similarity to the fix | length / the fix's | secure@1 | pass@1 (self-invoking) | KL to SFT |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let kl = r.kl.map_or("—".to_string(), |k| format!("{k:.2}"));
        s.push_str(&format!(
            "| {} | {:.1} % | {:.1} | {:.1} % | {:.3} | {:.2} | {:.3} | {:.3} | {kl} |\n",
            r.model,
            100.0 * r.vuln_rate,
            r.high_medium_per_100,
            100.0 * r.function_share,
            r.similarity_to_fix,
            r.length_to_fix,
            r.secure_at_1,
            r.pass_at_1
        ));
    }
    s
}

/// Pretrains the base model on every corpus function, vulnerable and fixed,
/// and on the train split's prompts answered with either version.
fn pretrain(work: &Path, data: &Path, tok_json: &str, budget: &Budget, seed: u64, log: &mut impl FnMut(&str)) -> Result<PathBuf> {
    let be = Cpu;
    let tok = crate::tokenizer::Tokenizer::from_bytes(tok_json.as_bytes(), "demo tokenizer")?;
    let eos = tok.eos_id()?;
    let mut stream = Vec::new();
    for (_, f) in corpus::functions() {
        stream.extend(tok.encode(&f)?.ids);
        stream.push(eos);
    }
    for r in read_records(&data.join("primevul_plus.jsonl"))?.iter().filter(|r| r.split == "train") {
        for (p, answer) in r.prompts.iter().zip([&r.vulnerable, &r.secure].iter().cycle()) {
            stream.extend(tok.encode(&format!("{}{answer}", PromptFormat::Plain.instruction(p)))?.ids);
            stream.push(eos);
        }
    }
    let (batch, seq) = (8, 128);
    // The config names its end of text, as HF configs do, so every sampler stops there.
    let cfg = ModelConfig { eos_token_ids: vec![eos], ..tiny_config(tok.vocab_size()) };
    log(&format!(
        "pretrain: {}-layer Llama ({} params) on {} tokens of vulnerable and fixed code, {} steps",
        cfg.num_layers,
        crate::model::weights::param_count(&cfg),
        stream.len(),
        budget.pretrain_steps
    ));
    let model = Transformer::from_host(&be, cfg.clone(), &init_params(&cfg, seed));
    let schedule = LrSchedule { kind: ScheduleKind::Cosine, peak: 3e-3, min: 3e-4, warmup_steps: 20, total_steps: budget.pretrain_steps };
    let mut trainer =
        Trainer::new(&be, model, TrainerConfig { batch, seq, opt: AdamWConfig::default(), schedule, max_grad_norm: 1.0, recompute: false });
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for step in 0..budget.pretrain_steps {
        let mut ids = Vec::with_capacity(batch * seq);
        for _ in 0..batch {
            let start = rng.random_range(0..stream.len() - seq);
            ids.extend_from_slice(&stream[start..start + seq]);
        }
        let n = ids.len();
        let s = trainer.step(&be, &[Batch::causal_lm(ids, &vec![true; n], batch, seq, (batch * (seq - 1)) as f32)])?;
        if step % 100 == 0 || step + 1 == budget.pretrain_steps {
            log(&format!("  step {:4}  loss {:.4}", s.step, s.loss));
        }
    }
    let dir = work.join("base");
    save_model(&be, &dir, &trainer.model, Some(tok_json.as_bytes()))?;
    Ok(dir)
}

/// The held-out split's implicit prompts, one per record.
fn held_out_tasks(data: &Path, limit: usize) -> Result<Vec<Task>> {
    let records = read_records(&data.join("primevul_plus.jsonl"))?;
    Ok(records.iter().filter_map(held_out_task).take(limit).collect())
}

/// Evaluates one model; its held-out samples and report go to `work/eval/NAME`.
fn evaluate_model(work: &Path, dir: &Path, held_out: &[Task], budget: &Budget, seed: u64, name: &str, kl: Option<f64>) -> Result<DemoRow> {
    let be = Cpu;
    let model = Transformer::load(&be, dir)?;
    let tok = crate::tokenizer::Tokenizer::load(dir)?;
    let opts = EvalOptions {
        samples: budget.samples,
        batch: 32,
        temperature: 0.8,
        top_p: 0.95,
        max_new_tokens: 128,
        seed,
        tools: vec!["builtin".into()],
        prompt_format: PromptFormat::Plain,
        isolation: Isolation::BestEffort,
    };
    let (sec, samples) = evaluate(&be, &model, &tok, held_out, &opts)?;
    let folder = name.split_whitespace().next().unwrap_or(name);
    crate::eval::report::write(&work.join("eval").join(folder), "held-out", dir, &sec, &samples)?;
    let (func, _) = evaluate(&be, &model, &tok, &load_bench("self-invoking")?, &opts)?;
    Ok(DemoRow {
        model: name.into(),
        vuln_rate: sec.vulnerable_sample_share,
        high_medium_per_100: sec.high_medium_per_100,
        function_share: sec.function_share,
        similarity_to_fix: sec.reference_similarity.unwrap_or(0.0),
        length_to_fix: sec.reference_length_ratio.unwrap_or(0.0),
        secure_at_1: sec.secure_at_k.get(&1).copied().unwrap_or(0.0),
        pass_at_1: func.pass_at_k.get(&1).copied().unwrap_or(0.0),
        kl,
    })
}

/// What the demo writes in its folder: a rerun replaces these.
const OUTPUTS: [&str; 9] =
    ["primevul_plus", "base", "sft", "ppo-instance", "ppo-tlr", "ppo-tlr-decoupled", "eval", "demo_report.json", "ppo_vuln_rate.png"];

/// Removes an earlier demo's outputs from `work`; a folder holding anything
/// else is refused, as the demo must not delete what it did not write.
fn clear_previous(work: &Path) -> Result<()> {
    if !work.exists() {
        return Ok(());
    }
    let mut names = Vec::new();
    for e in std::fs::read_dir(work).with_context(|| format!("reading {}", work.display()))? {
        names.push(e?.file_name().to_string_lossy().into_owned());
    }
    if let Some(other) = names.iter().find(|n| !OUTPUTS.contains(&n.as_str())) {
        bail!("{} holds {other}, which the demo did not write; choose another --out", work.display());
    }
    for name in names {
        let path = work.join(name);
        if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) }
            .with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}

/// Runs the pipeline in `work` (kept, so every stage's output can be
/// inspected; an earlier demo's outputs there are replaced).
pub fn run(opts: &DemoOptions, work: &Path, mut log: impl FnMut(&str)) -> Result<DemoReport> {
    let t0 = std::time::Instant::now();
    let budget = Budget::of(opts.quick);
    clear_previous(work)?;
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let funcs = corpus::functions();
    let (_, tok_json) = train_bpe(funcs.iter().map(|(_, f)| f.as_str()), budget.vocab)?;
    log(&format!("tokenizer: byte-level BPE, {} tokens, trained on {} corpus functions", budget.vocab, funcs.len()));
    let data_dir = work.join("primevul_plus");
    let data = build(
        &BuildOptions {
            inputs: vec![Input::Embedded],
            out: data_dir.clone(),
            prompts_per_pair: 3,
            threshold: 0.7,
            concurrency: 2,
            skip_bad: false,
            test_fraction: 0.15,
            analyzer_check: true,
        },
        &Heuristic,
        &|_| {},
    )?;
    log(&format!(
        "data: {} PrimeVul pairs -> {} PrimeVul+ records (dropped {:?}), splits {:?}",
        data.pairs_in, data.kept, data.dropped, data.splits
    ));
    let base = pretrain(work, &data_dir, &tok_json, &budget, opts.seed, &mut log)?;

    let sft_run = work.join("sft");
    let s = sft::run(
        &Cpu,
        &SftOptions {
            model: base.clone(),
            data: data_dir.clone(),
            out: sft_run.clone(),
            steps: budget.sft_steps,
            batch: 8,
            seq: 128,
            grad_accum: 1,
            lr: 1e-3,
            warmup: 10,
            max_grad_norm: 1.0,
            eval_every: (budget.sft_steps / 4).max(1),
            save_every: 0,
            seed: opts.seed,
            prompt_format: PromptFormat::Plain,
            resume: false,
            recompute: false,
        },
        |_| {},
    )?;
    log(&format!("sft: {} steps, train loss {:.3}, held-out loss {:.3}", s.steps, s.final_loss, s.eval_loss));
    let sft_model = sft_run.join(format!("step-{:06}", budget.sft_steps));

    let mut ppo_runs = Vec::new();
    for (name, mode, clip) in [
        ("ppo-instance", RewardMode::Instance, ClipMode::Standard),
        ("ppo-tlr", RewardMode::Tlr, ClipMode::Standard),
        ("ppo-tlr-decoupled", RewardMode::Tlr, ClipMode::Decoupled { eps_tok: 0.5 }),
    ] {
        let out = work.join(name);
        let summary = ppo::run(
            &Cpu,
            &PpoOptions {
                policy: sft_model.clone(),
                data: data_dir.clone(),
                out: out.clone(),
                mode,
                reward: RewardConfig::default(),
                iters: budget.ppo_iters,
                rollout_batch: budget.rollout_batch,
                max_new_tokens: 128,
                temperature: 1.0,
                epochs: 2,
                minibatch: 8,
                lr: 5e-5,
                critic_lr: 1e-4,
                clip_eps: 0.2,
                clip,
                value_clip: 0.2,
                gamma: 1.0,
                lambda: 0.95,
                kl: AdaptiveKl { coef: 0.05, target: 6.0, horizon: 10_000.0 },
                kl_estimator: KlEstimator::K3,
                entropy_coef: 0.0,
                max_grad_norm: 1.0,
                seed: opts.seed,
                save_every: 0,
                prompt_format: PromptFormat::Plain,
                resume: false,
            },
            |row| {
                if row["iter"].as_u64().is_some_and(|i| i % 10 == 0) {
                    log(&format!(
                        "  {name} iter {}: train vuln rate {:.2}, code rate {:.2}, similarity to the fix {:.2}, length / the fix's {:.2}, kl {:.2}",
                        row["iter"],
                        row["vuln_rate"].as_f64().unwrap_or(0.0),
                        row["code_rate"].as_f64().unwrap_or(0.0),
                        row["similarity"].as_f64().unwrap_or(0.0),
                        row["length_ratio"].as_f64().unwrap_or(0.0),
                        row["kl"].as_f64().unwrap_or(0.0)
                    ));
                }
            },
        )?;
        log(&format!(
            "{name}: {} iterations, final train vuln rate {:.2}, code rate {:.2}",
            summary.iters,
            summary.last["vuln_rate"].as_f64().unwrap_or(0.0),
            summary.last["code_rate"].as_f64().unwrap_or(0.0)
        ));
        ppo_runs.push((name, out.join(format!("step-{:06}", budget.ppo_iters)), summary.last["kl"].as_f64()));
    }

    let held_out = held_out_tasks(&data_dir, budget.eval_tasks)?;
    log(&format!("eval: {} held-out prompts × {} samples per model, plus the self-invoking tasks", held_out.len(), budget.samples));
    let mut rows = vec![
        evaluate_model(work, &base, &held_out, &budget, opts.seed, "base (pretrained)", None)?,
        evaluate_model(work, &sft_model, &held_out, &budget, opts.seed, "sft", None)?,
    ];
    for (name, dir, kl) in &ppo_runs {
        rows.push(evaluate_model(work, dir, &held_out, &budget, opts.seed, name, *kl)?);
    }
    let report = DemoReport { seed: opts.seed, data, rows, seconds: t0.elapsed().as_secs_f64() };
    crate::fsutil::atomic_write(&work.join("demo_report.json"), serde_json::to_string_pretty(&report)?.as_bytes())?;
    plot_ppo_curves(work, &ppo_runs.iter().map(|(n, _, _)| *n).collect::<Vec<_>>())?;
    Ok(report)
}

/// Training-time vulnerability rate per PPO iteration, one line per run.
fn plot_ppo_curves(work: &Path, runs: &[&str]) -> Result<()> {
    let mut series = Vec::new();
    for name in runs {
        let text = std::fs::read_to_string(work.join(name).join("metrics.jsonl"))?;
        let points: Vec<(f64, f64)> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| (v["iter"].as_f64().unwrap_or(0.0), v["vuln_rate"].as_f64().unwrap_or(0.0)))
            .collect();
        series.push((name.to_string(), points));
    }
    // Plots are a convenience: a missing font must not fail the demo.
    if let Err(e) = crate::eval::plot::plot_lines(
        &work.join("ppo_vuln_rate.png"),
        "PPO: vulnerable samples per iteration",
        "iteration",
        "vuln rate",
        &series,
        (0.0, 1.0),
    ) {
        eprintln!("note: no plot: {e:#}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rerun_replaces_only_a_demo_folder() {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("demo");
        std::fs::create_dir_all(work.join("sft/step-000010")).unwrap();
        std::fs::write(work.join("demo_report.json"), "{}").unwrap();
        clear_previous(&work).unwrap();
        assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0, "an earlier demo's outputs are removed");

        std::fs::create_dir_all(work.join("sft")).unwrap();
        std::fs::write(work.join("notes.txt"), "mine").unwrap();
        let e = clear_previous(&work).unwrap_err().to_string();
        assert!(e.contains("notes.txt") && e.contains("another --out"), "{e}");
        assert!(work.join("notes.txt").exists() && work.join("sft").exists(), "nothing removed from a folder it did not write");
        clear_previous(&dir.path().join("absent")).unwrap();
    }
}
