//! The `vul2safe` binary end to end: generate, score, demo and bad arguments.

mod common;

use common::fixture_dir;
use std::process::{Command, Output};

fn vul2safe(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vul2safe")).args(args).output().expect("binary runs")
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn fails_with(o: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected failure");
    assert!(err.contains(needle), "want {needle:?} in stderr: {err}");
    assert!(!err.contains("panicked"), "panicked: {err}");
}

#[test]
fn generate_prints_prompt_and_continuation() {
    for name in ["llama_a", "qwen2_b"] {
        let dir = fixture_dir(name);
        let o = vul2safe(&["generate", "--model", dir.to_str().unwrap(), "--prompt", "int main(", "--max-new-tokens", "8"]);
        assert!(stdout(&o).starts_with("int main("));
        let o = vul2safe(&[
            "generate",
            "--model",
            dir.to_str().unwrap(),
            "--prompt",
            "x = ",
            "--max-new-tokens",
            "5",
            "--temperature",
            "0.8",
            "--top-p",
            "0.9",
            "--seed",
            "3",
            "--json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["tokens"].as_array().unwrap().len(), 5);
        assert!(v["logprobs"].as_array().unwrap().iter().all(|x| x.as_f64().unwrap() <= 0.0));
    }
}

#[test]
fn score_prints_logprobs_per_row() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.json");
    std::fs::write(&f, r#"{"tokens": [[1, 2, 3, 4], [7, 8]]}"#).unwrap();
    let model = fixture_dir("qwen2_b");
    let o = vul2safe(&["score", "--model", model.to_str().unwrap(), "--tokens", f.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = v["logprobs"].as_array().unwrap();
    assert_eq!(rows[0].as_array().unwrap().len(), 3);
    assert_eq!(rows[1].as_array().unwrap().len(), 1);
    // Same numbers as the library computes.
    let m = vul2safe::model::Transformer::load(&vul2safe::backend::cpu::Cpu, &model).unwrap();
    let want = m.score(&vul2safe::backend::cpu::Cpu, &[vec![1, 2, 3, 4]], 1.0).unwrap();
    for (a, b) in rows[0].as_array().unwrap().iter().zip(&want[0]) {
        assert!((a.as_f64().unwrap() as f32 - b).abs() < 1e-6);
    }
    // At another sampling temperature, that distribution's logprobs.
    let o = vul2safe(&["score", "--model", model.to_str().unwrap(), "--tokens", f.to_str().unwrap(), "--temperature", "0.5"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let tempered = m.score(&vul2safe::backend::cpu::Cpu, &[vec![1, 2, 3, 4]], 0.5).unwrap();
    for ((a, b), c) in v["logprobs"][0].as_array().unwrap().iter().zip(&tempered[0]).zip(&want[0]) {
        assert!((a.as_f64().unwrap() as f32 - b).abs() < 1e-6 && (b - c).abs() > 1e-3, "{a} vs {b} (at temperature 1: {c})");
    }
    fails_with(
        &vul2safe(&["score", "--model", model.to_str().unwrap(), "--tokens", f.to_str().unwrap(), "--temperature", "0"]),
        "--temperature must be positive",
    );
}

#[test]
fn bad_inputs_fail_cleanly() {
    let model = fixture_dir("llama_a");
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad_json = dir.path().join("bad.json");
    std::fs::write(&bad_json, r#"{"tokens": [[1, 2], "x"]}"#).unwrap();
    let oov = dir.path().join("oov.json");
    std::fs::write(&oov, r#"{"tokens": [[1, 9999]]}"#).unwrap();
    fails_with(&vul2safe(&["score", "--model", m, "--tokens", bad_json.to_str().unwrap()]), "expected JSON {\"tokens\"");
    fails_with(&vul2safe(&["score", "--model", m, "--tokens", oov.to_str().unwrap()]), "token id 9999");
    fails_with(&vul2safe(&["score", "--model", m, "--tokens", "/nonexistent.json"]), "/nonexistent.json");
    fails_with(&vul2safe(&["generate", "--model", "/nonexistent", "--prompt", "x"]), "/nonexistent: no such folder");
    fails_with(&vul2safe(&["eval", "--model", bad_json.to_str().unwrap(), "--bench", "security"]), "bad.json is a file");
    fails_with(&vul2safe(&["ppo", "--policy", dir.path().to_str().unwrap(), "--data", "x", "--out", "y"]), "neither config.json");
    fails_with(&vul2safe(&["generate", "--model", m, "--prompt", "x", "--top-p", "0"]), "--top-p");
    fails_with(&vul2safe(&["generate", "--model", m, "--prompt", "x", "--temperature=-1"]), "--temperature");
    fails_with(&vul2safe(&["generate", "--model", m, "--prompt", "x", "--max-new-tokens", "lots"]), "invalid value");
    fails_with(&vul2safe(&["generate", "--model", m, "--prompt", "x", "--backend", "gpu"]), "possible values: cpu, cuda");
    fails_with(&vul2safe(&["score", "--model", m, "--tokens", "/nonexistent.json", "--backend", "tpu"]), "possible values: cpu, cuda");
    fails_with(&vul2safe(&["bench", "cpu", "--seq", "1"]), "--seq");
    fails_with(&vul2safe(&["bench", "train", "--backend", "cpu", "--shape", "small", "--profile"]), "--backend cuda");
    fails_with(&vul2safe(&["bench", "generate", "--backend", "cpu", "--shape", "small", "--profile"]), "--backend cuda");
    fails_with(&vul2safe(&["bench", "generate", "--backend", "cpu", "--shape", "small", "--no-graphs"]), "--backend cuda");
}

/// `bench train --shape DIR` takes the shape from an HF config.json (random
/// weights): a fixture model's, whose parameter count the JSON line reports.
#[test]
fn bench_train_takes_a_shape_from_a_config_folder() {
    let dir = fixture_dir("qwen2_b");
    let args = ["bench", "train", "--backend", "cpu", "--shape", dir.to_str().unwrap(), "--batch", "2", "--seq", "16", "--steps", "1"];
    let v: serde_json::Value = serde_json::from_str(&stdout(&vul2safe(&args))).unwrap();
    let cfg = vul2safe::model::ModelConfig::load(&dir).unwrap();
    assert_eq!(v["params"].as_u64(), Some(vul2safe::model::weights::param_count(&cfg) as u64), "{v}");
    assert!(v["tok_s"].as_f64().unwrap() > 0.0, "{v}");
    // Three steps on one fixed batch (two warm-up, one timed) must lower its loss.
    assert!(v["loss_last"].as_f64().unwrap() < v["loss_first"].as_f64().unwrap(), "{v}");
    fails_with(&vul2safe(&["bench", "train", "--backend", "cpu", "--shape", "/nonexistent"]), "a folder with a config.json");
}

#[test]
fn bench_attention_reports_both_passes_and_refuses_partial_groups() {
    let args =
        ["bench", "attention", "--backend", "cpu", "--batch", "1", "--seq", "32", "--heads", "4", "--kv-heads", "2", "--head-dim", "16"];
    let v: serde_json::Value = serde_json::from_str(&stdout(&vul2safe(&[&args[..], &["--reps", "1"]].concat()))).unwrap();
    for key in ["fwd_ms", "bwd_ms", "fwd_tflops", "bwd_tflops", "total_tflops"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key} in {v}");
    }
    fails_with(&vul2safe(&["bench", "attention", "--backend", "cpu", "--heads", "4", "--kv-heads", "3"]), "whole GQA groups");
    fails_with(&vul2safe(&["bench", "attention", "--backend", "cpu", "--reps", "0"]), "--reps");
}

#[test]
fn demo_runs_the_whole_pipeline_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let o = vul2safe(&["demo", "--quick", "--out", out.to_str().unwrap()]);
    let text = stdout(&o);
    for stage in ["tokenizer:", "pretrain:", "data:", "sft:", "ppo-instance:", "ppo-tlr:", "eval:", "| ppo-tlr |"] {
        assert!(text.contains(stage), "missing {stage}: {text}");
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("demo_report.json")).unwrap()).unwrap();
    assert_eq!(report["rows"].as_array().unwrap().len(), 5);
    // Each model's held-out samples are kept, with the checks the table shows.
    for name in ["base", "sft", "ppo-instance", "ppo-tlr", "ppo-tlr-decoupled"] {
        let samples = std::fs::read_to_string(out.join("eval").join(name).join("samples.jsonl")).unwrap();
        let first: serde_json::Value = serde_json::from_str(samples.lines().next().unwrap()).unwrap();
        assert!(
            first["defines_function"].is_boolean() && first["reference_similarity"].is_f64() && first["reference_length_ratio"].is_f64(),
            "{name}: {first}"
        );
    }
    // Every stage's model is a loadable HF folder, and a run folder stands for its latest.
    let step = out.join("ppo-tlr/step-000002");
    let g = vul2safe(&["generate", "--model", step.to_str().unwrap(), "--prompt", "int ", "--max-new-tokens", "4"]);
    assert!(stdout(&g).starts_with("int "));
    let run = vul2safe(&["generate", "--model", out.join("ppo-tlr").to_str().unwrap(), "--prompt", "int ", "--max-new-tokens", "4"]);
    assert_eq!(stdout(&run), stdout(&g));
    assert!(String::from_utf8_lossy(&run.stderr).contains("step-000002"), "{}", String::from_utf8_lossy(&run.stderr));
}
