//! The CUDA backend against the CPU reference on the first GPU
//! (tests/support/cuda_cases.rs). Without a GPU (this includes CI) every test
//! prints why it skipped; cuda_emulated.rs runs the same cases on the CPU.

#[path = "support/cuda_cases.rs"]
mod cases;
mod common;

use vul2safe::backend::cuda::Cuda;

fn open_device() -> anyhow::Result<Cuda> {
    Cuda::new(0)
}
