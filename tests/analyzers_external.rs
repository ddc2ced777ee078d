//! The adapters against the real tools that `tools/setup.sh` installs
//! (cppcheck, flawfinder, bandit, semgrep + codeshield). A tool that is not
//! installed makes its test skip with the reason; bad tools and bad files get
//! clear errors.

use std::process::Command;
use vul2safe::eval::analyzer::external::locate;
use vul2safe::eval::analyzer::{by_name, run_tools, Source};
use vul2safe::eval::finding::Severity;
use vul2safe::lang::Lang;

const C_BAD: &str = "#include <stdio.h>\n#include <string.h>\n\nvoid greet(const char *name)\n{\n    char buf[16];\n    strcpy(buf, name);\n    printf(name);\n    gets(buf);\n}\n";
const PY_BAD: &str =
    "import subprocess\nimport pickle\n\n\ndef run(cmd, blob):\n    subprocess.call(cmd, shell=True)\n    return pickle.loads(blob)\n";

fn available(tool: &str) -> bool {
    match locate(tool) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("SKIPPED: {e}");
            false
        }
    }
}

fn findings_of(tool: &str, lang: Lang, text: &str) -> Vec<vul2safe::eval::finding::Finding> {
    by_name(tool).unwrap().analyze(&[Source::new("sample", lang, text)]).unwrap()
}

#[test]
fn cppcheck_reports_gets_with_a_line_span() {
    if !available("cppcheck") {
        return;
    }
    let f = findings_of("cppcheck", Lang::C, C_BAD);
    let gets = f.iter().find(|f| f.rule == "cppcheck/getsCalled").unwrap_or_else(|| panic!("{f:?}"));
    assert_eq!((gets.start.line, gets.file.as_str(), gets.tool.as_str()), (9, "sample", "cppcheck"));
    assert_eq!(&C_BAD[gets.bytes[0]..gets.bytes[0] + 4], "gets");
    assert!(gets.cwe.starts_with("CWE-"));
}

#[test]
fn flawfinder_maps_levels_to_severities() {
    if !available("flawfinder") {
        return;
    }
    let f = findings_of("flawfinder", Lang::C, C_BAD);
    let strcpy = f.iter().find(|f| f.message.starts_with("strcpy")).unwrap_or_else(|| panic!("{f:?}"));
    assert_eq!((strcpy.severity, strcpy.cwe.as_str(), strcpy.start.line, strcpy.start.col), (Severity::High, "CWE-120", 7, 5));
    assert_eq!(&C_BAD[strcpy.bytes[0]..strcpy.bytes[1]], "strcpy");
    assert!(f.iter().any(|f| f.cwe == "CWE-134" && f.start.line == 8));
}

#[test]
fn bandit_finds_shell_and_pickle() {
    if !available("bandit") {
        return;
    }
    let f = findings_of("bandit", Lang::Python, PY_BAD);
    let shell = f.iter().find(|f| f.cwe == "CWE-78" && f.start.line == 6).unwrap_or_else(|| panic!("{f:?}"));
    assert_eq!(shell.severity, Severity::High);
    assert!(PY_BAD[shell.bytes[0]..shell.bytes[1]].starts_with("subprocess.call"));
    assert!(f.iter().any(|f| f.cwe == "CWE-502" && f.start.line == 7));
}

#[test]
fn icd_runs_regex_and_semgrep_rules_in_one_batch() {
    if !available("semgrep") {
        return;
    }
    let icd = match by_name("icd") {
        Ok(a) => a,
        Err(e) => return eprintln!("SKIPPED: {e:#}"),
    };
    let sources = vec![
        Source::new("a.c", Lang::C, C_BAD),
        Source::new("b.py", Lang::Python, PY_BAD),
        Source::new("c.c", Lang::C, "int x(void) { return 0; }\n"),
    ];
    let f = icd.analyze(&sources).unwrap();
    assert!(f.iter().any(|f| f.file == "a.c" && f.rule == "icd/bugprone-strcpy" && f.start.line == 7), "{f:?}");
    assert!(f.iter().any(|f| f.file == "a.c" && f.rule == "icd/bugprone-gets"), "{f:?}");
    assert!(f.iter().any(|f| f.file == "b.py"), "semgrep or regex rules fire on the Python sample: {f:?}");
    assert!(!f.iter().any(|f| f.file == "c.c"), "clean file stays clean");
}

#[test]
fn missing_tools_and_garbage_output_are_clear_errors() {
    let empty = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_vul2safe");
    let src = empty.path().join("x.c");
    std::fs::write(&src, C_BAD).unwrap();
    let tools_dir = tempfile::tempdir().unwrap();
    let out = Command::new(exe)
        .args(["analyze", src.to_str().unwrap(), "--tools", "builtin,cppcheck"])
        .env("VUL2SAFE_TOOL_PATH", tools_dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "tool errors exit 2");
    assert!(stdout.contains("c/unbounded-copy"), "builtin findings still print: {stdout}");
    assert!(stderr.contains("cppcheck is not installed") && stderr.contains("tools/setup.sh"), "{stderr}");

    // A "cppcheck" that prints garbage, and one that crashes.
    let fake = tools_dir.path().join("cppcheck");
    for (script, want) in
        [("#!/bin/sh\necho '<results><error' >&2\n", "malformed XML"), ("#!/bin/sh\necho boom >&2\nexit 139\n", "exit code 139")]
    {
        std::fs::write(&fake, script).unwrap();
        Command::new("chmod").args(["+x", fake.to_str().unwrap()]).status().unwrap();
        let out = Command::new(exe)
            .args(["analyze", src.to_str().unwrap(), "--tools", "cppcheck"])
            .env("VUL2SAFE_TOOL_PATH", tools_dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.code() == Some(2) && stderr.contains(want) && !stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn analyze_reports_bad_files_and_stable_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ok.py"), PY_BAD).unwrap();
    std::fs::write(dir.path().join("bad.c"), b"int f(void) { return \xff; }\n").unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let exe = env!("CARGO_BIN_EXE_vul2safe");
    let out = Command::new(exe).args(["analyze", dir.path().to_str().unwrap(), "/nonexistent/x.c", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], 1);
    assert_eq!(v["files"].as_array().unwrap().len(), 1, "only ok.py is analyzed");
    let f = &v["files"][0]["findings"][0];
    for key in ["tool", "rule", "cwe", "severity", "file", "start", "end", "bytes", "message"] {
        assert!(!f[key].is_null(), "finding lacks {key}: {f}");
    }
    let errors = v["errors"].to_string();
    assert!(errors.contains("bad.c") && errors.contains("not valid UTF-8"), "{errors}");
    assert!(errors.contains("/nonexistent/x.c") && errors.contains("no such file"), "{errors}");
    let bad_tool = Command::new(exe).args(["analyze", dir.path().to_str().unwrap(), "--tools", "builtin,lint9000"]).output().unwrap();
    assert!(String::from_utf8_lossy(&bad_tool.stderr).contains("unknown analyzer \"lint9000\""));
}

#[test]
fn run_tools_skips_languages_a_tool_cannot_read() {
    let sources = vec![Source::new("a.py", Lang::Python, PY_BAD)];
    let tools = vec![by_name("builtin").unwrap(), by_name("cppcheck").unwrap()];
    let (findings, errors) = run_tools(&tools, &sources);
    assert!(errors.is_empty(), "cppcheck is not asked about Python: {errors:?}");
    assert!(findings.iter().all(|f| f.tool == "builtin") && !findings.is_empty());
}
