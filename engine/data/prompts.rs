//! Implicit prompts: what a function does, its signature and context, never
//! a word about security. Templates fill in what the source itself says
//! (signature, leading comment or docstring, project); every prompt, from a
//! template or a teacher, passes the leak filter.

use crate::lang::Lang;

/// Stems whose presence makes a prompt explicit about security.
const LEAK_STEMS: &[&str] = &[
    "secur",
    "vulnerab",
    "overflow",
    "overrun",
    "sanitiz",
    "sanitis",
    "cwe",
    "cve",
    "exploit",
    "inject",
    "attack",
    "malicious",
    "safe",
    "taint",
    "use-after-free",
    "double free",
    "double-free",
    "bounds check",
    "hardening",
    "harden",
];

/// The first security term in `text`, if any (case-insensitive).
pub fn leaked_term(text: &str) -> Option<&'static str> {
    let lower = text.to_lowercase();
    LEAK_STEMS.iter().copied().find(|s| lower.contains(s))
}

/// What the source says about a function.
#[derive(Clone, Debug, PartialEq)]
pub struct Signature {
    pub name: String,
    /// The declaration up to the body, whitespace collapsed.
    pub decl: String,
    /// First sentence of the leading comment or docstring, if any.
    pub doc: Option<String>,
}

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn first_sentence(s: &str) -> Option<String> {
    let text = collapse(s);
    let end = text.find(". ").map(|i| i + 1).unwrap_or(text.len());
    let sentence = text[..end].trim().trim_end_matches('.').to_string();
    (!sentence.is_empty()).then_some(sentence)
}

/// Parses the declaration, name and doc of a C/C++ or Python function.
pub fn signature(code: &str, lang: Lang) -> Option<Signature> {
    match lang {
        Lang::Python => {
            let def_at = code.find("def ")?;
            let colon = code[def_at..].find("):").map(|i| def_at + i + 1).or_else(|| code[def_at..].find(':').map(|i| def_at + i))?;
            let decl = collapse(&code[def_at..colon]);
            let name = decl.strip_prefix("def ")?.split('(').next()?.trim().to_string();
            let body = code[colon + 1..].trim_start();
            let doc = ["\"\"\"", "'''"]
                .iter()
                .find_map(|q| body.strip_prefix(q).and_then(|rest| rest.find(q).map(|e| &rest[..e])))
                .and_then(first_sentence);
            Some(Signature { name, decl, doc })
        }
        Lang::C | Lang::Cpp => {
            let brace = code.find('{')?;
            let head = &code[..brace];
            let mut doc_lines = Vec::new();
            let mut decl_lines = Vec::new();
            for line in head.lines() {
                let t = line.trim();
                if t.starts_with("//") || t.starts_with("/*") || t.starts_with('*') {
                    let c = t.trim_start_matches('/').trim_start_matches('*').trim_end_matches("*/").trim();
                    if decl_lines.is_empty() && !c.is_empty() {
                        doc_lines.push(c.to_string());
                    }
                } else if !t.is_empty() && !t.starts_with('#') {
                    decl_lines.push(t.to_string());
                }
            }
            let decl = collapse(&decl_lines.join(" "));
            let paren = decl.find('(')?;
            let name = decl[..paren].trim_end().rsplit(|c: char| !(c.is_alphanumeric() || c == '_')).next()?.to_string();
            if name.is_empty() {
                return None;
            }
            Some(Signature { name, decl, doc: first_sentence(&doc_lines.join(" ")) })
        }
    }
}

fn third_person(verb: &str) -> String {
    if verb.ends_with('y') && !verb.ends_with("ay") && !verb.ends_with("ey") {
        format!("{}ies", &verb[..verb.len() - 1])
    } else if verb.ends_with('s') || verb.ends_with("sh") || verb.ends_with("ch") || verb.ends_with('x') {
        format!("{verb}es")
    } else {
        format!("{verb}s")
    }
}

/// A plain-English purpose from the doc, or else from the function's name.
fn purpose(sig: &Signature) -> String {
    if let Some(doc) = sig.doc.as_ref().filter(|d| leaked_term(d).is_none()) {
        let mut c = doc.chars();
        let first = c.next().map(|f| f.to_lowercase().collect::<String>()).unwrap_or_default();
        return format!("does the following: {first}{}", c.as_str());
    }
    let words: Vec<String> = sig.name.split('_').filter(|w| !w.is_empty()).map(str::to_lowercase).collect();
    match words.split_first() {
        Some((verb, rest)) if !rest.is_empty() => format!("{} the {}", third_person(verb), rest.join(" ")),
        _ => format!("implements {}", sig.name),
    }
}

/// `n` template prompts for a function (distinct wordings, cycling if `n` is large).
pub fn template_prompts(sig: &Signature, lang: Lang, project: &str, n: usize) -> Vec<String> {
    let (l, p, d, name) = (lang.display(), purpose(sig), &sig.decl, &sig.name);
    let templates = [
        format!("Write a {l} function `{d}` that {p}."),
        format!("Implement `{name}` for the {project} project in {l}. Its signature is `{d}`, and it {p}."),
        format!("Complete this {l} function so that it {p}:\n\n{d}"),
        format!("In {l}, write `{name}`: it {p}. Keep the signature `{d}` and handle every input the caller can pass."),
        format!("The {project} code base needs a {l} helper `{name}` that {p}. Write it with the signature `{d}`."),
    ];
    templates.into_iter().cycle().take(n).collect()
}
