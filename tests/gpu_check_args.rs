//! tools/gpu-check runs on a borrowed GPU whose minutes are few, so every
//! `vul2safe bench` line it issues must at least parse. Without a GPU each
//! stops at the missing driver (exit 1) once clap has accepted its
//! arguments; a usage error (exit 2) or any other failure fails here.

use std::path::Path;
use std::process::Command;

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
