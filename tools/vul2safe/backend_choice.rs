//! `--backend` and `--math`, shared by every command that runs a model.

use anyhow::Result;
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
