//! PrimeVul+ data: PrimeVul ingest and pairing, teacher self-reflection,
//! implicit prompts, diff-based token labels, and the build pipeline.

pub mod build;
pub mod cache;
pub mod corpus;
pub mod labels;
pub mod pairs;
pub mod primevul;
pub mod prompts;
pub mod record;
pub mod teacher;
