//! Helpers shared by the integration tests: fixture paths, fixture tensors,
//! and tolerance checks.
#![allow(dead_code)]

use safetensors::SafeTensors;
use std::path::PathBuf;
use vul2safe::tensor::{bytes_to_f32, DType};

/// `tests/fixtures/<name>`; a test binary carried to another machine (tools/gpu-check)
/// finds them relative to the repository root it runs in.
pub fn fixture_dir(name: &str) -> PathBuf {
    let built_here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let root = if built_here.join("tests/fixtures").is_dir() { built_here } else { std::env::current_dir().expect("a working directory") };
    root.join("tests/fixtures").join(name)
}

/// The tensors of a fixture's `expected.safetensors`.
pub struct Expected {
    bytes: Vec<u8>,
}

impl Expected {
    /// `tests/fixtures/<name>/expected.safetensors`.
    pub fn load(name: &str) -> Expected {
        Expected::file(&format!("{name}/expected.safetensors"))
    }
    /// Any safetensors file under tests/fixtures.
    pub fn file(rel: &str) -> Expected {
        Expected { bytes: std::fs::read(fixture_dir(rel)).expect("fixture present") }
    }
    fn view(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("valid fixture")
    }
    pub fn has(&self, name: &str) -> bool {
        self.view().tensor(name).is_ok()
    }
    pub fn f32(&self, name: &str) -> Vec<f32> {
        let st = self.view();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("fixture tensor {name}"));
        bytes_to_f32(t.data(), DType::from_safetensors(t.dtype()).expect("float fixture"))
    }
    pub fn i64(&self, name: &str) -> Vec<i64> {
        let st = self.view();
        let t = st.tensor(name).unwrap_or_else(|_| panic!("fixture tensor {name}"));
        assert_eq!(t.dtype(), safetensors::Dtype::I64);
        t.data().chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()
    }
    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.view().tensor(name).unwrap().shape().to_vec()
    }
}

/// Asserts `|got - want| ≤ rtol·|want| + atol_frac·max|want|` element-wise.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol_frac: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    let atol = atol_frac * scale;
    let (mut worst, mut at) = (0f32, 0);
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}[{i}] = {g}");
        let excess = (g - w).abs() - (rtol * w.abs() + atol);
        if excess > worst {
            worst = excess;
            at = i;
        }
    }
    assert!(worst <= 0.0, "{what}: element {at} got {} want {} (scale {scale})", got[at], want[at]);
}

/// Largest `|a - b|` relative to the largest `|b|`.
pub fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-30);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// A random tiny Llama (hidden 32, one layer, head_dim 16) saved with the
/// fixtures' tokenizer as an HF folder `dir/name`.
pub fn tiny_model(dir: &std::path::Path, name: &str, kv_heads: usize, max_pos: usize, seed: u64) -> PathBuf {
    use vul2safe::backend::cpu::Cpu;
    use vul2safe::model::{weights::init_params, Arch, ModelConfig, Transformer};
    let tok = std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny/tokenizer.json")).expect("fixture tokenizer");
    let vocab = vul2safe::tokenizer::Tokenizer::from_bytes(&tok, "tiny").expect("valid tokenizer").vocab_size();
    let cfg = ModelConfig {
        arch: Arch::Llama,
        vocab_size: vocab,
        hidden_size: 32,
        intermediate_size: 64,
        num_layers: 1,
        num_heads: 2,
        num_kv_heads: kv_heads,
        head_dim: 16,
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: max_pos,
        tie_word_embeddings: true,
        qkv_bias: false,
        dtype: DType::F32,
        bos_token_id: None,
        eos_token_ids: vec![],
    };
    let out = dir.join(name);
    Transformer::<Cpu>::from_host(&Cpu, cfg.clone(), &init_params(&cfg, seed)).save(&Cpu, &out).expect("saving");
    std::fs::write(out.join("tokenizer.json"), tok).expect("writing tokenizer");
    out
}

/// PrimeVul+ built from the embedded corpus (heuristic teacher, one prompt per pair) into `dir/data`.
pub fn embedded_data(dir: &std::path::Path) -> PathBuf {
    use vul2safe::data::build::{build, BuildOptions, Input};
    let out = dir.join("data");
    let opts = BuildOptions {
        inputs: vec![Input::Embedded],
        out: out.clone(),
        prompts_per_pair: 1,
        threshold: 0.7,
        concurrency: 1,
        skip_bad: false,
        test_fraction: 0.1,
        analyzer_check: false,
    };
    build(&opts, &vul2safe::data::teacher::heuristic::Heuristic, &|_| {}).expect("building PrimeVul+");
    out
}

/// One numeric column of a run's metrics.jsonl, in order.
pub fn metric_column(run: &std::path::Path, key: &str) -> Vec<f64> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .expect("metrics log")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("JSON line")[key].as_f64().expect("numeric field"))
        .collect()
}

/// How far, in probability mass, token `pick` is from where draw `u` lands
/// under `cfg` in exact (f64) arithmetic: 0 when the draw falls inside the
/// pick's slot (the kept tokens laid out in id order, `sample_row`'s
/// definition), else the distance to that slot (to the top-p boundary for a
/// pick just past it; infinite for a pick that top-k or greedy decoding
/// excludes). Samplers summing in different orders agree only up to such
/// rounding, so they are held to a small distance.
pub fn draw_distance(logits: &[f32], cfg: &vul2safe::generate::SamplingConfig, u: f32, pick: u32) -> f64 {
    let t = if cfg.temperature > 0.0 { cfg.temperature } else { 1.0 };
    let scaled: Vec<f32> = logits.iter().map(|&x| x / t).collect();
    let mut order: Vec<usize> = (0..scaled.len()).collect();
    order.sort_by(|&a, &b| scaled[b].total_cmp(&scaled[a]).then(a.cmp(&b)));
    let Some(pos) = order.iter().position(|&i| i == pick as usize) else { return f64::INFINITY };
    if cfg.temperature <= 0.0 {
        return if pos == 0 { 0.0 } else { f64::INFINITY };
    }
    if cfg.top_k > 0 && pos >= cfg.top_k {
        return f64::INFINITY;
    }
    let kept = if cfg.top_k > 0 { cfg.top_k.min(order.len()) } else { order.len() };
    let m = scaled[order[0]] as f64;
    let log_z = m + scaled.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
    let prob = |i: usize| (scaled[i] as f64 - log_z).exp();
    // The kept prefix: up to the first token whose cumulative mass reaches top_p.
    let mut keep = kept;
    if cfg.top_p < 1.0 {
        let mut mass = 0.0;
        if let Some(i) = order[..kept].iter().position(|&i| {
            mass += prob(i);
            mass >= cfg.top_p as f64
        }) {
            keep = i + 1;
        }
    }
    if pos >= keep {
        return order[..pos].iter().map(|&i| prob(i)).sum::<f64>() - cfg.top_p as f64;
    }
    let mut ids = order[..keep].to_vec();
    ids.sort_unstable();
    let before: f64 = ids.iter().take_while(|&&i| i != pick as usize).map(|&i| prob(i)).sum();
    let target = u as f64 * ids.iter().map(|&i| prob(i)).sum::<f64>();
    (before - target).max(target - (before + prob(pick as usize))).max(0.0)
}
