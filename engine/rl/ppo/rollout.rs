//! PPO's prompts and scored rollouts: the train-split PrimeVul+ prompts with
//! their reference pairs, and each sampled response's rewards from the
//! built-in analyzer and the pair.

use crate::data::build::read_records;
use crate::data::record::PrimeVulPlus;
use crate::eval::analyzer::builtin::{analyze_text, defines_function};
use crate::eval::harness::fenced_block;
use crate::eval::similarity::{length_ratio, similarity};
use crate::generate::Generation;
use crate::lang::Lang;
use crate::prompt::PromptFormat;
use crate::rl::reward::{token_rewards, Reference, RewardConfig, SampleReward, Verdict};
use crate::tokenizer::Tokenizer;
use anyhow::{ensure, Result};
use std::path::Path;

pub(super) struct Example {
    pub prompt: Vec<u32>,
    lang: Lang,
    reference: Reference,
    /// The fixed function's text, which a response's similarity is measured against.
    fixed: String,
}

pub(super) fn load_examples(data: &Path, tok: &Tokenizer, format: PromptFormat) -> Result<Vec<Example>> {
    let path = if data.is_dir() { data.join("primevul_plus.jsonl") } else { data.to_path_buf() };
    let records: Vec<PrimeVulPlus> = read_records(&path)?;
    let mut out = Vec::new();
    for r in records.iter().filter(|r| r.split == "train") {
        let (s, v) = (tok.encode(&r.secure)?, tok.encode(&r.vulnerable)?);
        let reference = Reference::new(s.ids, &s.offsets, &r.secure_spans, v.ids, &v.offsets, &r.vulnerable_spans);
        for p in &r.prompts {
            let prompt = tok.encode(&format.instruction(p))?.ids;
            out.push(Example { prompt, lang: r.language(), reference: reference.clone(), fixed: r.secure.clone() });
        }
    }
    ensure!(!out.is_empty(), "{}: no train-split records with prompts", path.display());
    Ok(out)
}

/// One scored rollout.
pub(super) struct Rollout {
    pub prompt: Vec<u32>,
    pub tokens: Vec<u32>,
    pub reward: SampleReward,
}

/// Sums over an iteration's non-empty responses, for its metrics.
#[derive(Default)]
pub(super) struct ResponseStats {
    pub code: usize,
    pub similarity: f64,
    pub length_ratio: f64,
}

/// Scores each response (analyzer findings, reference alignment); empty
/// responses are dropped, as they have no token to train.
pub(super) fn score_responses(
    tok: &Tokenizer,
    gens: &[Generation],
    chosen: &[&Example],
    prompts: &[Vec<u32>],
    stops: &[u32],
    reward: &RewardConfig,
) -> Result<(Vec<Rollout>, ResponseStats)> {
    let mut rollouts = Vec::with_capacity(gens.len());
    let mut stats = ResponseStats::default();
    for ((g, ex), p) in gens.iter().zip(chosen).zip(prompts) {
        let body: Vec<u32> = g.tokens.iter().copied().filter(|t| !stops.contains(t)).collect();
        let (text, offsets) = token_offsets(tok, &body)?;
        let findings = analyze_text(ex.lang, &text, "response");
        // A chat answer's code is its fenced block, as eval reads it.
        let code = fenced_block(&text).unwrap_or(&text);
        let is_code = defines_function(ex.lang, code);
        let length = length_ratio(code, &ex.fixed);
        let verdict = Verdict { findings: &findings, is_code, length_ratio: Some(length as f32), passed: None };
        let mut r = token_rewards(&body, &offsets, &verdict, &ex.reference, reward);
        // The stop token (if any) carries no token-level reward.
        r.secure_bonus.resize(g.tokens.len(), 0.0);
        r.penalties.resize(g.tokens.len(), 0.0);
        if !g.tokens.is_empty() {
            stats.code += usize::from(is_code);
            stats.similarity += similarity(code, &ex.fixed);
            stats.length_ratio += length;
            rollouts.push(Rollout { prompt: p.clone(), tokens: g.tokens.clone(), reward: r });
        }
    }
    ensure!(!rollouts.is_empty(), "every response in the rollout batch was empty");
    Ok((rollouts, stats))
}

/// Byte range of each generated token in the decoded response.
fn token_offsets(tok: &Tokenizer, tokens: &[u32]) -> Result<(String, Vec<(usize, usize)>)> {
    let mut offsets = Vec::with_capacity(tokens.len());
    let mut prev = 0;
    for i in 0..tokens.len() {
        let len = tok.decode(&tokens[..=i])?.len();
        offsets.push((prev.min(len), len));
        prev = prev.max(len);
    }
    Ok((tok.decode(tokens)?, offsets))
}
