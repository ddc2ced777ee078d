//! Crash-safe checkpoints in the layout of DESIGN.md:
//!
//! ```text
//! run/
//!   step-000200/   config.json, model.safetensors, tokenizer.json (an HF folder)
//!                  + trainer.safetensors (AdamW m, v, step) + state.json
//!   latest         names the newest complete step folder (written last, atomically)
//!   metrics.jsonl  one line per step
//! ```
//!
//! A step folder is written under a temporary name, every file fsynced, then
//! renamed; `latest` changes only after that rename. A crash at any point
//! leaves the previous checkpoint intact and `latest` pointing at it.

use super::optimizer::AdamW;
use crate::backend::Backend;
use crate::fsutil::{atomic_write, sync_dir};
use crate::model::{ModelConfig, Params, Transformer};
use crate::tensor::{bytes_to_f32, DType};
use anyhow::{bail, ensure, Context, Result};
use safetensors::tensor::{SafeTensors, TensorView};
use std::fs::File;
use std::path::{Path, PathBuf};

fn step_name(step: u64) -> String {
    format!("step-{step:06}")
}

/// Writes one step folder through `write(tmp_dir)` and publishes it.
pub fn write_step(run: &Path, step: u64, write: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    std::fs::create_dir_all(run).with_context(|| format!("creating {}", run.display()))?;
    let final_dir = run.join(step_name(step));
    let tmp = run.join(format!(".{}.tmp-{}", step_name(step), std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp)?;
    }
    std::fs::create_dir_all(&tmp)?;
    write(&tmp)?;
    for entry in walk(&tmp)? {
        File::open(&entry).and_then(|f| f.sync_all()).with_context(|| format!("fsync {}", entry.display()))?;
    }
    sync_dir(&tmp)?;
    if final_dir.exists() {
        std::fs::remove_dir_all(&final_dir)?;
    }
    std::fs::rename(&tmp, &final_dir).with_context(|| format!("publishing {}", final_dir.display()))?;
    sync_dir(run)?;
    atomic_write(&run.join("latest"), step_name(step).as_bytes())?;
    Ok(final_dir)
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
            out.push(p);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

/// The newest complete step folder, if the run has one.
pub fn latest(run: &Path) -> Result<Option<PathBuf>> {
    let marker = run.join("latest");
    if !marker.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&marker).with_context(|| format!("reading {}", marker.display()))?;
    let dir = run.join(name.trim());
    ensure!(dir.is_dir(), "{} names {}, which does not exist", marker.display(), dir.display());
    Ok(Some(dir))
}

/// The step folder a run continues from: with `resume`, its newest (none
/// yet: a fresh start). Without, a run folder that has checkpoints is
/// refused, as a fresh run's first save would replace them and its metrics
/// log truncate theirs.
pub fn resume_from(run: &Path, resume: bool) -> Result<Option<PathBuf>> {
    let newest = latest(run)?;
    if let (false, Some(step)) = (resume, &newest) {
        bail!(
            "{} already holds a run (latest checkpoint {}); pass --resume to continue it, or choose another --out",
            run.display(),
            step.display()
        );
    }
    Ok(newest)
}

/// A model argument as a model folder: an HF folder as given, or a run
/// folder's newest step (a run holds `latest`, where a model holds
/// `config.json`), so `--model runs/sft` means its latest checkpoint.
pub fn model_folder(path: &Path) -> Result<PathBuf> {
    ensure!(path.exists(), "{}: no such folder", path.display());
    ensure!(
        path.is_dir(),
        "{} is a file; a model is a folder (config.json, model.safetensors, tokenizer.json) or a run folder",
        path.display()
    );
    if path.join("config.json").exists() {
        return Ok(path.to_path_buf());
    }
    latest(path)?.with_context(|| format!("{} holds neither config.json (a model) nor latest (a run with a checkpoint)", path.display()))
}

/// A step folder's state.json (what a run records beyond tensors).
pub fn load_state<T: serde::de::DeserializeOwned>(step_dir: &Path) -> Result<T> {
    let path = step_dir.join("state.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not the state this run expects", path.display()))
}

/// Saves a model as an HF folder (plus tokenizer.json when given) inside `dir`.
pub fn save_model<B: Backend>(be: &B, dir: &Path, model: &Transformer<B>, tokenizer_json: Option<&[u8]>) -> Result<()> {
    model.save(be, dir)?;
    if let Some(t) = tokenizer_json {
        std::fs::write(dir.join("tokenizer.json"), t).with_context(|| format!("writing {}", dir.join("tokenizer.json").display()))?;
    }
    Ok(())
}

/// Writes AdamW's moments and step count to `path` (safetensors).
pub fn save_optimizer<B: Backend>(be: &B, path: &Path, cfg: &ModelConfig, opt: &AdamW<B>) -> Result<()> {
    let (m, v) = (opt.m.map(cfg, |b| be.download(b)), opt.v.map(cfg, |b| be.download(b)));
    let step = (opt.step as i64).to_le_bytes();
    let mut views = vec![("step".to_string(), TensorView::new(safetensors::Dtype::I64, vec![1], &step)?)];
    for (prefix, moments) in [("m", &m), ("v", &v)] {
        for (s, t) in moments.hf_tensors(cfg) {
            views.push((format!("{prefix}.{}", s.name), TensorView::new(safetensors::Dtype::F32, s.shape, bytemuck::cast_slice(t))?));
        }
    }
    std::fs::write(path, safetensors::serialize(views, None)?).with_context(|| format!("writing {}", path.display()))
}

/// Restores AdamW's moments and step count from [`save_optimizer`]'s file.
pub fn load_optimizer<B: Backend>(be: &B, path: &Path, cfg: &ModelConfig, opt: &mut AdamW<B>) -> Result<()> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| anyhow::anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
    let step = st.tensor("step").map_err(|_| anyhow::anyhow!("{}: missing tensor step", path.display()))?;
    opt.step = i64::from_le_bytes(step.data().try_into().context("step must be one i64")?) as u64;
    for (prefix, bufs) in [("m", &mut opt.m), ("v", &mut opt.v)] {
        let host = Params::try_from_hf(cfg, |s| {
            let name = format!("{prefix}.{}", s.name);
            let t = st.tensor(&name).map_err(|_| anyhow::anyhow!("{}: missing tensor {name}", path.display()))?;
            if t.shape() != s.shape.as_slice() || t.dtype() != safetensors::Dtype::F32 {
                bail!("{}: tensor {name} has shape {:?} / {:?}, expected {:?} F32", path.display(), t.shape(), t.dtype(), s.shape);
            }
            Ok(bytes_to_f32(t.data(), DType::F32))
        })?;
        for (buf, values) in bufs.iter_mut().into_iter().zip(host.iter()) {
            *buf = be.upload(values);
        }
    }
    Ok(())
}

/// Appends to the run's metrics log; on resume the log is cut back to the
/// byte offset the checkpoint recorded, so redone steps are not logged twice.
pub struct MetricsLog {
    file: File,
    path: PathBuf,
}

impl MetricsLog {
    pub fn open(run: &Path, resume_offset: Option<u64>) -> Result<MetricsLog> {
        std::fs::create_dir_all(run)?;
        let path = run.join("metrics.jsonl");
        let file =
            std::fs::OpenOptions::new().create(true).append(true).open(&path).with_context(|| format!("opening {}", path.display()))?;
        let len = file.metadata()?.len();
        file.set_len(resume_offset.unwrap_or(0).min(len))?;
        Ok(MetricsLog { file, path })
    }

    pub fn append(&mut self, row: &serde_json::Value) -> Result<()> {
        use std::io::Write;
        writeln!(self.file, "{row}").with_context(|| format!("appending to {}", self.path.display()))
    }

    /// Bytes written so far (what a checkpoint records).
    pub fn offset(&self) -> Result<u64> {
        self.file.sync_data()?;
        Ok(self.file.metadata()?.len())
    }
}
