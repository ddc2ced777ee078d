//! NVTX ranges around the engine's phases — a training step's forward, LM
//! head, backward and optimizer; generation's prefill, decode steps and
//! sampling; PPO's rollouts, rewards, scoring and update — so an `nsys
//! profile` timeline shows where a step's time goes. Without a profiler
//! attached, a range costs a call through NVTX's empty function table.

/// An open range; dropping it closes the range.
#[must_use = "the range closes when this guard drops"]
pub struct Range(());

/// Opens a range named `name` on this thread.
pub fn range(name: &str) -> Range {
    nvtx::range_push!("{name}");
    Range(())
}

impl Drop for Range {
    fn drop(&mut self) {
        nvtx::range_pop!();
    }
}
