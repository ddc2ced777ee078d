//! The unbiased pass@k estimator (Chen et al., 2021): with `n` samples of
//! which `c` are correct, `1 - C(n-c, k) / C(n, k)`, computed as a product
//! so that large `n` does not overflow. secure@k uses it with `c` = samples
//! without high or medium findings.

pub fn pass_at_k(n: usize, c: usize, k: usize) -> f64 {
    assert!(c <= n && k >= 1 && k <= n, "pass@k needs c ≤ n and 1 ≤ k ≤ n");
    if n - c < k {
        return 1.0;
    }
    1.0 - ((n - c + 1)..=n).map(|i| 1.0 - k as f64 / i as f64).product::<f64>()
}

/// The mean estimate over tasks, each given as `(n, c)`.
pub fn mean_at_k(tasks: &[(usize, usize)], k: usize) -> f64 {
    let usable: Vec<f64> = tasks.iter().filter(|(n, _)| *n >= k).map(|&(n, c)| pass_at_k(n, c, k)).collect();
    usable.iter().sum::<f64>() / usable.len().max(1) as f64
}
