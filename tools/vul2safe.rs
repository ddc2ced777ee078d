//! The `vul2safe` driver: one binary for every stage of the pipeline. This
//! file holds the command table; each group of commands parses and runs in
//! a module of its own (tools/vul2safe/).

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Binds `$be` to the backend `$args` (a `backend_choice::BackendArgs`)
/// chooses and evaluates `$body` with it: the body is generic code, compiled
/// once per backend.
macro_rules! on_backend {
    ($args:expr, |$be:ident| $body:expr) => {
        match $args.backend {
            $crate::backend_choice::Kind::Cpu => {
                let $be = &vul2safe::backend::cpu::Cpu;
                $body
            }
            $crate::backend_choice::Kind::Cuda => {
                let $be = &$crate::backend_choice::cuda(&$args.math)?;
                $body
            }
        }
    };
}

#[path = "vul2safe/backend_choice.rs"]
mod backend_choice;
#[path = "vul2safe/bench.rs"]
mod bench;
#[path = "vul2safe/data.rs"]
mod data;
#[path = "vul2safe/infer.rs"]
mod infer;
#[path = "vul2safe/train.rs"]
mod train;

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
    Generate(infer::GenerateArgs),
    /// Per-token log-probabilities of token rows: {"tokens": [[ids...], ...]}.
    Score(infer::ScoreArgs),
    /// Security findings per file (built-in analyzer and external tools).
    Analyze(infer::AnalyzeArgs),
    /// Sample K completions per task, analyze them, run their tests; JSON report and PNG plots.
    Eval(infer::EvalArgs),
    /// Supervised fine-tuning on PrimeVul+ (prompt → secure function, loss on the function only).
    Sft(train::SftArgs),
    /// PPO from an SFT policy, with instance-level or token-level rewards (docs/training.md).
    Ppo(train::PpoArgs),
    /// Build data sets.
    Data {
        #[command(subcommand)]
        what: data::DataCmd,
    },
    /// Throughput benchmarks.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCmd,
    },
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Demo { seed, out, quick } => {
            let start = std::time::Instant::now();
            let log = |line: &str| println!("[{:>4.0} s] {line}", start.elapsed().as_secs_f64());
            let r = vul2safe::demo::run(&vul2safe::demo::DemoOptions { seed, quick }, &out, log)?;
            println!("\n{}", vul2safe::demo::table(&r.rows));
            println!("demo finished in {:.0} s; every stage's output is in {}", r.seconds, out.display());
            Ok(())
        }
        Cmd::Generate(a) => infer::generate(a),
        Cmd::Score(a) => infer::score(a),
        Cmd::Analyze(a) => infer::analyze(a),
        Cmd::Eval(a) => infer::eval(a),
        Cmd::Sft(a) => train::sft(a),
        Cmd::Ppo(a) => train::ppo(a),
        Cmd::Data { what } => data::run(what),
        Cmd::Bench { what } => bench::run(what),
    }
}

fn main() {
    let cli = Cli::parse();
    // The command runs on a worker of the pool that the CPU ops split their
    // work over: called from outside, every parallel op would hand its work
    // to the pool and sleep until woken: a futex round trip per op, half the
    // quick demo's system time. The stack is the main thread's size.
    let pool = rayon::ThreadPoolBuilder::new().stack_size(8 << 20).build();
    let result = pool.map_err(anyhow::Error::from).and_then(|pool| pool.install(|| run(cli)));
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
