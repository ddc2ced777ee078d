//! `bench`: the analyzers' speed and agreement, and training and generation
//! throughput on a backend (tok/s, TFLOP/s, MFU, peak memory; on CUDA the
//! tuned kernel variants and, with `--profile`, GPU time per kernel family).

use crate::backend_choice::{cuda, Kind};
use anyhow::{bail, Result};
use clap::Subcommand;
use vul2safe::backend::cpu::Cpu;
use vul2safe::backend::cuda::profile::{family_of, Profile};
use vul2safe::backend::cuda::Cuda;

#[derive(Subcommand)]
pub enum BenchCmd {
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
    Train(TrainArgs),
    /// New tokens/s of batched sampled generation (random weights and prompts), its share of the bandwidth roofline, and prefill tokens/s.
    Generate(GenerateArgs),
    /// Causal attention alone: forward and backward TFLOP/s on random operands (bench/torch_compare.py times FlashAttention-2 on the same shape).
    Attention(AttentionArgs),
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

#[derive(clap::Args)]
pub struct TrainArgs {
    #[arg(long, value_enum, default_value = "cuda")]
    backend: Kind,
    /// `small` (4L h256), `llama-124m`, `qwen2-0.5b`, or a folder with an HF config.json (random weights of its shape).
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
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    #[arg(long, value_enum, default_value = "cuda")]
    backend: Kind,
    /// `small`, `llama-124m`, `qwen2-0.5b`, or a folder with an HF config.json.
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
}

#[derive(clap::Args)]
pub struct AttentionArgs {
    #[arg(long, value_enum, default_value = "cuda")]
    backend: Kind,
    #[arg(long, default_value_t = 16)]
    batch: usize,
    #[arg(long, default_value_t = 1024)]
    seq: usize,
    /// Query heads (FlashAttention-2's benchmark: 2048 / head_dim).
    #[arg(long, default_value_t = 32)]
    heads: usize,
    /// Key/value heads (default: one per query head).
    #[arg(long)]
    kv_heads: Option<usize>,
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    /// Timed calls of each pass (after one untimed).
    #[arg(long, default_value_t = 10)]
    reps: usize,
    /// CUDA math: `bf16` (bf16 operands, flash kernels), `tf32` or `exact` (f32 per-row kernels).
    #[arg(long, default_value = "bf16")]
    math: String,
}

pub fn run(what: BenchCmd) -> Result<()> {
    match what {
        BenchCmd::Agreement { tools } => {
            for row in vul2safe::eval::agreement::corpus_agreement(&tools)? {
                println!("{}", serde_json::to_string(&row)?);
            }
        }
        BenchCmd::Analyzer { rounds } => {
            let (per_sec, findings) = vul2safe::bench::analyzer_throughput(rounds.max(1));
            let funcs = vul2safe::data::corpus::functions().len();
            let v = serde_json::json!({"bench": "analyzer", "tool": "builtin", "threads": 1, "functions": funcs, "findings_per_pass": findings, "functions_per_sec": per_sec.round()});
            println!("{v}");
        }
        BenchCmd::Train(a) => train(a)?,
        BenchCmd::Generate(a) => generate(a)?,
        BenchCmd::Attention(a) => attention(a)?,
        BenchCmd::Cpu { batch, seq, steps } => {
            check_train_shape(batch, seq, steps)?;
            let cfg = vul2safe::bench::small_llama();
            let params = vul2safe::model::weights::param_count(&cfg);
            let r = vul2safe::bench::train_throughput(&Cpu, cfg, batch, seq, false, 2, steps, || {})?;
            println!(
                "{}",
                serde_json::json!({
                    "bench": "train-step", "backend": "cpu", "threads": rayon::current_num_threads(),
                    "model": "llama 4L h256 ffn768 vocab8192", "params": params, "batch": batch, "seq": seq,
                    "step_ms": rounded(r.step_ms, 2), "tok_s": r.tokens_per_sec.round(),
                    "loss_first": rounded(r.first_loss, 4), "loss_last": rounded(r.last_loss, 4),
                })
            );
        }
    }
    Ok(())
}

/// A training bench needs a row, a next token to predict, and a timed step.
fn check_train_shape(batch: usize, seq: usize, steps: usize) -> Result<()> {
    if batch == 0 || seq < 2 || steps == 0 {
        bail!("--batch ≥ 1, --seq ≥ 2 and --steps ≥ 1 are required");
    }
    Ok(())
}

fn train(a: TrainArgs) -> Result<()> {
    let TrainArgs { backend, shape, batch, seq, steps, profile, recompute, math } = a;
    check_train_shape(batch, seq, steps)?;
    if profile && backend != Kind::Cuda {
        bail!("--profile times GPU kernels: it needs --backend cuda");
    }
    let cfg = vul2safe::bench::named_shape(&shape)?;
    let flops = vul2safe::bench::flops_per_token(&cfg, seq);
    // In bf16 math the GPU keeps f32 masters and activations but stores matmul-only
    // activations and attention operands in bf16 (docs/cuda.md).
    let storage =
        if backend == Kind::Cuda && math == "bf16" { "f32 + bf16 matmul inputs, attention operands and projections" } else { "f32" };
    let params = vul2safe::model::weights::param_count(&cfg);
    let mut v = serde_json::json!({"bench": "train-step", "backend": backend.name(), "shape": shape, "params": params, "batch": batch, "seq": seq, "storage": storage, "recompute": recompute});
    let r = match backend {
        Kind::Cpu => vul2safe::bench::train_throughput(&Cpu, cfg, batch, seq, recompute, 2, steps, || {})?,
        Kind::Cuda => {
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
            v["peak_gib"] = rounded(g.peak_memory_bytes() as f64 / (1u64 << 30) as f64, 2).into();
            v["ordered_dq"] = g.ordered_dq().into();
            if let Some(peak) = vul2safe::bench::card_peaks(&name) {
                v["mfu_vs_bf16_peak"] = rounded(tflops * 1e12 / peak.flops_per_s, 3).into();
            }
            print_tunings(&mut v, &g)?;
            if profile {
                let prof = g.take_profile();
                if let Some([f, b, t]) = vul2safe::bench::flash_tflops(&prof.families, &cfg, batch, seq, steps) {
                    eprintln!("flash attention: fwd {f:.0}, bwd {b:.0}, fwd+bwd {t:.0} TFLOP/s (causal; bwd counted as 2.5x fwd)");
                    v["flash_tflops"] = serde_json::json!({"fwd": f.round(), "bwd": b.round(), "total": t.round()});
                }
                if let Some(rate) = vul2safe::bench::gemm_tflops(&prof.families, &cfg, batch * seq, recompute, steps) {
                    eprintln!(
                        "matmuls: {rate:.0} TFLOP/s ({} FLOPs per parameter and token over the gemm family's time)",
                        if recompute { 8 } else { 6 }
                    );
                    v["gemm_tflops"] = rate.round().into();
                }
                print_profile(&mut v, &prof, "step", steps, r.step_ms, &name)?;
            }
            r
        }
    };
    v["step_ms"] = rounded(r.step_ms, 2).into();
    v["tok_s"] = r.tokens_per_sec.round().into();
    v["tflops"] = rounded(r.tokens_per_sec * flops / 1e12, 1).into();
    v["loss_first"] = rounded(r.first_loss, 4).into();
    v["loss_last"] = rounded(r.last_loss, 4).into();
    println!("{v}");
    Ok(())
}

fn generate(a: GenerateArgs) -> Result<()> {
    let GenerateArgs { backend, shape, batch, prompts, prompt_len, new, profile, no_graphs } = a;
    let prompts = prompts.unwrap_or(batch);
    if batch == 0 || prompts == 0 || prompt_len == 0 || new == 0 {
        bail!("--batch, --prompts, --prompt-len and --new must be at least 1");
    }
    if (profile || no_graphs) && backend != Kind::Cuda {
        bail!("--profile and --no-graphs are about GPU launches: they need --backend cuda");
    }
    let cfg = vul2safe::bench::named_shape(&shape)?;
    let mut v = serde_json::json!({"bench": "generate", "backend": backend.name(), "shape": shape, "batch": batch, "prompts": prompts,
        "prompt_len": prompt_len, "new": new, "storage": if backend == Kind::Cuda { "f32 + bf16 matmul inputs" } else { "f32" }, "kv_cache": if backend == Kind::Cuda { "bf16" } else { "f32" }});
    let (r, device) = match backend {
        Kind::Cpu => (vul2safe::bench::generate_throughput(&Cpu, cfg.clone(), batch, prompts, prompt_len, new, || {})?, "cpu".to_string()),
        Kind::Cuda => {
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
                print_profile(&mut v, &g.take_profile(), "run", 1, r.secs * 1e3, &g.device_name())?;
            }
            (r, g.device_name())
        }
    };
    v["device"] = device.clone().into();
    v["new_tok_s"] = r.new_tokens_per_sec.round().into();
    v["prefill_tok_s"] = r.prefill_tokens_per_sec.round().into();
    v["secs"] = rounded(r.secs, 2).into();
    if let Some(peak) = vul2safe::bench::card_peaks(&device) {
        let roof = vul2safe::bench::decode_roofline_tok_s(&cfg, batch, prompt_len, new, peak.bytes_per_s);
        v["roofline_tok_s"] = roof.round().into();
        v["share_of_roofline"] = rounded(r.new_tokens_per_sec / roof, 3).into();
    }
    println!("{v}");
    Ok(())
}

fn attention(a: AttentionArgs) -> Result<()> {
    use vul2safe::backend::AttnShape;
    use vul2safe::bench::attention::attention_throughput;
    if a.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let kv_heads = a.kv_heads.unwrap_or(a.heads);
    let sh = AttnShape { batch: a.batch, q_heads: a.heads, kv_heads, q_len: a.seq, kv_cap: a.seq, head_dim: a.head_dim };
    let mut v = serde_json::json!({"bench": "attention", "backend": a.backend.name(), "batch": a.batch, "seq": a.seq, "heads": a.heads,
        "kv_heads": kv_heads, "head_dim": a.head_dim, "causal": true});
    let r = match a.backend {
        Kind::Cpu => attention_throughput(&Cpu, sh, a.reps)?,
        Kind::Cuda => {
            let g = cuda(&a.math)?;
            let r = attention_throughput(&g, sh, a.reps)?;
            v["device"] = g.device_name().into();
            v["math"] = a.math.clone().into();
            v["ordered_dq"] = g.ordered_dq().into();
            print_tunings(&mut v, &g)?;
            r
        }
    };
    let [fwd, bwd, total] = r.tflops(sh);
    v["fwd_ms"] = rounded(r.fwd_ms, 3).into();
    v["bwd_ms"] = rounded(r.bwd_ms, 3).into();
    v["fwd_tflops"] = significant(fwd, 4).into();
    v["bwd_tflops"] = significant(bwd, 4).into();
    v["total_tflops"] = significant(total, 4).into();
    println!("{v}");
    Ok(())
}

/// `x` to `digits` significant digits (rates that span CPU to GPU scales).
fn significant(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    rounded(x, digits - 1 - x.abs().log10().floor() as i32)
}

/// `x` to `places` decimals, for the JSON lines.
fn rounded(x: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (x * scale).round() / scale
}

/// Prints each tuned kernel variant's time and resources to stderr, and
/// for each matmul problem the cuBLASLt algorithm kept against the
/// heuristic's first pick; puts every timing into `v` ("tuning").
fn print_tunings(v: &mut serde_json::Value, g: &Cuda) -> Result<()> {
    let tunings = g.tunings();
    for t in &tunings {
        let Some(r) = &t.resources else { continue };
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
    // A problem's candidates were timed together, one after another.
    let (mut first_total, mut kept_total) = (0.0, 0.0);
    let matmuls = tunings.iter().filter(|t| t.candidate.is_some()).collect::<Vec<_>>();
    for runs in matmuls.chunk_by(|a, b| a.kernel == b.kernel) {
        let Some(kept) = runs.iter().find(|t| t.chosen) else { continue };
        let (name, rank) = (&kept.kernel, kept.candidate.unwrap_or_default());
        match runs.iter().find(|t| t.candidate == Some(0)) {
            Some(first) => {
                (first_total, kept_total) = (first_total + first.ms, kept_total + kept.ms);
                eprintln!(
                    "tuned: {name}: kept #{rank} {:.3} ms, the heuristic's first {:.3} ms ({:.2}×), of {} candidates",
                    kept.ms,
                    first.ms,
                    first.ms / kept.ms,
                    runs.len()
                );
            }
            None => eprintln!("tuned: {name}: kept #{rank} {:.3} ms, of {} candidates", kept.ms, runs.len()),
        }
    }
    if kept_total > 0.0 {
        eprintln!(
            "tuned matmuls: the heuristic's first picks {first_total:.3} ms, the kept ones {kept_total:.3} ms ({:.2}×), one run of each problem",
            first_total / kept_total
        );
    }
    v["tuning"] = serde_json::to_value(tunings)?;
    Ok(())
}

/// Prints the per-kernel-family table of a profiled bench to stderr (per
/// `unit`, `units` of them in `wall_ms`), then the resources of the kernels
/// of the slowest families, and puts both into `v` ("profile", "kernels").
fn print_profile(v: &mut serde_json::Value, p: &Profile, unit: &str, units: usize, wall_ms: f64, device: &str) -> Result<()> {
    let total: f64 = p.families.iter().map(|f| f.ms).sum();
    let per = units as f64;
    let peaks = vul2safe::bench::card_peaks(device);
    let or_dash = |x: Option<f64>, f: &dyn Fn(f64) -> String| x.map_or("—".to_string(), f);
    eprintln!("| kernel family | calls/{unit} | ms/{unit} | share | GB/s | TFLOP/s | of roofline |\n|---|---|---|---|---|---|---|");
    for f in &p.families {
        let (gbs, tflops) = (or_dash(f.gb_per_s(), &|x| format!("{x:.0}")), or_dash(f.tflop_per_s(), &|x| format!("{x:.0}")));
        let roof = or_dash(peaks.and_then(|pk| f.roofline_share(pk)), &|x| format!("{:.0}%", 100.0 * x));
        eprintln!("| {} | {} | {:.3} | {:.1}% | {gbs} | {tflops} | {roof} |", f.family, f.calls / units, f.ms / per, 100.0 * f.ms / total);
    }
    eprintln!("| all kernels | | {:.3} | GPU busy {:.0}% of the {unit} | | | |", total / per, 100.0 * total / (wall_ms * per));
    match peaks {
        Some(pk) => eprintln!(
            "(bytes each launch must move and FLOPs it does, from the shapes; roofline: the slower of the bytes at {:.2} TB/s and the FLOPs at {:.0} TFLOP/s, over the time taken)",
            pk.bytes_per_s / 1e12,
            pk.flops_per_s / 1e12
        ),
        None => eprintln!("(no roofline: this card's peak bandwidth and FLOP rate are not in vul2safe::bench::card_peaks)"),
    }
    let slowest: Vec<&str> = p.families.iter().take(8).map(|f| f.family.as_str()).collect();
    eprintln!(
        "\n| kernel (of the 8 slowest families) | threads | registers | spill bytes | smem static + dynamic | blocks/SM |\n|---|---|---|---|---|---|"
    );
    for k in p.kernels.iter().filter(|k| slowest.contains(&family_of(&k.kernel))) {
        let smem = format!("{} + {}", k.static_smem_bytes, k.dynamic_smem_bytes);
        eprintln!("| {} | {} | {} | {} | {smem} | {} |", k.kernel, k.threads, k.registers, k.spill_bytes, k.blocks_per_sm);
    }
    v["profile"] = serde_json::to_value(&p.families)?;
    if let Some(pk) = peaks {
        v["peaks"] = serde_json::json!({"bytes_per_s": pk.bytes_per_s, "flops_per_s": pk.flops_per_s});
    }
    v["kernels"] = serde_json::to_value(&p.kernels)?;
    Ok(())
}
