//! Small helpers over tree-sitter syntax trees shared by the C and Python rules.

use tree_sitter::Node;

/// The source text of a node ("" if the range is not on char boundaries).
pub fn text<'a>(node: Node, src: &'a str) -> &'a str {
    src.get(node.start_byte()..node.end_byte()).unwrap_or("")
}

/// The node and all its descendants, in source order.
pub fn descendants(node: Node) -> Vec<Node> {
    let mut out = Vec::new();
    let mut stack = vec![node];
    while let Some(n) = stack.pop() {
        out.push(n);
        let mut cursor = n.walk();
        let kids: Vec<Node> = n.children(&mut cursor).collect();
        stack.extend(kids.into_iter().rev());
    }
    out
}

/// Named children, without comments.
pub fn named_children(node: Node) -> Vec<Node> {
    let mut cursor = node.walk();
    node.named_children(&mut cursor).filter(|c| c.kind() != "comment").collect()
}

/// The arguments of a call node (C `call_expression` or Python `call`).
pub fn call_args(call: Node) -> Vec<Node> {
    call.child_by_field_name("arguments").map(named_children).unwrap_or_default()
}

/// The called name: `f` for `f(x)`, `obj.m` / `p->m` as written for member calls.
pub fn call_name<'a>(call: Node, src: &'a str) -> &'a str {
    call.child_by_field_name("function").map(|f| text(f, src)).unwrap_or("")
}

/// Whether the node is a compile-time string (a literal, or literals glued together).
pub fn is_c_string_literal(node: Node) -> bool {
    match node.kind() {
        "string_literal" | "concatenated_string" => true,
        "parenthesized_expression" => named_children(node).first().is_some_and(|n| is_c_string_literal(*n)),
        _ => false,
    }
}

/// Innermost enclosing node of `kind`, if any.
pub fn ancestor<'t>(node: Node<'t>, kind: &str) -> Option<Node<'t>> {
    let mut cur = node.parent();
    while let Some(n) = cur {
        if n.kind() == kind {
            return Some(n);
        }
        cur = n.parent();
    }
    None
}
