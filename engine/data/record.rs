//! The PrimeVul+ record: one JSON object per line of `primevul_plus.jsonl`.
//! Schema (also in docs/primevul_plus.md):
//!
//! - `id`: `<project>-<commit[..10]>-<n>`, unique in a build;
//! - `project`, `commit_id`, `cwe` (list of `CWE-N`), `lang` (`c`, `cpp`, `python`);
//! - `vulnerable`, `secure`: the two function sources;
//! - `vulnerable_spans`, `secure_spans`: byte ranges `[start, end)` into that
//!   same field (removed/changed and added/changed lines of the diff);
//! - `prompts`: implicit task descriptions that never mention security;
//! - `reflection`: the teacher's verdict, confidence and whole transcript;
//! - `split`: `train` or `test`, assigned per function name.

use super::labels::Span;
use crate::lang::Lang;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: &str, content: impl Into<String>) -> Message {
        Message { role: role.to_string(), content: content.into() }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    SecurityFix,
    NotSecurity,
    Unsure,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reflection {
    /// `heuristic`, the endpoint's model name, or `local:<dir>`.
    pub teacher: String,
    pub verdict: Verdict,
    pub confidence: f32,
    /// 1-based lines of the vulnerable function the teacher names as the vulnerable sequence.
    #[serde(default)]
    pub vulnerable_lines: Vec<usize>,
    /// Tokens or short snippets of the fix the teacher says make it secure.
    #[serde(default)]
    pub secure_tokens: Vec<String>,
    pub transcript: Vec<Message>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrimeVulPlus {
    pub id: String,
    pub project: String,
    pub commit_id: String,
    pub cwe: Vec<String>,
    pub lang: String,
    pub vulnerable: String,
    pub secure: String,
    pub vulnerable_spans: Vec<Span>,
    pub secure_spans: Vec<Span>,
    pub prompts: Vec<String>,
    pub reflection: Reflection,
    pub split: String,
}

impl PrimeVulPlus {
    /// The record's language, or detection from its code when the field is unknown.
    pub fn language(&self) -> Lang {
        Lang::from_code(&self.lang).unwrap_or_else(|| Lang::detect(None, &self.secure))
    }
}
