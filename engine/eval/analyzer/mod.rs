//! Analyzers: the built-in tree-sitter analyzer (fast enough for the PPO
//! loop) and adapters for cppcheck, flawfinder, bandit and CyberSecEval's
//! Insecure Code Detector rules (codeshield + semgrep). All emit [`Finding`]s.

mod adapters;
pub mod bandit;
pub mod builtin;
pub mod cppcheck;
pub mod external;
pub mod flawfinder;
pub mod icd;

use super::finding::Finding;
use crate::lang::Lang;
use anyhow::Result;

/// One source file to analyze; `path` is what findings report as `file`.
#[derive(Clone, Debug)]
pub struct Source {
    pub path: String,
    pub lang: Lang,
    pub text: String,
}

impl Source {
    pub fn new(path: &str, lang: Lang, text: &str) -> Source {
        Source { path: path.to_string(), lang, text: text.to_string() }
    }
}

pub trait Analyzer: Send + Sync {
    fn name(&self) -> &'static str;
    /// Whether this tool can analyze `lang` at all.
    fn supports(&self, lang: Lang) -> bool;
    /// Findings for all sources (external tools analyze them in one batch).
    fn analyze(&self, sources: &[Source]) -> Result<Vec<Finding>>;
}

/// Names accepted by `--tools`.
pub const TOOL_NAMES: &[&str] = &["builtin", "cppcheck", "flawfinder", "bandit", "icd"];

/// The analyzer called `name`.
pub fn by_name(name: &str) -> Result<Box<dyn Analyzer>> {
    Ok(match name {
        "builtin" => Box::new(builtin::Builtin),
        "cppcheck" => Box::new(cppcheck::Cppcheck),
        "flawfinder" => Box::new(flawfinder::Flawfinder),
        "bandit" => Box::new(bandit::Bandit),
        "icd" | "codeshield" => Box::new(icd::Icd::new()?),
        other => anyhow::bail!("unknown analyzer {other:?} (known: {})", TOOL_NAMES.join(", ")),
    })
}

/// Runs each tool on the sources it supports; a tool's failure is returned
/// beside the others' findings rather than hiding them.
pub fn run_tools(tools: &[Box<dyn Analyzer>], sources: &[Source]) -> (Vec<Finding>, Vec<(String, String)>) {
    let mut findings = Vec::new();
    let mut errors = Vec::new();
    for t in tools {
        let mine: Vec<Source> = sources.iter().filter(|s| t.supports(s.lang)).cloned().collect();
        if mine.is_empty() {
            continue;
        }
        match t.analyze(&mine) {
            Ok(f) => findings.extend(f),
            Err(e) => errors.push((t.name().to_string(), format!("{e:#}"))),
        }
    }
    (findings, errors)
}
