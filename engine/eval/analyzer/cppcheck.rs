//! cppcheck adapter (XML v2). Severity map: error → high, warning → medium,
//! style / performance / portability → low; information is dropped, and so
//! are messages without a CWE (syntaxError, unknownMacro, …): they are about
//! parsing the file, not about its security.

use super::adapters::{to_finding, Raw};
use super::external::{run, stage};
use super::{Analyzer, Source};
use crate::eval::finding::{Finding, Severity};
use crate::lang::Lang;
use anyhow::{Context, Result};
use quick_xml::events::Event;
use std::time::Duration;

pub struct Cppcheck;

fn severity(s: &str) -> Option<Severity> {
    match s {
        "error" => Some(Severity::High),
        "warning" => Some(Severity::Medium),
        "style" | "performance" | "portability" => Some(Severity::Low),
        _ => None,
    }
}

fn attr(e: &quick_xml::events::BytesStart, name: &str) -> Option<String> {
    e.try_get_attribute(name).ok().flatten().and_then(|a| a.unescape_value().ok()).map(|v| v.into_owned())
}

/// Findings in cppcheck's `--xml --xml-version=2` report.
pub fn parse(xml: &str) -> Result<Vec<Raw>> {
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut out = Vec::new();
    let mut current: Option<(String, String, Severity, String)> = None;
    loop {
        match reader.read_event().context("cppcheck printed malformed XML")? {
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"error" => {
                let sev = attr(&e, "severity").and_then(|s| severity(&s)).filter(|_| attr(&e, "cwe").is_some_and(|c| c != "0"));
                current = sev.map(|s| {
                    (
                        attr(&e, "id").unwrap_or_default(),
                        attr(&e, "cwe").map(|c| format!("CWE-{c}")).unwrap_or_default(),
                        s,
                        attr(&e, "msg").unwrap_or_default(),
                    )
                });
            }
            Event::Start(e) | Event::Empty(e) if e.name().as_ref() == b"location" => {
                // The first location is where the problem is; later ones are context.
                if let Some((rule, cwe, sev, msg)) = current.take() {
                    out.push(Raw {
                        tool: "cppcheck",
                        reported_file: attr(&e, "file").unwrap_or_default(),
                        rule: format!("cppcheck/{rule}"),
                        cwe,
                        severity: sev,
                        line: attr(&e, "line").and_then(|l| l.parse().ok()).unwrap_or(0),
                        col: attr(&e, "column").and_then(|c| c.parse().ok()),
                        end: None,
                        message: msg,
                    });
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

impl Analyzer for Cppcheck {
    fn name(&self) -> &'static str {
        "cppcheck"
    }

    fn supports(&self, lang: Lang) -> bool {
        lang != Lang::Python
    }

    fn analyze(&self, sources: &[Source]) -> Result<Vec<Finding>> {
        let staged = stage(sources)?;
        let mut args: Vec<String> = [
            "--xml",
            "--xml-version=2",
            "--enable=warning,style,portability",
            "--quiet",
            "--suppress=missingIncludeSystem",
            "--suppress=missingInclude",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(staged.paths.iter().map(|p| p.display().to_string()));
        let out = run("cppcheck", &args, Duration::from_secs(600), &[0])?;
        Ok(parse(&out.stderr)?.into_iter().filter_map(|r| to_finding(r, &staged, sources)).collect())
    }
}
