//! The phases' NVTX ranges reach a profiler: the vul2safe binary runs with a
//! small NVTX tool (tests/support/nvtx_injection.c, loaded the way nsys loads
//! its own: NVTX_INJECTION64_PATH) that logs every range it is given.

use std::path::Path;
use std::process::Command;

/// Builds the logging tool with the system C compiler; None (the test skips) without one.
fn injection_library(dir: &Path) -> Option<std::path::PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/nvtx_injection.c");
    let lib = dir.join("libnvtx_log.so");
    match Command::new("cc").args(["-shared", "-fPIC", "-O1", "-o"]).arg(&lib).arg(&src).output() {
        Ok(o) if o.status.success() => Some(lib),
        Ok(o) => panic!("compiling the NVTX test tool failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            eprintln!("SKIPPED: no C compiler to build the NVTX test tool with ({e})");
            None
        }
    }
}

/// The ranges a run opened, after checking that every one was closed in order.
fn ranges_of(lib: &Path, log: &Path, args: &[&str]) -> Vec<String> {
    let o = Command::new(env!("CARGO_BIN_EXE_vul2safe"))
        .args(args)
        .env("NVTX_INJECTION64_PATH", lib)
        .env("NVTX_TEST_LOG", log)
        .output()
        .unwrap();
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(log).expect("the NVTX tool was loaded and logged");
    let (mut open, mut names) = (0i64, Vec::new());
    for line in text.lines() {
        match line.strip_prefix("push ") {
            Some(name) => {
                open += 1;
                names.push(name.to_string());
            }
            None => {
                assert_eq!(line, "pop");
                open -= 1;
                assert!(open >= 0, "a range closed that was not open");
            }
        }
    }
    assert_eq!(open, 0, "{open} ranges left open");
    names
}

#[test]
fn training_and_generation_phases_show_as_nvtx_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let Some(lib) = injection_library(dir.path()) else { return };
    let log = dir.path().join("ranges.log");
    let train = ranges_of(&lib, &log, &["bench", "cpu", "--batch", "1", "--seq", "16", "--steps", "1"]);
    for phase in ["forward", "lm head and loss", "backward", "optimizer"] {
        assert!(train.iter().any(|n| n == phase), "no {phase:?} range in training: {train:?}");
    }
    let gen = ranges_of(
        &lib,
        &log,
        &["bench", "generate", "--backend", "cpu", "--shape", "small", "--batch", "2", "--prompt-len", "4", "--new", "3"],
    );
    for phase in ["prefill", "decode step", "sample"] {
        assert!(gen.iter().any(|n| n == phase), "no {phase:?} range in generation: {gen:?}");
    }
    // Two runs (warm-up and timed) of 3 new tokens: a decode step between each pair of samples.
    assert_eq!(gen.iter().filter(|n| *n == "sample").count(), 2 + 3);
}
