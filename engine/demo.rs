//! `vul2safe demo`: the whole pipeline that exists today, on the embedded
//! default (tiny model, embedded corpus, CPU, no network): build PrimeVul+
//! from the embedded PrimeVul sample with the heuristic teacher, train a tiny
//! Llama from scratch on the fixed (secure) functions of the train split, then
//! complete a held-out function from its signature.

use crate::backend::cpu::Cpu;
use crate::data::build::{build, read_records, BuildOptions, BuildStats, Input};
use crate::data::record::PrimeVulPlus;
use crate::data::teacher::heuristic::Heuristic;
use crate::generate::{generate, SamplingConfig};
use crate::model::weights::init_params;
use crate::model::{Arch, Batch, ModelConfig, Transformer};
use crate::tensor::DType;
use crate::tokenizer::Tokenizer;
use crate::train::{AdamWConfig, LrSchedule, ScheduleKind, Trainer};
use anyhow::{ensure, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

pub const TOKENIZER_JSON: &[u8] = include_bytes!("../models/tiny/tokenizer.json");

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub steps: u64,
    pub batch: usize,
    pub seq: usize,
    pub seed: u64,
    pub max_new_tokens: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions { steps: 400, batch: 8, seq: 128, seed: 0, max_new_tokens: 80 }
    }
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

pub struct DemoReport {
    pub first_loss: f64,
    pub final_loss: f64,
    pub tokens_per_sec: f64,
    pub data: BuildStats,
    pub sample: String,
}

/// Builds PrimeVul+ from the embedded corpus into `dir` with the offline teacher.
fn build_data(dir: &Path, log: &mut impl FnMut(&str)) -> Result<(BuildStats, Vec<PrimeVulPlus>)> {
    let opts = BuildOptions {
        inputs: vec![Input::Embedded],
        out: dir.to_path_buf(),
        prompts_per_pair: 3,
        threshold: 0.7,
        concurrency: 2,
        skip_bad: false,
        test_fraction: 0.1,
        analyzer_check: true,
    };
    let stats = build(&opts, &Heuristic, &|_| {})?;
    log(&format!(
        "data: {} PrimeVul pairs -> {} PrimeVul+ records ({} CWEs; dropped {:?}) in {:.3}s",
        stats.pairs_in,
        stats.kept,
        stats.cwe_histogram.len(),
        stats.dropped,
        stats.seconds
    ));
    Ok((stats, read_records(&dir.join("primevul_plus.jsonl"))?))
}

/// Runs the pipeline; `log` receives one progress line at a time. With
/// `out`, the PrimeVul+ data and the trained model (HF folder) are kept there.
pub fn run(opts: &DemoOptions, out: Option<&Path>, mut log: impl FnMut(&str)) -> Result<DemoReport> {
    let be = Cpu;
    let scratch = std::env::temp_dir().join(format!("vul2safe-demo-{}", std::process::id()));
    let data_dir = out.map(|o| o.join("primevul_plus")).unwrap_or_else(|| scratch.clone());
    let built = build_data(&data_dir, &mut log);
    if out.is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let (data, records) = built?;

    let tok = Tokenizer::from_bytes(TOKENIZER_JSON, "embedded tokenizer.json")?;
    let eos = tok.token_id("<|endoftext|>").context("tokenizer lacks <|endoftext|>")?;
    let mut stream = Vec::new();
    for r in records.iter().filter(|r| r.split == "train") {
        stream.extend(tok.encode(&r.secure)?.ids);
        stream.push(eos);
    }
    ensure!(stream.len() > opts.seq + 1, "training text shorter than one window");
    let cfg = tiny_config(tok.vocab_size());
    log(&format!(
        "sft-lm: training a {}-layer Llama ({} params) on {} tokens of fixed functions, {} steps of {}×{} on the CPU",
        cfg.num_layers,
        crate::model::weights::param_count(&cfg),
        stream.len(),
        opts.steps,
        opts.batch,
        opts.seq
    ));
    let model = Transformer::from_host(&be, cfg.clone(), &init_params(&cfg, opts.seed));
    let schedule = LrSchedule { kind: ScheduleKind::Cosine, peak: 3e-3, min: 3e-4, warmup_steps: 20, total_steps: opts.steps };
    let mut trainer = Trainer::new(&be, model, opts.batch, opts.seq, AdamWConfig::default(), schedule, 1.0);
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let (mut first_loss, mut final_loss, mut tokens, mut secs) = (f64::NAN, f64::NAN, 0usize, 0.0);
    for step in 0..opts.steps {
        let mut ids = Vec::with_capacity(opts.batch * opts.seq);
        for _ in 0..opts.batch {
            let start = rng.random_range(0..stream.len() - opts.seq);
            ids.extend_from_slice(&stream[start..start + opts.seq]);
        }
        let n = ids.len();
        let batch = Batch::causal_lm(ids, &vec![true; n], opts.batch, opts.seq, (opts.batch * (opts.seq - 1)) as f32);
        let s = trainer.step(&be, &[batch])?;
        if step == 0 {
            first_loss = s.loss;
        }
        final_loss = s.loss;
        tokens += s.tokens;
        secs += s.secs;
        if step % 50 == 0 || step + 1 == opts.steps {
            log(&format!("step {:4}  loss {:.4}  grad-norm {:.3}  lr {:.2e}", s.step, s.loss, s.grad_norm, s.lr));
        }
    }

    // Complete a held-out function from its signature.
    let held_out = records.iter().find(|r| r.split == "test" && r.lang == "c").or(records.first()).context("no records")?;
    let head_len = held_out.secure.find('{').map_or(held_out.secure.len(), |i| i + 1);
    let head = &held_out.secure[..head_len];
    let prompt = tok.encode(head)?.ids;
    let sampling = SamplingConfig { max_new_tokens: opts.max_new_tokens, stop_tokens: vec![eos], ..Default::default() };
    let gen = generate(&be, &trainer.model, &[prompt], &sampling)?;
    let sample = format!("{head}{}", tok.decode(&gen[0].tokens)?);
    log(&format!("greedy completion of held-out {} ({}):\n{sample}", held_out.id, held_out.cwe.join(",")));
    if let Some(dir) = out {
        let model_dir = dir.join("model");
        trainer.model.save(&be, &model_dir)?;
        crate::fsutil::atomic_write(&model_dir.join("tokenizer.json"), TOKENIZER_JSON)?;
        log(&format!("saved PrimeVul+ to {} and the model to {}", data_dir.display(), model_dir.display()));
    }
    Ok(DemoReport { first_loss, final_loss, tokens_per_sec: tokens as f64 / secs.max(1e-9), data, sample })
}
