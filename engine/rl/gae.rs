//! Generalized advantage estimation (Schulman et al., 2016) per sequence, and
//! advantage whitening over a batch's valid tokens.

/// Advantages and returns for one sequence of per-token rewards and values
/// (the value after the last token is 0: the episode ends there).
pub fn gae(rewards: &[f32], values: &[f32], gamma: f32, lambda: f32) -> (Vec<f32>, Vec<f32>) {
    assert_eq!(rewards.len(), values.len());
    let n = rewards.len();
    let mut adv = vec![0f32; n];
    let mut next_adv = 0f32;
    for t in (0..n).rev() {
        let next_v = if t + 1 < n { values[t + 1] } else { 0.0 };
        let delta = rewards[t] + gamma * next_v - values[t];
        next_adv = delta + gamma * lambda * next_adv;
        adv[t] = next_adv;
    }
    let ret = adv.iter().zip(values).map(|(a, v)| a + v).collect();
    (adv, ret)
}

/// `(x - mean) / (std + 1e-8)` over all values of all sequences; returns the
/// factor `1 / (std + 1e-8)` it scaled by (1 when there are fewer than 2 values,
/// which are left as they are).
pub fn whiten(seqs: &mut [Vec<f32>]) -> f64 {
    let n: usize = seqs.iter().map(Vec::len).sum();
    if n < 2 {
        return 1.0;
    }
    let mean = seqs.iter().flatten().map(|&x| x as f64).sum::<f64>() / n as f64;
    let var = seqs.iter().flatten().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let inv = 1.0 / (var.sqrt() + 1e-8);
    for x in seqs.iter_mut().flatten() {
        *x = ((*x as f64 - mean) * inv) as f32;
    }
    inv
}
