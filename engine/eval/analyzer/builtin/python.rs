//! Python rules: eval/exec, unsafe deserialization, shell commands, SQL built
//! from strings, weak hashes, and TLS verification turned off.

use super::rules::*;
use super::syntax::{call_args, call_name, descendants, named_children, text};
use super::Report;
use std::collections::HashSet;
use tree_sitter::Node;

const DESERIALIZERS: &[&str] = &[
    "pickle.loads",
    "pickle.load",
    "cPickle.loads",
    "cPickle.load",
    "marshal.loads",
    "marshal.load",
    "shelve.open",
    "dill.loads",
    "dill.load",
    "jsonpickle.decode",
    "yaml.unsafe_load",
    "yaml.full_load",
];
const SHELL_CALLS: &[&str] = &["os.system", "os.popen", "commands.getoutput", "commands.getstatusoutput", "subprocess.getoutput"];
const WEAK_HASHES: &[&str] = &["hashlib.md5", "hashlib.sha1", "md5.new", "sha.new", "Crypto.Hash.MD5.new"];
const SAFE_YAML_LOADERS: &[&str] = &["SafeLoader", "CSafeLoader", "yaml.SafeLoader", "yaml.CSafeLoader", "BaseLoader", "yaml.BaseLoader"];

/// A plain string literal (no f-string interpolation).
fn is_constant_string(node: Node) -> bool {
    node.kind() == "string" && !named_children(node).iter().any(|c| c.kind() == "interpolation")
        || node.kind() == "concatenated_string" && named_children(node).iter().all(|c| is_constant_string(*c))
}

fn keyword<'t>(call: Node<'t>, name: &str, src: &str) -> Option<Node<'t>> {
    call_args(call)
        .into_iter()
        .filter(|a| a.kind() == "keyword_argument")
        .find(|a| a.child_by_field_name("name").is_some_and(|n| text(n, src) == name))
        .and_then(|a| a.child_by_field_name("value"))
}

/// Names interpolated into a string built with `%`, `+`, an f-string or `.format`.
fn built_string_names(expr: Node, src: &str) -> Option<Vec<String>> {
    let names =
        |n: Node| descendants(n).into_iter().filter(|d| d.kind() == "identifier").map(|d| text(d, src).to_string()).collect::<Vec<_>>();
    match expr.kind() {
        "binary_operator" => {
            let op = expr.child_by_field_name("operator").map(|o| text(o, src)).unwrap_or("");
            let has_string = descendants(expr).iter().any(|d| d.kind() == "string");
            ((op == "%" || op == "+") && has_string).then(|| names(expr))
        }
        "string" if !is_constant_string(expr) => Some(names(expr)),
        "call" if call_name(expr, src).ends_with(".format") => Some(names(expr)),
        _ => None,
    }
}

/// Names compared with `in` / `not in` (allow-listed before use).
fn allow_listed(scope: Node, src: &str) -> HashSet<String> {
    descendants(scope)
        .into_iter()
        .filter(|n| n.kind() == "comparison_operator" && (text(*n, src).contains(" in ")))
        .filter_map(|n| named_children(n).first().map(|l| text(*l, src).to_string()))
        .collect()
}

fn check_sql(call: Node, scope: Node, src: &str, report: &mut Report) {
    let Some(query) = call_args(call).into_iter().next() else { return };
    let built = match query.kind() {
        "identifier" => {
            let name = text(query, src);
            descendants(scope)
                .into_iter()
                .filter(|n| n.kind() == "assignment" && n.child_by_field_name("left").is_some_and(|l| text(l, src) == name))
                .filter(|n| n.start_byte() < call.start_byte())
                .filter_map(|n| n.child_by_field_name("right").and_then(|r| built_string_names(r, src)))
                .next_back()
        }
        _ => built_string_names(query, src),
    };
    let Some(names) = built else { return };
    let allowed = allow_listed(scope, src);
    if names.iter().any(|n| !allowed.contains(n)) {
        report.add(&PY_SQL, call, call_name(call, src));
    }
}

pub fn check(root: Node, report: &mut Report) {
    let src = report.src();
    let all = descendants(root);
    for n in &all {
        match n.kind() {
            "call" => {
                let name = call_name(*n, src);
                let first = call_args(*n).into_iter().next();
                if matches!(name, "eval" | "exec" | "builtins.eval" | "builtins.exec") && first.is_some_and(|a| !is_constant_string(a)) {
                    report.add(&PY_EVAL, *n, name);
                }
                if DESERIALIZERS.contains(&name) {
                    report.add(&PY_DESERIALIZE, *n, name);
                }
                if name == "yaml.load" && keyword(*n, "Loader", src).is_none_or(|l| !SAFE_YAML_LOADERS.contains(&text(l, src))) {
                    report.add(&PY_DESERIALIZE, *n, "yaml.load without SafeLoader");
                }
                if name.starts_with("subprocess.") && keyword(*n, "shell", src).is_some_and(|v| text(v, src) == "True") {
                    report.add(&PY_SHELL, *n, "shell=True");
                }
                if SHELL_CALLS.contains(&name) && first.is_some_and(|a| !is_constant_string(a)) {
                    report.add(&PY_SHELL, *n, name);
                }
                if WEAK_HASHES.contains(&name)
                    || name == "hashlib.new"
                        && first.is_some_and(|a| matches!(text(a, src).trim_matches(['"', '\'']).to_lowercase().as_str(), "md5" | "sha1"))
                {
                    report.add(&PY_WEAK_HASH, *n, name);
                }
                if keyword(*n, "verify", src).is_some_and(|v| text(v, src) == "False") || name == "ssl._create_unverified_context" {
                    report.add(&PY_TLS, *n, name);
                }
                if [".execute", ".executemany", ".executescript"].iter().any(|s| name.ends_with(s)) {
                    let scope = super::syntax::ancestor(*n, "function_definition").unwrap_or(root);
                    check_sql(*n, scope, src, report);
                }
            }
            "assignment" => {
                let (Some(l), Some(r)) = (n.child_by_field_name("left"), n.child_by_field_name("right")) else { continue };
                let (l, r) = (text(l, src), text(r, src));
                let off = (l.ends_with(".verify") || l.ends_with(".check_hostname")) && r == "False"
                    || l.ends_with(".verify_mode") && r.ends_with("CERT_NONE");
                if off {
                    report.add(&PY_TLS, *n, l);
                }
            }
            _ => {}
        }
    }
}
