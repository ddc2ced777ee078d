//! What every command that runs a model shares: `--backend`, `--math`, and
//! how a model argument names its folder.

use anyhow::Result;
use std::path::{Path, PathBuf};
use vul2safe::backend::cuda::{Cuda, Math};

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Cpu,
    Cuda,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cpu => "cpu",
            Kind::Cuda => "cuda",
        }
    }
}

#[derive(clap::Args)]
pub struct BackendArgs {
    /// Where the model runs.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: Kind,
    /// CUDA math: `bf16` (bf16 matmul inputs, bf16 flash attention; f32 accumulation), `tf32` or `exact` (f32).
    #[arg(long, default_value = "bf16")]
    pub math: String,
}

/// The first GPU, in the math mode `math` names.
pub fn cuda(math: &str) -> Result<Cuda> {
    let g = Cuda::new(0)?;
    g.set_math(Math::parse(math)?)?;
    Ok(g)
}

/// Parses a `--model` / `--policy` argument (`checkpoint::model_folder`),
/// saying when a run folder stands for its latest checkpoint.
pub fn model_folder(arg: &str) -> Result<PathBuf, String> {
    let dir = vul2safe::train::checkpoint::model_folder(Path::new(arg)).map_err(|e| format!("{e:#}"))?;
    if dir != Path::new(arg) {
        eprintln!("note: {arg} is a run folder; using its latest checkpoint, {}", dir.display());
    }
    Ok(dir)
}
