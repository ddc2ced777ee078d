//! The built-in analyzer on the embedded corpus: it must flag (high or
//! medium) at least 90% of vulnerable versions and at most 10% of fixed ones.

use vul2safe::data::corpus::EMBEDDED_CORPUS;
use vul2safe::eval::analyzer::builtin::analyze_text;
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
