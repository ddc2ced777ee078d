//! `data build`: PrimeVul paired JSONL → PrimeVul+ through a teacher.

use anyhow::{bail, Result};
use clap::Subcommand;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum DataCmd {
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

pub fn run(cmd: DataCmd) -> Result<()> {
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
