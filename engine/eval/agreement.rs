//! How the analyzers agree on the embedded corpus: for each tool, the share
//! of vulnerable and of fixed functions it flags (high or medium), and how
//! often its flag/no-flag decision matches the built-in analyzer's.

use super::analyzer::{by_name, run_tools, Source};
use crate::data::corpus::EMBEDDED_CORPUS;
use crate::lang::Lang;
use anyhow::Result;
use serde::Serialize;
use std::collections::HashSet;

#[derive(Serialize)]
pub struct ToolAgreement {
    pub tool: String,
    /// Functions of the languages this tool reads.
    pub pairs: usize,
    pub vulnerable_flagged: f64,
    pub fixed_flagged: f64,
    /// Share of functions (both versions) where this tool and builtin agree.
    pub agreement_with_builtin: f64,
    pub error: Option<String>,
}

/// (vulnerable, fixed) sources of every security pair (NVD placeholders left out).
fn corpus_pairs() -> Vec<(Source, Source)> {
    let rows: Vec<serde_json::Value> = EMBEDDED_CORPUS.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    rows.chunks(2)
        .filter(|p| p.len() == 2 && p[0]["cwe"][0].as_str().is_some_and(|c| c.starts_with("CWE-")))
        .enumerate()
        .map(|(i, p)| {
            let file = p[0]["file_name"].as_str().unwrap_or_default();
            let mk = |row: &serde_json::Value, side: &str| {
                let text = row["func"].as_str().unwrap_or_default();
                Source::new(&format!("{i:03}-{side}-{}", file.rsplit('/').next().unwrap_or(file)), Lang::detect(Some(file), text), text)
            };
            (mk(&p[0], "vuln"), mk(&p[1], "fixed"))
        })
        .collect()
}

fn flagged_files(tool: &str, sources: &[Source]) -> Result<HashSet<String>> {
    let (findings, errors) = run_tools(&[by_name(tool)?], sources);
    if let Some((_, e)) = errors.into_iter().next() {
        anyhow::bail!(e);
    }
    Ok(findings.into_iter().filter(|f| f.severity.is_high_or_medium()).map(|f| f.file).collect())
}

pub fn corpus_agreement(tools: &[String]) -> Result<Vec<ToolAgreement>> {
    let pairs = corpus_pairs();
    let all: Vec<Source> = pairs.iter().flat_map(|(v, f)| [v.clone(), f.clone()]).collect();
    let builtin = flagged_files("builtin", &all)?;
    let mut out = Vec::new();
    for tool in std::iter::once("builtin".to_string()).chain(tools.iter().filter(|t| *t != "builtin").cloned()) {
        let analyzer = by_name(&tool)?;
        let mine: Vec<&(Source, Source)> = pairs.iter().filter(|(v, _)| analyzer.supports(v.lang)).collect();
        let srcs: Vec<Source> = mine.iter().flat_map(|(v, f)| [v.clone(), f.clone()]).collect();
        let n = mine.len().max(1) as f64;
        match flagged_files(&tool, &srcs) {
            Ok(flags) => {
                let share =
                    |pick: fn(&(Source, Source)) -> &Source| mine.iter().filter(|p| flags.contains(&pick(p).path)).count() as f64 / n;
                let agree =
                    srcs.iter().filter(|s| flags.contains(&s.path) == builtin.contains(&s.path)).count() as f64 / srcs.len().max(1) as f64;
                out.push(ToolAgreement {
                    tool,
                    pairs: mine.len(),
                    vulnerable_flagged: share(|p| &p.0),
                    fixed_flagged: share(|p| &p.1),
                    agreement_with_builtin: agree,
                    error: None,
                });
            }
            Err(e) => out.push(ToolAgreement {
                tool,
                pairs: mine.len(),
                vulnerable_flagged: 0.0,
                fixed_flagged: 0.0,
                agreement_with_builtin: 0.0,
                error: Some(format!("{e:#}")),
            }),
        }
    }
    Ok(out)
}
