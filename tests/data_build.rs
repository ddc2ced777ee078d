//! PrimeVul+ builder: the embedded corpus with the heuristic teacher, bad
//! input, diff labels, and an OpenAI-compatible teacher served for real on
//! 127.0.0.1 that answers, fails, stalls, and survives a SIGKILL'd client.

#[path = "support/teacher_server.rs"]
mod teacher_server;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use teacher_server::{good_answer, is_prompt_request, Reply, TeacherServer};
use vul2safe::data::build::{build, read_records, BuildOptions, BuildStats, Input};
use vul2safe::data::corpus::EMBEDDED_CORPUS;
use vul2safe::data::labels::{diff_spans, token_mask};
use vul2safe::data::prompts::leaked_term;
use vul2safe::data::record::PrimeVulPlus;
use vul2safe::data::teacher::chat::{ChatBackend, ChatTeacher, RetryPolicy};
use vul2safe::data::teacher::heuristic::Heuristic;
use vul2safe::data::teacher::http::HttpChat;
use vul2safe::data::teacher::Teacher;

fn opts(inputs: Vec<Input>, out: &Path) -> BuildOptions {
    BuildOptions {
        inputs,
        out: out.to_path_buf(),
        prompts_per_pair: 2,
        threshold: 0.7,
        concurrency: 4,
        skip_bad: false,
        test_fraction: 0.1,
        analyzer_check: false,
    }
}

fn run(o: &BuildOptions, t: &dyn Teacher) -> anyhow::Result<BuildStats> {
    build(o, t, &|_| {})
}

/// The first `pairs` pairs of the embedded corpus as a PrimeVul file.
fn corpus_head(dir: &Path, pairs: usize) -> PathBuf {
    let p = dir.join("head.jsonl");
    let text: String = EMBEDDED_CORPUS.lines().take(2 * pairs).map(|l| format!("{l}\n")).collect();
    std::fs::write(&p, text).unwrap();
    p
}

fn http_teacher(url: &str, attempts: u32, timeout: Duration) -> ChatTeacher<HttpChat> {
    ChatTeacher {
        backend: HttpChat::new(url, "test-teacher", Some("k".into()), timeout),
        retry: RetryPolicy { attempts, first_backoff: Duration::from_millis(10) },
    }
}

fn records(out: &Path) -> Vec<PrimeVulPlus> {
    read_records(&out.join("primevul_plus.jsonl")).unwrap()
}

#[test]
fn embedded_corpus_builds_with_the_heuristic_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let stats = run(&opts(vec![Input::Embedded], dir.path()), &Heuristic).unwrap();
    assert!(stats.pairs_in >= 150, "{stats:?}");
    let security_cwes = stats.cwe_histogram.keys().filter(|c| c.starts_with("CWE-")).count();
    assert!(stats.kept >= 140 && security_cwes >= 15, "{stats:?}");
    assert!(stats.dropped["not_security_fix"] >= 6, "the non-security refactors are filtered: {stats:?}");
    let recs = records(dir.path());
    assert_eq!(recs.len(), stats.kept);
    assert!(recs.iter().any(|r| r.lang == "python") && recs.iter().any(|r| r.lang == "c"));
    let mut split_of: HashMap<String, String> = HashMap::new();
    for r in &recs {
        assert!(!r.vulnerable_spans.is_empty() || !r.secure_spans.is_empty(), "{}", r.id);
        for &(s, e) in &r.vulnerable_spans {
            assert!(s < e && e <= r.vulnerable.len() && r.vulnerable.is_char_boundary(s));
        }
        for &(s, e) in &r.secure_spans {
            assert!(s < e && e <= r.secure.len() && r.secure.is_char_boundary(s));
            assert_eq!(r.secure[s..e].trim(), &r.secure[s..e], "spans are trimmed");
        }
        assert_eq!(r.prompts.len(), 2);
        for p in &r.prompts {
            assert_eq!(leaked_term(p), None, "{p}");
        }
        // A function lives in one split only.
        let name = r.prompts[0].split('`').nth(1).unwrap_or_default().to_string();
        let prev = split_of.insert(format!("{}:{name}", r.lang), r.split.clone());
        assert!(prev.is_none_or(|p| p == r.split), "{name} in both splits");
    }
    assert!(stats.splits["test"] > 0 && stats.splits["train"] > stats.splits["test"]);
    let on_disk: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("stats.json")).unwrap()).unwrap();
    assert_eq!(on_disk["kept"], stats.kept);
}

#[test]
fn diff_spans_cover_changed_lines_and_map_to_tokens() {
    let vuln = "int f(char *d, const char *s)\n{\n    strcpy(d, s);\n    return 0;\n}\n";
    let fix = "int f(char *d, const char *s)\n{\n    if (strlen(s) >= 16)\n        return -1;\n    strcpy(d, s);\n    return 0;\n}\n";
    let (v, s) = diff_spans(vuln, fix);
    assert!(v.is_empty(), "nothing removed: {v:?}");
    assert_eq!(s.len(), 1);
    assert_eq!(&fix[s[0].0..s[0].1], "if (strlen(s) >= 16)\n        return -1;");
    let tok = vul2safe::tokenizer::Tokenizer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny")).unwrap();
    let enc = tok.encode(fix).unwrap();
    let mask = token_mask(&enc.offsets, &s);
    let inside: String = enc.offsets.iter().zip(&mask).filter(|(_, &m)| m).map(|(&(a, b), _)| &fix[a..b]).collect();
    assert!(inside.contains("strlen(s) >= 16") && inside.contains("return -1;"), "{inside:?}");
    assert!(!inside.contains("strcpy"), "{inside:?}");
    let (v2, _) = diff_spans("a\n    gets(b);\nc\n", "a\n    fgets(b, 8, stdin);\nc\n");
    assert_eq!(v2, vec![(6, 14)]);
}

fn write_input(dir: &Path, lines: &[&str]) -> PathBuf {
    let p = dir.join("in.jsonl");
    std::fs::write(&p, lines.join("\n")).unwrap();
    p
}

const V: &str = r#"{"func": "int f(char *d) {\n  strcpy(d, x);\n}", "target": 1, "cwe": ["CWE-120"], "project": "p", "commit_id": "c1"}"#;
const F: &str =
    r#"{"func": "int f(char *d) {\n  strlcpy(d, x, 8);\n}", "target": 0, "cwe": ["CWE-120"], "project": "p", "commit_id": "c1"}"#;

#[test]
fn malformed_rows_fail_with_line_numbers_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), &[V, F, "{not json", r#"{"target": 1, "project": "p", "commit_id": "c2"}"#, V, F]);
    let err = format!("{:#}", run(&opts(vec![Input::File(input.clone())], dir.path()), &Heuristic).unwrap_err());
    assert!(err.contains("in.jsonl: line 3: malformed JSON") && err.contains("--skip-bad"), "{err}");
    let mut o = opts(vec![Input::File(input)], dir.path());
    o.skip_bad = true;
    let stats = run(&o, &Heuristic).unwrap();
    assert_eq!(stats.dropped["malformed_json"], 1);
    assert_eq!(stats.dropped["invalid_row"], 1);
    assert_eq!(stats.dropped["duplicate_pair"], 1);
    assert_eq!(stats.kept, 1);
    let missing = write_input(dir.path(), &[r#"{"target": 1, "project": "p", "commit_id": "c2", "cwe": []}"#]);
    let err = format!("{:#}", run(&opts(vec![Input::File(missing)], dir.path()), &Heuristic).unwrap_err());
    assert!(err.contains("line 1") && err.contains("missing field `func`"), "{err}");
}

#[test]
fn non_utf8_and_huge_lines_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.jsonl");
    let mut bytes = format!("{V}\n{F}\n").into_bytes();
    bytes.extend_from_slice(b"{\"func\": \"\xff\xfe\"}\n");
    bytes.extend(std::iter::repeat_n(b'x', vul2safe::data::primevul::MAX_LINE_BYTES + 10));
    bytes.extend_from_slice(b"\n");
    std::fs::write(&p, &bytes).unwrap();
    let err = format!("{:#}", run(&opts(vec![Input::File(p.clone())], dir.path()), &Heuristic).unwrap_err());
    assert!(err.contains("line 3: not valid UTF-8"), "{err}");
    let mut o = opts(vec![Input::File(p)], dir.path());
    o.skip_bad = true;
    let stats = run(&o, &Heuristic).unwrap();
    assert_eq!((stats.dropped["not_utf8"], stats.dropped["huge_line"], stats.kept), (1, 1, 1));
}

#[test]
fn unpaired_identical_and_duplicate_pairs_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let same = F.replace("\"target\": 0", "\"target\": 1").replace("c1", "c3");
    let same_fix = F.replace("c1", "c3");
    let other_commit = F.replace("c1", "zz");
    let input = write_input(dir.path(), &[V, F, F, V, other_commit.as_str(), &same, &same_fix, V, F, V]);
    let stats = run(&opts(vec![Input::File(input)], dir.path()), &Heuristic).unwrap();
    assert_eq!(stats.dropped["unpaired_row"], 4, "{stats:?}");
    assert_eq!(stats.dropped["identical_functions"], 1);
    assert_eq!(stats.dropped["duplicate_pair"], 1);
    assert_eq!(stats.kept, 1);
}

#[test]
fn http_teacher_answers_become_records_with_transcripts() {
    let server = TeacherServer::start(|_, body| good_answer(body));
    let dir = tempfile::tempdir().unwrap();
    let input = corpus_head(dir.path(), 6);
    let t = http_teacher(&server.url, 3, Duration::from_secs(5));
    let stats = run(&opts(vec![Input::File(input)], dir.path()), &t).unwrap();
    assert_eq!((stats.kept, stats.teacher.as_str()), (6, "test-teacher"));
    for r in records(dir.path()) {
        assert_eq!(r.reflection.teacher, "test-teacher");
        assert_eq!(r.reflection.confidence, 0.9);
        assert_eq!(r.reflection.vulnerable_lines, vec![3]);
        assert_eq!(r.prompts.len(), 2);
        let roles: Vec<&str> = r.reflection.transcript.iter().map(|m| m.role.as_str()).collect();
        assert!(roles.contains(&"assistant") && roles.contains(&"filter"), "{roles:?}");
    }
    let reqs = server.requests();
    assert_eq!(reqs.len(), 12, "one reflection and one prompt request per pair");
    for b in &reqs {
        let v: serde_json::Value = serde_json::from_str(b).unwrap();
        assert_eq!(v["model"], "test-teacher");
    }
}

#[test]
fn failing_garbage_and_stalling_answers_are_retried() {
    // Per question: a 500, then garbage, then a stall past the timeout, then a good answer.
    let server = TeacherServer::start(|_, body| {
        static SEEN: std::sync::Mutex<Option<HashMap<String, usize>>> = std::sync::Mutex::new(None);
        let mut g = SEEN.lock().unwrap();
        let n = {
            let m = g.get_or_insert_with(HashMap::new);
            let e = m.entry(body.to_string()).or_default();
            *e += 1;
            *e
        };
        match n {
            1 => Reply::Status(500),
            2 => Reply::Raw("{\"choices\": [{\"message\": {\"content\": \"I think it is fine\"}}]}".into()),
            3 => Reply::Stall(Duration::from_secs(3), Box::new(good_answer(body))),
            _ => good_answer(body),
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let input = corpus_head(dir.path(), 2);
    let t = http_teacher(&server.url, 4, Duration::from_millis(700));
    let stats = run(&opts(vec![Input::File(input)], dir.path()), &t).unwrap();
    assert_eq!(stats.kept, 2, "{stats:?}");
    assert_eq!(server.requests().len(), 16, "4 attempts × 2 questions × 2 pairs");
}

#[test]
fn a_dead_teacher_is_recorded_as_failures_not_a_crash() {
    let server = TeacherServer::start(|_, _| Reply::Status(503));
    let dir = tempfile::tempdir().unwrap();
    let input = corpus_head(dir.path(), 3);
    let stats = run(&opts(vec![Input::File(input)], dir.path()), &http_teacher(&server.url, 2, Duration::from_secs(2))).unwrap();
    assert_eq!((stats.kept, stats.dropped["teacher_error"]), (0, 3));
    let failures = std::fs::read_to_string(dir.path().join("failures.jsonl")).unwrap();
    assert_eq!(failures.lines().count(), 3);
    assert!(failures.contains("HTTP 503") && failures.contains("failed after 2 attempts"), "{failures}");
    // A fatal status (bad key) is not retried.
    let denied = TeacherServer::start(|_, _| Reply::Status(401));
    let stats =
        run(&opts(vec![Input::File(corpus_head(dir.path(), 1))], dir.path()), &http_teacher(&denied.url, 4, Duration::from_secs(2)))
            .unwrap();
    assert_eq!(stats.dropped["teacher_error"], 1);
    assert_eq!(denied.requests().len(), 1);
}

#[test]
fn a_killed_build_resumes_without_asking_anything_twice() {
    let dir = tempfile::tempdir().unwrap();
    let input = corpus_head(dir.path(), 8);
    let out = dir.path().join("out");
    let exe = env!("CARGO_BIN_EXE_vul2safe");
    let args = |url: &str| {
        let mut c = Command::new(exe);
        c.args(["data", "build", "--input", input.to_str().unwrap(), "--out", out.to_str().unwrap(), "--teacher", url]);
        c.args(["--teacher-model", "t", "--concurrency", "2", "--backoff-ms", "10", "--timeout-s", "30", "--prompts-per-pair", "2"]);
        c
    };
    // First run: answers 5 questions, then stalls; we SIGKILL the client.
    let first =
        TeacherServer::start(
            |n, body| if n < 5 { good_answer(body) } else { Reply::Stall(Duration::from_secs(60), Box::new(Reply::Status(500))) },
        );
    let mut child = args(&first.url).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while first.requests().len() < 7 && t0.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    child.kill().unwrap();
    child.wait().unwrap();
    let answered: Vec<String> = first.requests()[..5].to_vec();
    let cache = std::fs::read_to_string(out.join("teacher_cache.jsonl")).unwrap();
    assert_eq!(cache.lines().count(), 5, "every answer was cached before the kill");

    let second = TeacherServer::start(|_, body| good_answer(body));
    let status = args(&second.url).output().unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let asked_again = second.requests().into_iter().filter(|b| answered.contains(b)).count();
    assert_eq!(asked_again, 0, "answered questions were asked again");
    let stats: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("stats.json")).unwrap()).unwrap();
    assert_eq!(stats["kept"], 8);
    assert_eq!(stats["teacher_cache_hits"], 5);
    assert_eq!(second.requests().len() + 5, 16, "8 pairs × 2 questions in all");
    assert!(second.requests().iter().filter(|b| is_prompt_request(b)).count() > 0);
}

#[test]
fn local_teacher_runs_our_engine_and_records_unusable_answers() {
    use vul2safe::data::teacher::local::LocalChat;
    let dir = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/llama_a");
    let backend = LocalChat::load(&model, 16).unwrap();
    assert_eq!(backend.name(), format!("local:{}", model.display()));
    let t = ChatTeacher { backend, retry: RetryPolicy { attempts: 1, first_backoff: Duration::ZERO } };
    // A random tiny model cannot answer in JSON: each pair is a recorded failure.
    let stats = run(&opts(vec![Input::File(corpus_head(dir.path(), 2))], dir.path()), &t).unwrap();
    assert_eq!((stats.kept, stats.dropped["teacher_error"]), (0, 2));
    let failures = std::fs::read_to_string(dir.path().join("failures.jsonl")).unwrap();
    assert!(failures.contains("unusable answer") || failures.contains("no JSON object"), "{failures}");
}

#[test]
fn cache_survives_a_torn_last_line() {
    use vul2safe::data::cache::AnswerCache;
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.jsonl");
    std::fs::write(&p, "{\"key\": \"a\", \"value\": 1}\n{\"key\": \"b\", \"va").unwrap();
    let c = AnswerCache::open(&p).unwrap();
    assert_eq!((c.len(), c.torn_lines), (1, 1));
    c.put("b", &serde_json::json!(2)).unwrap();
    drop(c);
    let c = AnswerCache::open(&p).unwrap();
    assert_eq!((c.get("a"), c.get("b")), (Some(serde_json::json!(1)), Some(serde_json::json!(2))));
}

#[test]
fn cli_builds_the_embedded_corpus_and_rejects_bad_flags() {
    let dir = tempfile::tempdir().unwrap();
    let exe = env!("CARGO_BIN_EXE_vul2safe");
    let out = Command::new(exe).args(["data", "build", "--out", dir.path().to_str().unwrap()]).output().unwrap();
    assert!(out.status.success());
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(stats["kept"].as_u64().unwrap() >= 140);
    for (flags, want) in [
        (vec!["--teacher", "ftp://x"], "--teacher must be"),
        (vec!["--threshold", "2"], "--threshold"),
        (vec!["--input", "/nonexistent.jsonl"], "/nonexistent.jsonl"),
        (vec!["--teacher", "local:/nonexistent"], "/nonexistent"),
    ] {
        let o = Command::new(exe).args(["data", "build", "--out", dir.path().to_str().unwrap()]).args(&flags).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want) && !err.contains("panicked"), "{flags:?}: {err}");
    }
}

#[test]
fn analyzer_check_drops_pairs_the_analyzer_does_not_confirm() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = opts(vec![Input::Embedded], dir.path());
    let without = run(&o, &Heuristic).unwrap();
    o.analyzer_check = true;
    let with = run(&o, &Heuristic).unwrap();
    let dropped = with.dropped.get("analyzer_disagrees").copied().unwrap_or(0);
    assert!(dropped > 0 && dropped < 20, "{with:?}");
    assert_eq!(with.kept + dropped, without.kept);
    let r = &records(dir.path())[0];
    assert!(r.reflection.transcript.iter().any(|m| m.role == "analyzer" && m.content.contains("high/medium findings")));
}
