//! Token-level longest-common-subsequence alignment: which generated tokens
//! reproduce tokens of the reference secure function.

/// For each token of `a`, the index of the token of `b` it is matched to by
/// one longest common subsequence (ties broken toward earlier `a` tokens).
pub fn lcs_matches(a: &[u32], b: &[u32]) -> Vec<Option<usize>> {
    let (n, m) = (a.len(), b.len());
    // dp[i][j] = LCS length of a[i..] and b[j..], row-major (n+1)×(m+1).
    let w = m + 1;
    let mut dp = vec![0u32; (n + 1) * w];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            dp[i * w + j] = if a[i] == b[j] { dp[(i + 1) * w + j + 1] + 1 } else { dp[(i + 1) * w + j].max(dp[i * w + j + 1]) };
        }
    }
    let mut out = vec![None; n];
    let (mut i, mut j) = (0, 0);
    while i < n && j < m {
        if a[i] == b[j] {
            out[i] = Some(j);
            i += 1;
            j += 1;
        } else if dp[(i + 1) * w + j] >= dp[i * w + j + 1] {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}
