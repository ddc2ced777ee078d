//! Pairs PrimeVul rows (vulnerable, then patched, same project and commit)
//! into repair pairs, counting what cannot be paired and dropping duplicates
//! and no-op pairs, by reason.

use super::primevul::{BadRow, PrimeVulRow, RowReader};
use anyhow::{bail, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::BufRead;

/// A vulnerable function and its fix.
#[derive(Clone, Debug)]
pub struct RepairPair {
    /// Stable content hash (hex) of the two functions: the teacher cache key.
    pub hash: String,
    pub project: String,
    pub commit_id: String,
    pub cwe: Vec<String>,
    pub cve: Option<String>,
    pub message: Option<String>,
    pub file_name: Option<String>,
    pub vulnerable: String,
    pub secure: String,
    /// Line of the vulnerable row in its input file.
    pub line: usize,
}

pub fn pair_hash(vulnerable: &str, secure: &str) -> String {
    let mut h = Sha256::new();
    h.update(vulnerable.as_bytes());
    h.update([0u8]);
    h.update(secure.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Counts by reason of rows and pairs that did not become a [`RepairPair`].
#[derive(Clone, Debug, Default)]
pub struct PairStats {
    pub rows_in: usize,
    pub pairs_in: usize,
    pub dropped: BTreeMap<String, usize>,
}

impl PairStats {
    pub fn drop(&mut self, reason: &str, n: usize) {
        *self.dropped.entry(reason.to_string()).or_default() += n;
    }
}

/// Streams pairs out of one input. With `skip_bad`, invalid lines are counted
/// and skipped; otherwise the first one is an error naming its line.
/// Duplicates across inputs are the caller's to drop (by [`RepairPair::hash`]).
pub struct Pairer<R: BufRead> {
    rows: RowReader<R>,
    source: String,
    skip_bad: bool,
    pending: Option<(usize, PrimeVulRow)>,
}

impl<R: BufRead> Pairer<R> {
    pub fn new(input: R, source: &str, skip_bad: bool) -> Self {
        Pairer { rows: RowReader::new(input), source: source.to_string(), skip_bad, pending: None }
    }

    fn bad(&self, bad: BadRow, stats: &mut PairStats) -> Result<()> {
        if !self.skip_bad {
            bail!("{}: {bad} (pass --skip-bad to count such rows and continue)", self.source);
        }
        stats.drop(bad.reason, 1);
        Ok(())
    }

    /// The next valid pair whose functions differ, or `None` at the end of input.
    pub fn next_pair(&mut self, stats: &mut PairStats) -> Result<Option<RepairPair>> {
        loop {
            let Some(item) = self.rows.next_row()? else {
                if self.pending.take().is_some() {
                    stats.drop("unpaired_row", 1);
                }
                return Ok(None);
            };
            let (line, row) = match item {
                Ok(r) => r,
                Err(bad) => {
                    self.bad(bad, stats)?;
                    continue;
                }
            };
            stats.rows_in += 1;
            if row.target == 1 {
                if self.pending.replace((line, row)).is_some() {
                    stats.drop("unpaired_row", 1);
                }
                continue;
            }
            let Some((vline, vuln)) = self.pending.take() else {
                stats.drop("unpaired_row", 1);
                continue;
            };
            if vuln.project != row.project || vuln.commit_id != row.commit_id {
                stats.drop("unpaired_row", 2);
                continue;
            }
            stats.pairs_in += 1;
            if normalized(&vuln.func) == normalized(&row.func) {
                stats.drop("identical_functions", 1);
                continue;
            }
            let hash = pair_hash(&vuln.func, &row.func);
            let cwe = if vuln.cwe.is_empty() { row.cwe } else { vuln.cwe };
            return Ok(Some(RepairPair {
                hash,
                project: vuln.project,
                commit_id: vuln.commit_id,
                cwe,
                cve: vuln.cve.or(row.cve),
                message: vuln.message.or(row.message),
                file_name: vuln.file_name.or(row.file_name),
                vulnerable: vuln.func,
                secure: row.func,
                line: vline,
            }));
        }
    }
}

/// Whitespace-insensitive form, so reformatting alone is not a "fix".
fn normalized(code: &str) -> String {
    code.split_whitespace().collect::<Vec<_>>().join(" ")
}
