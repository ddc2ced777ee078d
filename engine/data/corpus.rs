//! The embedded sample corpus: hand-written repair pairs in PrimeVul's paired
//! JSONL format (made by tools/make_corpus.py from engine/data/corpus/src/).

use crate::lang::Lang;

pub const EMBEDDED_CORPUS: &str = include_str!("corpus/primevul_sample.jsonl");

/// Every function of the corpus (both sides of each pair) with its language.
pub fn functions() -> Vec<(Lang, String)> {
    EMBEDDED_CORPUS
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let func = v["func"].as_str().unwrap_or_default().to_string();
            (Lang::detect(v["file_name"].as_str(), &func), func)
        })
        .collect()
}
