//! Rewards (DESIGN.md "Token-level reward"):
//!
//! - instance: `r_clean` with no high/medium finding, else `-min(1, Σ w(sev))`
//!   (high 1, medium 0.5, low 0.1), plus `r_pass` when tests exist and pass;
//!   a sample that defines no function earns no `r_clean` (0): with nothing
//!   to flag it is not clean code, and rewarding it teaches the policy to
//!   stop writing code (docs/training.md, "No code is not clean code");
//!   with `coverage` set, clean code shorter than that share of the fix's
//!   length earns `r_clean` in proportion (a one-line body is not the
//!   repair either);
//! - secure tokens: generated tokens aligned (token LCS) to tokens inside the
//!   reference's secure spans share `+α`;
//! - vulnerable sequences: each finding's tokens `[a, b]` get `-β·w(sev)`,
//!   spread evenly or on `b`; runs of generated n-grams (n ≥ 4) that repeat
//!   the reference's vulnerable spans get `-β_ref` the same way;
//! - the sequence-penalty reduction: the per-sequence sum of those parts,
//!   which `--reward instance` puts on the last token instead.

use super::align::lcs_matches;
use crate::data::labels::{token_mask, Span};
use crate::eval::finding::Finding;
use std::collections::HashSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    Spread,
    Last,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RewardMode {
    Instance,
    Tlr,
}

#[derive(Clone, Debug)]
pub struct RewardConfig {
    pub r_clean: f32,
    /// Length share of the reference fix (in lexemes) that clean code needs
    /// for the whole `r_clean`; shorter earns it in proportion. 0: off.
    pub coverage: f32,
    pub r_pass: f32,
    pub alpha: f32,
    pub beta: f32,
    pub beta_ref: f32,
    pub ngram: usize,
    pub placement: Placement,
}

impl Default for RewardConfig {
    fn default() -> Self {
        RewardConfig {
            r_clean: 1.0,
            coverage: 0.0,
            r_pass: 1.0,
            alpha: 0.5,
            beta: 0.5,
            beta_ref: 0.25,
            ngram: 4,
            placement: Placement::Spread,
        }
    }
}

/// The reference pair, tokenized, with which tokens lie in its spans.
#[derive(Clone, Debug)]
pub struct Reference {
    pub secure: Vec<u32>,
    pub secure_in_span: Vec<bool>,
    pub vulnerable: Vec<u32>,
    pub vulnerable_in_span: Vec<bool>,
}

impl Reference {
    pub fn new(
        secure: Vec<u32>,
        secure_offsets: &[(usize, usize)],
        secure_spans: &[Span],
        vulnerable: Vec<u32>,
        vuln_offsets: &[(usize, usize)],
        vuln_spans: &[Span],
    ) -> Reference {
        Reference {
            secure_in_span: token_mask(secure_offsets, secure_spans),
            secure,
            vulnerable_in_span: token_mask(vuln_offsets, vuln_spans),
            vulnerable,
        }
    }
}

/// The reward parts of one sample, per generated token.
#[derive(Clone, Debug, Default)]
pub struct SampleReward {
    pub instance: f32,
    pub secure_bonus: Vec<f32>,
    pub penalties: Vec<f32>,
    pub high_medium: usize,
}

impl SampleReward {
    /// The sequence-penalty reduction plus the secure bonus: everything that
    /// TLR places on tokens, summed.
    pub fn token_total(&self) -> f32 {
        self.secure_bonus.iter().sum::<f32>() + self.penalties.iter().sum::<f32>()
    }
}

/// What the analyzers and checks found in one sample.
#[derive(Clone, Copy, Debug)]
pub struct Verdict<'a> {
    /// Byte spans point into the analyzed text.
    pub findings: &'a [Finding],
    /// Whether the sample starts a function at all (`defines_function`).
    pub is_code: bool,
    /// The sample's length over its reference fix's, in lexemes, when it has one.
    pub length_ratio: Option<f32>,
    /// The tests' outcome, when the task has tests.
    pub passed: Option<bool>,
}

impl Verdict<'_> {
    /// How many findings are high or medium: what the instance score and the rates count.
    pub fn high_medium(&self) -> usize {
        self.findings.iter().filter(|f| f.severity.is_high_or_medium()).count()
    }
}

/// The share of `r_clean` clean code earns by its length (1 without `coverage`).
fn coverage_share(v: &Verdict, cfg: &RewardConfig) -> f32 {
    match v.length_ratio {
        Some(ratio) if cfg.coverage > 0.0 => (ratio / cfg.coverage).min(1.0),
        _ => 1.0,
    }
}

pub fn instance_reward(v: &Verdict, cfg: &RewardConfig) -> f32 {
    let base = match (v.high_medium(), v.is_code) {
        (0, true) => cfg.r_clean * coverage_share(v, cfg),
        (0, false) => 0.0,
        _ => -v.findings.iter().map(|f| f.severity.weight()).sum::<f32>().min(1.0),
    };
    base + if v.passed == Some(true) { cfg.r_pass } else { 0.0 }
}

/// Puts `amount` on the tokens `run` (inclusive), spread or on the last.
fn place(out: &mut [f32], run: (usize, usize), amount: f32, placement: Placement) {
    let (a, b) = run;
    match placement {
        Placement::Spread => {
            let share = amount / (b - a + 1) as f32;
            out[a..=b].iter_mut().for_each(|x| *x += share);
        }
        Placement::Last => out[b] += amount,
    }
}

/// Maximal runs of true values, as inclusive index pairs.
fn runs(mask: &[bool]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, &m) in mask.iter().chain(std::iter::once(&false)).enumerate() {
        match (m, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, i - 1));
                start = None;
            }
            _ => {}
        }
    }
    out
}

/// Token-level parts for one sample. `offsets` are the generated tokens'
/// byte ranges in the analyzed text, which the verdict's findings point into.
pub fn token_rewards(
    tokens: &[u32],
    offsets: &[(usize, usize)],
    verdict: &Verdict,
    reference: &Reference,
    cfg: &RewardConfig,
) -> SampleReward {
    let n = tokens.len();
    let mut r = SampleReward {
        instance: instance_reward(verdict, cfg),
        secure_bonus: vec![0.0; n],
        penalties: vec![0.0; n],
        high_medium: verdict.high_medium(),
    };
    if n == 0 {
        return r;
    }
    // Secure tokens: aligned to a reference token inside a secure span.
    let matched: Vec<usize> = lcs_matches(tokens, &reference.secure)
        .iter()
        .enumerate()
        .filter_map(|(i, m)| m.filter(|&j| reference.secure_in_span[j]).map(|_| i))
        .collect();
    for &i in &matched {
        r.secure_bonus[i] = cfg.alpha / matched.len() as f32;
    }
    // Analyzer findings.
    for f in verdict.findings {
        let covered = token_mask(offsets, &[(f.bytes[0], f.bytes[1].max(f.bytes[0] + 1))]);
        let (Some(a), Some(b)) = (covered.iter().position(|&c| c), covered.iter().rposition(|&c| c)) else { continue };
        place(&mut r.penalties, (a, b), -cfg.beta * f.severity.weight(), cfg.placement);
    }
    // Reproduced vulnerable n-grams.
    let k = cfg.ngram.max(1);
    if n >= k && reference.vulnerable.len() >= k {
        let grams: HashSet<&[u32]> = reference
            .vulnerable
            .windows(k)
            .zip(reference.vulnerable_in_span.windows(k))
            .filter(|(_, m)| m.iter().any(|&x| x))
            .map(|(g, _)| g)
            .collect();
        let mut hit = vec![false; n];
        for (i, w) in tokens.windows(k).enumerate() {
            if grams.contains(w) {
                hit[i..i + k].iter_mut().for_each(|h| *h = true);
            }
        }
        for run in runs(&hit) {
            place(&mut r.penalties, run, -cfg.beta_ref, cfg.placement);
        }
    }
    r
}

/// Per-token rewards split into the instance stream (instance score and KL)
/// and the token stream (TLR parts). In `Instance` mode the token parts'
/// sum joins the instance score on the last token: same total, other place.
pub fn assemble(r: &SampleReward, kl: &[f32], kl_coef: f32, mode: RewardMode) -> (Vec<f32>, Vec<f32>) {
    let n = kl.len();
    let mut inst: Vec<f32> = kl.iter().map(|k| -kl_coef * k).collect();
    let mut tok = vec![0f32; n];
    if n == 0 {
        return (inst, tok);
    }
    match mode {
        RewardMode::Tlr => {
            for ((t, b), p) in tok.iter_mut().zip(&r.secure_bonus).zip(&r.penalties) {
                *t = b + p;
            }
            inst[n - 1] += r.instance;
        }
        RewardMode::Instance => inst[n - 1] += r.instance + r.token_total(),
    }
    (inst, tok)
}
