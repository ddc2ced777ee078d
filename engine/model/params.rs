//! The parameter set of a decoder, generic over what each tensor holds: device
//! buffers for weights, gradients and AdamW moments all share this one shape,
//! so every per-parameter loop walks the same canonical order.

use super::config::ModelConfig;
use anyhow::Result;

/// The name (HF convention) and shape of one parameter tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Matrices get weight decay; norms and biases don't (GPT-style grouping).
    pub fn decays(&self) -> bool {
        self.shape.len() >= 2
    }
}

pub struct LayerParams<T> {
    pub attn_norm: T,
    pub wq: T,
    pub wk: T,
    pub wv: T,
    pub bq: Option<T>,
    pub bk: Option<T>,
    pub bv: Option<T>,
    pub wo: T,
    pub mlp_norm: T,
    pub w_gate: T,
    pub w_up: T,
    pub w_down: T,
}

pub struct Params<T> {
    pub embed: T,
    pub layers: Vec<LayerParams<T>>,
    pub final_norm: T,
    /// `None` when the LM head is tied to the embedding.
    pub lm_head: Option<T>,
}

/// All tensors of a model in canonical order (the order of [`Params::iter`]).
pub fn tensor_specs(cfg: &ModelConfig) -> Vec<TensorSpec> {
    let (d, f, q, kv) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_dim(), cfg.kv_dim());
    let spec = |name: String, shape: Vec<usize>| TensorSpec { name, shape };
    let mut s = vec![spec("model.embed_tokens.weight".into(), vec![cfg.vocab_size, d])];
    for l in 0..cfg.num_layers {
        let p = format!("model.layers.{l}");
        s.push(spec(format!("{p}.input_layernorm.weight"), vec![d]));
        s.push(spec(format!("{p}.self_attn.q_proj.weight"), vec![q, d]));
        s.push(spec(format!("{p}.self_attn.k_proj.weight"), vec![kv, d]));
        s.push(spec(format!("{p}.self_attn.v_proj.weight"), vec![kv, d]));
        if cfg.qkv_bias {
            s.push(spec(format!("{p}.self_attn.q_proj.bias"), vec![q]));
            s.push(spec(format!("{p}.self_attn.k_proj.bias"), vec![kv]));
            s.push(spec(format!("{p}.self_attn.v_proj.bias"), vec![kv]));
        }
        s.push(spec(format!("{p}.self_attn.o_proj.weight"), vec![d, q]));
        s.push(spec(format!("{p}.post_attention_layernorm.weight"), vec![d]));
        s.push(spec(format!("{p}.mlp.gate_proj.weight"), vec![f, d]));
        s.push(spec(format!("{p}.mlp.up_proj.weight"), vec![f, d]));
        s.push(spec(format!("{p}.mlp.down_proj.weight"), vec![d, f]));
    }
    s.push(spec("model.norm.weight".into(), vec![d]));
    if !cfg.tie_word_embeddings {
        s.push(spec("lm_head.weight".into(), vec![cfg.vocab_size, d]));
    }
    s
}

impl<T> Params<T> {
    /// Builds every tensor in canonical order with `make(spec)`.
    pub fn try_build(cfg: &ModelConfig, mut make: impl FnMut(&TensorSpec) -> Result<T>) -> Result<Params<T>> {
        let mut specs = tensor_specs(cfg).into_iter();
        let mut next = || make(&specs.next().expect("tensor_specs covers every parameter"));
        let embed = next()?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for _ in 0..cfg.num_layers {
            let (attn_norm, wq, wk, wv) = (next()?, next()?, next()?, next()?);
            let (bq, bk, bv) = if cfg.qkv_bias { (Some(next()?), Some(next()?), Some(next()?)) } else { (None, None, None) };
            layers.push(LayerParams {
                attn_norm,
                wq,
                wk,
                wv,
                bq,
                bk,
                bv,
                wo: next()?,
                mlp_norm: next()?,
                w_gate: next()?,
                w_up: next()?,
                w_down: next()?,
            });
        }
        let final_norm = next()?;
        let lm_head = if cfg.tie_word_embeddings { None } else { Some(next()?) };
        Ok(Params { embed, layers, final_norm, lm_head })
    }

    pub fn build(cfg: &ModelConfig, mut make: impl FnMut(&TensorSpec) -> T) -> Params<T> {
        Params::try_build(cfg, |s| Ok(make(s))).expect("infallible builder")
    }

    /// Every tensor, in the order of [`tensor_specs`].
    pub fn iter(&self) -> Vec<&T> {
        let mut v = vec![&self.embed];
        for l in &self.layers {
            v.extend([&l.attn_norm, &l.wq, &l.wk, &l.wv]);
            v.extend([&l.bq, &l.bk, &l.bv].into_iter().flatten());
            v.extend([&l.wo, &l.mlp_norm, &l.w_gate, &l.w_up, &l.w_down]);
        }
        v.push(&self.final_norm);
        v.extend(self.lm_head.as_ref());
        v
    }

    pub fn iter_mut(&mut self) -> Vec<&mut T> {
        let mut v = vec![&mut self.embed];
        for l in &mut self.layers {
            v.extend([&mut l.attn_norm, &mut l.wq, &mut l.wk, &mut l.wv]);
            v.extend([&mut l.bq, &mut l.bk, &mut l.bv].into_iter().flatten());
            v.extend([&mut l.wo, &mut l.mlp_norm, &mut l.w_gate, &mut l.w_up, &mut l.w_down]);
        }
        v.push(&mut self.final_norm);
        v.extend(self.lm_head.as_mut());
        v
    }
}
