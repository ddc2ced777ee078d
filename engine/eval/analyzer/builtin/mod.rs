//! The built-in analyzer: tree-sitter parses C, C++ and Python, and rules
//! match syntax and a little intra-procedural flow (see `rules.rs` for the
//! table). Partial or broken code still parses into a tree with error nodes;
//! the rules run on whatever parsed and never panic on odd input.

mod c_bounds;
mod c_calls;
mod c_lifetime;
mod c_unit;
mod function_shape;
mod python;
pub mod rules;
mod syntax;

pub use function_shape::defines_function;

use super::{Analyzer, Source};
use crate::eval::finding::{Finding, LineIndex};
use crate::lang::Lang;
use anyhow::Result;
use rules::Rule;
use std::cell::RefCell;
use tree_sitter::{Node, Parser};

/// Collects the findings of one file.
pub struct Report<'a> {
    src: &'a str,
    file: &'a str,
    index: LineIndex,
    findings: Vec<Finding>,
}

impl<'a> Report<'a> {
    fn new(src: &'a str, file: &'a str) -> Report<'a> {
        Report { src, file, index: LineIndex::new(src), findings: Vec::new() }
    }

    /// Reports `rule` over the node's span; `detail` names what was found.
    pub fn add(&mut self, rule: &Rule, node: Node, detail: &str) {
        let (s, e) = (node.start_byte(), node.end_byte());
        if self.findings.iter().any(|f| f.rule == rule.id && f.bytes == [s, e]) {
            return;
        }
        let message = if detail.is_empty() { rule.message.to_string() } else { format!("{}: {detail}", rule.message) };
        self.findings.push(Finding {
            tool: "builtin".into(),
            rule: rule.id.into(),
            cwe: rule.cwe.into(),
            severity: rule.severity,
            file: self.file.into(),
            start: self.index.pos(s),
            end: self.index.pos(e),
            bytes: [s, e],
            message,
        });
    }

    pub fn src(&self) -> &'a str {
        self.src
    }
}

thread_local! {
    // Parsers are reused per thread: creating one per file would dominate the cost.
    static PARSERS: RefCell<[Option<Parser>; 3]> = const { RefCell::new([None, None, None]) };
}

fn parse(lang: Lang, src: &str) -> Option<tree_sitter::Tree> {
    let slot = match lang {
        Lang::C => 0,
        Lang::Cpp => 1,
        Lang::Python => 2,
    };
    PARSERS.with(|p| {
        let mut parsers = p.borrow_mut();
        let parser = parsers[slot].get_or_insert_with(|| {
            let mut parser = Parser::new();
            let language: tree_sitter::Language = match lang {
                Lang::C => tree_sitter_c::LANGUAGE.into(),
                Lang::Cpp => tree_sitter_cpp::LANGUAGE.into(),
                Lang::Python => tree_sitter_python::LANGUAGE.into(),
            };
            parser.set_language(&language).expect("grammar matches the tree-sitter version");
            parser
        });
        parser.parse(src, None)
    })
}

/// Findings for one text (the unit the PPO reward calls per sample).
pub fn analyze_text(lang: Lang, src: &str, file: &str) -> Vec<Finding> {
    let Some(tree) = parse(lang, src) else { return Vec::new() };
    let mut report = Report::new(src, file);
    match lang {
        Lang::Python => python::check(tree.root_node(), &mut report),
        Lang::C | Lang::Cpp => {
            for unit in c_unit::units(tree.root_node(), src) {
                c_calls::check(&unit, &mut report);
                c_bounds::check(&unit, &mut report);
                c_lifetime::check(&unit, &mut report);
            }
        }
    }
    let mut findings = report.findings;
    findings.sort_by_key(|f| (f.bytes, f.rule.clone()));
    findings
}

pub struct Builtin;

impl Analyzer for Builtin {
    fn name(&self) -> &'static str {
        "builtin"
    }

    fn supports(&self, _lang: Lang) -> bool {
        true
    }

    fn analyze(&self, sources: &[Source]) -> Result<Vec<Finding>> {
        Ok(sources.iter().flat_map(|s| analyze_text(s.lang, &s.text, &s.path)).collect())
    }
}
