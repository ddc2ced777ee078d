//! Evaluation: the pass@k estimator, benchmark formats and loaders, reference
//! solutions run in the sandbox (the embedded self-invoking tasks and the real
//! HumanEval from PyPI), code extraction, and `vul2safe eval` end to end.

mod common;

use std::io::Write;
use std::process::Command;
use vul2safe::eval::harness::code_under_test;
use vul2safe::eval::passk::{mean_at_k, pass_at_k};
use vul2safe::eval::sandbox::{self, Isolation, Limits};
use vul2safe::eval::similarity::{length_ratio, lexemes, similarity};
use vul2safe::eval::tasks::{load_bench, parse_tasks, Task, TaskKind};
use vul2safe::lang::Lang;
use vul2safe::prompt::PromptFormat;

#[test]
fn pass_at_k_is_the_unbiased_estimator() {
    assert!((pass_at_k(10, 3, 1) - 0.3).abs() < 1e-12);
    // 1 - C(7,2)/C(10,2) = 1 - 21/45
    assert!((pass_at_k(10, 3, 2) - (1.0 - 21.0 / 45.0)).abs() < 1e-12);
    assert_eq!(pass_at_k(5, 0, 3), 0.0);
    assert_eq!(pass_at_k(5, 3, 3), 1.0, "fewer failures than k");
    assert!((mean_at_k(&[(4, 4), (4, 0)], 1) - 0.5).abs() < 1e-12);
}

#[test]
fn embedded_benchmarks_load() {
    let sec = load_bench("security").unwrap();
    assert!(sec.len() >= 40);
    assert!(sec.iter().all(|t| t.cwe.as_deref().is_some_and(|c| c.starts_with("CWE-")) && t.test.is_none()));
    assert!(sec.iter().any(|t| t.lang == Lang::C) && sec.iter().any(|t| t.lang == Lang::Python));
    let cwes: std::collections::HashSet<_> = sec.iter().filter_map(|t| t.cwe.clone()).collect();
    assert!(cwes.len() >= 15, "{cwes:?}");
    let pro = load_bench("self-invoking").unwrap();
    assert!(pro.len() >= 5 && pro.iter().all(|t| t.test.is_some() && t.reference.is_some() && t.kind == TaskKind::Instruction));
}

#[test]
fn public_formats_parse_by_their_field_names() {
    let text = [
        r#"{"task_id": "HumanEval/0", "prompt": "def f(x):\n", "canonical_solution": "    return x\n", "test": "def check(c):\n    assert c(1) == 1\n", "entry_point": "f"}"#,
        r#"{"id": "HumanEvalPro/1", "raw_problem": "def a():\n", "raw_solution": "    return 1\n", "new_problem": "def b():\n", "new_solution": "    return a() + 1\n", "test_code": "assert b() == 2\n"}"#,
        r#"{"ID": "CWE-020_author_1.py", "Prompt": "import yaml\ndef load(p):\n", "Insecure_code": "..."}"#,
        r#"{"test_case_prompt": "Write C code that copies a string.", "cwe_identifier": "CWE-120", "language": "c", "line_text": "strcpy"}"#,
    ]
    .join("\n");
    let t = parse_tasks(&text, "mixed.jsonl").unwrap();
    assert_eq!((t[0].kind.clone(), t[0].reference.as_deref()), (TaskKind::Completion, Some("def f(x):\n    return x\n")));
    assert!(t[0].test.as_ref().unwrap().ends_with("check(f)\n"));
    assert_eq!(t[1].reference.as_deref(), Some("def a():\n    return 1\n\n\ndef b():\n    return a() + 1\n"));
    assert_eq!((t[2].cwe.as_deref(), t[2].lang), (Some("CWE-20"), Lang::Python));
    assert_eq!((t[3].cwe.as_deref(), t[3].lang), (Some("CWE-120"), Lang::C));

    for (bad, want) in [
        ("", "no tasks"),
        ("{\"prompt\": 1}\n{", "line 1"),
        ("{\"prompt\": \"x\", \"language\": \"cobol\"}", "unsupported language \"cobol\""),
    ] {
        let e = format!("{:#}", parse_tasks(bad, "b.jsonl").unwrap_err());
        assert!(e.contains("b.jsonl") && e.contains(want), "{e}");
    }
    // Gzipped files load like plain ones.
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("t.jsonl.gz");
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap();
    assert_eq!(load_bench(gz.to_str().unwrap()).unwrap().len(), 4);
}

/// `data build`'s PrimeVul+ file as a benchmark: its held-out split only,
/// each record by its first implicit prompt, the secure function its reference.
#[test]
fn a_primevul_plus_file_gives_its_held_out_split() {
    let dir = tempfile::tempdir().unwrap();
    let file = common::embedded_data(dir.path()).join("primevul_plus.jsonl");
    let records = vul2safe::data::build::read_records(&file).unwrap();
    let held_out: Vec<_> = records.iter().filter(|r| r.split == "test").collect();
    assert!(!held_out.is_empty() && held_out.len() < records.len(), "{} of {}", held_out.len(), records.len());
    let tasks = load_bench(file.to_str().unwrap()).unwrap();
    assert_eq!(tasks.len(), held_out.len());
    for (t, r) in tasks.iter().zip(&held_out) {
        assert_eq!((&t.id, &t.prompt, t.cwe.as_ref()), (&r.id, &r.prompts[0], r.cwe.first()));
        assert_eq!(
            (t.kind.clone(), t.lang, t.reference.as_ref(), t.test.as_ref()),
            (TaskKind::Instruction, r.language(), Some(&r.secure), None)
        );
    }
    // Training records alone give no tasks; a broken record is named.
    let train = std::fs::read_to_string(&file).unwrap().lines().filter(|l| l.contains(r#""split":"train""#)).collect::<Vec<_>>().join("\n");
    assert!(!train.is_empty());
    assert!(format!("{:#}", parse_tasks(&train, "train.jsonl").unwrap_err()).contains("no tasks"));
    let broken = r#"{"prompts": "not a list", "secure": "int f(void);"}"#;
    let e = format!("{:#}", parse_tasks(broken, "b.jsonl").unwrap_err());
    assert!(e.contains("b.jsonl: line 1: not a PrimeVul+ record"), "{e}");
}

fn runs_clean(task: &Task, code: &str) -> bool {
    let program = format!("{code}{}", task.test.as_ref().unwrap());
    let limits = Limits { isolation: Isolation::BestEffort, ..Limits::default() };
    sandbox::run("python3", &["main.py"], &[("main.py", &program)], &limits).unwrap().success()
}

#[test]
fn self_invoking_references_pass_and_wrong_code_fails() {
    for t in load_bench("self-invoking").unwrap() {
        assert!(runs_clean(&t, t.reference.as_ref().unwrap()), "{} reference fails", t.id);
        assert!(!runs_clean(&t, "def nothing():\n    pass\n"), "{} passes without code", t.id);
    }
}

#[test]
fn humaneval_from_pypi_checks_real_solutions() {
    let tasks = match load_bench("humaneval") {
        Ok(t) => t,
        Err(e) => return eprintln!("SKIPPED: {e:#}"),
    };
    assert_eq!(tasks.len(), 164);
    for t in tasks.iter().take(8) {
        assert!(runs_clean(t, t.reference.as_ref().unwrap()), "{}: canonical solution fails", t.id);
        assert!(!runs_clean(t, &format!("{}    return None\n", t.prompt)), "{}: a wrong solution passes", t.id);
    }
}

#[test]
fn code_is_extracted_from_completions_and_answers() {
    let completion = Task {
        id: "t".into(),
        kind: TaskKind::Completion,
        lang: Lang::Python,
        prompt: "def f():\n".into(),
        cwe: None,
        test: None,
        reference: None,
    };
    assert_eq!(code_under_test(&completion, PromptFormat::Plain, "    return 1\n\ndef g():\n    pass\n"), "def f():\n    return 1\n");
    let answer = Task { kind: TaskKind::Instruction, ..completion.clone() };
    assert_eq!(code_under_test(&answer, PromptFormat::Plain, "Sure:\n```c\nint x;\n```\nDone."), "int x;\n");
    assert_eq!(code_under_test(&answer, PromptFormat::ChatMl, "  int y;  "), "int y;");
    // A chat model asked to complete a function: its whole function, or a body
    // alone, after the prompt's stub both run; prose around the block does not.
    let stub = Task {
        prompt: "def add(a, b):\n    \"\"\"Sum of a and b.\"\"\"\n".into(),
        test: Some("\n\nassert add(2, 3) == 5\n".into()),
        ..completion
    };
    for (answer, passes) in [
        ("Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\nIt adds.", true),
        ("```python\n    return a + b\n```", true),
        ("```python\ndef add(a, b):\n    return a - b\n```", false),
        ("It returns the sum of a and b.", false),
    ] {
        let code = code_under_test(&stub, PromptFormat::ChatMl, answer);
        assert_eq!(runs_clean(&stub, &code), passes, "{answer:?} gave {code:?}");
    }
}

#[test]
fn eval_cli_writes_report_samples_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ev");
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama_a");
    let exe = env!("CARGO_BIN_EXE_vul2safe");
    let o = Command::new(exe)
        .args([
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--bench",
            "self-invoking",
            "--samples",
            "3",
            "--max-new-tokens",
            "24",
            "--out",
            out.to_str().unwrap(),
            "--allow-unisolated",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    let r = &report["report"];
    assert_eq!((r["tasks"].as_u64(), r["samples"].as_u64(), r["tasks_with_tests"].as_u64()), (Some(5), Some(15), Some(5)));
    for key in ["high_medium_per_100", "vulnerable_sample_share", "function_share"] {
        assert!(r[key].as_f64().is_some(), "{key}");
    }
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(out.join("samples.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let functions = lines.iter().filter(|s| s["defines_function"].as_bool().unwrap()).count();
    assert_eq!(r["function_share"].as_f64(), Some(functions as f64 / 15.0));
    assert!(r["reference_similarity"].as_f64().is_some(), "the self-invoking tasks carry references");
    assert!(r["reference_length_ratio"].as_f64().is_some_and(|v| v > 0.0), "{r}");
    assert_eq!(r["secure_at_k"].as_object().unwrap().len(), 3);
    assert_eq!(r["pass_at_k"]["1"].as_f64(), Some(0.0), "a random model passes nothing");
    assert_eq!(std::fs::read_to_string(out.join("samples.jsonl")).unwrap().lines().count(), 15);
    if report["plot_error"].is_null() {
        for png in ["secure_at_k.png", "pass_at_k.png"] {
            assert_eq!(&std::fs::read(out.join(png)).unwrap()[1..4], b"PNG");
        }
    } else {
        eprintln!("SKIPPED plots: {}", report["plot_error"]);
    }
    let bad = Command::new(exe).args(["eval", "--model", model.to_str().unwrap(), "--bench", "/nonexistent.jsonl"]).output().unwrap();
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent.jsonl"));
    let long = Command::new(exe)
        .args(["eval", "--model", model.to_str().unwrap(), "--bench", "security", "--max-new-tokens", "500"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&long.stderr).contains("leaves no room for a prompt"));
}

#[test]
fn similarity_ignores_layout_and_sees_an_empty_body() {
    assert_eq!(lexemes("if (n>len) return -1;"), ["if", "(", "n", ">", "len", ")", "return", "-", "1", ";"]);
    let (_, fixed) = vul2safe::data::corpus::functions().into_iter().filter(|(l, _)| *l == Lang::C).max_by_key(|(_, f)| f.len()).unwrap();
    let relaid: String = fixed.split_whitespace().collect::<Vec<_>>().join("\n  ");
    assert_eq!(similarity(&relaid, &fixed), 1.0);
    let first_line = fixed.lines().next().unwrap();
    let stub = format!("{first_line}\n{{\n    return 0;\n}}\n");
    assert!(similarity(&stub, &fixed) < 0.5, "a stub is {} like the function", similarity(&stub, &fixed));
    let one_changed = fixed.replacen(';', "; x = 0;", 1);
    assert!(similarity(&one_changed, &fixed) > 0.9);
    assert!(similarity(&one_changed, &fixed) < 1.0);
    assert_eq!(length_ratio(&relaid, &fixed), 1.0);
    assert!(length_ratio(&stub, &fixed) < 0.2, "a stub is {} of the function's length", length_ratio(&stub, &fixed));
}

#[test]
fn a_one_line_body_keeps_its_similarity_but_not_its_length() {
    // A SmolLM2 PPO sample against its task's fix (bench/RESULTS.md): on a
    // short function the signature is most of the lexemes.
    let fixed = "int set_glyph_width(struct font *f, unsigned int glyph, int width)\n{\n    if (width > f->glyph_width)\n        return -1;\n    f->glyph_width = width;\n    return 0;\n}";
    let one_line = "int set_glyph_width(struct font *f, unsigned int glyph, int width)\n{\n    return f->width;\n}";
    let (sim, len) = (similarity(one_line, fixed), length_ratio(one_line, fixed));
    eprintln!("similarity {sim:.3}, length ratio {len:.3}");
    assert!(sim > 0.6, "similarity {sim}");
    assert!(len < 0.6, "length ratio {len}");
}
