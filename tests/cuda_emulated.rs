//! The CUDA backend's cases (tests/support/cuda_cases.rs) on the emulated
//! driver (tools/kernel-emu): the backend's own host code, buffers and
//! launches, with every kernel run by the CPU emulator and cuBLAS by a
//! plain CPU GEMM. This checks logic, never speed or the hardware:
//! tools/gpu-check runs cuda_backend.rs on a real GPU.

#[path = "support/cuda_cases.rs"]
mod cases;
mod common;
#[path = "support/kernel_emu.rs"]
mod kernel_emu;

use vul2safe::backend::cuda::Cuda;

fn open_device() -> anyhow::Result<Cuda> {
    anyhow::ensure!(kernel_emu::load_emulated_cuda(), "no g++ to build the kernel emulator with");
    Cuda::new(0)
}
