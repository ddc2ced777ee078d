//! The offline teacher: scores a pair from what needs no model — a stated
//! CWE, a small focused diff, and whether the diff adds a check or swaps a
//! dangerous call — and writes template prompts.

use super::{PairView, Teacher};
use crate::data::labels::diff_spans;
use crate::data::prompts::template_prompts;
use crate::data::record::{Message, Reflection, Verdict};
use anyhow::Result;

/// Calls whose removal in a fix points at a security repair.
const RISKY_CALLS: &[&str] = &[
    "strcpy(",
    "strcat(",
    "sprintf(",
    "vsprintf(",
    "gets(",
    "scanf(",
    "system(",
    "popen(",
    "tmpnam(",
    "mktemp(",
    "rand(",
    "srand(",
    "memcpy(",
    "alloca(",
    "eval(",
    "exec(",
    "pickle.load",
    "yaml.load(",
    "shell=True",
    "verify=False",
    "md5(",
    "os.system(",
    "random(",
    "access(",
    "shelve.",
    "sha1(",
];

/// SQL keywords that, with string building on the same line, mark a query made from data.
const SQL_VERBS: &[&str] = &["SELECT ", "INSERT ", "UPDATE ", "DELETE "];

/// Tokens that a fix adding a check or a bound tends to contain.
const CHECK_MARKERS: &[&str] =
    &["if (", "if(", "sizeof", "NULL", "len", "<=", ">=", "return -1", "raise ", "if not ", "is None", "max", "min("];

pub const ACCEPT: f32 = 0.7;

pub struct Heuristic;

fn lines_of(text: &str, spans: &[(usize, usize)]) -> String {
    spans.iter().map(|&(s, e)| &text[s..e]).collect::<Vec<_>>().join("\n")
}

impl Teacher for Heuristic {
    fn name(&self) -> String {
        "heuristic".into()
    }

    fn cacheable(&self) -> bool {
        false
    }

    fn reflect(&self, v: &PairView) -> Result<Reflection> {
        let p = v.pair;
        let (vuln_spans, fix_spans) = diff_spans(&p.vulnerable, &p.secure);
        let (removed, added) = (lines_of(&p.vulnerable, &vuln_spans), lines_of(&p.secure, &fix_spans));
        let changed = removed.lines().count() + added.lines().count();
        let total = p.vulnerable.lines().count().max(p.secure.lines().count()).max(1);
        let focused = changed > 0 && changed <= (total * 2 / 5).max(3);
        let swapped: Vec<&str> = RISKY_CALLS.iter().copied().filter(|c| removed.contains(c) && !added.contains(c)).collect();
        let adds_check = CHECK_MARKERS.iter().any(|m| added.contains(m) && !removed.contains(m));
        let built_query = removed
            .lines()
            .any(|l| SQL_VERBS.iter().any(|v| l.contains(v)) && (l.contains("\" %") || l.contains("+ ") || l.contains("f\"")));
        // NVD placeholders name no weakness, so they earn no credit.
        let named_cwe: Vec<&String> = p.cwe.iter().filter(|c| c.starts_with("CWE-")).collect();
        let confidence = 0.2
            + if named_cwe.is_empty() { 0.0 } else { 0.4 }
            + if focused { 0.2 } else { 0.0 }
            + if adds_check || built_query || !swapped.is_empty() { 0.2 } else { 0.0 };
        let verdict = if confidence >= ACCEPT {
            Verdict::SecurityFix
        } else if confidence >= 0.5 {
            Verdict::Unsure
        } else {
            Verdict::NotSecurity
        };
        let line_of = |byte: usize| p.vulnerable[..byte].matches('\n').count() + 1;
        let vulnerable_lines = vuln_spans.iter().flat_map(|&(s, e)| line_of(s)..=line_of(e)).collect();
        let note = format!(
            "cwe={}; changed {changed} of {total} lines (focused={focused}); removed risky calls {swapped:?}; adds a check={adds_check}; \
             removes a query built from strings={built_query}; confidence={confidence:.2}",
            if p.cwe.is_empty() { "none".to_string() } else { p.cwe.join(",") },
        );
        Ok(Reflection {
            teacher: self.name(),
            verdict,
            confidence,
            vulnerable_lines,
            secure_tokens: added.lines().map(|l| l.trim().to_string()).filter(|l| !l.is_empty()).collect(),
            transcript: vec![Message::new("heuristic", note)],
        })
    }

    fn prompts(&self, v: &PairView, n: usize, _rejected: &[String]) -> Result<(Vec<String>, Vec<Message>)> {
        Ok((template_prompts(v.sig, v.lang, &v.pair.project, n), vec![]))
    }
}
