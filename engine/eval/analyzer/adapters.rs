//! Shared pieces of the external-tool adapters: turning a tool's line and
//! column into a [`Finding`] span, and mapping CWE strings.

use super::external::{source_index, Staged};
use super::Source;
use crate::eval::finding::{Finding, LineIndex, Pos, Severity};

/// `CWE-120` from `"CWE-120, CWE-20"`, `"120"`, `"CWE-119!/CWE-120"`; `""` when none.
pub fn first_cwe(text: &str) -> String {
    let digits: String = text
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '-')
        .find_map(|t| {
            let n = t.trim_start_matches("CWE-");
            (!n.is_empty() && n.chars().all(|c| c.is_ascii_digit())).then(|| n.to_string())
        })
        .unwrap_or_default();
    if digits.is_empty() {
        String::new()
    } else {
        format!("CWE-{digits}")
    }
}

/// What a tool said about one place: 1-based line; 1-based byte columns, or
/// none to cover the rest of the line.
pub struct Raw {
    pub tool: &'static str,
    pub reported_file: String,
    pub rule: String,
    pub cwe: String,
    pub severity: Severity,
    pub line: usize,
    pub col: Option<usize>,
    pub end: Option<(usize, usize)>,
    pub message: String,
}

/// Places a raw finding in its source; `None` if the file is not one of ours.
pub fn to_finding(raw: Raw, staged: &Staged, sources: &[Source]) -> Option<Finding> {
    let i = source_index(staged, &raw.reported_file)?;
    let src = &sources[i];
    let index = LineIndex::new(&src.text);
    let (ls, le) = index.line_range(raw.line, &src.text);
    let start = raw.col.map_or(ls, |c| index.offset(Pos { line: raw.line, col: c }, &src.text));
    let end = raw.end.map_or(le, |(l, c)| index.offset(Pos { line: l, col: c }, &src.text)).max(start);
    Some(Finding {
        tool: raw.tool.into(),
        rule: raw.rule,
        cwe: raw.cwe,
        severity: raw.severity,
        file: src.path.clone(),
        start: index.pos(start),
        end: index.pos(end),
        bytes: [start, end],
        message: raw.message,
    })
}
