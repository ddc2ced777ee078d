//! Per-token KL estimators between the policy and the frozen reference, and
//! the adaptive KL controller of Ziegler et al. (2019).

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KlEstimator {
    /// `logπ - logπ_ref`: unbiased, can be negative per token.
    K1,
    /// `exp(-d) + d - 1` with `d = logπ - logπ_ref`: unbiased, never negative, lower variance.
    K3,
}

impl KlEstimator {
    pub fn parse(name: &str) -> anyhow::Result<KlEstimator> {
        match name {
            "k1" => Ok(KlEstimator::K1),
            "k3" => Ok(KlEstimator::K3),
            other => anyhow::bail!("--kl-estimator must be k1 or k3, got {other:?}"),
        }
    }

    pub fn estimate(self, logp: f32, logp_ref: f32) -> f32 {
        let d = logp - logp_ref;
        match self {
            KlEstimator::K1 => d,
            KlEstimator::K3 => (-d).exp() + d - 1.0,
        }
    }
}

/// Moves the KL coefficient toward a target KL per sequence.
#[derive(Clone, Copy, Debug)]
pub struct AdaptiveKl {
    pub coef: f32,
    pub target: f32,
    /// Sequences over which the coefficient may double or halve.
    pub horizon: f32,
}

impl AdaptiveKl {
    /// Updates with the mean per-sequence KL of a batch of `n` sequences.
    pub fn update(&mut self, kl: f32, n: usize) {
        if self.target <= 0.0 || !kl.is_finite() {
            return;
        }
        let err = (kl / self.target - 1.0).clamp(-0.2, 0.2);
        self.coef *= 1.0 + err * n as f32 / self.horizon;
    }
}
