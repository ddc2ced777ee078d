//! tools/gpu-check runs on a borrowed GPU whose minutes are few, so every
//! `vul2safe bench` line it issues must at least parse (without a GPU each
//! stops at the missing driver, exit 1, once clap has accepted its arguments;
//! a usage error, exit 2, or any other failure fails here), and the script
//! itself must refuse what it cannot run and skip, by name, what its time
//! budget leaves no room for.

use std::path::Path;
use std::process::{Command, Output};

/// Splits a shell line into words: whitespace apart, double quotes kept together.
fn words(line: &str) -> Vec<String> {
    let (mut out, mut word, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

/// The arguments of each `bench NAME LIMIT ARGS...` call in the script, as
/// `vul2safe bench ARGS...` (the loop's `$s` set to one of its shapes).
fn bench_calls(script: &str) -> Vec<Vec<String>> {
    script
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with("bench ") && !l.starts_with("bench()"))
        .map(|l| {
            let mut args = vec!["bench".to_string()];
            args.extend(words(l).into_iter().skip(3).map(|w| w.replace("$s", "llama-124m")));
            args
        })
        .collect()
}

#[test]
fn every_bench_line_of_gpu_check_parses() {
    if vul2safe::backend::cuda::Cuda::new(0).is_ok() {
        eprintln!("SKIPPED: a GPU is present, so these benches would run in full (tools/gpu-check runs them)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let calls = bench_calls(&std::fs::read_to_string(root.join("tools/gpu-check")).unwrap());
    assert!(calls.len() >= 10, "found only {} bench lines", calls.len());
    for args in calls {
        let o = Command::new(env!("CARGO_BIN_EXE_vul2safe")).args(&args).current_dir(root).output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.code() == Some(1) && stderr.contains("no NVIDIA driver"), "{args:?}: {:?} {stderr}", o.status.code());
    }
}

/// Runs tools/gpu-check with `args` and its binaries taken from `bin`, logs into `out`.
fn gpu_check(args: &[&str], bin: &Path, out: &Path, seconds: &str) -> Output {
    Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/gpu-check"))
        .args(args)
        .env("GPU_BIN", bin)
        .env("OUT", out)
        .env("GPU_CHECK_SECONDS", seconds)
        .output()
        .unwrap()
}

/// A folder holding the driver binary cargo built, as gpu-bin/ holds it on the device.
fn driver_only() -> tempfile::TempDir {
    let bin = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_vul2safe"), bin.path().join("vul2safe")).unwrap();
    bin
}

#[test]
fn gpu_check_refuses_an_unknown_stage_and_missing_binaries() {
    let out = tempfile::tempdir().unwrap();
    let bin = driver_only();
    let o = gpu_check(&["headline", "benches"], bin.path(), out.path(), "560");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("stages: headline torch tests profiles smoke"), "{o:?}");
    // The tests stage needs the carried test binary, which this folder lacks.
    let o = gpu_check(&["tests"], bin.path(), out.path(), "560");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("cuda_backend is missing: run bash tools/gpu-check --prepare"), "{o:?}");
}

#[test]
fn gpu_check_skips_and_names_every_step_its_time_budget_leaves_no_room_for() {
    let out = tempfile::tempdir().unwrap();
    let bin = driver_only();
    let o = gpu_check(&["headline", "torch", "smoke"], bin.path(), out.path(), "0");
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let summary = std::fs::read_to_string(out.path().join("summary.txt")).unwrap();
    let script = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/gpu-check")).unwrap();
    // Every bench line of the headline stage, for each shape its loop takes.
    let headline = script.split("headline() {").nth(1).unwrap().split("\n}").next().unwrap();
    let mut names: Vec<String> = Vec::new();
    for line in headline.lines().map(str::trim_start).filter(|l| l.starts_with("bench ")) {
        let name = &words(line)[1];
        for s in ["llama-124m", "qwen2-0.5b"] {
            names.push(format!("bench {}", name.replace("$s", s)));
        }
    }
    names.dedup();
    assert!(names.len() >= 6, "{names:?}");
    let skipped: Vec<&str> = summary.lines().filter_map(|l| l.strip_prefix("SKIP (out of time) ")).collect();
    let smoke = ["data build", "sft cpu", "ppo cpu", "sft cuda", "ppo cuda", "generate cpu", "generate cuda"];
    for step in names.iter().map(String::as_str).chain(["PyTorch comparison"]).chain(smoke) {
        assert!(skipped.contains(&step), "{step} not skipped by name:\n{summary}");
    }
    assert_eq!(skipped.len(), names.len() + 1 + smoke.len(), "{summary}");
    assert!(!summary.contains("PASS") && !summary.contains("FAIL"), "nothing should have run:\n{summary}");
    assert!(!out.path().join("bench.jsonl").exists(), "no bench ran, so none wrote a line");
}
