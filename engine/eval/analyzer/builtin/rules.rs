//! The built-in rule table: id, CWE, severity and the message a user sees.
//! Rules are grouped by the file that implements them.

use crate::eval::finding::Severity;
use Severity::{High, Low, Medium};

#[derive(Clone, Copy, Debug)]
pub struct Rule {
    pub id: &'static str,
    pub cwe: &'static str,
    pub severity: Severity,
    pub message: &'static str,
}

const fn rule(id: &'static str, cwe: &'static str, severity: Severity, message: &'static str) -> Rule {
    Rule { id, cwe, severity, message }
}

// C / C++: calls (c_calls.rs)
pub const UNBOUNDED_COPY: Rule = rule("c/unbounded-copy", "CWE-120", High, "copy without a destination bound");
pub const SPRINTF: Rule = rule("c/sprintf", "CWE-787", High, "sprintf writes without a bound; use snprintf");
pub const SCANF_UNBOUNDED: Rule = rule("c/scanf-unbounded", "CWE-120", High, "%s or %[ without a field width");
pub const FORMAT_STRING: Rule = rule("c/format-string", "CWE-134", High, "format argument is not a string literal");
pub const COMMAND_INJECTION: Rule = rule("c/command-injection", "CWE-78", High, "shell command built at run time");
pub const INSECURE_TEMP: Rule = rule("c/insecure-temp", "CWE-377", Medium, "predictable temporary file name");
pub const WEAK_RANDOM: Rule = rule("c/weak-random", "CWE-338", Medium, "non-cryptographic random number generator");
pub const UNCHECKED_RETURN: Rule = rule("c/unchecked-return", "CWE-252", Medium, "return value of a call that can fail is ignored");
pub const TOCTOU: Rule = rule("c/toctou", "CWE-367", Medium, "file checked by name, then used by name");
pub const ATOI: Rule = rule("c/atoi", "CWE-190", Low, "atoi/atol cannot report errors or overflow");
// C / C++: bounds (c_bounds.rs)
pub const UNCHECKED_LENGTH: Rule = rule("c/unchecked-length", "CWE-787", High, "copy length is never compared with a bound");
pub const UNCHECKED_INDEX: Rule = rule("c/unchecked-index", "CWE-787", Medium, "array index from the caller is never bounds-checked");
pub const UNCHECKED_ADVANCE: Rule = rule("c/unchecked-advance", "CWE-125", Medium, "pointer or offset advanced by an unchecked amount");
pub const OFF_BY_ONE: Rule = rule("c/off-by-one", "CWE-193", Medium, "bound allows one element past the end");
pub const ALLOC_OVERFLOW: Rule = rule("c/alloc-size-overflow", "CWE-190", Medium, "allocation size can overflow");
pub const PATH_TRAVERSAL: Rule = rule("c/path-traversal", "CWE-22", Medium, "path built from a caller-supplied name without validation");
// C / C++: lifetimes (c_lifetime.rs)
pub const NULL_DEREF: Rule = rule("c/null-deref", "CWE-476", Medium, "result that may be NULL is used without a check");
pub const USE_AFTER_FREE: Rule = rule("c/use-after-free", "CWE-416", High, "memory used after it was freed");
pub const DOUBLE_FREE: Rule = rule("c/double-free", "CWE-415", High, "memory freed twice");
pub const DANGLING: Rule = rule("c/dangling-pointer", "CWE-415", Medium, "freed field left pointing at freed memory");
// Python (python.rs)
pub const PY_EVAL: Rule = rule("py/eval", "CWE-95", High, "eval/exec of data");
pub const PY_DESERIALIZE: Rule = rule("py/deserialization", "CWE-502", High, "deserializing untrusted data can run code");
pub const PY_SHELL: Rule = rule("py/shell", "CWE-78", High, "command run through a shell");
pub const PY_SQL: Rule = rule("py/sql-injection", "CWE-89", High, "SQL built from strings; use query parameters");
pub const PY_WEAK_HASH: Rule = rule("py/weak-hash", "CWE-328", Medium, "MD5/SHA-1 are broken for security uses");
pub const PY_TLS: Rule = rule("py/tls-verification-off", "CWE-295", High, "TLS certificate verification disabled");

/// Every rule, for documentation and `analyze --list-rules`.
pub const ALL: &[Rule] = &[
    UNBOUNDED_COPY,
    SPRINTF,
    SCANF_UNBOUNDED,
    FORMAT_STRING,
    COMMAND_INJECTION,
    INSECURE_TEMP,
    WEAK_RANDOM,
    UNCHECKED_RETURN,
    TOCTOU,
    ATOI,
    UNCHECKED_LENGTH,
    UNCHECKED_INDEX,
    UNCHECKED_ADVANCE,
    OFF_BY_ONE,
    ALLOC_OVERFLOW,
    PATH_TRAVERSAL,
    NULL_DEREF,
    USE_AFTER_FREE,
    DOUBLE_FREE,
    DANGLING,
    PY_EVAL,
    PY_DESERIALIZE,
    PY_SHELL,
    PY_SQL,
    PY_WEAK_HASH,
    PY_TLS,
];
