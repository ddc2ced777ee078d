//! Host-side tensors and the storage dtypes we read from and write to disk.

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

    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
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

/// A dense row-major f32 tensor on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> HostTensor {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "shape {shape:?} does not match data");
        HostTensor { shape, data }
    }
}
