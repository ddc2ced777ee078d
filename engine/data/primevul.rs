//! Streaming reader of PrimeVul's paired JSONL: one validated row at a time,
//! with the line number in every error, bounded line length, and no more
//! than one line in memory.

use anyhow::{anyhow, bail, ensure, Result};
use serde::Deserialize;
use std::io::BufRead;

/// Lines longer than this are rejected rather than buffered (a function of
/// several MiB is corrupt input, not code).
pub const MAX_LINE_BYTES: usize = 4 << 20;

/// One PrimeVul row. Fields beyond these (size, hash, idx, cve_desc, ...) are ignored.
#[derive(Clone, Debug, Deserialize)]
pub struct PrimeVulRow {
    pub func: String,
    /// 1 = vulnerable, 0 = patched.
    pub target: u8,
    #[serde(default)]
    pub cwe: Vec<String>,
    pub project: String,
    pub commit_id: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub cve: Option<String>,
    #[serde(default)]
    pub file_name: Option<String>,
}

/// Why a line was not turned into a row.
#[derive(Debug)]
pub struct BadRow {
    pub line: usize,
    pub reason: &'static str,
    pub message: String,
}

impl std::fmt::Display for BadRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Reads rows lazily; blank lines are skipped.
pub struct RowReader<R: BufRead> {
    input: R,
    line: usize,
    buf: Vec<u8>,
}

impl<R: BufRead> RowReader<R> {
    pub fn new(input: R) -> Self {
        RowReader { input, line: 0, buf: Vec::new() }
    }

    /// `Ok(None)` at the end, `Ok(Some(Err(bad)))` for an invalid line; `Err` only for I/O failures.
    pub fn next_row(&mut self) -> Result<Option<Result<(usize, PrimeVulRow), BadRow>>> {
        loop {
            self.buf.clear();
            self.line += 1;
            let line = self.line;
            let (n, too_long) = read_bounded_line(&mut self.input, &mut self.buf)?;
            if n == 0 {
                return Ok(None);
            }
            if too_long {
                let message = format!("line longer than {} MiB", MAX_LINE_BYTES >> 20);
                return Ok(Some(Err(BadRow { line, reason: "huge_line", message })));
            }
            let text = match std::str::from_utf8(&self.buf) {
                Ok(t) => t.trim(),
                Err(e) => {
                    let message = format!("not valid UTF-8 (byte {})", e.valid_up_to());
                    return Ok(Some(Err(BadRow { line, reason: "not_utf8", message })));
                }
            };
            if text.is_empty() {
                continue;
            }
            return Ok(Some(parse_row(text).map(|r| (line, r)).map_err(|(reason, message)| BadRow { line, reason, message })));
        }
    }
}

/// Reads one line (without its newline) into `buf`, storing at most
/// [`MAX_LINE_BYTES`]; returns the bytes consumed and whether it was cut.
fn read_bounded_line(input: &mut impl BufRead, buf: &mut Vec<u8>) -> Result<(usize, bool)> {
    let (mut consumed, mut too_long) = (0, false);
    loop {
        let chunk = input.fill_buf().map_err(|e| anyhow!("reading input: {e}"))?;
        if chunk.is_empty() {
            return Ok((consumed, too_long));
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let content = &chunk[..if done { take - 1 } else { take }];
        if buf.len() + content.len() > MAX_LINE_BYTES {
            too_long = true;
        } else {
            buf.extend_from_slice(content);
        }
        input.consume(take);
        consumed += take;
        if done {
            return Ok((consumed, too_long));
        }
    }
}

fn parse_row(text: &str) -> std::result::Result<PrimeVulRow, (&'static str, String)> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ("malformed_json", format!("malformed JSON: {e}")))?;
    let row: PrimeVulRow = serde_json::from_value(value).map_err(|e| ("invalid_row", format!("invalid PrimeVul row: {e}")))?;
    check_row(&row).map_err(|e| ("invalid_row", format!("invalid PrimeVul row: {e}")))?;
    Ok(row)
}

fn check_row(row: &PrimeVulRow) -> Result<()> {
    ensure!(row.target <= 1, "target must be 0 or 1, got {}", row.target);
    ensure!(!row.func.trim().is_empty(), "empty func");
    ensure!(!row.project.is_empty() && !row.commit_id.is_empty(), "empty project or commit_id");
    // NVD's placeholders (NVD-CWE-noinfo, NVD-CWE-Other) appear in real PrimeVul rows.
    if let Some(bad) = row.cwe.iter().find(|c| !c.starts_with("CWE-") && !c.starts_with("NVD-CWE-")) {
        bail!("cwe entry {bad:?} is neither CWE-N nor an NVD-CWE placeholder");
    }
    Ok(())
}
