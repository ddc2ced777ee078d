//! Writes an evaluation: `report.json`, `samples.jsonl`, and the
//! secure@k / pass@k plots.

use super::harness::{EvalReport, SampleResult};
use super::plot::plot_at_k;
use crate::fsutil::atomic_write;
use anyhow::{Context, Result};
use serde_json::json;
use std::path::Path;

pub fn write(out: &Path, bench: &str, model: &Path, report: &EvalReport, samples: &[SampleResult]) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut plots = Vec::new();
    let mut plot_error = None;
    let mut curves = vec![("secure_at_k.png", "secure@k", &report.secure_at_k)];
    if !report.pass_at_k.is_empty() {
        curves.push(("pass_at_k.png", "pass@k", &report.pass_at_k));
    }
    for (file, label, values) in curves {
        let points: Vec<(usize, f64)> = values.iter().map(|(k, v)| (*k, *v)).collect();
        match plot_at_k(&out.join(file), &format!("{label} on {bench}"), label, &[(model.display().to_string(), points)]) {
            Ok(()) => plots.push(file),
            Err(e) => plot_error = Some(format!("{e:#}")),
        }
    }
    let full = json!({"bench": bench, "model": model.display().to_string(), "report": report, "plots": plots, "plot_error": plot_error});
    atomic_write(&out.join("report.json"), serde_json::to_string_pretty(&full)?.as_bytes())?;
    let lines: String = samples.iter().map(|s| serde_json::to_string(s).map(|l| l + "\n")).collect::<Result<_, _>>()?;
    atomic_write(&out.join("samples.jsonl"), lines.as_bytes())
}

/// The headline numbers as one JSON line.
pub fn summary_line(r: &EvalReport) -> String {
    json!({
        "tasks": r.tasks, "samples": r.samples,
        "high_medium_per_100": (r.high_medium_per_100 * 100.0).round() / 100.0,
        "vulnerable_sample_share": (r.vulnerable_sample_share * 1000.0).round() / 1000.0,
        "function_share": (r.function_share * 1000.0).round() / 1000.0,
        "vulnerable_share_of_functions": r.vulnerable_share_of_functions.map(|v| (v * 1000.0).round() / 1000.0),
        "reference_similarity": r.reference_similarity.map(|v| (v * 1000.0).round() / 1000.0),
        "reference_length_ratio": r.reference_length_ratio.map(|v| (v * 1000.0).round() / 1000.0),
        "secure@1": r.secure_at_k.get(&1), "pass@1": r.pass_at_k.get(&1),
        "tool_errors": r.tool_errors.len(), "new_tok_s": r.new_tokens_per_sec.round(),
    })
    .to_string()
}
