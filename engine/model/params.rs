//! The parameter set of a decoder, generic over what each tensor holds: device
//! buffers for weights, gradients and AdamW moments all share this one shape,
//! so every per-parameter loop walks the same canonical order. The q/k/v and
//! gate/up projections are stored stacked; files hold the HF tensors.

use super::config::ModelConfig;
use anyhow::Result;
use std::ops::Range;

/// One parameter tensor as the engine stores it: its name, its shape, and
/// the HF tensors it stacks along its first axis when it fuses several
/// (q/k/v into one projection, gate and up into one: one matmul reads the
/// normed activations once, and the backward sums their input gradients in
/// one matmul instead of three read-modify-writes). Files always hold the
/// HF tensors ([`TensorSpec::hf_parts`]).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    /// `(HF name, rows)` of each stacked tensor; empty when this is one HF tensor.
    pub parts: Vec<(String, usize)>,
}

impl TensorSpec {
    fn single(name: String, shape: Vec<usize>) -> TensorSpec {
        TensorSpec { name, shape, parts: vec![] }
    }

    fn stacked(name: String, inner: &[usize], parts: Vec<(String, usize)>) -> TensorSpec {
        let rows = parts.iter().map(|p| p.1).sum();
        TensorSpec { name, shape: [&[rows], inner].concat(), parts }
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
    /// Matrices get weight decay; norms and biases don't (GPT-style grouping).
    pub fn decays(&self) -> bool {
        self.shape.len() >= 2
    }

    /// The HF tensors this one holds, each with the range of its values.
    pub fn hf_parts(&self) -> Vec<(TensorSpec, Range<usize>)> {
        if self.parts.is_empty() {
            return vec![(self.clone(), 0..self.numel())];
        }
        let row: usize = self.shape[1..].iter().product();
        let mut at = 0;
        self.parts
            .iter()
            .map(|(name, rows)| {
                let shape = [&[*rows], &self.shape[1..]].concat();
                at += rows * row;
                (TensorSpec::single(name.clone(), shape), at - rows * row..at)
            })
            .collect()
    }
}

pub struct LayerParams<T> {
    pub attn_norm: T,
    /// q, k and v projections stacked: `[(heads + 2 kv_heads) · head_dim, hidden]`.
    pub wqkv: T,
    pub bqkv: Option<T>,
    pub wo: T,
    pub mlp_norm: T,
    /// Gate and up projections stacked: `[2 · intermediate, hidden]`.
    pub w_gate_up: T,
    pub w_down: T,
}

pub struct Params<T> {
    pub embed: T,
    pub layers: Vec<LayerParams<T>>,
    pub final_norm: T,
    /// `None` when the LM head is tied to the embedding.
    pub lm_head: Option<T>,
}

/// The tensors a model stores, in canonical order (the order of [`Params::iter`]).
pub fn param_specs(cfg: &ModelConfig) -> Vec<TensorSpec> {
    let (d, f, q, kv) = (cfg.hidden_size, cfg.intermediate_size, cfg.q_dim(), cfg.kv_dim());
    let single = TensorSpec::single;
    let mut s = vec![single("model.embed_tokens.weight".into(), vec![cfg.vocab_size, d])];
    for l in 0..cfg.num_layers {
        let p = format!("model.layers.{l}");
        let qkv = |kind: &str| {
            ["q", "k", "v"].iter().zip([q, kv, kv]).map(|(x, rows)| (format!("{p}.self_attn.{x}_proj.{kind}"), rows)).collect()
        };
        s.push(single(format!("{p}.input_layernorm.weight"), vec![d]));
        s.push(TensorSpec::stacked(format!("{p}.self_attn.qkv_proj.weight"), &[d], qkv("weight")));
        if cfg.qkv_bias {
            s.push(TensorSpec::stacked(format!("{p}.self_attn.qkv_proj.bias"), &[], qkv("bias")));
        }
        s.push(single(format!("{p}.self_attn.o_proj.weight"), vec![d, q]));
        s.push(single(format!("{p}.post_attention_layernorm.weight"), vec![d]));
        let gate_up = vec![(format!("{p}.mlp.gate_proj.weight"), f), (format!("{p}.mlp.up_proj.weight"), f)];
        s.push(TensorSpec::stacked(format!("{p}.mlp.gate_up_proj.weight"), &[d], gate_up));
        s.push(single(format!("{p}.mlp.down_proj.weight"), vec![d, f]));
    }
    s.push(single("model.norm.weight".into(), vec![d]));
    if !cfg.tie_word_embeddings {
        s.push(single("lm_head.weight".into(), vec![cfg.vocab_size, d]));
    }
    s
}

impl Params<Vec<f32>> {
    /// Builds host parameters from HF tensors (`read` is asked for each, in
    /// file order), stacking the ones the engine fuses.
    pub fn try_from_hf(cfg: &ModelConfig, mut read: impl FnMut(&TensorSpec) -> Result<Vec<f32>>) -> Result<Params<Vec<f32>>> {
        Params::try_build(cfg, |spec| {
            let mut values = Vec::with_capacity(spec.numel());
            for (part, _) in spec.hf_parts() {
                values.extend(read(&part)?);
            }
            Ok(values)
        })
    }

    /// Every HF tensor with its values, in file order.
    pub fn hf_tensors(&self, cfg: &ModelConfig) -> Vec<(TensorSpec, &[f32])> {
        let specs = param_specs(cfg);
        specs.iter().zip(self.iter()).flat_map(|(s, v)| s.hf_parts().into_iter().map(move |(t, r)| (t, &v[r]))).collect()
    }
}

impl<T> Params<T> {
    /// Builds every tensor in canonical order with `make(spec)`.
    pub fn try_build(cfg: &ModelConfig, mut make: impl FnMut(&TensorSpec) -> Result<T>) -> Result<Params<T>> {
        let mut specs = param_specs(cfg).into_iter();
        let mut next = || make(&specs.next().expect("param_specs covers every parameter"));
        let embed = next()?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for _ in 0..cfg.num_layers {
            let (attn_norm, wqkv) = (next()?, next()?);
            let bqkv = if cfg.qkv_bias { Some(next()?) } else { None };
            layers.push(LayerParams { attn_norm, wqkv, bqkv, wo: next()?, mlp_norm: next()?, w_gate_up: next()?, w_down: next()? });
        }
        let final_norm = next()?;
        let lm_head = if cfg.tie_word_embeddings { None } else { Some(next()?) };
        Ok(Params { embed, layers, final_norm, lm_head })
    }

    pub fn build(cfg: &ModelConfig, mut make: impl FnMut(&TensorSpec) -> T) -> Params<T> {
        Params::try_build(cfg, |s| Ok(make(s))).expect("infallible builder")
    }

    /// `f` of every tensor, as a parameter set of the same model.
    pub fn map<U>(&self, cfg: &ModelConfig, mut f: impl FnMut(&T) -> U) -> Params<U> {
        let mut it = self.iter().into_iter();
        Params::build(cfg, |_| f(it.next().expect("same parameter set")))
    }

    /// Every tensor, in the order of [`param_specs`].
    pub fn iter(&self) -> Vec<&T> {
        let mut v = vec![&self.embed];
        for l in &self.layers {
            v.extend([&l.attn_norm, &l.wqkv]);
            v.extend(l.bqkv.as_ref());
            v.extend([&l.wo, &l.mlp_norm, &l.w_gate_up, &l.w_down]);
        }
        v.push(&self.final_norm);
        v.extend(self.lm_head.as_ref());
        v
    }

    pub fn iter_mut(&mut self) -> Vec<&mut T> {
        let mut v = vec![&mut self.embed];
        for l in &mut self.layers {
            v.extend([&mut l.attn_norm, &mut l.wqkv]);
            v.extend(l.bqkv.as_mut());
            v.extend([&mut l.wo, &mut l.mlp_norm, &mut l.w_gate_up, &mut l.w_down]);
        }
        v.push(&mut self.final_norm);
        v.extend(self.lm_head.as_mut());
        v
    }
}
