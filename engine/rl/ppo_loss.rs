//! The PPO losses per token, as values and gradients with respect to the new
//! logprob (policy) or the value (critic).
//!
//! Clipping modes (DESIGN.md "Clipping options"):
//! - `Standard`: `max(-A·ρ, -A·clip(ρ, 1±ε))`.
//! - `Dual { c }`: standard, with the loss of negative advantages bounded by `-c·A` (Ye et al., 2020).
//! - `TokenAware { eps_tok }`: tokens that carry a token-level reward clip at `ε_tok > ε`,
//!   so their signal is not damped.
//! - `Decoupled { eps_tok }`: the advantage is split into its instance part, clipped as
//!   standard, and its token-reward part, clipped at `1 ± ε_tok` (∞ leaves it unclipped).

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ClipMode {
    Standard,
    Dual { c: f32 },
    TokenAware { eps_tok: f32 },
    Decoupled { eps_tok: f32 },
}

/// One token of the policy loss.
#[derive(Clone, Copy, Debug)]
pub struct PolicyToken {
    pub logp: f32,
    pub logp_old: f32,
    /// Total advantage (instance + token parts).
    pub adv: f32,
    /// The token-reward part of `adv` (used by `Decoupled`).
    pub adv_tok: f32,
    /// Whether this token carries a nonzero token-level reward (used by `TokenAware`).
    pub has_token_reward: bool,
}

/// `-A·clip-surrogate` and its derivative in `logp`, plus whether clipping bit.
fn clipped_surrogate(ratio: f32, adv: f32, eps: f32) -> (f32, f32, bool) {
    let unclipped = -adv * ratio;
    let clipped = -adv * ratio.clamp(1.0 - eps, 1.0 + eps);
    if unclipped >= clipped {
        (unclipped, -adv * ratio, false)
    } else {
        (clipped, 0.0, true)
    }
}

/// `(loss, ∂loss/∂logp, clipped)` for one token.
pub fn policy_token(t: PolicyToken, eps: f32, mode: ClipMode) -> (f32, f32, bool) {
    let ratio = (t.logp - t.logp_old).exp();
    match mode {
        ClipMode::Standard => clipped_surrogate(ratio, t.adv, eps),
        ClipMode::TokenAware { eps_tok } => clipped_surrogate(ratio, t.adv, if t.has_token_reward { eps_tok } else { eps }),
        ClipMode::Dual { c } => {
            let (loss, grad, clipped) = clipped_surrogate(ratio, t.adv, eps);
            let bound = -c * t.adv;
            if t.adv < 0.0 && loss > bound {
                (bound, 0.0, true)
            } else {
                (loss, grad, clipped)
            }
        }
        ClipMode::Decoupled { eps_tok } => {
            let (l1, g1, c1) = clipped_surrogate(ratio, t.adv - t.adv_tok, eps);
            let (l2, g2, c2) = clipped_surrogate(ratio, t.adv_tok, eps_tok);
            (l1 + l2, g1 + g2, c1 || c2)
        }
    }
}

/// Clipped value loss `½·max((V-R)², (clip(V, V_old±ε)-R)²)`: `(loss, ∂loss/∂V)`.
pub fn value_token(v: f32, v_old: f32, ret: f32, eps: f32) -> (f32, f32) {
    let vc = v_old + (v - v_old).clamp(-eps, eps);
    let (a, b) = ((v - ret).powi(2), (vc - ret).powi(2));
    if a >= b {
        (0.5 * a, v - ret)
    } else {
        // The clipped branch is flat in V outside the band.
        let inside = (v - v_old).abs() <= eps;
        (0.5 * b, if inside { vc - ret } else { 0.0 })
    }
}
