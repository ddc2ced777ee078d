//! Token-level security labels from a line diff of the vulnerable and fixed
//! functions: *vulnerable spans* are the removed or changed lines of the
//! vulnerable version, *secure spans* the added or changed lines of the fix.
//! Spans are byte ranges `[start, end)` into that version's UTF-8 text, each
//! line trimmed of surrounding whitespace, adjacent lines merged.

use similar::{DiffOp, TextDiff};

pub type Span = (usize, usize);

/// `(vulnerable_spans, secure_spans)` of a repair.
pub fn diff_spans(vulnerable: &str, secure: &str) -> (Vec<Span>, Vec<Span>) {
    let diff = TextDiff::from_lines(vulnerable, secure);
    let (old_lines, new_lines) = (line_ranges(vulnerable), line_ranges(secure));
    let (mut vuln, mut fix) = (Vec::new(), Vec::new());
    for op in diff.ops() {
        match *op {
            DiffOp::Equal { .. } => {}
            DiffOp::Delete { old_index, old_len, .. } => push_lines(&mut vuln, vulnerable, &old_lines[old_index..old_index + old_len]),
            DiffOp::Insert { new_index, new_len, .. } => push_lines(&mut fix, secure, &new_lines[new_index..new_index + new_len]),
            DiffOp::Replace { old_index, old_len, new_index, new_len } => {
                push_lines(&mut vuln, vulnerable, &old_lines[old_index..old_index + old_len]);
                push_lines(&mut fix, secure, &new_lines[new_index..new_index + new_len]);
            }
        }
    }
    (vuln, fix)
}

/// Byte ranges of each line, without its line terminator.
fn line_ranges(text: &str) -> Vec<Span> {
    let mut out = Vec::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        out.push((start, start + body.len()));
        start += line.len();
    }
    out
}

/// Appends the trimmed, non-blank lines, merging a line into the previous
/// span when only whitespace separates them.
fn push_lines(spans: &mut Vec<Span>, text: &str, lines: &[Span]) {
    for &(s, e) in lines {
        let body = &text[s..e];
        let lead = body.len() - body.trim_start().len();
        let trimmed = body.trim();
        if trimmed.is_empty() {
            continue;
        }
        let span = (s + lead, s + lead + trimmed.len());
        match spans.last_mut() {
            Some(last) if text[last.1..span.0].trim().is_empty() => last.1 = span.1,
            _ => spans.push(span),
        }
    }
}

/// Marks the tokens whose byte range `[a, b)` overlaps any span. A token that
/// straddles a span edge counts as inside: it carries part of the change.
pub fn token_mask(offsets: &[(usize, usize)], spans: &[Span]) -> Vec<bool> {
    offsets.iter().map(|&(a, b)| spans.iter().any(|&(s, e)| a < e && s < b.max(a + 1))).collect()
}
