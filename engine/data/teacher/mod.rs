//! Teachers reflect on a repair pair (is it a security fix, which lines are
//! the vulnerable sequence, what makes the fix secure, how confident) and
//! write implicit prompts. `heuristic` runs offline; `chat` drives an
//! OpenAI-compatible endpoint (`http`) or our own engine (`local`).

pub mod chat;
pub mod heuristic;
pub mod http;
pub mod local;

use super::pairs::RepairPair;
use super::prompts::Signature;
use super::record::{Message, Reflection};
use crate::lang::Lang;
use anyhow::Result;

/// What a teacher sees of a pair.
pub struct PairView<'a> {
    pub pair: &'a RepairPair,
    pub lang: Lang,
    pub sig: &'a Signature,
}

pub trait Teacher: Send + Sync {
    /// Names the teacher in records and in cache keys.
    fn name(&self) -> String;
    /// Whether answers are worth caching (remote or slow teachers).
    fn cacheable(&self) -> bool;
    fn reflect(&self, view: &PairView) -> Result<Reflection>;
    /// Up to `n` candidate prompts; `rejected` lists earlier ones that leaked
    /// security terms, so the teacher can avoid them. Returns the exchange too.
    fn prompts(&self, view: &PairView, n: usize, rejected: &[String]) -> Result<(Vec<String>, Vec<Message>)>;
}
