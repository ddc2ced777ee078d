//! Checkpoint I/O: sharded and half-precision loading, save/reload, and a
//! clear error (naming the file and tensor) for every kind of bad input.

mod common;

use common::{assert_close, fixture_dir};
use half::{bf16, f16};
use safetensors::tensor::TensorView;
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use vul2safe::backend::cpu::Cpu;
use vul2safe::model::weights::load_params;
use vul2safe::model::{Batch, GradWrite, ModelConfig, Params, TrainState, Transformer};
use vul2safe::tokenizer::Tokenizer;

/// A writable copy of a fixture model folder.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["config.json", "model.safetensors"] {
        fs::copy(fixture_dir(name).join(f), dir.path().join(f)).unwrap();
    }
    dir
}

/// Writes `tensors` (name, shape, dtype, bytes) as one safetensors file.
fn write_st(path: &Path, tensors: &[(String, Vec<usize>, safetensors::Dtype, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> =
        tensors.iter().map(|(n, s, d, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn fixture_tensors(name: &str, dtype: safetensors::Dtype) -> Vec<(String, Vec<usize>, safetensors::Dtype, Vec<u8>)> {
    let cfg = ModelConfig::load(&fixture_dir(name)).unwrap();
    let params = load_params(&fixture_dir(name), &cfg).unwrap();
    params
        .hf_tensors(&cfg)
        .into_iter()
        .map(|(s, p)| {
            let bytes: Vec<u8> = match dtype {
                safetensors::Dtype::BF16 => p.iter().flat_map(|&x| bf16::from_f32(x).to_le_bytes()).collect(),
                safetensors::Dtype::F16 => p.iter().flat_map(|&x| f16::from_f32(x).to_le_bytes()).collect(),
                _ => p.iter().flat_map(|&x| x.to_le_bytes()).collect(),
            };
            (s.name, s.shape, dtype, bytes)
        })
        .collect()
}

fn logits_of(dir: &Path) -> Vec<f32> {
    let m = Transformer::load(&Cpu, dir).unwrap();
    m.forward_logits(&Cpu, &[3, 1, 4, 1, 5, 9, 2, 6], 1, 8).unwrap()
}

fn load_err(dir: &Path) -> String {
    match Transformer::load(&Cpu, dir) {
        Ok(_) => panic!("expected {} to fail to load", dir.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn sharded_checkpoint_loads_like_a_single_file() {
    let dir = copy_fixture("qwen2_b");
    let want = logits_of(dir.path());
    let tensors = fixture_tensors("qwen2_b", safetensors::Dtype::F32);
    let (a, b) = tensors.split_at(tensors.len() / 2);
    write_st(&dir.path().join("model-00001-of-00002.safetensors"), a);
    write_st(&dir.path().join("model-00002-of-00002.safetensors"), b);
    let map: HashMap<&str, &str> = a
        .iter()
        .map(|t| (t.0.as_str(), "model-00001-of-00002.safetensors"))
        .chain(b.iter().map(|t| (t.0.as_str(), "model-00002-of-00002.safetensors")))
        .collect();
    fs::write(dir.path().join("model.safetensors.index.json"), serde_json::json!({"metadata": {}, "weight_map": map}).to_string()).unwrap();
    fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    assert_eq!(logits_of(dir.path()), want);
}

#[test]
fn bf16_and_f16_checkpoints_convert_to_f32() {
    let want = logits_of(&fixture_dir("llama_a"));
    for (dtype, tol) in [(safetensors::Dtype::BF16, 3e-2), (safetensors::Dtype::F16, 3e-3)] {
        let dir = copy_fixture("llama_a");
        write_st(&dir.path().join("model.safetensors"), &fixture_tensors("llama_a", dtype));
        let got = logits_of(dir.path());
        let err = common::rel_err(&got, &want);
        assert!(err < tol && err > 0.0, "{dtype:?}: relative error {err}");
    }
}

#[test]
fn saved_checkpoint_reloads_identically() {
    let m = Transformer::load(&Cpu, &fixture_dir("qwen2_b")).unwrap();
    let out = tempfile::tempdir().unwrap();
    m.save(&Cpu, out.path()).unwrap();
    let again = Transformer::load(&Cpu, out.path()).unwrap();
    assert_eq!(again.cfg, m.cfg);
    for (a, b) in again.params.iter().into_iter().zip(m.params.iter()) {
        assert_eq!(a, b);
    }
    // Loss after a round trip is unchanged too.
    let ids: Vec<u32> = (0..20).map(|i| (i * 7 % 331) as u32).collect();
    let b = Batch::causal_lm(ids, &[true; 20], 1, 20, 19.0);
    let loss = |m: &Transformer<Cpu>| {
        let mut st = TrainState::new(&Cpu, &m.cfg, 1, 20);
        let mut g = Params::build(&m.cfg, |s| vec![0.0; s.numel()]);
        m.forward_backward(&Cpu, &b, &mut st, &mut g, GradWrite::Add).unwrap()
    };
    assert_eq!(loss(&m), loss(&again));
}

#[test]
fn truncated_safetensors_is_reported_with_its_path() {
    let dir = copy_fixture("llama_a");
    let f = dir.path().join("model.safetensors");
    let bytes = fs::read(&f).unwrap();
    fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors") && e.contains("not a valid safetensors file"), "{e}");
}

#[test]
fn lying_header_length_is_reported() {
    let dir = copy_fixture("llama_a");
    let f = dir.path().join("model.safetensors");
    let mut bytes = fs::read(&f).unwrap();
    bytes[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    fs::write(&f, &bytes).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.safetensors") && e.contains("not a valid safetensors file"), "{e}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = copy_fixture("llama_a");
    let mut tensors = fixture_tensors("llama_a", safetensors::Dtype::F32);
    tensors.retain(|t| t.0 != "model.layers.1.mlp.up_proj.weight");
    write_st(&dir.path().join("model.safetensors"), &tensors);
    let e = load_err(dir.path());
    assert!(e.contains("missing tensor model.layers.1.mlp.up_proj.weight") && e.contains("model.safetensors"), "{e}");
}

#[test]
fn shape_disagreeing_with_config_is_named() {
    let dir = copy_fixture("llama_a");
    let cfg = dir.path().join("config.json");
    let text = fs::read_to_string(&cfg).unwrap().replace("\"intermediate_size\": 72", "\"intermediate_size\": 80");
    fs::write(&cfg, text).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("model.layers.0.mlp.gate_proj.weight has shape [72, 32] but the config implies [80, 32]"), "{e}");
}

#[test]
fn unsupported_tensor_dtype_is_named() {
    let dir = copy_fixture("llama_a");
    let mut tensors = fixture_tensors("llama_a", safetensors::Dtype::F32);
    let t = tensors.iter_mut().find(|t| t.0 == "model.norm.weight").unwrap();
    t.2 = safetensors::Dtype::I32;
    write_st(&dir.path().join("model.safetensors"), &tensors);
    let e = load_err(dir.path());
    assert!(e.contains("model.norm.weight") && e.contains("unsupported tensor dtype"), "{e}");
}

#[test]
fn bad_configs_are_rejected_with_reasons() {
    let base = fs::read_to_string(fixture_dir("llama_a").join("config.json")).unwrap();
    let cases = [
        (base.replace("LlamaForCausalLM", "GPT2LMHeadModel"), "unsupported architecture \"GPT2LMHeadModel\""),
        (base.replace("\"float32\"", "\"int8\""), "unsupported dtype \"int8\""),
        (base.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"), "not a multiple of num_key_value_heads"),
        ("{ \"hidden_size\": ".to_string(), "malformed config.json"),
        (base.replace("\"vocab_size\": 331,", ""), "missing field `vocab_size`"),
        (base.replace("\"rms_norm_eps\": 1e-05", "\"rms_norm_eps\": -1e-05"), "rms_norm_eps -0.00001 must be positive"),
        (base.replace("\"rope_theta\": 10000.0", "\"rope_theta\": 0"), "rope_theta 0 must be positive"),
        (base.replace("\"intermediate_size\": 72", "\"intermediate_size\": 0"), "sizes must be positive"),
    ];
    for (text, want) in cases {
        let dir = copy_fixture("llama_a");
        fs::write(dir.path().join("config.json"), text).unwrap();
        let e = load_err(dir.path());
        assert!(e.contains(want) && e.contains("config.json"), "want {want:?} in {e}");
    }
    let empty = tempfile::tempdir().unwrap();
    assert!(load_err(empty.path()).contains("config.json"));
}

#[test]
fn both_config_layouts_resolve() {
    let v4 = ModelConfig::load(&fixture_dir("llama_a")).unwrap();
    assert_eq!((v4.rope_theta, v4.head_dim, v4.tie_word_embeddings, v4.qkv_bias), (10_000.0, 16, false, false));
    let v5 = ModelConfig::load(&fixture_dir("qwen2_b")).unwrap();
    assert_eq!((v5.rope_theta, v5.head_dim, v5.num_kv_heads, v5.tie_word_embeddings, v5.qkv_bias), (1e6, 32, 1, true, true));
    let scaled = r#"{"architectures":["LlamaForCausalLM"],"vocab_size":10,"hidden_size":8,"intermediate_size":8,
        "num_hidden_layers":1,"num_attention_heads":2,"rope_scaling":{"rope_type":"llama3","factor":8.0}}"#;
    assert!(format!("{:#}", ModelConfig::from_json(scaled).unwrap_err()).contains("llama3"));
}

#[test]
fn malformed_tokenizer_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("tokenizer.json");
    fs::write(&f, "{\"model\": 3}").unwrap();
    let e = format!("{:#}", Tokenizer::load(dir.path()).err().unwrap());
    assert!(e.contains("tokenizer.json") && e.contains("malformed"), "{e}");
    let e = format!("{:#}", Tokenizer::load(&dir.path().join("absent")).err().unwrap());
    assert!(e.contains("absent"), "{e}");
}

#[test]
fn out_of_vocab_training_ids_are_an_error() {
    let m = Transformer::load(&Cpu, &fixture_dir("llama_a")).unwrap();
    let mut st = TrainState::new(&Cpu, &m.cfg, 1, 4);
    let mut g = Params::build(&m.cfg, |s| vec![0.0; s.numel()]);
    let b = Batch::causal_lm(vec![1, 2, 400, 3], &[true; 4], 1, 4, 3.0);
    let e = format!("{:#}", m.forward_backward(&Cpu, &b, &mut st, &mut g, GradWrite::Add).unwrap_err());
    assert!(e.contains("token id 400"), "{e}");
}

#[test]
fn tokenizer_offsets_are_byte_ranges() {
    let tok = Tokenizer::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tiny")).unwrap();
    let text = "int é = copy_name(dst, 8, src);";
    let enc = tok.encode(text).unwrap();
    // Byte-level BPE splits "é" into two tokens that both report its whole
    // (2-byte) range; after merging such repeats the ranges tile the text.
    let mut ranges = enc.offsets.clone();
    ranges.dedup();
    assert!(ranges.contains(&(4, 6)), "é spans bytes 4..6: {ranges:?}");
    let rebuilt: String = ranges.iter().map(|&(a, b)| &text[a..b]).collect();
    assert_eq!(rebuilt, text);
    assert_eq!(tok.decode(&enc.ids).unwrap(), text);
}

#[test]
fn saved_weights_match_fixture_bytes() {
    // Our writer produces the same tensors (names, shapes, values) HF wrote.
    let cfg = ModelConfig::load(&fixture_dir("llama_a")).unwrap();
    let orig = load_params(&fixture_dir("llama_a"), &cfg).unwrap();
    let out = tempfile::tempdir().unwrap();
    vul2safe::model::weights::save_params(out.path(), &cfg, &orig).unwrap();
    let back = load_params(out.path(), &ModelConfig::load(out.path()).unwrap()).unwrap();
    for (a, b) in orig.iter().into_iter().zip(back.iter()) {
        assert_close("roundtrip", a, b, 0.0, 0.0);
    }
}
