//! flawfinder adapter (CSV). Severity map by risk level: 4–5 → high,
//! 2–3 → medium, 0–1 → low.

use super::adapters::{first_cwe, to_finding, Raw};
use super::external::{run, stage};
use super::{Analyzer, Source};
use crate::eval::finding::{Finding, Severity};
use crate::lang::Lang;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::time::Duration;

pub struct Flawfinder;

pub fn severity(level: u32) -> Severity {
    match level {
        4.. => Severity::High,
        2 | 3 => Severity::Medium,
        _ => Severity::Low,
    }
}

/// Findings in `flawfinder --csv` output.
pub fn parse(csv_text: &str) -> Result<Vec<Raw>> {
    let mut rdr = csv::Reader::from_reader(csv_text.as_bytes());
    let headers = rdr.headers().context("flawfinder printed no CSV header")?.clone();
    let col: HashMap<&str, usize> = headers.iter().enumerate().map(|(i, h)| (h, i)).collect();
    let get = |rec: &csv::StringRecord, name: &str| col.get(name).and_then(|&i| rec.get(i)).unwrap_or("").to_string();
    let mut out = Vec::new();
    for rec in rdr.records() {
        let rec = rec.context("flawfinder printed malformed CSV")?;
        let name = get(&rec, "Name");
        let col_start: Option<usize> = get(&rec, "Column").parse().ok();
        let line: usize = get(&rec, "Line").parse().unwrap_or(0);
        out.push(Raw {
            tool: "flawfinder",
            reported_file: get(&rec, "File"),
            rule: format!("flawfinder/{}", get(&rec, "Category")),
            cwe: first_cwe(&get(&rec, "CWEs")),
            severity: severity(get(&rec, "Level").parse().unwrap_or(0)),
            line,
            col: col_start,
            end: col_start.map(|c| (line, c + name.len())),
            message: format!("{}: {}", name, get(&rec, "Warning")),
        });
    }
    Ok(out)
}

impl Analyzer for Flawfinder {
    fn name(&self) -> &'static str {
        "flawfinder"
    }

    fn supports(&self, lang: Lang) -> bool {
        lang != Lang::Python
    }

    fn analyze(&self, sources: &[Source]) -> Result<Vec<Finding>> {
        let staged = stage(sources)?;
        let mut args: Vec<String> = ["--csv", "--columns", "--quiet", "--dataonly"].iter().map(|s| s.to_string()).collect();
        args.extend(staged.paths.iter().map(|p| p.display().to_string()));
        let out = run("flawfinder", &args, Duration::from_secs(600), &[0])?;
        Ok(parse(&out.stdout)?.into_iter().filter_map(|r| to_finding(r, &staged, sources)).collect())
    }
}
