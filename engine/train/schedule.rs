//! Learning-rate schedules: linear warmup, then cosine or linear decay to a floor.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    Cosine,
    Linear,
    Constant,
}

#[derive(Clone, Copy, Debug)]
pub struct LrSchedule {
    pub kind: ScheduleKind,
    pub peak: f32,
    pub min: f32,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl LrSchedule {
    /// The LR for update `step` (0-based).
    pub fn lr_at(&self, step: u64) -> f32 {
        if step < self.warmup_steps {
            return self.peak * (step + 1) as f32 / self.warmup_steps as f32;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f32 / span as f32).min(1.0);
        let frac = match self.kind {
            ScheduleKind::Cosine => 0.5 * (1.0 + (std::f32::consts::PI * progress).cos()),
            ScheduleKind::Linear => 1.0 - progress,
            ScheduleKind::Constant => 1.0,
        };
        self.min + (self.peak - self.min) * frac
    }
}
