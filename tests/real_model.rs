//! A real pretrained model: vul2safe's greedy decoding of SmolLM2-135M must
//! match transformers' token for token (fixture from tools/convert_smollm2.py).
//! The model folder is built by tools/setup.sh; without it the test skips.

mod common;

use std::path::PathBuf;
use vul2safe::backend::cpu::Cpu;
use vul2safe::generate::{generate, SamplingConfig};
use vul2safe::model::Transformer;
use vul2safe::tokenizer::Tokenizer;

/// Tokens that must agree exactly; past this, f32 rounding differences
/// between two correct implementations may flip a near-tie.
const MUST_MATCH: usize = 32;

#[test]
fn smollm2_greedy_matches_transformers() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/smollm2-135m");
    if !dir.join("model.safetensors").exists() {
        eprintln!(
            "SKIPPED smollm2_greedy_matches_transformers: {} is absent; build it with `bash tools/setup.sh` \
             (or `python3 tools/convert_smollm2.py` with gguf, numpy, safetensors and transformers installed)",
            dir.display()
        );
        return;
    }
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::fixture_dir("smollm2_greedy.json")).unwrap()).unwrap();
    let tok = Tokenizer::load(&dir).unwrap();
    let model = Transformer::load(&Cpu, &dir).unwrap();
    let ids = |v: &serde_json::Value| v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect::<Vec<u32>>();
    let cases = fixture["cases"].as_array().unwrap();
    let mut prompts = Vec::new();
    for case in cases {
        let enc = tok.encode(case["prompt"].as_str().unwrap()).unwrap();
        assert_eq!(enc.ids, ids(&case["prompt_ids"]), "tokenizer disagrees with transformers");
        prompts.push(enc.ids);
    }
    // All prompts in one batch: exercises the packed prefill on a real model.
    let want_len = ids(&cases[0]["tokens"]).len();
    let cfg = SamplingConfig { max_new_tokens: want_len, ..Default::default() };
    let got = generate(&Cpu, &model, &prompts, &cfg).unwrap();
    for (case, g) in cases.iter().zip(&got) {
        let want = ids(&case["tokens"]);
        let agree = want.iter().zip(&g.tokens).take_while(|(a, b)| a == b).count();
        eprintln!("{:?}: {agree}/{} tokens agree", case["prompt"].as_str().unwrap(), want.len());
        assert!(agree >= MUST_MATCH.min(want.len()), "diverged at token {agree}: got {:?} want {:?}", g.tokens, want);
    }
}
