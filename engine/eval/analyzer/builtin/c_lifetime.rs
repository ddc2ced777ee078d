//! C rules about pointer lifetimes: results that may be NULL used unchecked,
//! and a small path-sensitive walk over each function for use after free,
//! double free, and fields left dangling when the function returns.

use super::c_unit::{declared_name, Unit};
use super::rules::*;
use super::syntax::{call_args, call_name, descendants, named_children};
use super::Report;
use std::collections::{BTreeSet, HashMap};
use tree_sitter::Node;

/// Calls that return NULL on failure or absence.
const NULLABLE: &[&str] = &[
    "malloc", "calloc", "realloc", "strdup", "strndup", "fopen", "fdopen", "getenv", "strchr", "strrchr", "strstr", "strpbrk", "memchr",
    "tmpfile", "opendir", "popen", "dlopen",
];

fn is_nullable(name: &str) -> bool {
    NULLABLE.contains(&name)
        || ["find_", "lookup_"].iter().any(|p| name.starts_with(p))
        || ["_lookup", "_find", "get_attr"].iter().any(|s| name.ends_with(s))
}

fn is_free(name: &str) -> bool {
    matches!(name, "free" | "cfree" | "kfree" | "g_free") || name.ends_with("_free") || name.starts_with("free_")
}

/// `x = call(...)` or `T *x = call(...)` in a statement: the name and the call.
fn assigned_call<'s>(u: &Unit<'_, 's>, stmt: Node) -> Option<(&'s str, String)> {
    let (target, value) = match stmt.kind() {
        "declaration" => {
            let d = named_children(stmt).into_iter().find(|c| c.kind() == "init_declarator")?;
            (declared_name(d.child_by_field_name("declarator")?, u.src)?, d.child_by_field_name("value")?)
        }
        "expression_statement" => {
            let a = named_children(stmt).into_iter().find(|c| c.kind() == "assignment_expression")?;
            let left = a.child_by_field_name("left")?;
            (left.kind() == "identifier").then_some(())?;
            (u.text(left), a.child_by_field_name("right")?)
        }
        _ => return None,
    };
    let value = if value.kind() == "cast_expression" { value.child_by_field_name("value")? } else { value };
    (value.kind() == "call_expression").then(|| (target, call_name(value, u.src).to_string()))
}

/// How a statement treats `name`: tested in a condition, returned or freed
/// (all fine), dereferenced or passed on (a use), or not mentioned.
enum Mention {
    None,
    Tested,
    Used,
}

fn mention(u: &Unit, stmt: Node, name: &str) -> Mention {
    let ids: Vec<Node> = descendants(stmt).into_iter().filter(|n| n.kind() == "identifier" && u.text(*n) == name).collect();
    if ids.is_empty() {
        return Mention::None;
    }
    match stmt.kind() {
        "if_statement" if stmt.child_by_field_name("condition").is_some_and(|c| descendants(c).iter().any(|n| ids.contains(n))) => {
            return Mention::Tested;
        }
        // `return x;` hands the value on; `return f(x);` uses it.
        "return_statement" if named_children(stmt).first().is_some_and(|v| v.kind() == "identifier") => return Mention::Tested,
        _ => {}
    }
    let used = ids.iter().any(|id| {
        let Some(p) = id.parent() else { return false };
        match p.kind() {
            "field_expression" | "subscript_expression" => p.child_by_field_name("argument") == Some(*id),
            "pointer_expression" => p.child_by_field_name("operator").is_some_and(|o| u.text(o) == "*"),
            "argument_list" => p.parent().is_none_or(|c| !is_free(call_name(c, u.src))),
            "binary_expression" => p.parent().is_some_and(|g| g.kind() == "argument_list"),
            _ => false,
        }
    });
    if used {
        Mention::Used
    } else {
        Mention::Tested
    }
}

fn check_null_derefs(u: &Unit, report: &mut Report) {
    for block in u.nodes.iter().filter(|n| n.kind() == "compound_statement") {
        let stmts = named_children(*block);
        for (i, stmt) in stmts.iter().enumerate() {
            let Some((name, call)) = assigned_call(u, *stmt) else { continue };
            if !is_nullable(&call) {
                continue;
            }
            let first = stmts[i + 1..].iter().map(|s| mention(u, *s, name)).find(|m| !matches!(m, Mention::None));
            if matches!(first, Some(Mention::Used)) {
                report.add(&NULL_DEREF, *stmt, &format!("`{name}` from {call}()"));
            }
        }
    }
}

/// Freed expressions along one path; `None` once the path has left (return, goto).
type State = Option<BTreeSet<String>>;

fn merge(a: State, b: State) -> State {
    match (a, b) {
        (Some(mut x), Some(y)) => {
            x.extend(y);
            Some(x)
        }
        (x, None) | (None, x) => x,
    }
}

struct Walker<'u, 't, 's, 'r, 'a> {
    u: &'u Unit<'t, 's>,
    report: &'r mut Report<'a>,
    /// States carried by `goto label` to the label.
    gotos: HashMap<String, BTreeSet<String>>,
    /// `a = b` copies seen so far: a realloc of `b` leaves `a` dangling.
    aliases: Vec<(String, String)>,
}

impl Walker<'_, '_, '_, '_, '_> {
    /// Reports uses of freed memory in `node`, outside free() calls and assignment targets.
    fn check_uses(&mut self, node: Node, freed: &BTreeSet<String>) {
        for n in descendants(node) {
            if !matches!(n.kind(), "identifier" | "field_expression") || !freed.contains(self.u.text(n)) {
                continue;
            }
            let Some(p) = n.parent() else { continue };
            let deref = match p.kind() {
                "field_expression" => {
                    p.child_by_field_name("argument") == Some(n)
                        && p.child_by_field_name("operator").is_some_and(|o| self.u.text(o) == "->")
                }
                "subscript_expression" => p.child_by_field_name("argument") == Some(n),
                "pointer_expression" => p.child_by_field_name("operator").is_some_and(|o| self.u.text(o) == "*"),
                "argument_list" => p.parent().is_none_or(|c| !is_free(call_name(c, self.u.src))),
                "binary_expression" => p.parent().is_some_and(|g| g.kind() == "argument_list"),
                _ => false,
            };
            if deref {
                self.report.add(&USE_AFTER_FREE, n, self.u.text(n));
            }
        }
    }

    /// Effects of a simple statement: uses, frees, reallocs and assignments.
    fn effects(&mut self, stmt: Node, mut freed: BTreeSet<String>) -> BTreeSet<String> {
        self.check_uses(stmt, &freed);
        for n in descendants(stmt) {
            match n.kind() {
                "call_expression" => {
                    let name = call_name(n, self.u.src);
                    let Some(arg) = call_args(n).first().map(|a| self.u.text(*a).to_string()) else { continue };
                    if is_free(name) {
                        if !freed.insert(arg.clone()) {
                            self.report.add(&DOUBLE_FREE, n, &arg);
                        }
                    } else if name == "realloc" {
                        freed.extend(self.aliases.iter().filter(|(_, src)| *src == arg).map(|(a, _)| a.clone()));
                    }
                }
                "assignment_expression" | "init_declarator" => {
                    let target = n
                        .child_by_field_name("left")
                        .map(|l| self.u.text(l).to_string())
                        .or_else(|| n.child_by_field_name("declarator").and_then(|d| declared_name(d, self.u.src)).map(str::to_string));
                    let Some(target) = target else { continue };
                    let prefix = format!("{target}->");
                    freed.retain(|f| *f != target && !f.starts_with(&prefix));
                    self.aliases.retain(|(a, _)| *a != target);
                    let value = n.child_by_field_name("right").or_else(|| n.child_by_field_name("value"));
                    if let Some(v) = value.filter(|v| matches!(v.kind(), "identifier" | "field_expression")) {
                        self.aliases.push((target, self.u.text(v).to_string()));
                    }
                }
                _ => {}
            }
        }
        freed
    }

    /// Fields of parameters still freed when the function returns.
    fn check_exit(&mut self, at: Node, freed: &BTreeSet<String>) {
        for f in freed {
            let Some((base, _)) = f.split_once("->") else { continue };
            if self.u.params.contains(base) && !freed.contains(base) {
                self.report.add(&DANGLING, at, f);
            }
        }
    }

    fn walk(&mut self, stmt: Node, state: State) -> State {
        let freed = state?;
        match stmt.kind() {
            "compound_statement" => {
                let mut s = Some(freed);
                for child in named_children(stmt) {
                    s = self.walk(child, s);
                }
                s
            }
            "if_statement" => {
                let freed = match stmt.child_by_field_name("condition") {
                    Some(c) => self.effects(c, freed),
                    None => freed,
                };
                let then = stmt.child_by_field_name("consequence").map_or(Some(freed.clone()), |c| self.walk(c, Some(freed.clone())));
                let other = match stmt.child_by_field_name("alternative") {
                    Some(alt) => named_children(alt).into_iter().try_fold(freed, |s, c| self.walk(c, Some(s))),
                    None => Some(freed),
                };
                merge(then, other)
            }
            "for_statement" | "while_statement" | "do_statement" => {
                let mut freed = freed;
                for field in ["initializer", "condition"] {
                    if let Some(c) = stmt.child_by_field_name(field) {
                        freed = self.effects(c, freed);
                    }
                }
                let body = stmt.child_by_field_name("body").map_or(Some(freed.clone()), |b| self.walk(b, Some(freed.clone())));
                let after_update = match (body, stmt.child_by_field_name("update")) {
                    (Some(b), Some(upd)) => Some(self.effects(upd, b)),
                    (b, _) => b,
                };
                merge(Some(freed), after_update)
            }
            "return_statement" => {
                let freed = self.effects(stmt, freed);
                self.check_exit(stmt, &freed);
                None
            }
            "goto_statement" => {
                if let Some(label) = stmt.child_by_field_name("label") {
                    self.gotos.entry(self.u.text(label).to_string()).or_default().extend(freed);
                }
                None
            }
            "labeled_statement" => {
                let label = stmt.child_by_field_name("label").map(|l| self.u.text(l).to_string()).unwrap_or_default();
                let mut s = Some(freed);
                if let Some(from_goto) = self.gotos.get(&label).cloned() {
                    s = merge(s, Some(from_goto));
                }
                named_children(stmt).into_iter().filter(|c| c.kind() != "statement_identifier").fold(s, |s, c| self.walk(c, s))
            }
            "break_statement" | "continue_statement" => None,
            _ => Some(self.effects(stmt, freed)),
        }
    }
}

/// Statements after a `return` or `goto` are unreachable on that path, but a
/// label can revive them, so the walk resumes at labels.
fn check_flow(u: &Unit, report: &mut Report) {
    let Some(body) = u.root.child_by_field_name("body") else { return };
    let mut w = Walker { u, report, gotos: HashMap::new(), aliases: Vec::new() };
    // Statements following a terminated path are walked from labels only.
    let mut state: State = Some(BTreeSet::new());
    for stmt in named_children(body) {
        state =
            if state.is_none() && stmt.kind() == "labeled_statement" { w.walk(stmt, Some(BTreeSet::new())) } else { w.walk(stmt, state) };
    }
    if let Some(freed) = state {
        w.check_exit(body, &freed);
    }
}

pub fn check(u: &Unit, report: &mut Report) {
    check_null_derefs(u, report);
    check_flow(u, report);
}
