//! The CUDA backend's buffer: f32 storage, plus the bf16 copy that a
//! tensor-core matmul last made of it. Every write goes through
//! [`CudaBuf::write`], which drops that copy, so a kept copy always matches
//! the data: a weight is cast once per optimizer step (once per model during
//! generation), and an activation once however many matmuls read it.

use cudarc::driver::CudaSlice;
use half::bf16;
use std::sync::{Arc, Mutex};

pub struct CudaBuf {
    data: CudaSlice<f32>,
    /// bf16 copy of the first `n` values (n = its length), if one was made since the last write.
    half: Mutex<Option<Arc<CudaSlice<bf16>>>>,
}

impl CudaBuf {
    pub(crate) fn new(data: CudaSlice<f32>) -> CudaBuf {
        CudaBuf { data, half: Mutex::new(None) }
    }

    pub(crate) fn data(&self) -> &CudaSlice<f32> {
        &self.data
    }

    /// Mutable access for a kernel that writes; forgets the bf16 copy.
    pub(crate) fn write(&mut self) -> &mut CudaSlice<f32> {
        *self.half.get_mut().expect("bf16 copy lock") = None;
        &mut self.data
    }

    /// The first `n` values as bf16: the kept copy if it covers exactly
    /// those, else `cast`'s, which is kept for the next reader.
    pub(crate) fn bf16(&self, n: usize, cast: impl FnOnce(&CudaSlice<f32>) -> CudaSlice<bf16>) -> Arc<CudaSlice<bf16>> {
        let mut half = self.half.lock().expect("bf16 copy lock");
        match half.as_ref() {
            Some(h) if h.len() == n.max(1) => h.clone(),
            _ => {
                let h = Arc::new(cast(&self.data));
                *half = Some(h.clone());
                h
            }
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.len() == 0
    }
}
