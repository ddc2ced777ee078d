//! HF `config.json` for LlamaForCausalLM and Qwen2ForCausalLM, in both the
//! transformers 4 layout (`rope_theta`, `torch_dtype`) and the transformers 5
//! layout (`rope_parameters`, `dtype`, optional `head_dim`).

use crate::backend::QkvHeads;
use crate::tensor::DType;
use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    Llama,
    Qwen2,
}

impl Arch {
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
        }
    }
    fn model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// The resolved model shape every other part of the engine reads.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f32,
    pub rope_theta: f32,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    /// Bias on the q/k/v projections (always on for Qwen2).
    pub qkv_bias: bool,
    pub dtype: DType,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
}

/// The raw JSON, permissive: both layouts' fields are optional here and
/// resolved in [`ModelConfig::from_json`].
#[derive(Deserialize)]
struct RawConfig {
    architectures: Option<Vec<String>>,
    model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f32>,
    rope_theta: Option<f32>,
    rope_parameters: Option<Value>,
    rope_scaling: Option<Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    torch_dtype: Option<String>,
    dtype: Option<String>,
    hidden_act: Option<String>,
    use_sliding_window: Option<bool>,
    bos_token_id: Option<Value>,
    eos_token_id: Option<Value>,
}

/// An f32 as JSON in its shortest decimal form (1e-6, not 9.99999997e-7).
fn short_f32(x: f32) -> Value {
    x.to_string().parse::<f64>().map(Value::from).unwrap_or(Value::Null)
}

fn token_ids(v: &Option<Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a.iter().filter_map(|x| x.as_u64().map(|x| x as u32)).collect(),
        _ => vec![],
    }
}

/// Rope types other than plain RoPE change the frequencies; refuse them
/// rather than generate subtly wrong text.
fn check_rope_type(v: &Option<Value>) -> Result<()> {
    if let Some(Value::Object(o)) = v {
        let ty = o.get("rope_type").or_else(|| o.get("type")).and_then(|t| t.as_str()).unwrap_or("default");
        ensure!(ty == "default", "unsupported rope scaling type {ty:?} (only plain RoPE is implemented)");
    }
    Ok(())
}

impl ModelConfig {
    pub fn load(dir: &Path) -> Result<ModelConfig> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        ModelConfig::from_json(&text).with_context(|| format!("invalid model config {}", path.display()))
    }

    pub fn from_json(text: &str) -> Result<ModelConfig> {
        let raw: RawConfig = serde_json::from_str(text).context("malformed config.json")?;
        let arch_name = raw.architectures.as_ref().and_then(|a| a.first().cloned()).or(raw.model_type.clone()).unwrap_or_default();
        let arch = match arch_name.as_str() {
            "LlamaForCausalLM" | "llama" => Arch::Llama,
            "Qwen2ForCausalLM" | "qwen2" => Arch::Qwen2,
            other => bail!("unsupported architecture {other:?} (supported: LlamaForCausalLM, Qwen2ForCausalLM)"),
        };
        if let Some(act) = &raw.hidden_act {
            ensure!(act == "silu", "unsupported hidden_act {act:?} (only silu/SwiGLU)");
        }
        ensure!(!raw.mlp_bias.unwrap_or(false), "mlp_bias=true is not supported");
        ensure!(!raw.use_sliding_window.unwrap_or(false), "use_sliding_window=true is not supported");
        let qkv_bias = match arch {
            Arch::Qwen2 => true,
            Arch::Llama => {
                ensure!(!raw.attention_bias.unwrap_or(false), "Llama attention_bias=true is not supported");
                false
            }
        };
        check_rope_type(&raw.rope_scaling)?;
        check_rope_type(&raw.rope_parameters)?;
        let rope_theta = raw
            .rope_theta
            .or_else(|| raw.rope_parameters.as_ref().and_then(|p| p.get("rope_theta")).and_then(|t| t.as_f64()).map(|t| t as f32))
            .unwrap_or(10_000.0);
        let dtype = match raw.dtype.as_ref().or(raw.torch_dtype.as_ref()) {
            Some(name) => DType::from_hf_name(name)?,
            None => DType::F32,
        };
        let num_kv_heads = raw.num_key_value_heads.unwrap_or(raw.num_attention_heads);
        ensure!(raw.num_attention_heads > 0 && num_kv_heads > 0, "attention heads must be positive");
        ensure!(
            raw.num_attention_heads.is_multiple_of(num_kv_heads),
            "num_attention_heads {} is not a multiple of num_key_value_heads {num_kv_heads}",
            raw.num_attention_heads
        );
        let head_dim = raw.head_dim.unwrap_or(raw.hidden_size / raw.num_attention_heads);
        ensure!(head_dim.is_multiple_of(2) && head_dim > 0, "head_dim {head_dim} must be even and positive");
        ensure!(
            raw.vocab_size > 0 && raw.hidden_size > 0 && raw.intermediate_size > 0 && raw.num_hidden_layers > 0,
            "sizes must be positive"
        );
        let rms_norm_eps = raw.rms_norm_eps.unwrap_or(1e-6);
        // Both go into a square root or a power on every token: anything else gives NaN, not an error.
        ensure!(rms_norm_eps.is_finite() && rms_norm_eps > 0.0, "rms_norm_eps {rms_norm_eps} must be positive");
        ensure!(rope_theta.is_finite() && rope_theta > 0.0, "rope_theta {rope_theta} must be positive");
        Ok(ModelConfig {
            arch,
            vocab_size: raw.vocab_size,
            hidden_size: raw.hidden_size,
            intermediate_size: raw.intermediate_size,
            num_layers: raw.num_hidden_layers,
            num_heads: raw.num_attention_heads,
            num_kv_heads,
            head_dim,
            rms_norm_eps,
            rope_theta,
            max_position_embeddings: raw.max_position_embeddings.unwrap_or(2048),
            // Both HF classes default to untied embeddings.
            tie_word_embeddings: raw.tie_word_embeddings.unwrap_or(false),
            qkv_bias,
            dtype,
            bos_token_id: token_ids(&raw.bos_token_id).first().copied(),
            eos_token_ids: token_ids(&raw.eos_token_id),
        })
    }

    /// Width of the query projection (`num_heads · head_dim`, which Qwen-style
    /// configs may set apart from `hidden_size`).
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }
    /// The head counts of the fused q/k/v projection.
    pub fn qkv_heads(&self) -> QkvHeads {
        QkvHeads { q: self.num_heads, kv: self.num_kv_heads, dim: self.head_dim }
    }

    /// A config.json that transformers 4 and 5 both load.
    pub fn to_hf_json(&self) -> Value {
        let dtype = match self.dtype {
            DType::F32 => "float32",
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
        };
        let mut v = json!({
            "architectures": [self.arch.hf_class()],
            "model_type": self.arch.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": short_f32(self.rms_norm_eps),
            "rope_theta": short_f32(self.rope_theta),
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": dtype,
        });
        if self.arch == Arch::Llama {
            v["attention_bias"] = json!(false);
            v["mlp_bias"] = json!(false);
        }
        if let Some(b) = self.bos_token_id {
            v["bos_token_id"] = json!(b);
        }
        match self.eos_token_ids.as_slice() {
            [] => {}
            [one] => v["eos_token_id"] = json!(one),
            many => v["eos_token_id"] = json!(many),
        }
        v
    }
}
