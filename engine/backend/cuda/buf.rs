//! The CUDA backend's buffer. Most buffers store f32 and keep the bf16 copy
//! that a tensor-core matmul last made of them: every write goes through
//! [`CudaBuf::write`], which drops that copy, so a kept copy always matches
//! the data; a weight is therefore cast once per optimizer step (once per
//! model during generation), and an activation once however many matmuls
//! read it. KV caches store bf16 themselves (`Backend::zeros_kv`); only the
//! cache ops (layout writes, attention, copies) accept them.

use cudarc::driver::CudaSlice;
use half::bf16;
use std::sync::{Arc, Mutex};

pub enum Storage {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<bf16>),
}

pub struct CudaBuf {
    data: Storage,
    /// bf16 copy of the first `n` values (n = its length), if one was made since the last write.
    half: Mutex<Option<Arc<CudaSlice<bf16>>>>,
}

impl CudaBuf {
    pub(crate) fn new(data: CudaSlice<f32>) -> CudaBuf {
        CudaBuf { data: Storage::F32(data), half: Mutex::new(None) }
    }

    pub(crate) fn new_bf16(data: CudaSlice<bf16>) -> CudaBuf {
        CudaBuf { data: Storage::Bf16(data), half: Mutex::new(None) }
    }

    /// The f32 storage; a bf16 buffer here is a caller's bug (only KV caches are bf16).
    pub(crate) fn data(&self) -> &CudaSlice<f32> {
        match &self.data {
            Storage::F32(d) => d,
            Storage::Bf16(_) => panic!("a bf16 KV-cache buffer was passed to an op that takes f32 storage"),
        }
    }

    /// Mutable f32 storage for a kernel that writes; forgets the bf16 copy.
    pub(crate) fn write(&mut self) -> &mut CudaSlice<f32> {
        *self.half.get_mut().expect("bf16 copy lock") = None;
        match &mut self.data {
            Storage::F32(d) => d,
            Storage::Bf16(_) => panic!("a bf16 KV-cache buffer was passed to an op that writes f32 storage"),
        }
    }

    /// Keeps `copy` as the bf16 copy of the first `copy.len()` values: the
    /// kernel that just wrote this buffer wrote both.
    pub(crate) fn keep_bf16(&mut self, copy: CudaSlice<bf16>) {
        *self.half.get_mut().expect("bf16 copy lock") = Some(Arc::new(copy));
    }

    /// Takes the kept bf16 copy, if it covers `n` values and nothing else
    /// holds it, so a kernel about to rewrite the buffer can rewrite the copy
    /// in place (stable addresses keep multi-tensor tables cached).
    pub(crate) fn take_bf16(&mut self, n: usize) -> Option<CudaSlice<bf16>> {
        let h = self.half.get_mut().expect("bf16 copy lock").take()?;
        if h.len() != n.max(1) {
            return None;
        }
        Arc::try_unwrap(h).ok()
    }

    /// Either storage, for the ops that take KV caches.
    pub(crate) fn storage(&self) -> &Storage {
        &self.data
    }

    /// Either storage, mutable; forgets the bf16 copy.
    pub(crate) fn storage_mut(&mut self) -> &mut Storage {
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
                let h = Arc::new(cast(self.data()));
                *half = Some(h.clone());
                h
            }
        }
    }

    pub fn len(&self) -> usize {
        match &self.data {
            Storage::F32(d) => d.len(),
            Storage::Bf16(d) => d.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
