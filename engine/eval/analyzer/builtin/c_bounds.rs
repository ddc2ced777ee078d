//! C rules about sizes and indexes: copy lengths and indexes never compared
//! with a bound, unchecked pointer advances, off-by-one bounds, allocation
//! sizes that can overflow, and paths built from caller-supplied names.

use super::c_unit::{declared_name, operands, Unit, ALLOCATORS};
use super::rules::*;
use super::syntax::{ancestor, call_args, call_name, descendants, is_c_string_literal, named_children};
use super::Report;
use tree_sitter::Node;

/// Copy calls and the positions of their length arguments.
const LENGTH_ARGS: &[(&str, &[usize])] = &[("memcpy", &[2]), ("memmove", &[2]), ("fread", &[1, 2]), ("read", &[2]), ("pread", &[2])];
const LIMIT_MACROS: &[&str] = &["SIZE_MAX", "INT_MAX", "UINT_MAX", "UINT32_MAX", "SSIZE_MAX", "LONG_MAX", "UINT16_MAX"];
const NARROW_TYPES: &[&str] = &["uint16_t", "int16_t", "uint8_t", "int8_t", "short", "unsigned short", "char", "unsigned char"];
/// Calls that validate a file name before it is used.
const PATH_GUARDS: &[&str] = &["strstr", "strchr", "strrchr", "strpbrk", "strspn", "strcspn", "realpath", "isalnum", "isalpha", "basename"];

/// Operands that may vary at run time: not literals, not sizeof, not UPPER_CASE macros.
fn variable_operands(u: &Unit, expr: Node) -> Vec<String> {
    let inside_sizeof = |n: Node| {
        let mut cur = Some(n);
        while let Some(c) = cur {
            if c.kind() == "sizeof_expression" {
                return true;
            }
            if c == expr {
                return false;
            }
            cur = c.parent();
        }
        false
    };
    descendants(expr)
        .into_iter()
        .filter(|n| matches!(n.kind(), "identifier" | "field_expression") && !inside_sizeof(*n))
        .filter(|n| !n.parent().is_some_and(|p| matches!(p.kind(), "field_expression" | "call_expression")))
        .map(|n| u.text(n).to_string())
        .filter(|t| !t.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .collect()
}

fn checked(u: &Unit, op: &str) -> bool {
    u.bounded.contains(op) || u.alloc_operands.contains(op)
}

fn check_lengths(u: &Unit, report: &mut Report) {
    for call in u.calls() {
        let name = call_name(call, u.src);
        let Some(&(_, positions)) = LENGTH_ARGS.iter().find(|(n, _)| *n == name) else { continue };
        let args = call_args(call);
        // `read(fd, buf, len)` with both from the caller is the caller's contract.
        let is_param = |i: usize| args.get(i).is_some_and(|a| a.kind() == "identifier" && u.params.contains(u.text(*a)));
        let dest = if matches!(name, "read" | "pread") { 1 } else { 0 };
        if is_param(dest) && positions.iter().all(|&i| is_param(i)) {
            continue;
        }
        let unchecked: Vec<String> =
            positions.iter().filter_map(|&i| args.get(i)).flat_map(|a| variable_operands(u, *a)).filter(|op| !checked(u, op)).collect();
        if let Some(op) = unchecked.first() {
            report.add(&UNCHECKED_LENGTH, call, &format!("{name} length `{op}`"));
        }
    }
}

/// Whether `name` is changed by `++`, `--`, `+=` or `-=` somewhere in the unit.
fn is_stepped(u: &Unit, name: &str) -> bool {
    u.nodes.iter().any(|n| match n.kind() {
        "update_expression" => n.child_by_field_name("argument").is_some_and(|a| u.text(a) == name),
        "assignment_expression" => {
            let op = n.child_by_field_name("operator").map(|o| u.text(o)).unwrap_or("");
            (op == "+=" || op == "-=") && n.child_by_field_name("left").is_some_and(|l| u.text(l) == name)
        }
        _ => false,
    })
}

/// The variable in a simple index: `i`, `p->n`, `i ± k`, `i++`.
fn simple_index<'a>(u: &Unit<'_, 'a>, index: Node) -> Option<&'a str> {
    match index.kind() {
        "identifier" | "field_expression" => Some(u.text(index)),
        "update_expression" => index.child_by_field_name("argument").and_then(|a| simple_index(u, a)),
        "binary_expression" => {
            let op = index.child_by_field_name("operator").map(|o| u.text(o))?;
            let (l, r) = (index.child_by_field_name("left")?, index.child_by_field_name("right")?);
            ((op == "+" || op == "-") && r.kind() == "number_literal").then(|| simple_index(u, l)).flatten()
        }
        _ => None,
    }
}

fn check_indexes(u: &Unit, report: &mut Report) {
    for sub in u.nodes.iter().filter(|n| n.kind() == "subscript_expression") {
        let Some(var) = sub.child_by_field_name("index").and_then(|i| simple_index(u, i)) else { continue };
        let base = var.split("->").next().unwrap_or(var);
        let from_caller = u.params.contains(var) || (var.contains("->") && u.params.contains(base));
        if (from_caller || is_stepped(u, var)) && !checked(u, var) {
            report.add(&UNCHECKED_INDEX, *sub, &format!("index `{var}`"));
        }
    }
}

/// `p += n` on a pointer or an offset used as an index, where `n` is never bounded.
fn check_advances(u: &Unit, report: &mut Report) {
    for n in u.nodes.iter().filter(|n| n.kind() == "assignment_expression") {
        let op = n.child_by_field_name("operator").map(|o| u.text(o)).unwrap_or("");
        let (Some(left), Some(right)) = (n.child_by_field_name("left"), n.child_by_field_name("right")) else { continue };
        if op != "+=" {
            continue;
        }
        let target = u.text(left);
        let indexes_with_target = u
            .nodes
            .iter()
            .any(|s| s.kind() == "subscript_expression" && s.child_by_field_name("index").is_some_and(|i| u.text(i) == target));
        if !(u.params.contains(target) || indexes_with_target) {
            continue;
        }
        let amounts: Vec<String> =
            operands(right, u.src).into_iter().filter(|o| o != target && !o.chars().all(|c| c.is_ascii_uppercase() || c == '_')).collect();
        if let Some(a) = amounts.iter().find(|a| !checked(u, a)) {
            report.add(&UNCHECKED_ADVANCE, *n, &format!("`{target} += …{a}…`"));
        }
    }
}

/// Names used as an array index inside `scope`.
fn indexed_names(u: &Unit, scope: Node) -> Vec<String> {
    descendants(scope)
        .into_iter()
        .filter(|n| n.kind() == "subscript_expression")
        .filter_map(|s| s.child_by_field_name("index").and_then(|i| simple_index(u, i)).map(str::to_string))
        .collect()
}

fn check_off_by_one(u: &Unit, report: &mut Report) {
    for n in &u.nodes {
        match n.kind() {
            // `for (…; i <= n; …) a[i]` and `while (… k <= max) a[k++]`.
            "for_statement" | "while_statement" => {
                let (Some(cond), Some(body)) = (n.child_by_field_name("condition"), n.child_by_field_name("body")) else { continue };
                let used = indexed_names(u, body);
                for c in descendants(cond).into_iter().filter(|c| c.kind() == "binary_expression") {
                    let op = c.child_by_field_name("operator").map(|o| u.text(o)).unwrap_or("");
                    let Some(left) = c.child_by_field_name("left") else { continue };
                    if op == "<=" && operands(left, u.src).iter().any(|v| used.contains(v)) {
                        report.add(&OFF_BY_ONE, c, u.text(c));
                    }
                }
            }
            // `if (i > n) i = …;` where `i` indexes an array: `i == n` slips through.
            "if_statement" => {
                let Some(cond) = n.child_by_field_name("condition") else { continue };
                let inner = named_children(cond);
                let Some(c) = inner.first().filter(|c| c.kind() == "binary_expression") else { continue };
                let op = c.child_by_field_name("operator").map(|o| u.text(o)).unwrap_or("");
                let Some(left) = c.child_by_field_name("left") else { continue };
                let var = u.text(left);
                let reassigned = n.child_by_field_name("consequence").is_some_and(|body| {
                    descendants(body)
                        .iter()
                        .any(|a| a.kind() == "assignment_expression" && a.child_by_field_name("left").is_some_and(|l| u.text(l) == var))
                });
                if op == ">" && reassigned && indexed_names(u, u.root).iter().any(|v| v == var) {
                    report.add(&OFF_BY_ONE, *c, u.text(*c));
                }
            }
            _ => {}
        }
    }
}

/// Whether `expr` multiplies a run-time value, or adds two run-time values.
fn can_overflow(u: &Unit, expr: Node) -> bool {
    descendants(expr).into_iter().filter(|n| n.kind() == "binary_expression").any(|b| {
        let op = b.child_by_field_name("operator").map(|o| u.text(o)).unwrap_or("");
        let varying = |side: &str| b.child_by_field_name(side).is_some_and(|s| !variable_operands(u, s).is_empty());
        // `x + 1` is the usual terminator slot; a sum with any other operand can wrap.
        let literal = |side: &str| b.child_by_field_name(side).is_some_and(|s| s.kind() == "number_literal");
        match op {
            "*" => varying("left") || varying("right"),
            "+" => (varying("left") && !literal("right")) || (varying("right") && !literal("left")),
            _ => false,
        }
    })
}

fn check_alloc_sizes(u: &Unit, report: &mut Report) {
    let guarded = u.bounded.iter().any(|b| LIMIT_MACROS.contains(&b.as_str()))
        || u.nodes.iter().any(|n| n.kind() == "identifier" && LIMIT_MACROS.contains(&u.text(*n)) && ancestor(*n, "if_statement").is_some());
    if guarded {
        return;
    }
    for call in u.calls() {
        let name = call_name(call, u.src);
        if !ALLOCATORS.contains(&name) {
            continue;
        }
        let args = call_args(call);
        let sizes: &[Node] = if name == "realloc" { args.get(1..).unwrap_or(&[]) } else { &args };
        for size in sizes {
            let via_local = (size.kind() == "identifier").then(|| u.text(*size)).and_then(|v| {
                let narrow = u.local_type(v).is_some_and(|t| NARROW_TYPES.contains(&t));
                let init = u.initializer(v);
                (narrow && init.is_some() || init.is_some_and(|i| can_overflow(u, i) && u.text(i).contains('*'))).then_some(v)
            });
            if can_overflow(u, *size) || via_local.is_some() {
                report.add(&ALLOC_OVERFLOW, call, u.text(*size));
                break;
            }
        }
    }
}

/// Calls that open or change a file by name.
const FS_SINKS: &[&str] =
    &["open", "fopen", "openat", "dlopen", "opendir", "stat", "lstat", "unlink", "remove", "mkdir", "creat", "rename"];

/// `snprintf(buf, n, "%s/%s", dir, name)` with a parameter, no validation call
/// in the function, and the result used as a path (a file-system call on it,
/// or a path-like buffer or function name).
fn check_paths(u: &Unit, report: &mut Report) {
    if u.calls().any(|c| PATH_GUARDS.contains(&call_name(c, u.src))) {
        return;
    }
    let pathish = |name: &str| ["path", "file", "dir"].iter().any(|w| name.to_lowercase().contains(w));
    let func_name = u.root.child_by_field_name("declarator").and_then(|d| declared_name(d, u.src)).unwrap_or("");
    for call in u.calls() {
        let fmt_at = match call_name(call, u.src) {
            "snprintf" => 2,
            "sprintf" => 1,
            _ => continue,
        };
        let args = call_args(call);
        let Some(fmt) = args.get(fmt_at).filter(|f| is_c_string_literal(**f)) else { continue };
        let f = u.text(*fmt);
        if !(f.contains("/%s") || f.contains("%s/")) {
            continue;
        }
        let Some(buf) = args.first().map(|b| u.text(*b)) else { continue };
        let sunk = u.calls().any(|c| FS_SINKS.contains(&call_name(c, u.src)) && call_args(c).first().is_some_and(|a| u.text(*a) == buf));
        if !(sunk || pathish(buf) || pathish(func_name)) {
            continue;
        }
        if let Some(p) = args[fmt_at + 1..].iter().map(|a| u.text(*a)).find(|a| u.params.contains(*a)) {
            report.add(&PATH_TRAVERSAL, call, &format!("`{p}` joined into a path"));
        }
    }
}

pub fn check(u: &Unit, report: &mut Report) {
    check_lengths(u, report);
    check_indexes(u, report);
    check_advances(u, report);
    check_off_by_one(u, report);
    check_alloc_sizes(u, report);
    check_paths(u, report);
}
