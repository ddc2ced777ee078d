//! bandit adapter (JSON). bandit's own HIGH / MEDIUM / LOW severities map
//! one to one.

use super::adapters::{to_finding, Raw};
use super::external::{run, stage};
use super::{Analyzer, Source};
use crate::eval::finding::{Finding, Severity};
use crate::lang::Lang;
use anyhow::{Context, Result};
use serde_json::Value;
use std::time::Duration;

pub struct Bandit;

pub fn parse(json: &str) -> Result<Vec<Raw>> {
    let v: Value = serde_json::from_str(json).context("bandit printed malformed JSON")?;
    let results = v["results"].as_array().context("bandit JSON has no results array")?;
    Ok(results
        .iter()
        .map(|r| {
            let line = r["line_number"].as_u64().unwrap_or(0) as usize;
            let end_line = r["line_range"].as_array().and_then(|a| a.last()).and_then(|l| l.as_u64()).map_or(line, |l| l as usize);
            let col = r["col_offset"].as_u64().map(|c| c as usize + 1);
            Raw {
                tool: "bandit",
                reported_file: r["filename"].as_str().unwrap_or_default().to_string(),
                rule: format!("bandit/{}", r["test_id"].as_str().unwrap_or_default()),
                cwe: r["issue_cwe"]["id"].as_u64().map(|c| format!("CWE-{c}")).unwrap_or_default(),
                severity: match r["issue_severity"].as_str().unwrap_or_default() {
                    "HIGH" => Severity::High,
                    "MEDIUM" => Severity::Medium,
                    _ => Severity::Low,
                },
                line,
                col,
                end: r["end_col_offset"].as_u64().map(|c| (end_line, c as usize + 1)),
                message: r["issue_text"].as_str().unwrap_or_default().to_string(),
            }
        })
        .collect())
}

impl Analyzer for Bandit {
    fn name(&self) -> &'static str {
        "bandit"
    }

    fn supports(&self, lang: Lang) -> bool {
        lang == Lang::Python
    }

    fn analyze(&self, sources: &[Source]) -> Result<Vec<Finding>> {
        let staged = stage(sources)?;
        let mut args: Vec<String> = ["-f", "json", "-q"].iter().map(|s| s.to_string()).collect();
        args.extend(staged.paths.iter().map(|p| p.display().to_string()));
        // bandit exits 1 when it found something.
        let out = run("bandit", &args, Duration::from_secs(600), &[0, 1])?;
        Ok(parse(&out.stdout)?.into_iter().filter_map(|r| to_finding(r, &staged, sources)).collect())
    }
}
