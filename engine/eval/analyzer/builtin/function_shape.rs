//! Whether a sample is code at all: it starts a function definition whose
//! body holds a statement. An answer without one (prose, a `#define` list, a
//! bare signature) gives the analyzers nothing to flag, so it must not count
//! as secure code.

use super::parse;
use super::syntax::descendants;
use crate::lang::Lang;
use tree_sitter::Node;

/// True when `src` starts a function with at least one statement in its
/// body. The body may hold parse errors or stop early: a sample cut at the
/// token budget is still code.
pub fn defines_function(lang: Lang, src: &str) -> bool {
    let Some(tree) = parse(lang, src) else { return false };
    let nodes = descendants(tree.root_node());
    match lang {
        Lang::Python => nodes.iter().any(|n| match n.kind() {
            "function_definition" => n.child_by_field_name("body").is_some_and(|b| !b.is_missing() && b.named_child_count() > 0),
            "parameters" => python_body_follows(*n),
            _ => false,
        }),
        Lang::C | Lang::Cpp => nodes.iter().any(|n| n.kind() == "function_declarator" && c_body_follows(*n)),
    }
}

/// Whether a C function declarator is followed by a body with a statement:
/// a whole `compound_statement`, or (when the parser gave up on an unclosed
/// function and left an error node) a `{` with a named node after it.
fn c_body_follows(declarator: Node) -> bool {
    // A declarator may sit inside others (`char *f(...)`): look after the outermost.
    let mut outer = declarator;
    while let Some(p) = outer.parent().filter(|p| p.kind().ends_with("declarator")) {
        outer = p;
    }
    let mut next = outer.next_sibling();
    while let Some(n) = next {
        match n.kind() {
            "compound_statement" => return !n.is_missing() && n.named_child_count() > 0,
            "{" => return n.next_named_sibling().is_some(),
            "comment" => next = n.next_sibling(),
            _ => return false,
        }
    }
    false
}

/// The same for a Python `def` the parser left in an error node (an
/// unclosed string or bracket): its parameters, then `:`, then a named node.
fn python_body_follows(parameters: Node) -> bool {
    let after_def = parameters.prev_sibling().and_then(|name| name.prev_sibling()).is_some_and(|d| d.kind() == "def");
    if !after_def || parameters.parent().is_some_and(|p| p.kind() == "function_definition") {
        return false;
    }
    let mut next = parameters.next_sibling();
    while let Some(n) = next {
        if n.kind() == ":" {
            return n.next_named_sibling().is_some();
        }
        next = n.next_sibling();
    }
    false
}
