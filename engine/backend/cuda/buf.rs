//! The CUDA backend's buffer. Most buffers store f32 and keep the bf16 copy
//! that tensor-core matmuls read: every write goes through
//! [`CudaBuf::write`] (or a kernel that writes the copy too), so a kept copy
//! always matches the data. A weight is therefore cast once per optimizer
//! step, and an activation once however many matmuls read it.
//!
//! A matmul-input buffer (`Backend::zeros_matmul_input`) is only ever read
//! by matmuls, so the kernels that produce its values may write the bf16
//! copy alone; its f32 data is then stale, and reading it any other way
//! panics (a bug in the caller's plan) rather than returning old values.
//! Attention operands (KV caches, and q/k/v, outputs and their gradients in
//! training: `Backend::zeros_attention`) and training's projections (q/k/v,
//! MLP gate/up, LM-head logits, the matmul inputs a layer keeps:
//! `Backend::zeros_projection`) store bf16 themselves; only the ops around
//! attention, matmuls, norms, SwiGLU and the loss ops accept them.

use cudarc::driver::CudaSlice;
use half::bf16;
use std::sync::{Arc, Mutex};

pub enum Storage {
    F32(CudaSlice<f32>),
    Bf16(CudaSlice<bf16>),
}

impl Storage {
    pub(crate) fn is_bf16(&self) -> bool {
        matches!(self, Storage::Bf16(_))
    }

    /// Bytes per stored value.
    pub(crate) fn value_bytes(&self) -> usize {
        if self.is_bf16() {
            2
        } else {
            4
        }
    }
}

pub struct CudaBuf {
    data: Storage,
    /// bf16 copy of the first `n` values (n = its length), if one was made since the last write.
    half: Mutex<Option<Arc<CudaSlice<bf16>>>>,
    /// Only matmuls read this buffer's values (see the module doc).
    matmul_input: bool,
    /// The last write went to the bf16 copy only.
    f32_stale: bool,
}

impl CudaBuf {
    fn with(data: Storage, matmul_input: bool) -> CudaBuf {
        CudaBuf { data, half: Mutex::new(None), matmul_input, f32_stale: false }
    }

    pub(crate) fn new(data: CudaSlice<f32>) -> CudaBuf {
        CudaBuf::with(Storage::F32(data), false)
    }

    pub(crate) fn new_matmul_input(data: CudaSlice<f32>) -> CudaBuf {
        CudaBuf::with(Storage::F32(data), true)
    }

    pub(crate) fn new_bf16(data: CudaSlice<bf16>) -> CudaBuf {
        CudaBuf::with(Storage::Bf16(data), false)
    }

    pub(crate) fn is_bf16(&self) -> bool {
        self.data.is_bf16()
    }

    pub(crate) fn is_matmul_input(&self) -> bool {
        self.matmul_input
    }

    /// The f32 storage; a bf16 buffer here is a caller's bug (only attention
    /// operands and projections are bf16), and so is a matmul input whose
    /// values live in bf16 only.
    pub(crate) fn data(&self) -> &CudaSlice<f32> {
        assert!(!self.f32_stale, "a matmul-input buffer holding only its bf16 copy was read by an op other than a matmul");
        match &self.data {
            Storage::F32(d) => d,
            Storage::Bf16(_) => panic!("a bf16 buffer (attention operand or projection) was passed to an op that takes f32 storage"),
        }
    }

    /// Mutable f32 storage for a kernel that writes it; forgets the bf16 copy.
    pub(crate) fn write(&mut self) -> &mut CudaSlice<f32> {
        *self.half.get_mut().expect("bf16 copy lock") = None;
        self.f32_stale = false;
        match &mut self.data {
            Storage::F32(d) => d,
            Storage::Bf16(_) => panic!("a bf16 buffer (attention operand or projection) was passed to an op that writes f32 storage"),
        }
    }

    /// Keeps `copy` as the bf16 copy of the first `copy.len()` values: the
    /// kernel that just wrote this buffer wrote both.
    pub(crate) fn keep_bf16(&mut self, copy: CudaSlice<bf16>) {
        *self.half.get_mut().expect("bf16 copy lock") = Some(Arc::new(copy));
    }

    /// Keeps `copy` as the buffer's only up-to-date values (a matmul input
    /// whose producing kernel skipped the f32 store).
    pub(crate) fn keep_bf16_only(&mut self, copy: CudaSlice<bf16>) {
        assert!(self.matmul_input, "only matmul-input buffers may hold their values in bf16 alone");
        self.keep_bf16(copy);
        self.f32_stale = true;
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

    /// Either storage, for the ops that take bf16 buffers.
    pub(crate) fn storage(&self) -> &Storage {
        assert!(!self.f32_stale, "a matmul-input buffer holding only its bf16 copy was read by an op other than a matmul");
        &self.data
    }

    /// Either storage, mutable, for ops that overwrite it; forgets the bf16 copy.
    pub(crate) fn storage_mut(&mut self) -> &mut Storage {
        *self.half.get_mut().expect("bf16 copy lock") = None;
        self.f32_stale = false;
        &mut self.data
    }

    /// The values when they live in the bf16 copy alone (for `download`).
    pub(crate) fn bf16_only(&self) -> Option<Arc<CudaSlice<bf16>>> {
        if !self.f32_stale {
            return None;
        }
        self.half.lock().expect("bf16 copy lock").clone()
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
