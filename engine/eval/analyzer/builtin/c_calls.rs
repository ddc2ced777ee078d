//! C rules about single calls: dangerous functions, format strings, shell
//! commands, temp files, weak randomness, ignored results, and check-then-use
//! races on file names.

use super::c_unit::Unit;
use super::rules::*;
use super::syntax::{call_args, call_name, is_c_string_literal};
use super::Report;
use tree_sitter::Node;

/// Position of the format argument of printf-like functions.
fn format_index(name: &str) -> Option<usize> {
    Some(match name {
        "printf" | "vprintf" | "warn" | "warnx" => 0,
        "fprintf" | "vfprintf" | "dprintf" | "sprintf" | "vsprintf" | "syslog" | "err" | "errx" | "fwprintf" => 1,
        "snprintf" | "vsnprintf" => 2,
        _ => return None,
    })
}

const SCANF: &[(&str, usize)] = &[("scanf", 0), ("sscanf", 1), ("fscanf", 1), ("vscanf", 0), ("vsscanf", 1), ("vfscanf", 1)];
const UNBOUNDED: &[&str] = &["strcpy", "strcat", "gets", "wcscpy", "wcscat", "stpcpy"];
const TEMP_NAMES: &[&str] = &["tmpnam", "tempnam", "mktemp", "tmpnam_r"];
const WEAK_RNG: &[&str] = &["rand", "random", "srand", "srandom", "drand48", "lrand48", "mrand48", "rand_r"];
/// Calls whose failure must be handled (privileges, I/O that can be short).
const MUST_CHECK: &[&str] = &[
    "setuid",
    "setgid",
    "seteuid",
    "setegid",
    "setresuid",
    "setresgid",
    "chroot",
    "chdir",
    "write",
    "fsync",
    "read",
    "recv",
    "recvfrom",
    "fread",
    "rename",
    "chmod",
    "chown",
    "ftruncate",
    "fwrite",
];
/// Check-by-name calls and the use-by-name calls that race with them.
const CHECKS: &[&str] = &["access", "stat", "lstat", "faccessat"];
const USES: &[&str] = &["open", "fopen", "creat", "chmod", "chown", "unlink", "remove", "rename", "opendir", "truncate"];

/// `%s` / `%[` without a width in a scanf format.
fn unbounded_conversion(fmt: &str) -> bool {
    let b = fmt.as_bytes();
    (0..b.len()).any(|i| {
        if b[i] != b'%' || (i > 0 && b[i - 1] == b'%') {
            return false;
        }
        let mut j = i + 1;
        if j < b.len() && b[j] == b'*' {
            return false;
        }
        let width_start = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        while j < b.len() && b"hlLqjzt".contains(&b[j]) {
            j += 1;
        }
        j < b.len() && (b[j] == b's' || b[j] == b'[') && j == width_start
    })
}

fn check_call(u: &Unit, call: Node, name: &str, report: &mut Report) {
    let args = call_args(call);
    // Copying a literal of known length is bounded by the literal.
    if UNBOUNDED.contains(&name) && !(name != "gets" && args.get(1).is_some_and(|a| is_c_string_literal(*a))) {
        report.add(&UNBOUNDED_COPY, call, name);
    }
    if name == "sprintf" || name == "vsprintf" {
        report.add(&SPRINTF, call, name);
    }
    if let Some(i) = format_index(name) {
        if args.get(i).is_some_and(|a| !is_c_string_literal(*a)) {
            report.add(&FORMAT_STRING, call, name);
        }
    }
    if let Some(&(_, i)) = SCANF.iter().find(|(n, _)| *n == name) {
        if args.get(i).is_some_and(|a| is_c_string_literal(*a) && unbounded_conversion(u.text(*a))) {
            report.add(&SCANF_UNBOUNDED, call, name);
        }
    }
    if (name == "system" || name == "popen") && args.first().is_some_and(|a| !is_c_string_literal(*a)) {
        report.add(&COMMAND_INJECTION, call, name);
    }
    if TEMP_NAMES.contains(&name) {
        report.add(&INSECURE_TEMP, call, name);
    }
    if WEAK_RNG.contains(&name) {
        report.add(&WEAK_RANDOM, call, name);
    }
    if name == "atoi" || name == "atol" {
        report.add(&ATOI, call, name);
    }
    if MUST_CHECK.contains(&name) && call.parent().is_some_and(|p| p.kind() == "expression_statement") {
        report.add(&UNCHECKED_RETURN, call, name);
    }
}

/// `access(p)` / `stat(p)` followed by `open(p)`, or `fstatat(.., 0)` followed by `unlinkat`.
fn check_toctou(u: &Unit, report: &mut Report) {
    let calls: Vec<(Node, &str)> = u.calls().map(|c| (c, call_name(c, u.src))).collect();
    for (i, &(call, name)) in calls.iter().enumerate() {
        let args = call_args(call);
        let (path, later_uses): (Option<&str>, &[&str]) = if CHECKS.contains(&name) {
            (args.first().map(|a| u.text(*a)), USES)
        } else if name == "fstatat" && args.get(3).is_some_and(|f| u.text(*f) == "0") {
            (args.get(1).map(|a| u.text(*a)), &["unlinkat", "openat", "fchmodat", "renameat"])
        } else {
            continue;
        };
        let Some(path) = path else { continue };
        let raced = calls[i + 1..].iter().any(|&(c, n)| {
            let a = call_args(c);
            let target = if n.ends_with("at") { a.get(1) } else { a.first() };
            later_uses.contains(&n) && target.is_some_and(|t| u.text(*t) == path)
        });
        if raced {
            report.add(&TOCTOU, call, &format!("{name}({path}) then use"));
        }
    }
}

/// A "/tmp/…" name formatted into a buffer, then created without O_EXCL.
fn check_predictable_temp(u: &Unit, report: &mut Report) {
    for call in u.calls() {
        let name = call_name(call, u.src);
        let args = call_args(call);
        let fmt_at = match name {
            "snprintf" => 2,
            "sprintf" => 1,
            _ => continue,
        };
        let (Some(buf), Some(fmt)) = (args.first(), args.get(fmt_at)) else { continue };
        let fmt = u.text(*fmt);
        if !fmt.starts_with("\"/tmp/") || fmt.contains("XXXXXX") {
            continue;
        }
        let buf = u.text(*buf);
        let creates = u.calls().any(|c| {
            let a = call_args(c);
            let on_buf = a.first().is_some_and(|x| u.text(*x) == buf);
            match call_name(c, u.src) {
                "open" => on_buf && a.get(1).is_some_and(|f| u.text(*f).contains("O_CREAT") && !u.text(*f).contains("O_EXCL")),
                "fopen" | "mkdir" | "creat" => on_buf,
                _ => false,
            }
        });
        if creates {
            report.add(&INSECURE_TEMP, call, fmt);
        }
    }
}

pub fn check(u: &Unit, report: &mut Report) {
    for call in u.calls() {
        let name = call_name(call, u.src);
        check_call(u, call, name, report);
    }
    check_toctou(u, report);
    check_predictable_temp(u, report);
}
