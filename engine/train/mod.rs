//! Optimizer and training utilities: AdamW over a parameter set, global
//! grad-norm clipping, LR schedules, and the accumulate-then-step loop.

pub mod checkpoint;
pub mod optimizer;
pub mod schedule;
pub mod sft;
pub mod trainer;

pub use optimizer::{AdamW, AdamWConfig};
pub use schedule::{LrSchedule, ScheduleKind};
pub use trainer::{StepStats, Trainer, TrainerConfig};
