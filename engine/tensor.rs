//! The storage dtypes we read from and write to disk, and their decoding to f32.

use anyhow::{bail, Result};
use half::{bf16, f16};

/// The dtypes a checkpoint may store. Compute is always f32 on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    F32,
    F16,
    BF16,
}

impl DType {
    /// Parses the names HF configs use (`torch_dtype` / `dtype`).
    pub fn from_hf_name(name: &str) -> Result<DType> {
        Ok(match name {
            "float32" | "float" | "fp32" => DType::F32,
            "float16" | "half" | "fp16" => DType::F16,
            "bfloat16" | "bf16" => DType::BF16,
            other => bail!("unsupported dtype {other:?} (expected float32, float16 or bfloat16)"),
        })
    }

    pub fn from_safetensors(dtype: safetensors::Dtype) -> Result<DType> {
        Ok(match dtype {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::BF16 => DType::BF16,
            other => bail!("unsupported tensor dtype {other:?} (expected F32, F16 or BF16)"),
        })
    }
}

/// Decodes little-endian bytes of `dtype` into f32. The input may be unaligned
/// (safetensors data offsets are not guaranteed to be), so we read element-wise.
pub fn bytes_to_f32(bytes: &[u8], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F32 => bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        DType::F16 => bytes.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
        DType::BF16 => bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
    }
}
