//! Parameters from and to HF safetensors: memory-mapped single or sharded
//! files, bf16/f16/f32 converted to f32, shape checks against the config,
//! seeded random init, and atomic HF-compatible saving.

use super::config::ModelConfig;
use super::params::{param_specs, Params, TensorSpec};
use crate::fsutil::atomic_write;
use crate::tensor::{bytes_to_f32, DType};
use anyhow::{bail, ensure, Context, Result};
use memmap2::Mmap;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use safetensors::tensor::{SafeTensors, TensorView};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

const SINGLE: &str = "model.safetensors";
const INDEX: &str = "model.safetensors.index.json";

/// The safetensors files of a checkpoint and, for each tensor, which file holds it.
fn checkpoint_files(dir: &Path) -> Result<(Vec<PathBuf>, HashMap<String, usize>)> {
    let index = dir.join(INDEX);
    if index.exists() {
        let text = std::fs::read_to_string(&index).with_context(|| format!("reading {}", index.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text).with_context(|| format!("malformed {}", index.display()))?;
        let map = v.get("weight_map").and_then(|m| m.as_object()).with_context(|| format!("{} has no weight_map", index.display()))?;
        let mut files: Vec<PathBuf> = Vec::new();
        let mut where_ = HashMap::new();
        for (name, file) in map {
            let file = dir.join(file.as_str().with_context(|| format!("{}: weight_map[{name}] is not a string", index.display()))?);
            let i = files.iter().position(|f| *f == file).unwrap_or_else(|| {
                files.push(file.clone());
                files.len() - 1
            });
            where_.insert(name.clone(), i);
        }
        return Ok((files, where_));
    }
    let single = dir.join(SINGLE);
    ensure!(single.exists(), "{} holds neither {SINGLE} nor {INDEX}", dir.display());
    Ok((vec![single], HashMap::new()))
}

fn map_file(path: &Path) -> Result<Mmap> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: the mapping is read-only; a checkpoint being rewritten under us
    // is outside what any loader can defend against (we write atomically).
    unsafe { Mmap::map(&f) }.with_context(|| format!("mapping {}", path.display()))
}

fn read_tensor(st: &SafeTensors, file: &Path, spec: &TensorSpec) -> Result<Vec<f32>> {
    let t = st.tensor(&spec.name).map_err(|_| anyhow::anyhow!("{}: missing tensor {}", file.display(), spec.name))?;
    let dtype = DType::from_safetensors(t.dtype()).with_context(|| format!("{}: tensor {}", file.display(), spec.name))?;
    ensure!(
        t.shape() == spec.shape.as_slice(),
        "{}: tensor {} has shape {:?} but the config implies {:?}",
        file.display(),
        spec.name,
        t.shape(),
        spec.shape
    );
    Ok(bytes_to_f32(t.data(), dtype))
}

/// Loads every parameter of `cfg` from the HF folder `dir` as f32.
pub fn load_params(dir: &Path, cfg: &ModelConfig) -> Result<Params<Vec<f32>>> {
    let (files, where_) = checkpoint_files(dir)?;
    let maps = files.iter().map(|f| map_file(f)).collect::<Result<Vec<_>>>()?;
    let parsed = maps
        .iter()
        .zip(&files)
        .map(|(m, f)| SafeTensors::deserialize(m).map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", f.display())))
        .collect::<Result<Vec<_>>>()?;
    Params::try_from_hf(cfg, |spec| {
        let i = match where_.get(&spec.name) {
            Some(&i) => i,
            None if files.len() == 1 => 0,
            None => bail!("{}: no shard holds tensor {}", dir.join(INDEX).display(), spec.name),
        };
        read_tensor(&parsed[i], &files[i], spec)
    })
}

/// HF-style init: N(0, 0.02) matrices and embeddings, unit norm weights, zero biases.
pub fn init_params(cfg: &ModelConfig, seed: u64) -> Params<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, 0.02).expect("valid std");
    Params::build(cfg, |spec| {
        if spec.name.ends_with("norm.weight") {
            vec![1.0; spec.numel()]
        } else if spec.name.ends_with(".bias") {
            vec![0.0; spec.numel()]
        } else {
            (0..spec.numel()).map(|_| normal.sample(&mut rng)).collect()
        }
    })
}

/// Writes `config.json` and an f32 `model.safetensors` that `transformers` loads.
pub fn save_params(dir: &Path, cfg: &ModelConfig, params: &Params<Vec<f32>>) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let views = params
        .hf_tensors(cfg)
        .into_iter()
        .map(|(s, t)| Ok((s.name, TensorView::new(safetensors::Dtype::F32, s.shape, bytemuck::cast_slice(t))?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let bytes = safetensors::serialize(views, Some(meta)).context("serializing safetensors")?;
    atomic_write(&dir.join(SINGLE), &bytes)?;
    let mut hf = cfg.to_hf_json();
    hf["torch_dtype"] = serde_json::json!("float32");
    atomic_write(&dir.join("config.json"), serde_json::to_string_pretty(&hf)?.as_bytes())
}

/// Parameter count per tensor name, for reports.
pub fn param_count(cfg: &ModelConfig) -> usize {
    param_specs(cfg).iter().map(|s| s.numel()).sum()
}
