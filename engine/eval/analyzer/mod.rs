//! Analyzers: the built-in tree-sitter analyzer (fast enough for the PPO
//! loop) and adapters for cppcheck, flawfinder, bandit and CyberSecEval's
//! Insecure Code Detector rules (codeshield + semgrep). All emit [`Finding`]s.

pub mod builtin;

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
