//! A C/C++ function as the rules see it: its body, parameter names, and the
//! facts several rules share (which names are bounds-checked, which feed an
//! allocation size).

use super::syntax::{call_args, call_name, descendants, named_children, text};
use std::collections::HashSet;
use tree_sitter::Node;

pub struct Unit<'t, 's> {
    pub src: &'s str,
    /// The function (or, for fragments without one, the whole file).
    pub root: Node<'t>,
    pub params: HashSet<String>,
    /// Every node of `root`, in source order.
    pub nodes: Vec<Node<'t>>,
    /// Texts of names and subscripts that appear in a relational comparison (< <= > >=).
    pub bounded: HashSet<String>,
    /// Names appearing in an allocation size (directly or via a local's initializer).
    pub alloc_operands: HashSet<String>,
}

pub const ALLOCATORS: &[&str] = &["malloc", "calloc", "realloc", "alloca", "reallocarray", "xmalloc", "xrealloc", "kmalloc"];
const RELATIONAL: &[&str] = &["<", "<=", ">", ">="];

/// Names and subscripts inside `node` (the operands a bound could be about),
/// not counting the arguments of calls: `read(fd, b, n) < 0` bounds nothing.
pub fn operands(node: Node, src: &str) -> Vec<String> {
    let in_call_args = |n: Node| {
        let mut cur = Some(n);
        while let Some(c) = cur {
            if c == node {
                return false;
            }
            if c.kind() == "argument_list" {
                return true;
            }
            cur = c.parent();
        }
        false
    };
    descendants(node)
        .into_iter()
        .filter(|n| matches!(n.kind(), "identifier" | "field_expression" | "subscript_expression") && !in_call_args(*n))
        .filter(|n| !n.parent().is_some_and(|p| p.kind() == "field_expression" && p.child_by_field_name("field") == Some(*n)))
        .map(|n| text(n, src).to_string())
        .collect()
}

/// The declared name of a parameter or declarator (through pointers and arrays).
pub fn declared_name<'s>(mut node: Node, src: &'s str) -> Option<&'s str> {
    loop {
        match node.kind() {
            "identifier" | "field_identifier" => return Some(text(node, src)),
            _ => node = node.child_by_field_name("declarator")?,
        }
    }
}

/// Each function definition, or the whole file when it holds none (a fragment).
pub fn units<'t, 's>(root: Node<'t>, src: &'s str) -> Vec<Unit<'t, 's>> {
    let all = descendants(root);
    let funcs: Vec<Node> = all.iter().copied().filter(|n| n.kind() == "function_definition").collect();
    let roots = if funcs.is_empty() { vec![root] } else { funcs };
    roots.into_iter().map(|r| Unit::new(r, src)).collect()
}

impl<'t, 's> Unit<'t, 's> {
    fn new(root: Node<'t>, src: &'s str) -> Unit<'t, 's> {
        let nodes = descendants(root);
        let mut params = HashSet::new();
        if let Some(plist) = nodes.iter().find(|n| n.kind() == "parameter_list") {
            for p in named_children(*plist) {
                if let Some(name) = p.child_by_field_name("declarator").and_then(|d| declared_name(d, src)) {
                    params.insert(name.to_string());
                }
            }
        }
        let mut bounded = HashSet::new();
        for n in &nodes {
            let op = n.child_by_field_name("operator").map(|o| text(o, src)).unwrap_or("");
            if n.kind() == "binary_expression" && RELATIONAL.contains(&op) {
                bounded.extend(operands(*n, src));
            }
        }
        // Locals' initializers, so `total = a + b; malloc(total)` counts a and b.
        let mut inits: Vec<(String, Node)> = Vec::new();
        for n in &nodes {
            if n.kind() == "init_declarator" {
                if let (Some(name), Some(v)) =
                    (n.child_by_field_name("declarator").and_then(|d| declared_name(d, src)), n.child_by_field_name("value"))
                {
                    inits.push((name.to_string(), v));
                }
            }
        }
        let mut alloc_operands = HashSet::new();
        for n in nodes.iter().filter(|n| n.kind() == "call_expression" && ALLOCATORS.contains(&call_name(**n, src))) {
            for arg in call_args(*n) {
                for op in operands(arg, src) {
                    for (_, init) in inits.iter().filter(|(name, _)| *name == op) {
                        alloc_operands.extend(operands(*init, src));
                    }
                    alloc_operands.insert(op);
                }
            }
        }
        Unit { src, root, params, nodes, bounded, alloc_operands }
    }

    pub fn text(&self, node: Node) -> &'s str {
        text(node, self.src)
    }

    pub fn calls(&self) -> impl Iterator<Item = Node<'t>> + '_ {
        self.nodes.iter().copied().filter(|n| n.kind() == "call_expression")
    }

    /// Initializer of a local variable, if declared with one in this unit.
    pub fn initializer(&self, name: &str) -> Option<Node<'t>> {
        self.nodes.iter().filter(|n| n.kind() == "init_declarator").find_map(|n| {
            let d = n.child_by_field_name("declarator").and_then(|d| declared_name(d, self.src))?;
            (d == name).then(|| n.child_by_field_name("value")).flatten()
        })
    }

    /// The declared type text of a local, if declared in this unit.
    pub fn local_type(&self, name: &str) -> Option<&'s str> {
        self.nodes.iter().filter(|n| n.kind() == "declaration").find_map(|decl| {
            let mut cursor = decl.walk();
            let found = decl.children_by_field_name("declarator", &mut cursor).any(|d| declared_name(d, self.src) == Some(name));
            found.then(|| decl.child_by_field_name("type").map(|t| self.text(t))).flatten()
        })
    }
}
