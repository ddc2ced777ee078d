//! Preallocated per-layer key/value cache, `[batch, kv_heads, cap, head_dim]`,
//! with a filled length per row so rows of different lengths share one batch.
//! On the GPU it is stored in bf16 (`Backend::zeros_attention`).

use super::config::ModelConfig;
use crate::backend::Backend;

pub struct KvCache<B: Backend> {
    pub k: Vec<B::Buf>,
    pub v: Vec<B::Buf>,
    pub batch: usize,
    pub cap: usize,
    /// Valid positions per row.
    pub lens: Vec<usize>,
}

impl<B: Backend> KvCache<B> {
    pub fn new(be: &B, cfg: &ModelConfig, batch: usize, cap: usize) -> KvCache<B> {
        let n = batch * cfg.num_kv_heads * cap * cfg.head_dim;
        KvCache {
            k: (0..cfg.num_layers).map(|_| be.zeros_attention(n)).collect(),
            v: (0..cfg.num_layers).map(|_| be.zeros_attention(n)).collect(),
            batch,
            cap,
            lens: vec![0; batch],
        }
    }
}
