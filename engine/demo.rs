//! `vul2safe demo`: the whole pipeline that exists today, on the embedded
//! default (tiny model, embedded corpus, CPU, no network). It trains a tiny
//! Llama from scratch on safe C functions, then generates from it.

use crate::backend::cpu::Cpu;
use crate::generate::{generate, SamplingConfig};
use crate::model::weights::init_params;
use crate::model::{Arch, Batch, ModelConfig, Transformer};
use crate::tensor::DType;
use crate::tokenizer::Tokenizer;
use crate::train::{AdamWConfig, LrSchedule, ScheduleKind, Trainer};
use anyhow::{ensure, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

pub const CORPUS: &str = include_str!("../models/tiny/demo_corpus.c");
pub const TOKENIZER_JSON: &[u8] = include_bytes!("../models/tiny/tokenizer.json");

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub steps: u64,
    pub batch: usize,
    pub seq: usize,
    pub seed: u64,
    pub prompt: String,
    pub max_new_tokens: usize,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions { steps: 300, batch: 8, seq: 64, seed: 0, prompt: "int parse_port(".into(), max_new_tokens: 60 }
    }
}

/// The tiny demo model: Llama, 2 layers, hidden 64, 4 heads of 16.
pub fn tiny_config(vocab: usize) -> ModelConfig {
    ModelConfig {
        arch: Arch::Llama,
        vocab_size: vocab,
        hidden_size: 64,
        intermediate_size: 192,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 4,
        head_dim: 16,
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
    pub sample: String,
}

/// Trains and samples; `log` receives one progress line at a time. With
/// `out`, the trained model and tokenizer are saved there as an HF folder.
pub fn run(opts: &DemoOptions, out: Option<&Path>, mut log: impl FnMut(&str)) -> Result<DemoReport> {
    let be = Cpu;
    let tok = Tokenizer::from_bytes(TOKENIZER_JSON, "embedded tokenizer.json")?;
    let stream = tok.encode(CORPUS)?.ids;
    ensure!(stream.len() > opts.seq + 1, "demo corpus shorter than one window");
    let cfg = tiny_config(tok.vocab_size());
    log(&format!(
        "demo: training a {}-layer Llama ({} params) on {} tokens of embedded C, {} steps of {}×{} on the CPU",
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
    let prompt = tok.encode(&opts.prompt)?.ids;
    let sampling = SamplingConfig { max_new_tokens: opts.max_new_tokens, ..Default::default() };
    let gen = generate(&be, &trainer.model, &[prompt], &sampling)?;
    let sample = format!("{}{}", opts.prompt, tok.decode(&gen[0].tokens)?);
    log(&format!("greedy sample after training:\n{sample}"));
    if let Some(dir) = out {
        trainer.model.save(&be, dir)?;
        crate::fsutil::atomic_write(&dir.join("tokenizer.json"), TOKENIZER_JSON)?;
        log(&format!("saved the trained model to {}", dir.display()));
    }
    Ok(DemoReport { first_loss, final_loss, tokens_per_sec: tokens as f64 / secs.max(1e-9), sample })
}
