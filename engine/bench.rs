//! Throughput measurements shared by `vul2safe bench` and the criterion
//! benches: the training step (on the shapes the PyTorch scripts also run),
//! batched generation with its memory-bandwidth roofline, and the built-in
//! analyzer.

pub mod attention;

use crate::backend::cuda::profile::{FamilyTime, Peaks};
use crate::backend::{AttnShape, Backend};
use crate::generate::{generate_continuous, SamplingConfig};
use crate::model::weights::init_params;
use crate::model::{Arch, Batch, KvCache, ModelConfig, Transformer};
use crate::tensor::DType;
use crate::train::{AdamWConfig, LrSchedule, ScheduleKind, StepStats, Trainer, TrainerConfig};
use anyhow::{bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Llama, 4 layers, hidden 256, 4 heads, FFN 768, vocab 8192, untied.
pub fn small_llama() -> ModelConfig {
    ModelConfig {
        arch: Arch::Llama,
        vocab_size: 8192,
        hidden_size: 256,
        intermediate_size: 768,
        num_layers: 4,
        num_heads: 4,
        num_kv_heads: 4,
        head_dim: 64,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 1024,
        tie_word_embeddings: false,
        qkv_bias: false,
        dtype: DType::F32,
        bos_token_id: None,
        eos_token_ids: vec![],
    }
}

/// A benchmark's model shape: `small`, the two shapes of the PyTorch
/// reference (../shared/torch_baseline.py), or an HF folder's config.json
/// (a model's, or a preset's such as models/qwen2.5-coder-1.5b; only the
/// shape is read, the weights are random).
pub fn named_shape(name: &str) -> anyhow::Result<ModelConfig> {
    let dir = std::path::Path::new(name);
    if dir.join("config.json").is_file() {
        return ModelConfig::load(dir);
    }
    let base = small_llama();
    Ok(match name {
        "small" => base,
        "llama-124m" => ModelConfig {
            vocab_size: 50304,
            hidden_size: 768,
            intermediate_size: 2048,
            num_layers: 12,
            num_heads: 12,
            num_kv_heads: 12,
            tie_word_embeddings: true,
            max_position_embeddings: 2048,
            ..base
        },
        "qwen2-0.5b" => ModelConfig {
            arch: Arch::Qwen2,
            vocab_size: 151936,
            hidden_size: 896,
            intermediate_size: 4864,
            num_layers: 24,
            num_heads: 14,
            num_kv_heads: 2,
            qkv_bias: true,
            tie_word_embeddings: true,
            max_position_embeddings: 4096,
            ..base
        },
        other => anyhow::bail!("unknown shape {other:?} (small, llama-124m, qwen2-0.5b, or a folder with a config.json)"),
    })
}

/// Training FLOPs per token: 6·N for the weights plus the attention matmuls
/// (causal: half of 12·layers·seq·d_head·heads).
pub fn flops_per_token(cfg: &ModelConfig, seq: usize) -> f64 {
    let n = crate::model::weights::param_count(cfg) as f64;
    6.0 * n + 6.0 * (cfg.num_layers * seq * cfg.q_dim()) as f64
}

/// TFLOP/s of `flops` done in `ms` milliseconds.
pub fn tflop_per_s(flops: f64, ms: f64) -> f64 {
    flops / (ms * 1e-3) / 1e12
}

/// Flash attention's forward, backward and overall TFLOP/s from a profiled
/// training bench (`rows` summed over `steps` steps), as
/// [`attention::causal_rates`] counts them. None when the flash kernels did
/// not run (exact mode).
pub fn flash_tflops(rows: &[FamilyTime], cfg: &ModelConfig, batch: usize, seq: usize, steps: usize) -> Option<[f64; 3]> {
    let ms = |families: &[&str]| rows.iter().filter(|r| families.contains(&r.family.as_str())).map(|r| r.ms).sum::<f64>() / steps as f64;
    let (fwd_ms, bwd_ms) = (ms(&["flash_fwd"]), ms(&["flash_bwd", "flash_dq_finish", "attention_rowdot", "flash_group_sum"]));
    if fwd_ms <= 0.0 || bwd_ms <= 0.0 {
        return None;
    }
    let sh = AttnShape { batch, q_heads: cfg.num_heads, kv_heads: cfg.num_kv_heads, q_len: seq, kv_cap: seq, head_dim: cfg.head_dim };
    Some(attention::causal_rates(sh.causal_fwd_flops() * cfg.num_layers as f64, fwd_ms, bwd_ms))
}

/// The matmuls' TFLOP/s in a profiled training step: 6 FLOPs per parameter
/// and token (8 when `recompute` runs the forward's matmuls again) over the
/// `gemm` family's time. None without matmul time.
pub fn gemm_tflops(rows: &[FamilyTime], cfg: &ModelConfig, tokens: usize, recompute: bool, steps: usize) -> Option<f64> {
    let ms = rows.iter().filter(|r| r.family == "gemm").map(|r| r.ms).sum::<f64>() / steps as f64;
    let per_param_token = if recompute { 8.0 } else { 6.0 };
    let flops = per_param_token * crate::model::weights::param_count(cfg) as f64 * tokens as f64;
    (ms > 0.0).then(|| tflop_per_s(flops, ms))
}

/// A trainer on random weights and one fixed random batch.
pub fn setup<B: Backend>(be: &B, cfg: ModelConfig, batch: usize, seq: usize, recompute: bool) -> (Trainer<B>, Batch) {
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let ids: Vec<u32> = (0..batch * seq).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect();
    let n = batch * seq;
    let b = Batch::causal_lm(ids, &vec![true; n], batch, seq, (batch * (seq - 1)) as f32);
    let model = Transformer::from_host(be, cfg.clone(), &init_params(&cfg, 0));
    let schedule = LrSchedule { kind: ScheduleKind::Constant, peak: 1e-4, min: 1e-4, warmup_steps: 0, total_steps: 1 };
    let c = TrainerConfig { batch, seq, opt: AdamWConfig::default(), schedule, max_grad_norm: 1.0, recompute };
    (Trainer::new(be, model, c), b)
}

/// Median training-step throughput after `warmup` steps, and the loss of
/// the first and last step (on one fixed batch it must fall: a bench whose
/// kernels compute nothing useful shows it here).
pub struct TrainBench {
    pub tokens_per_sec: f64,
    pub step_ms: f64,
    pub first_loss: f64,
    pub last_loss: f64,
}

/// `before_timed` runs between the warm-up and the timed steps (where a profiler starts).
#[allow(clippy::too_many_arguments)]
pub fn train_throughput<B: Backend>(
    be: &B,
    cfg: ModelConfig,
    batch: usize,
    seq: usize,
    recompute: bool,
    warmup: usize,
    steps: usize,
    before_timed: impl FnOnce(),
) -> Result<TrainBench> {
    be.supports(&cfg).with_context(|| format!("the {} backend cannot run this shape", be.name()))?;
    let (mut trainer, b) = setup(be, cfg, batch, seq, recompute);
    let mut step = || -> Result<StepStats> {
        let s = trainer.step(be, std::slice::from_ref(&b))?;
        // A skipped update is cheaper than a real one: its time is not a training step's.
        if s.skipped {
            bail!(
                "step {}: the loss ({}) or the gradient norm ({}) is not finite, so the step measures nothing",
                s.step,
                s.loss,
                s.grad_norm
            );
        }
        Ok(s)
    };
    let warm = (0..warmup).map(|_| step()).collect::<Result<Vec<_>>>()?;
    before_timed();
    let stats = (0..steps).map(|_| step()).collect::<Result<Vec<_>>>()?;
    let mut secs: Vec<f64> = stats.iter().map(|s| s.secs).collect();
    secs.sort_by(f64::total_cmp);
    let med = secs[secs.len() / 2];
    let first_loss = warm.first().unwrap_or(&stats[0]).loss;
    let last_loss = stats[stats.len() - 1].loss;
    Ok(TrainBench { tokens_per_sec: (batch * seq) as f64 / med, step_ms: med * 1e3, first_loss, last_loss })
}

/// New tokens per second of sampled generation from random prompts, and
/// prompt tokens per second of one packed prefill of a batch of them.
pub struct GenerateBench {
    pub new_tokens_per_sec: f64,
    pub secs: f64,
    pub prefill_tokens_per_sec: f64,
}

/// `prompts` random prompts of `prompt_len` tokens through `batch` rows of
/// continuous batching, `new` sampled tokens each (temperature 1, no
/// truncation, no stop tokens), timed from the prefill to the last token as
/// HF `generate` is, after a short warm-up. The prefill of the first `batch`
/// prompts is also timed alone, before the timed run (outside `before_timed`).
pub fn generate_throughput<B: Backend>(
    be: &B,
    cfg: ModelConfig,
    batch: usize,
    prompts: usize,
    prompt_len: usize,
    new: usize,
    before_timed: impl FnOnce(),
) -> Result<GenerateBench> {
    be.supports(&cfg).with_context(|| format!("the {} backend cannot run this shape", be.name()))?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let prompts: Vec<Vec<u32>> =
        (0..prompts).map(|_| (0..prompt_len).map(|_| rng.random_range(0..cfg.vocab_size as u32)).collect()).collect();
    let model = Transformer::from_host(be, cfg.clone(), &init_params(&cfg, 0));
    let sampling = |max_new_tokens| SamplingConfig { max_new_tokens, temperature: 1.0, top_k: 0, top_p: 1.0, seed: 0, stop_tokens: vec![] };
    let first = &prompts[..batch.min(prompts.len())];
    generate_continuous(be, &model, first, batch, &sampling(2))?;
    let mut cache = KvCache::new(be, &cfg, first.len(), prompt_len);
    let first: Vec<&[u32]> = first.iter().map(Vec::as_slice).collect();
    be.synchronize();
    let t0 = std::time::Instant::now();
    model.prefill_packed(be, &first, &(0..first.len()).collect::<Vec<_>>(), &mut cache)?;
    be.synchronize();
    let prefill_tokens_per_sec = (first.len() * prompt_len) as f64 / t0.elapsed().as_secs_f64();
    before_timed();
    let t0 = std::time::Instant::now();
    let out = generate_continuous(be, &model, &prompts, batch, &sampling(new))?;
    be.synchronize();
    let secs = t0.elapsed().as_secs_f64();
    let made: usize = out.iter().map(|g| g.tokens.len()).sum();
    Ok(GenerateBench { new_tokens_per_sec: made as f64 / secs, secs, prefill_tokens_per_sec })
}

/// New tokens/s if every decode step only streamed the bf16 weights and the
/// bf16 KV cache (at its mean length over the run) from memory once.
pub fn decode_roofline_tok_s(cfg: &ModelConfig, batch: usize, prompt_len: usize, new: usize, bytes_per_sec: f64) -> f64 {
    let weights = 2.0 * crate::model::weights::param_count(cfg) as f64;
    let mean_len = prompt_len as f64 + new as f64 / 2.0;
    let kv = 2.0 * 2.0 * (cfg.num_layers * cfg.kv_dim()) as f64 * mean_len * batch as f64;
    batch as f64 * bytes_per_sec / (weights + kv)
}

/// HBM bandwidth and dense bf16 tensor-core peak of the cards we know, by
/// the driver's name for them (vendor datasheets): for MFU, the decode
/// roofline and the profile's roofline column.
pub fn card_peaks(device_name: &str) -> Option<Peaks> {
    let has = |s: &str| device_name.contains(s);
    let (bytes_per_s, flops_per_s) = if has("H200") {
        (4.8e12, 989.4e12)
    } else if has("H100") && has("PCIe") {
        (2.0e12, 756.0e12)
    } else if has("H100") {
        (3.35e12, 989.4e12)
    } else if has("A100") {
        (if has("80GB") { 2.039e12 } else { 1.555e12 }, 312e12)
    } else {
        return None;
    };
    Some(Peaks { bytes_per_s, flops_per_s })
}

/// Functions per second of the built-in analyzer on one thread, over `rounds`
/// passes of the embedded corpus; also returns the findings of one pass.
pub fn analyzer_throughput(rounds: usize) -> (f64, usize) {
    let funcs = crate::data::corpus::functions();
    let one_pass: usize = funcs.iter().map(|(l, f)| crate::eval::analyzer::builtin::analyze_text(*l, f, "f").len()).sum();
    let t0 = std::time::Instant::now();
    for _ in 0..rounds {
        for (l, f) in &funcs {
            std::hint::black_box(crate::eval::analyzer::builtin::analyze_text(*l, f, "f"));
        }
    }
    ((rounds * funcs.len()) as f64 / t0.elapsed().as_secs_f64(), one_pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cards' peaks by the names their drivers report; an unknown card has none.
    #[test]
    fn card_peaks_by_driver_name() {
        let peaks = |name: &str| card_peaks(name).map(|p| (p.bytes_per_s / 1e12, p.flops_per_s / 1e12));
        assert_eq!(peaks("NVIDIA H200"), Some((4.8, 989.4)));
        assert_eq!(peaks("NVIDIA H100 80GB HBM3"), Some((3.35, 989.4)));
        assert_eq!(peaks("NVIDIA H100 PCIe"), Some((2.0, 756.0)));
        assert_eq!(peaks("NVIDIA A100-SXM4-80GB"), Some((2.039, 312.0)));
        assert_eq!(peaks("NVIDIA A100-SXM4-40GB"), Some((1.555, 312.0)));
        assert_eq!(peaks("CPU kernel emulator (tools/kernel-emu)"), None);
    }

    /// Run 4's llama-124m profile (B16, T1024: forward 4.5 ms, backward 16.4
    /// ms, then in two passes) gave fwd 68, bwd 47 and fwd+bwd 52 TFLOP/s by
    /// hand; the same kernel times give the same here.
    #[test]
    fn flash_rates_from_a_profile() {
        let row = |family: &str, ms: f64| FamilyTime { family: family.into(), calls: 12, ms, ..Default::default() };
        let rows = [row("gemm", 21.0), row("flash_fwd", 4.5), row("flash_bwd", 10.4), row("flash_dq_finish", 6.0)];
        let [f, b, t] = flash_tflops(&rows, &named_shape("llama-124m").unwrap(), 16, 1024, 1).unwrap();
        assert_eq!([f.round(), b.round(), t.round()], [69.0, 47.0, 52.0]);
        assert!(flash_tflops(&rows[..1], &named_shape("llama-124m").unwrap(), 16, 1024, 1).is_none(), "no flash kernels, no rate");
    }

    /// Run 4's matmuls: 21.0 ms per llama-124m B16×1024 step for 6 × 124M
    /// parameters × 16,384 tokens, about 580 TFLOP/s.
    #[test]
    fn matmul_rate_from_a_profile() {
        let cfg = named_shape("llama-124m").unwrap();
        let rows = [
            FamilyTime { family: "gemm".into(), calls: 273, ms: 42.0, ..Default::default() },
            FamilyTime { family: "flash_fwd".into(), calls: 24, ms: 9.0, ..Default::default() },
        ];
        let rate = gemm_tflops(&rows, &cfg, 16 * 1024, false, 2).unwrap();
        let want = 6.0 * crate::model::weights::param_count(&cfg) as f64 * 16384.0 / 21e-3 / 1e12;
        assert!((rate - want).abs() < 1e-9 && (570.0..590.0).contains(&rate), "{rate}");
        assert!((gemm_tflops(&rows, &cfg, 16 * 1024, true, 2).unwrap() / rate - 8.0 / 6.0).abs() < 1e-12);
        assert!(gemm_tflops(&rows[1..], &cfg, 16 * 1024, false, 2).is_none());
    }
}
