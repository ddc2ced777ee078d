//! The analyzer finding every tool maps to (DESIGN.md "Finding"): tool, rule,
//! CWE, severity, file, 1-based line/column span (columns count bytes), and
//! the byte range `[start, end)` into the analyzed text.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
}

impl Severity {
    /// The reward weight of DESIGN.md: high 1, medium 0.5, low 0.1.
    pub fn weight(self) -> f32 {
        match self {
            Severity::High => 1.0,
            Severity::Medium => 0.5,
            Severity::Low => 0.1,
        }
    }
    pub fn is_high_or_medium(self) -> bool {
        self >= Severity::Medium
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub tool: String,
    pub rule: String,
    pub cwe: String,
    pub severity: Severity,
    pub file: String,
    pub start: Pos,
    pub end: Pos,
    pub bytes: [usize; 2],
    pub message: String,
}

/// Byte offset ↔ (line, column) for one text.
pub struct LineIndex {
    starts: Vec<usize>,
    len: usize,
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        let mut starts = vec![0];
        starts.extend(text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i + 1));
        LineIndex { starts, len: text.len() }
    }

    /// 1-based line and byte column of `offset`.
    pub fn pos(&self, offset: usize) -> Pos {
        let offset = offset.min(self.len);
        let line = self.starts.partition_point(|&s| s <= offset);
        Pos { line, col: offset - self.starts[line - 1] + 1 }
    }

    /// Byte range of a 1-based line (without its newline); past the end, an empty range at the end.
    pub fn line_range(&self, line: usize, text: &str) -> (usize, usize) {
        if line == 0 || line > self.starts.len() {
            return (self.len, self.len);
        }
        let s = self.starts[line - 1];
        let e = self.starts.get(line).map_or(self.len, |&n| n - 1);
        let e = if e > s && text.as_bytes().get(e - 1) == Some(&b'\r') { e - 1 } else { e };
        (s, e.max(s))
    }

    /// Byte offset of a 1-based (line, column) position, clamped to the text.
    pub fn offset(&self, pos: Pos, text: &str) -> usize {
        let (s, e) = self.line_range(pos.line, text);
        (s + pos.col.saturating_sub(1)).min(e)
    }
}
