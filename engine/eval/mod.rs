//! Evaluation: security analyzers (built-in and external), the sandbox that
//! runs generated code, pass@k / secure@k, benchmarks and reports.

pub mod agreement;
pub mod analyzer;
pub mod finding;
pub mod harness;
pub mod passk;
pub mod plot;
pub mod report;
pub mod sandbox;
pub mod scan;
pub mod similarity;
pub mod tasks;
