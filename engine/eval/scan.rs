//! `vul2safe analyze`: collect source files, run the chosen analyzers, and
//! report findings per file (JSON layout in docs/analyze.md).

use super::analyzer::{by_name, run_tools, Source};
use super::finding::{Finding, Severity};
use crate::lang::Lang;
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const EXTENSIONS: &[&str] = &["c", "h", "cc", "cpp", "cxx", "hpp", "hh", "py"];

#[derive(Serialize)]
pub struct FileReport {
    pub path: String,
    pub lang: String,
    pub findings: Vec<Finding>,
}

#[derive(Serialize)]
pub struct ScanError {
    /// The file or the tool the error is about.
    pub source: String,
    pub error: String,
}

#[derive(Serialize)]
pub struct ScanReport {
    pub version: u32,
    pub tools: Vec<String>,
    pub files: Vec<FileReport>,
    pub errors: Vec<ScanError>,
    pub summary: BTreeMap<String, usize>,
}

fn walk(path: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<ScanError>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = match std::fs::read_dir(path) {
            Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
            Err(e) => return errors.push(ScanError { source: path.display().to_string(), error: e.to_string() }),
        };
        entries.sort();
        for e in entries {
            if e.is_dir() || e.extension().and_then(|x| x.to_str()).is_some_and(|x| EXTENSIONS.contains(&x)) {
                walk(&e, out, errors);
            }
        }
    } else if path.exists() {
        out.push(path.to_path_buf());
    } else {
        errors.push(ScanError { source: path.display().to_string(), error: "no such file or directory".into() });
    }
}

/// Reads the files under `paths`; unreadable or non-UTF-8 ones become errors.
pub fn collect_sources(paths: &[PathBuf]) -> (Vec<Source>, Vec<ScanError>) {
    let (mut files, mut errors) = (Vec::new(), Vec::new());
    for p in paths {
        walk(p, &mut files, &mut errors);
    }
    let mut sources = Vec::new();
    for f in files {
        let name = f.display().to_string();
        match std::fs::read(&f) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => sources.push(Source::new(&name, Lang::detect(Some(&name), &text), &text)),
                Err(e) => errors
                    .push(ScanError { source: name, error: format!("not valid UTF-8 (byte {}); skipped", e.utf8_error().valid_up_to()) }),
            },
            Err(e) => errors.push(ScanError { source: name, error: e.to_string() }),
        }
    }
    (sources, errors)
}

pub fn scan(paths: &[PathBuf], tools: &[String]) -> Result<ScanReport> {
    let analyzers = tools.iter().map(|t| by_name(t)).collect::<Result<Vec<_>>>()?;
    let (sources, mut errors) = collect_sources(paths);
    let (findings, tool_errors) = run_tools(&analyzers, &sources);
    errors.extend(tool_errors.into_iter().map(|(source, error)| ScanError { source, error }));
    let mut by_file: BTreeMap<String, Vec<Finding>> = BTreeMap::new();
    for f in findings {
        by_file.entry(f.file.clone()).or_default().push(f);
    }
    let mut summary = BTreeMap::new();
    summary.insert("files".to_string(), sources.len());
    let files: Vec<FileReport> = sources
        .iter()
        .map(|s| {
            let mut findings = by_file.remove(&s.path).unwrap_or_default();
            findings.sort_by(|a, b| (a.bytes, &a.tool, &a.rule).cmp(&(b.bytes, &b.tool, &b.rule)));
            for f in &findings {
                *summary.entry("findings".into()).or_default() += 1;
                let sev = match f.severity {
                    Severity::High => "high",
                    Severity::Medium => "medium",
                    Severity::Low => "low",
                };
                *summary.entry(sev.into()).or_default() += 1;
            }
            FileReport { path: s.path.clone(), lang: s.lang.code().into(), findings }
        })
        .collect();
    Ok(ScanReport { version: 1, tools: tools.to_vec(), files, errors, summary })
}

/// `file:line:col: severity rule (CWE): message [tool]` lines.
pub fn render_text(r: &ScanReport) -> String {
    let mut out = String::new();
    for f in r.files.iter().flat_map(|f| &f.findings) {
        let sev = serde_json::to_value(f.severity).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        out.push_str(&format!("{}:{}:{}: {sev} {} ({}): {} [{}]\n", f.file, f.start.line, f.start.col, f.rule, f.cwe, f.message, f.tool));
    }
    for e in &r.errors {
        out.push_str(&format!("error: {}: {}\n", e.source, e.error));
    }
    out.push_str(&format!("{} files, {} findings\n", r.summary.get("files").unwrap_or(&0), r.summary.get("findings").unwrap_or(&0)));
    out
}
