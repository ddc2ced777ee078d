//! The `vul2safe` driver: one binary for every stage of the pipeline.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde::Deserialize;
use std::path::PathBuf;
use vul2safe::backend::cpu::Cpu;
use vul2safe::generate::{generate, SamplingConfig};
use vul2safe::model::Transformer;
use vul2safe::tokenizer::Tokenizer;

#[derive(Parser)]
#[command(name = "vul2safe", version, about = "Train code LLMs to write secure code (Vul2Safe / SRCode)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole pipeline on the embedded default (tiny model, embedded corpus, CPU).
    Demo {
        /// Training steps.
        #[arg(long, default_value_t = 300)]
        steps: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Save the trained model and tokenizer here (HF folder).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Generate a continuation of a prompt.
    Generate {
        /// HF folder with config.json, model.safetensors and tokenizer.json.
        #[arg(long)]
        model: PathBuf,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// 0 = off.
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print JSON with token ids and logprobs instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Per-token log-probabilities of token rows: {"tokens": [[ids...], ...]}.
    Score {
        #[arg(long)]
        model: PathBuf,
        /// JSON file {"tokens": [[ids...], ...]}.
        #[arg(long)]
        tokens: PathBuf,
    },
    /// Throughput benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Training-step tokens/s of the CPU backend (Llama 4L, h256, vocab 8192).
    Cpu {
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 256)]
        seq: usize,
        #[arg(long, default_value_t = 5)]
        steps: usize,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreInput {
    tokens: Vec<Vec<u32>>,
}

fn validate_sampling(temperature: f32, top_p: f32) -> Result<()> {
    if !(temperature >= 0.0 && temperature.is_finite()) {
        bail!("--temperature must be a finite number ≥ 0, got {temperature}");
    }
    if !(top_p > 0.0 && top_p <= 1.0) {
        bail!("--top-p must be in (0, 1], got {top_p}");
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let be = Cpu;
    match cli.cmd {
        Cmd::Demo { steps, seed, out } => {
            let opts = vul2safe::demo::DemoOptions { steps, seed, ..Default::default() };
            let r = vul2safe::demo::run(&opts, out.as_deref(), |line| println!("{line}"))?;
            println!("demo: loss {:.3} -> {:.3}, {:.0} train tok/s", r.first_loss, r.final_loss, r.tokens_per_sec);
        }
        Cmd::Generate { model, prompt, max_new_tokens, temperature, top_k, top_p, seed, json } => {
            validate_sampling(temperature, top_p)?;
            let tok = Tokenizer::load(&model)?;
            let m = Transformer::load(&be, &model)?;
            let ids = tok.encode(&prompt)?.ids;
            if ids.is_empty() {
                bail!("--prompt encodes to no tokens");
            }
            let cfg = SamplingConfig { max_new_tokens, temperature, top_k, top_p, seed, stop_tokens: m.cfg.eos_token_ids.clone() };
            let g = generate(&be, &m, std::slice::from_ref(&ids), &cfg)?.remove(0);
            if json {
                let v =
                    serde_json::json!({"prompt_tokens": ids, "tokens": g.tokens, "logprobs": g.logprobs, "text": tok.decode(&g.tokens)?});
                println!("{v}");
            } else {
                println!("{}{}", prompt, tok.decode(&g.tokens)?);
            }
        }
        Cmd::Score { model, tokens } => {
            let text = std::fs::read_to_string(&tokens).with_context(|| format!("reading {}", tokens.display()))?;
            let input: ScoreInput = serde_json::from_str(&text)
                .with_context(|| format!("{}: expected JSON {{\"tokens\": [[ids...], ...]}}", tokens.display()))?;
            let m = Transformer::load(&be, &model)?;
            let lp = m.score(&be, &input.tokens).with_context(|| format!("scoring {}", tokens.display()))?;
            println!("{}", serde_json::json!({ "logprobs": lp }));
        }
        Cmd::Bench { what: BenchCmd::Cpu { batch, seq, steps } } => {
            if batch == 0 || seq < 2 || steps == 0 {
                bail!("--batch ≥ 1, --seq ≥ 2 and --steps ≥ 1 are required");
            }
            let cfg = vul2safe::bench::small_llama();
            let params = vul2safe::model::weights::param_count(&cfg);
            let r = vul2safe::bench::train_throughput(&be, cfg, batch, seq, 2, steps)?;
            println!(
                "{}",
                serde_json::json!({
                    "bench": "train-step", "backend": "cpu", "threads": rayon::current_num_threads(),
                    "model": "llama 4L h256 ffn768 vocab8192", "params": params, "batch": batch, "seq": seq,
                    "step_ms": (r.step_ms * 100.0).round() / 100.0, "tok_s": r.tokens_per_sec.round(),
                })
            );
        }
    }
    Ok(())
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
