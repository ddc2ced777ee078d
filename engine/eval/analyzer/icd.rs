//! CyberSecEval's Insecure Code Detector rules, as PyPI `codeshield` ships
//! them: its regex rules (applied here with `fancy-regex`, which accepts their
//! Python syntax) and its semgrep rules (run by calling `semgrep` directly on
//! the rule files, offline, once per language for all files).
//!
//! Severity map: regex rules Error → high, Warning → medium, Advice → low;
//! semgrep rules by their `impact` metadata (HIGH / MEDIUM / LOW).

use super::adapters::{first_cwe, to_finding, Raw};
use super::external::{locate, run, stage};
use super::{Analyzer, Source};
use crate::eval::finding::{Finding, LineIndex, Severity};
use crate::lang::Lang;
use anyhow::{bail, Context, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Icd {
    rules: PathBuf,
}

struct RegexRule {
    id: String,
    cwe: String,
    severity: Severity,
    description: String,
    re: fancy_regex::Regex,
}

fn lang_key(lang: Lang) -> &'static str {
    match lang {
        Lang::C => "c",
        Lang::Cpp => "cpp",
        Lang::Python => "python",
    }
}

/// The rules folder: `$VUL2SAFE_ICD_RULES`, else codeshield inside `.venv-tools`.
pub fn rules_dir() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("VUL2SAFE_ICD_RULES") {
        return Ok(PathBuf::from(p));
    }
    let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-tools/lib");
    let found = std::fs::read_dir(&lib)
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("site-packages/codeshield/insecure_code_detector/rules"));
    for dir in found {
        if dir.is_dir() {
            return Ok(dir);
        }
    }
    bail!("codeshield's Insecure Code Detector rules are not installed: run `bash tools/setup.sh` (or set VUL2SAFE_ICD_RULES)")
}

fn load_regex_rules(dir: &Path, lang: Lang) -> Result<Vec<RegexRule>> {
    let mut rules = Vec::new();
    for file in [format!("{}.yaml", lang_key(lang)), "language_agnostic.yaml".to_string()] {
        let path = dir.join("regex").join(&file);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let docs = yaml_rust2::YamlLoader::load_from_str(&text).with_context(|| format!("{}: malformed YAML", path.display()))?;
        for item in docs.iter().flat_map(|d| d.as_vec().cloned().unwrap_or_default()) {
            let field = |k: &str| item[k].as_str().unwrap_or_default().to_string();
            let pattern = field("rule");
            // A rule our regex engine cannot compile is skipped, not fatal.
            let Ok(re) = fancy_regex::Regex::new(&pattern) else { continue };
            let severity = match field("severity").as_str() {
                "Error" => Severity::High,
                "Warning" => Severity::Medium,
                _ => Severity::Low,
            };
            rules.push(RegexRule {
                id: field("pattern_id"),
                cwe: first_cwe(&field("cwe_id")),
                severity,
                description: field("description"),
                re,
            });
        }
    }
    Ok(rules)
}

fn regex_findings(rules: &[RegexRule], src: &Source) -> Vec<Finding> {
    let index = LineIndex::new(&src.text);
    let mut out = Vec::new();
    for r in rules {
        for m in r.re.find_iter(&src.text).flatten() {
            out.push(Finding {
                tool: "icd".into(),
                rule: format!("icd/{}", r.id),
                cwe: r.cwe.clone(),
                severity: r.severity,
                file: src.path.clone(),
                start: index.pos(m.start()),
                end: index.pos(m.end()),
                bytes: [m.start(), m.end()],
                message: r.description.clone(),
            });
        }
    }
    out
}

/// Findings in `semgrep --json` output.
pub fn parse_semgrep(json: &str) -> Result<Vec<Raw>> {
    let v: Value = serde_json::from_str(json).context("semgrep printed malformed JSON")?;
    let results = v["results"].as_array().context("semgrep JSON has no results array")?;
    Ok(results
        .iter()
        .map(|r| {
            let meta = &r["extra"]["metadata"];
            let impact = meta["impact"].as_str().or(r["extra"]["severity"].as_str()).unwrap_or_default().to_uppercase();
            let pos = |k: &str| (r[k]["line"].as_u64().unwrap_or(0) as usize, r[k]["col"].as_u64().unwrap_or(1) as usize);
            let (line, col) = pos("start");
            Raw {
                tool: "icd",
                reported_file: r["path"].as_str().unwrap_or_default().to_string(),
                rule: format!("icd/{}", r["check_id"].as_str().unwrap_or_default().rsplit('.').next().unwrap_or_default()),
                cwe: Some(first_cwe(meta["cwe_id"].as_str().unwrap_or_default()))
                    .filter(|c| !c.is_empty())
                    .unwrap_or_else(|| first_cwe(meta["cwe"][0].as_str().or(meta["cwe"].as_str()).unwrap_or_default())),
                severity: match impact.as_str() {
                    "HIGH" | "ERROR" => Severity::High,
                    "MEDIUM" | "WARNING" => Severity::Medium,
                    _ => Severity::Low,
                },
                line,
                col: Some(col),
                end: Some(pos("end")),
                message: r["extra"]["message"].as_str().unwrap_or_default().to_string(),
            }
        })
        .collect())
}

impl Icd {
    pub fn new() -> Result<Icd> {
        Ok(Icd { rules: rules_dir()? })
    }
}

impl Analyzer for Icd {
    fn name(&self) -> &'static str {
        "icd"
    }

    fn supports(&self, _lang: Lang) -> bool {
        true
    }

    fn analyze(&self, sources: &[Source]) -> Result<Vec<Finding>> {
        locate("semgrep")?;
        let mut findings = Vec::new();
        for lang in [Lang::C, Lang::Cpp, Lang::Python] {
            let group: Vec<Source> = sources.iter().filter(|s| s.lang == lang).cloned().collect();
            if group.is_empty() {
                continue;
            }
            let regex_rules = load_regex_rules(&self.rules, lang)?;
            findings.extend(group.iter().flat_map(|s| regex_findings(&regex_rules, s)));
            let config = self.rules.join(format!("semgrep/_generated_/{}_cyberseceval.json", lang_key(lang)));
            let staged = stage(&group)?;
            let mut args: Vec<String> = ["scan", "--metrics=off", "--disable-version-check", "--quiet", "--json", "--config"]
                .iter()
                .map(|s| s.to_string())
                .collect();
            args.push(config.display().to_string());
            args.extend(staged.paths.iter().map(|p| p.display().to_string()));
            let out = run("semgrep", &args, Duration::from_secs(900), &[0])?;
            findings.extend(parse_semgrep(&out.stdout)?.into_iter().filter_map(|r| to_finding(r, &staged, &group)));
        }
        Ok(findings)
    }
}
