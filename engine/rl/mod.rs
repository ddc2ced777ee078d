//! Reinforcement learning (SRCode's PPO stages): rewards at the instance and
//! token level, KL control, GAE, the PPO losses with their clipping variants,
//! the critic, and the PPO loop. Each piece is a plain function on the CPU.

pub mod align;
pub mod critic;
pub mod gae;
pub mod kl;
pub mod ppo;
pub mod ppo_loss;
pub mod reward;
