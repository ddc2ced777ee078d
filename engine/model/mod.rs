//! The decoder model: config, parameters, checkpoint I/O, and its explicit
//! forward and backward passes.

pub mod config;
pub mod kv_cache;
pub mod params;
pub mod step_buffers;
pub mod training;
pub mod transformer;
pub mod weights;

pub use config::{Arch, ModelConfig};
pub use kv_cache::KvCache;
pub use params::{param_specs, Params, TensorSpec};
pub use step_buffers::StepBuffers;
pub use training::{Batch, GradWrite, TrainState};
pub use transformer::Transformer;
