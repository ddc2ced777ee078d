//! Whole-model optimizer ops in one launch each (kernels-ptx/adamw.cu): a
//! table of device pointers and a list of fixed-size chunks, one block per
//! chunk, replace a launch (and, for the norm, a download) per tensor.

use super::profile::Work;
use super::{Cuda, CudaBuf, Produced, THREADS};
use crate::backend::{AdamWStep, AdamWTensor};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use std::sync::Arc;

/// Elements per chunk, as `MT_CHUNK` in adamw.cu.
const CHUNK: usize = 65536;

/// Tables kept on the device, newest first: a trainer passes the same tensors
/// every step. Keyed by the tensors' addresses and sizes, which is all a table
/// holds, so a hit is always right.
const KEPT_TABLES: usize = 8;

/// A table with its key (pointers and sizes).
pub(super) type KeptTable = (Vec<u64>, Vec<usize>, Arc<ChunkTable>);

/// The device-side description of a tensor list.
pub(super) struct ChunkTable {
    ptrs: CudaSlice<u64>,
    sizes: CudaSlice<i64>,
    chunk_tensor: CudaSlice<i32>,
    chunk_start: CudaSlice<i64>,
    chunks: usize,
}

impl Cuda {
    /// The table of `ptrs` (`ptrs.len() / sizes.len()` per tensor), uploaded
    /// unless a kept one describes the same tensors.
    fn chunk_table(&self, ptrs: Vec<u64>, sizes: &[usize]) -> Arc<ChunkTable> {
        let mut kept = self.tables.lock().expect("table cache lock");
        if let Some(i) = kept.iter().position(|(p, s, _)| *p == ptrs && s == sizes) {
            let hit = kept.remove(i);
            let table = hit.2.clone();
            kept.insert(0, hit);
            return table;
        }
        let table = Arc::new(self.upload_table(&ptrs, sizes));
        kept.insert(0, (ptrs, sizes.to_vec(), table.clone()));
        kept.truncate(KEPT_TABLES);
        table
    }

    fn upload_table(&self, ptrs: &[u64], sizes: &[usize]) -> ChunkTable {
        // The kernels read four values per access; every buffer is an allocation of its own (256-byte aligned).
        assert!(ptrs.iter().all(|p| p % 16 == 0), "multi-tensor kernels need 16-byte aligned buffers");
        let (mut chunk_tensor, mut chunk_start) = (Vec::new(), Vec::new());
        for (t, &n) in sizes.iter().enumerate() {
            for start in (0..n).step_by(CHUNK) {
                chunk_tensor.push(t as i32);
                chunk_start.push(start as i64);
            }
        }
        let sizes: Vec<i64> = sizes.iter().map(|&n| n as i64).collect();
        let up = |e| format!("uploading a tensor table: {e}");
        ChunkTable {
            chunks: chunk_tensor.len(),
            ptrs: self.stream.clone_htod(ptrs).unwrap_or_else(|e| panic!("{}", up(e))),
            sizes: self.stream.clone_htod(&sizes).unwrap_or_else(|e| panic!("{}", up(e))),
            chunk_tensor: self.stream.clone_htod(&chunk_tensor).unwrap_or_else(|e| panic!("{}", up(e))),
            chunk_start: self.stream.clone_htod(&chunk_start).unwrap_or_else(|e| panic!("{}", up(e))),
        }
    }

    fn per_chunk(table: &ChunkTable) -> LaunchConfig {
        LaunchConfig { grid_dim: (table.chunks.max(1) as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: 0 }
    }

    /// AdamW over every tensor; in bf16 math each weight's bf16 working copy
    /// is rewritten by the same kernel (into last step's copy when it can).
    pub(crate) fn adamw_all(&self, mut tensors: Vec<AdamWTensor<'_, CudaBuf>>, hp: AdamWStep) {
        if tensors.is_empty() {
            return;
        }
        let sizes: Vec<usize> = tensors.iter().map(|t| t.param.len()).collect();
        let decays: Vec<f32> = tensors.iter().map(|t| t.weight_decay).collect();
        let outputs: Vec<Produced> = tensors
            .iter_mut()
            .map(|t| {
                let n = t.param.len();
                self.produce(t.param, n, true)
            })
            .collect();
        let ptrs = tensors
            .iter_mut()
            .zip(&outputs)
            .flat_map(|(t, o)| {
                assert!(o.keep_f32, "weights are f32 masters, never matmul-input buffers");
                [o.f32, self.ptr(t.grad.data()), self.ptr(t.m.write()), self.ptr(t.v.write()), o.bf16]
            })
            .collect();
        let table = self.chunk_table(ptrs, &sizes);
        let decays = self.floats(&decays);
        let bc1 = 1.0 - hp.beta1.powi(hp.step as i32);
        let bc2 = 1.0 - hp.beta2.powi(hp.step as i32);
        let (t, cfg) = (&table, Self::per_chunk(&table));
        // Per value: the weight, gradient and both moments read, the weight and moments written, the bf16 copy when kept.
        let work = Work::bytes(sizes.iter().zip(&outputs).map(|(&n, o)| n * (24 + o.value_bytes())).sum());
        launch!(
            self,
            "adamw_multi_f32",
            cfg,
            work work;
            &t.ptrs,
            &t.sizes,
            &decays,
            &t.chunk_tensor,
            &t.chunk_start,
            &hp.lr,
            &hp.beta1,
            &hp.beta2,
            &hp.eps,
            &bc1,
            &bc2,
            &hp.grad_scale
        );
        for (t, o) in tensors.iter_mut().zip(outputs) {
            o.done(t.param);
        }
    }

    pub(crate) fn sum_squares_all(&self, bufs: &[&CudaBuf]) -> f64 {
        let sizes: Vec<usize> = bufs.iter().map(|b| b.len()).collect();
        let table = self.chunk_table(bufs.iter().map(|b| self.ptr(b.data())).collect(), &sizes);
        let mut partial = self.scratch(table.chunks);
        let (t, cfg) = (&table, Self::per_chunk(&table));
        let work = Work::bytes(4 * sizes.iter().sum::<usize>() + 4 * table.chunks);
        launch!(self, "sum_squares_multi", cfg, work work; &mut partial, &t.ptrs, &t.sizes, &t.chunk_tensor, &t.chunk_start);
        // Summed in chunk order on the host: deterministic.
        self.fetch(&partial)[..table.chunks].iter().map(|&x| x as f64).sum()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn chunk_size_matches_the_kernel() {
        let src = include_str!("../../../kernels-ptx/adamw.cu");
        assert!(src.contains(&format!("#define MT_CHUNK {}\n", super::CHUNK)));
    }
}
