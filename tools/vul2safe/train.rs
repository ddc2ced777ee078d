//! The training commands: `sft` and `ppo`, each a run folder of
//! checkpoints and metrics (docs/training.md).

use crate::backend_choice::{model_folder, BackendArgs};
use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct SftArgs {
    #[command(flatten)]
    on: BackendArgs,
    /// HF folder to start from (config.json, model.safetensors, tokenizer.json), or a run folder (its latest checkpoint).
    #[arg(long, value_parser = model_folder)]
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
pub struct PpoArgs {
    #[command(flatten)]
    on: BackendArgs,
    /// The starting policy (HF folder with tokenizer.json, or a run folder: its latest checkpoint); also the frozen reference and the critic's start.
    #[arg(long, value_parser = model_folder)]
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
    /// Length share of the fix (in lexemes) clean code needs for the whole
    /// --r-clean; shorter earns it in proportion (0: off; docs/training.md).
    #[arg(long, default_value_t = 0.0)]
    clean_coverage: f32,
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

/// A learning rate, clip range, norm bound or temperature: finite and above zero.
pub fn positive(x: f32) -> bool {
    x.is_finite() && x > 0.0
}

/// A progress bar `stage {bar} pos/len msg` over `len` steps.
fn progress(stage: &str, len: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(&format!("{stage} {{bar:30}} {{pos}}/{{len}} {{msg}}")).expect("valid template");
    ProgressBar::new(len).with_style(style)
}

pub fn sft(a: SftArgs) -> Result<()> {
    if !positive(a.lr) || !positive(a.max_grad_norm) {
        bail!("--lr and --max-grad-norm must be positive");
    }
    let opts = vul2safe::train::sft::SftOptions {
        model: a.model,
        data: a.data,
        out: a.out.clone(),
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
    let bar = progress("sft", a.steps);
    let on_step = |row: &serde_json::Value| {
        bar.set_position(row["step"].as_u64().unwrap_or(0));
        bar.set_message(format!("loss {:.4}", row["loss"].as_f64().unwrap_or(f64::NAN)));
    };
    let summary = on_backend!(a.on, |be| vul2safe::train::sft::run(be, &opts, on_step)?);
    bar.finish_and_clear();
    println!(
        "{}",
        serde_json::json!({"steps": summary.steps, "final_loss": summary.final_loss, "eval_loss": summary.eval_loss, "skipped_steps": summary.skipped,
            "tok_s": summary.tokens_per_sec.round(), "resumed_from": summary.resumed_from, "run": a.out})
    );
    Ok(())
}

pub fn ppo(a: PpoArgs) -> Result<()> {
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
    if !(positive(a.clip_eps)
        && a.gamma > 0.0
        && a.gamma <= 1.0
        && (0.0..=1.0).contains(&a.lambda)
        && a.dual_clip > 1.0
        && positive(a.lr)
        && positive(a.critic_lr)
        && positive(a.max_grad_norm)
        && a.clean_coverage >= 0.0)
    {
        bail!("need --clip-eps > 0, 0 < --gamma ≤ 1, 0 ≤ --lambda ≤ 1, --dual-clip > 1, --clean-coverage ≥ 0, and positive learning rates and --max-grad-norm");
    }
    let reward = RewardConfig {
        r_clean: a.r_clean,
        coverage: a.clean_coverage,
        alpha: a.alpha,
        beta: a.beta,
        beta_ref: a.beta_ref,
        placement,
        ..RewardConfig::default()
    };
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
    let bar = progress("ppo", opts.iters);
    let on_iter = |row: &serde_json::Value| {
        bar.set_position(row["iter"].as_u64().unwrap_or(0));
        bar.set_message(format!("vuln {:.2} kl {:.3}", row["vuln_rate"].as_f64().unwrap_or(0.0), row["kl"].as_f64().unwrap_or(0.0)));
    };
    let summary = on_backend!(a.on, |be| run(be, &opts, on_iter)?);
    bar.finish_and_clear();
    println!("{}", serde_json::json!({"iters": summary.iters, "last": summary.last, "run": a.out}));
    Ok(())
}
