//! The built-in analyzer on the embedded corpus: it must flag (high or
//! medium) at least 90% of vulnerable versions and at most 10% of fixed ones.
//! Also the check that a sample is code at all (`defines_function`).

use vul2safe::data::corpus::EMBEDDED_CORPUS;
use vul2safe::eval::analyzer::builtin::{analyze_text, defines_function};
use vul2safe::lang::Lang;

struct Pair {
    cwe: String,
    file: String,
    vulnerable: String,
    fixed: String,
}

fn pairs() -> Vec<Pair> {
    let rows: Vec<serde_json::Value> = EMBEDDED_CORPUS.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    rows.chunks(2)
        .map(|p| Pair {
            cwe: p[0]["cwe"][0].as_str().unwrap().to_string(),
            file: p[0]["file_name"].as_str().unwrap().to_string(),
            vulnerable: p[0]["func"].as_str().unwrap().to_string(),
            fixed: p[1]["func"].as_str().unwrap().to_string(),
        })
        .filter(|p| p.cwe.starts_with("CWE-"))
        .collect()
}

fn flagged(p: &Pair, code: &str) -> Vec<String> {
    let lang = Lang::detect(Some(&p.file), code);
    analyze_text(lang, code, &p.file).into_iter().filter(|f| f.severity.is_high_or_medium()).map(|f| f.rule).collect()
}

#[test]
fn flags_vulnerable_versions_and_spares_fixed_ones() {
    let pairs = pairs();
    let (mut vuln_hits, mut fixed_hits) = (0, 0);
    for p in &pairs {
        let v = flagged(p, &p.vulnerable);
        let f = flagged(p, &p.fixed);
        if v.is_empty() {
            eprintln!("MISSED  {} {}", p.cwe, p.file);
        } else {
            vuln_hits += 1;
        }
        if !f.is_empty() {
            eprintln!("FIXED-FLAGGED {} {} {:?}", p.cwe, p.file, f);
            fixed_hits += 1;
        }
    }
    let n = pairs.len() as f64;
    eprintln!("vulnerable flagged {vuln_hits}/{}, fixed flagged {fixed_hits}/{}", pairs.len(), pairs.len());
    assert!(vuln_hits as f64 >= 0.9 * n, "flagged only {vuln_hits} of {} vulnerable versions", pairs.len());
    assert!(fixed_hits as f64 <= 0.1 * n, "flagged {fixed_hits} of {} fixed versions", pairs.len());
}

#[test]
fn findings_carry_exact_spans() {
    let src = "#include <string.h>\n\nvoid f(char *dst, const char *name)\n{\n    strcpy(dst, name);\n}\n";
    let f = analyze_text(Lang::C, src, "x.c");
    assert_eq!(f.len(), 1, "{f:?}");
    let f = &f[0];
    assert_eq!((f.rule.as_str(), f.cwe.as_str(), f.tool.as_str(), f.file.as_str()), ("c/unbounded-copy", "CWE-120", "builtin", "x.c"));
    assert_eq!((f.start.line, f.start.col, f.end.line, f.end.col), (5, 5, 5, 22));
    assert_eq!(&src[f.bytes[0]..f.bytes[1]], "strcpy(dst, name)");
    let py = "import yaml\n\ndef load(p):\n    return yaml.load(open(p))\n";
    let f = analyze_text(Lang::Python, py, "x.py");
    assert_eq!(f.len(), 1);
    assert_eq!((f[0].rule.as_str(), f[0].start.line, f[0].start.col), ("py/deserialization", 4, 12));
    assert_eq!(&py[f[0].bytes[0]..f[0].bytes[1]], "yaml.load(open(p))");
}

#[test]
fn flow_rules_follow_paths() {
    let double =
        "int f(char *p, int bad)\n{\n    if (bad) {\n        free(p);\n        return -1;\n    }\n    free(p);\n    return 0;\n}\n";
    assert!(analyze_text(Lang::C, double, "a.c").is_empty(), "freeing once per path is fine");
    let goto = "int f(char *p, int bad)\n{\n    if (bad) {\n        free(p);\n        goto out;\n    }\n    return 0;\nout:\n    free(p);\n    return -1;\n}\n";
    let rules: Vec<String> = analyze_text(Lang::C, goto, "b.c").into_iter().map(|f| f.rule).collect();
    assert_eq!(rules, vec!["c/double-free"]);
    let uaf = "void g(struct s *x)\n{\n    free(x);\n    if (x->flag)\n        h();\n}\n";
    let rules: Vec<String> = analyze_text(Lang::C, uaf, "c.c").into_iter().map(|f| f.rule).collect();
    assert_eq!(rules, vec!["c/use-after-free"]);
    let null = "int n(const char *k)\n{\n    const char *v = getenv(k);\n    return atoi(v);\n}\n";
    let rules: Vec<String> = analyze_text(Lang::C, null, "d.c").into_iter().map(|f| f.rule).collect();
    assert!(rules.contains(&"c/null-deref".to_string()), "{rules:?}");
}

#[test]
fn partial_and_garbage_code_never_panics() {
    let pairs = pairs();
    let mut findings = 0;
    for p in pairs.iter().step_by(3) {
        let lang = Lang::detect(Some(&p.file), &p.vulnerable);
        // Every prefix a model could stop at, on char boundaries.
        for (i, _) in p.vulnerable.char_indices().step_by(7) {
            findings += analyze_text(lang, &p.vulnerable[..i], "cut").len();
        }
    }
    assert!(findings > 0, "prefixes still yield findings where the code got far enough");
    for junk in ["", "}}}{{{", "int f( {", "def (:\n  eval(", "\u{0}\u{1}", &"(".repeat(5000), "strcpy(a, b); gets(x);"] {
        for lang in [Lang::C, Lang::Cpp, Lang::Python] {
            analyze_text(lang, junk, "junk");
        }
    }
    // Statements outside any function (a fragment) are still analyzed.
    assert!(!analyze_text(Lang::C, "strcpy(a, b);", "frag.c").is_empty());
}

#[test]
fn every_corpus_function_defines_one_even_cut_short() {
    let functions = vul2safe::data::corpus::functions();
    for (lang, code) in &functions {
        assert!(defines_function(*lang, code), "{lang:?} not seen as a function:\n{code}");
        // A sample stopped by the token budget is still code.
        let mut cut = code.len() * 4 / 5;
        while !code.is_char_boundary(cut) {
            cut += 1;
        }
        assert!(defines_function(*lang, &code[..cut]), "{lang:?} cut short not seen as a function:\n{}", &code[..cut]);
    }
}

#[test]
fn prose_macros_prototypes_and_empty_bodies_are_not_functions() {
    let not_code = [
        (Lang::C, "Here is a function that copies the name safely."),
        (Lang::C, "#define MAX_NAME 64\n#define MAX_PATH 4096\n"),
        (Lang::C, "int copy_name(char *dst, const char *src);\nint main(void);"),
        (Lang::C, "int copy_name(char *dst, const char *src) {\n"),
        (Lang::C, "int copy_name(char *dst, const char *src) {}"),
        (Lang::Python, "The function reads the file and returns its lines."),
        (Lang::Python, "def read_lines(path):\n"),
        (Lang::Python, "import os\nPATH = os.getcwd()\n"),
    ];
    for (lang, text) in not_code {
        assert!(!defines_function(lang, text), "{lang:?} {text:?} seen as a function");
    }
    let code = [
        (Lang::C, "static int FOO_ATTR bar(struct s *p) { return p->x; }"),
        (Lang::C, "char *\ndup(const char *s)\n{\n  size_t n = strlen(s);"),
        (Lang::Cpp, "std::string name(const Person &p) {\n  return p.first + \" \" + p.last;\n}"),
        (Lang::Python, "def checkout(ref):\n    subprocess.run(f\"git checkout {"),
    ];
    for (lang, text) in code {
        assert!(defines_function(lang, text), "{lang:?} {text:?} not seen as a function");
    }
}
