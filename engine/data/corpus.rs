//! The embedded sample corpus: hand-written repair pairs in PrimeVul's paired
//! JSONL format (made by tools/make_corpus.py from engine/data/corpus/src/).

pub const EMBEDDED_CORPUS: &str = include_str!("corpus/primevul_sample.jsonl");
