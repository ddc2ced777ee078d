//! Evaluation: security analyzers (built-in and external), the sandbox that
//! runs generated code, pass@k / secure@k, benchmarks and reports.

pub mod agreement;
pub mod analyzer;
pub mod finding;
pub mod sandbox;
pub mod scan;
