//! vul2safe: a from-scratch engine that trains code LLMs to write secure code.
//!
//! Data flows one way: tokens, then batches, then the model's forward and
//! backward passes on a [`backend::Backend`], then the optimizer. Every op has
//! a readable CPU f32 reference in [`backend::cpu`].

pub mod backend;
pub mod bench;
pub mod data;
pub mod demo;
pub mod eval;
pub mod fsutil;
pub mod generate;
pub mod lang;
pub mod model;
pub mod prompt;
pub mod rl;
pub mod tensor;
pub mod tokenizer;
pub mod trace;
pub mod train;
