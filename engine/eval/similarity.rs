//! How close a sample's code is to a reference solution: the diff ratio
//! (2 · matched / total) of their lexemes, and their lengths' ratio. They
//! are the held-out tasks' proxies for "still does the job" where no tests
//! exist: a policy that answers with `return 0;` has nothing to flag, and
//! these are what show it. On a short function the signature carries most
//! of the lexemes, so a one-line body can keep a fair similarity; its
//! length ratio still falls.

use similar::TextDiff;

/// Identifiers and numbers whole, every other visible character alone;
/// whitespace and layout do not count.
pub fn lexemes(code: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut word_start = None;
    for (i, c) in code.char_indices() {
        let word = c.is_alphanumeric() || c == '_';
        match (word, word_start) {
            (true, None) => word_start = Some(i),
            (false, Some(s)) => {
                out.push(&code[s..i]);
                word_start = None;
            }
            _ => {}
        }
        if !word && !c.is_whitespace() {
            out.push(&code[i..i + c.len_utf8()]);
        }
    }
    if let Some(s) = word_start {
        out.push(&code[s..]);
    }
    out
}

/// The code's lexemes over the reference's (1: as long as the reference).
pub fn length_ratio(code: &str, reference: &str) -> f64 {
    lexemes(code).len() as f64 / lexemes(reference).len().max(1) as f64
}

/// Lexeme diff ratio in `0..=1` (1: the same code up to layout).
pub fn similarity(code: &str, reference: &str) -> f64 {
    let (a, b) = (lexemes(code), lexemes(reference));
    if a.is_empty() && b.is_empty() {
        return 1.0;
    }
    TextDiff::from_slices(&a, &b).ratio() as f64
}
