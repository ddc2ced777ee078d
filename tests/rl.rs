//! The RL pieces: logit gradients of the policy loss, the PPO losses and
//! their clipping modes, GAE, KL estimators and control, rewards and their
//! placement, LCS alignment, and the policy/critic passes through the model.

mod common;

use common::{assert_close, fixture_dir};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vul2safe::backend::cpu::Cpu;
use vul2safe::backend::{Backend, IGNORE};
use vul2safe::eval::finding::{Finding, Pos, Severity};
use vul2safe::generate::{generate, SamplingConfig};
use vul2safe::model::{Batch, GradWrite, Params, TrainState, Transformer};
use vul2safe::rl::align::lcs_matches;
use vul2safe::rl::critic::Critic;
use vul2safe::rl::gae::{gae, whiten};
use vul2safe::rl::kl::{AdaptiveKl, KlEstimator};
use vul2safe::rl::ppo_loss::{policy_token, value_token, ClipMode, PolicyToken};
use vul2safe::rl::reward::{assemble, token_rewards, Placement, Reference, RewardConfig, RewardMode, Verdict};

fn fd(f: impl Fn(f32) -> f32, x: f32) -> f32 {
    let h = 1e-3;
    (f(x + h) - f(x - h)) / (2.0 * h)
}

#[test]
fn logit_gradient_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (rows, vocab) = (3, 11);
    let logits: Vec<f32> = (0..rows * vocab).map(|_| rng.random_range(-2.0..2.0)).collect();
    let targets = [4u32, 0, IGNORE];
    let (c_logp, c_ent) = ([0.7f32, -1.3, 0.5], [0.2f32, -0.4, 0.9]);
    // At temperature 1 and at a sampling temperature of 0.7 (logits times 1/0.7).
    for inv_temp in [1.0, 0.7f32.recip()] {
        // L = Σ c_logp·logp + c_ent·H, linear in (logp, H), so its gradient is what the op writes.
        let loss = |x: &[f32]| -> f64 {
            let (lp, h) = Cpu.logprob_entropy(&x.to_vec(), &targets, vocab, inv_temp);
            (0..rows).map(|r| if targets[r] == IGNORE { 0.0 } else { (c_logp[r] * lp[r] + c_ent[r] * h[r]) as f64 }).sum()
        };
        let mut g = logits.clone();
        Cpu.logit_grad_inplace(&mut g, &targets, &c_logp, &c_ent, vocab, inv_temp);
        for i in 0..rows * vocab {
            let (mut p, mut m) = (logits.clone(), logits.clone());
            p[i] += 1e-2;
            m[i] -= 1e-2;
            let num = ((loss(&p) - loss(&m)) / 2e-2) as f32;
            assert!((num - g[i]).abs() < 2e-3, "inv_temp {inv_temp}, logit {i}: numeric {num} analytic {}", g[i]);
        }
        let (lp, h) = Cpu.logprob_entropy(&logits, &targets, vocab, inv_temp);
        let z: f32 = logits[..vocab].iter().map(|x| (x * inv_temp).exp()).sum::<f32>().ln();
        assert!((lp[0] - (logits[4] * inv_temp - z)).abs() < 1e-5 && h.iter().all(|&e| e > 0.0 && e <= (vocab as f32).ln() + 1e-5));
    }
}

#[test]
fn ppo_losses_have_the_right_gradients_and_clipping() {
    let base = PolicyToken { logp: -1.0, logp_old: -1.1, adv: 0.8, adv_tok: 0.3, has_token_reward: true };
    let modes =
        [ClipMode::Standard, ClipMode::Dual { c: 3.0 }, ClipMode::TokenAware { eps_tok: 0.5 }, ClipMode::Decoupled { eps_tok: 0.5 }];
    for mode in modes {
        for adv in [0.8f32, -0.8] {
            for logp in [-1.05f32, -0.6, -1.6] {
                let t = PolicyToken { logp, adv, ..base };
                let (_, g, _) = policy_token(t, 0.2, mode);
                let num = fd(|x| policy_token(PolicyToken { logp: x, ..t }, 0.2, mode).0, logp);
                assert!((num - g).abs() < 1e-2, "{mode:?} adv {adv} logp {logp}: numeric {num} analytic {g}");
            }
        }
    }
    // ρ = e^0.5 ≈ 1.65 with A > 0: standard clips (no gradient), a wide token band does not.
    let far = PolicyToken { logp: -0.6, logp_old: -1.1, adv: 1.0, adv_tok: 0.0, has_token_reward: true };
    assert_eq!(policy_token(far, 0.2, ClipMode::Standard).1, 0.0);
    assert!(policy_token(far, 0.2, ClipMode::TokenAware { eps_tok: 1.0 }).1 < 0.0);
    assert_eq!(policy_token(PolicyToken { has_token_reward: false, ..far }, 0.2, ClipMode::TokenAware { eps_tok: 1.0 }).1, 0.0);
    // Dual clip bounds the loss of a negative advantage at -c·A.
    let neg = PolicyToken { logp: 0.5, logp_old: -1.0, adv: -1.0, ..far };
    assert_eq!(policy_token(neg, 0.2, ClipMode::Dual { c: 3.0 }).0, 3.0);
    assert!(policy_token(neg, 0.2, ClipMode::Standard).0 > 3.0);
    // Decoupled: the token part keeps its gradient where the instance part is clipped.
    let split = PolicyToken { adv: 1.0, adv_tok: 0.6, ..far };
    let (_, g, _) = policy_token(split, 0.2, ClipMode::Decoupled { eps_tok: f32::INFINITY });
    assert!((g - (-0.6 * (0.5f32).exp())).abs() < 1e-5, "{g}");
    for (v, v_old, ret) in [(0.5f32, 0.4, 1.0), (0.9, 0.4, 1.0), (-0.2, 0.4, -1.0)] {
        let (_, g) = value_token(v, v_old, ret, 0.2);
        let num = fd(|x| value_token(x, v_old, ret, 0.2).0, v);
        assert!((num - g).abs() < 1e-2, "value {v}: {num} vs {g}");
    }
}

#[test]
fn gae_kl_and_whitening() {
    let (a, r) = gae(&[0.0, 0.0, 1.0], &[0.0, 0.0, 0.0], 1.0, 1.0);
    assert_eq!((a, r), (vec![1.0, 1.0, 1.0], vec![1.0, 1.0, 1.0]));
    let (a, _) = gae(&[1.0, 2.0], &[0.5, 0.25], 0.9, 0.5);
    let d1 = 2.0 - 0.25;
    let d0 = 1.0 + 0.9 * 0.25 - 0.5;
    assert!((a[1] - d1).abs() < 1e-6 && (a[0] - (d0 + 0.45 * d1)).abs() < 1e-6);
    let mut s = vec![vec![1.0, 2.0], vec![3.0, 4.0, 5.0]];
    whiten(&mut s);
    let flat: Vec<f32> = s.concat();
    assert!(flat.iter().sum::<f32>().abs() < 1e-5);
    assert!(KlEstimator::K3.estimate(-1.0, -0.5) > 0.0 && KlEstimator::K3.estimate(-0.5, -0.5) == 0.0);
    assert_eq!(KlEstimator::K1.estimate(-1.0, -0.5), -0.5);
    let mut c = AdaptiveKl { coef: 0.1, target: 1.0, horizon: 100.0 };
    c.update(5.0, 10);
    assert!((c.coef - 0.1 * 1.02).abs() < 1e-6, "raised by the clipped error");
    c.update(0.0, 10);
    assert!(c.coef < 0.1 * 1.02);
}

fn finding(bytes: [usize; 2], severity: Severity) -> Finding {
    Finding {
        tool: "t".into(),
        rule: "r".into(),
        cwe: "CWE-1".into(),
        severity,
        file: "f".into(),
        start: Pos { line: 1, col: 1 },
        end: Pos { line: 1, col: 1 },
        bytes,
        message: String::new(),
    }
}

#[test]
fn token_rewards_place_bonuses_and_penalties() {
    // Tokens 0..8, each 2 bytes of text.
    let tokens: Vec<u32> = vec![10, 11, 12, 13, 14, 15, 16, 17];
    let offsets: Vec<(usize, usize)> = (0..8).map(|i| (2 * i, 2 * i + 2)).collect();
    let reference = Reference {
        secure: vec![11, 12, 99, 15],
        secure_in_span: vec![false, true, true, true],
        vulnerable: vec![13, 14, 15, 16, 7],
        vulnerable_in_span: vec![true, true, false, false, false],
    };
    let cfg = RewardConfig { alpha: 0.6, beta: 0.5, beta_ref: 0.25, ngram: 4, placement: Placement::Spread, ..RewardConfig::default() };
    let high = [finding([4, 8], Severity::High)]; // tokens 2 and 3
    fn verdict(findings: &[Finding]) -> Verdict<'_> {
        Verdict { findings, is_code: true, length_ratio: None, passed: None }
    }
    let r = token_rewards(&tokens, &offsets, &verdict(&high), &reference, &cfg);
    assert_eq!(r.instance, -1.0);
    assert_eq!(r.high_medium, 1);
    // LCS aligns 11, 12, 15; 11 is outside the secure span, so 12 and 15 share α.
    let bonus: Vec<usize> = (0..8).filter(|&i| r.secure_bonus[i] > 0.0).collect();
    assert_eq!(bonus, vec![2, 5]);
    assert!((r.secure_bonus.iter().sum::<f32>() - 0.6).abs() < 1e-6);
    // Finding: -0.5 over tokens 2..=3; the n-gram 13 14 15 16 (tokens 3..=6): -0.25 spread.
    let expect = [0.0, 0.0, -0.25, -0.25 - 0.0625, -0.0625, -0.0625, -0.0625, 0.0];
    for (g, e) in r.penalties.iter().zip(expect) {
        assert!((g - e).abs() < 1e-6, "{:?}", r.penalties);
    }
    let last = token_rewards(&tokens, &offsets, &verdict(&high), &reference, &RewardConfig { placement: Placement::Last, ..cfg.clone() });
    assert!((last.penalties[3] - (-0.5)).abs() < 1e-6 && (last.penalties[6] - (-0.25)).abs() < 1e-6);
    assert!(
        (last.penalties.iter().sum::<f32>() - r.penalties.iter().sum::<f32>()).abs() < 1e-6,
        "placement moves, never changes, the total"
    );
    // Both reward modes carry the same total signal; only its placement differs.
    let kl = vec![0.1f32; 8];
    let (i1, t1) = assemble(&r, &kl, 0.5, RewardMode::Instance);
    let (i2, t2) = assemble(&r, &kl, 0.5, RewardMode::Tlr);
    let total = |a: &[f32], b: &[f32]| a.iter().chain(b).sum::<f32>();
    assert!((total(&i1, &t1) - total(&i2, &t2)).abs() < 1e-5);
    assert!(t1.iter().all(|&x| x == 0.0) && t2.iter().any(|&x| x != 0.0));
    let low = [finding([0, 2], Severity::Low)];
    let clean = token_rewards(&tokens, &offsets, &verdict(&low), &reference, &cfg);
    assert_eq!(clean.instance, 1.0, "low findings do not spoil the clean reward");
    let no_code = Verdict { findings: &low, is_code: false, length_ratio: None, passed: None };
    assert_eq!(token_rewards(&tokens, &offsets, &no_code, &reference, &cfg).instance, 0.0, "no code is not clean code");
    let flagged_prose = Verdict { findings: &high, is_code: false, length_ratio: None, passed: None };
    assert_eq!(token_rewards(&tokens, &offsets, &flagged_prose, &reference, &cfg).instance, -1.0, "findings count without a function");
    // With `coverage`, clean code shorter than that share of the fix earns
    // r_clean in proportion; longer code, findings and no reference as before.
    let covered = RewardConfig { coverage: 0.8, ..cfg.clone() };
    let instance = |findings: &[Finding], length_ratio| {
        let v = Verdict { findings, is_code: true, length_ratio, passed: None };
        token_rewards(&tokens, &offsets, &v, &reference, &covered).instance
    };
    assert_eq!(instance(&low, Some(0.4)), 0.5, "a one-line body is half the repair");
    assert_eq!(instance(&low, Some(1.2)), 1.0);
    assert_eq!(instance(&low, None), 1.0);
    assert_eq!(instance(&high, Some(0.4)), -1.0, "penalties are not scaled");
    assert_eq!(token_rewards(&tokens, &offsets, &verdict(&low), &reference, &cfg).instance, 1.0, "off by default");
}

#[test]
fn lcs_alignment_is_a_longest_common_subsequence() {
    let m = lcs_matches(&[1, 2, 3, 4, 5], &[2, 9, 4, 5, 1]);
    assert_eq!(m, vec![None, Some(0), None, Some(2), Some(3)]);
    assert!(lcs_matches(&[], &[1]).is_empty());
}

fn fixture_batch(m: &Transformer<Cpu>) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let (b, t) = (2, 9);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..m.cfg.vocab_size as u32)).collect();
    let mut mask = vec![true; b * t];
    mask[3] = false;
    Batch::causal_lm(ids, &mask, b, t, 15.0)
}

#[test]
fn policy_pass_reduces_to_cross_entropy_and_scores_match() {
    let m = Transformer::load(&Cpu, &fixture_dir("qwen2_b")).unwrap();
    let batch = fixture_batch(&m);
    let mut st = TrainState::new(&Cpu, &m.cfg, batch.batch, batch.seq);
    let mut g_ce = Params::build(&m.cfg, |s| vec![0.0; s.numel()]);
    let loss_ce = m.forward_backward(&Cpu, &batch, &mut st, &mut g_ce, GradWrite::Add).unwrap();
    let mut g_pg = Params::build(&m.cfg, |s| vec![0.0; s.numel()]);
    let w = batch.weights.clone();
    let loss_pg = m
        .forward_backward_policy(&Cpu, &batch, &mut st, &mut g_pg, GradWrite::Add, 1.0, |r0, logp, _| {
            let c: Vec<f32> = (0..logp.len()).map(|k| -w[r0 + k]).collect();
            let loss = (0..logp.len()).map(|k| -(w[r0 + k] * logp[k]) as f64).sum();
            (c, vec![0.0; logp.len()], loss)
        })
        .unwrap();
    assert!((loss_ce - loss_pg).abs() < 1e-6 * loss_ce.abs());
    for (a, b) in g_pg.iter().into_iter().zip(g_ce.iter()) {
        assert_close("policy grad", a, b, 1e-5, 1e-6);
    }
    // score_batch agrees with Transformer::score on each row.
    let (lp, _) = m.score_batch(&Cpu, &batch, &mut st, 1.0).unwrap();
    let rows: Vec<Vec<u32>> = batch.ids.chunks(batch.seq).map(|c| c.to_vec()).collect();
    let scored = m.score(&Cpu, &rows, 1.0).unwrap();
    for (i, row) in scored.iter().enumerate() {
        for (t, want) in row.iter().enumerate() {
            let got = lp[i * batch.seq + t];
            if batch.targets[i * batch.seq + t] != IGNORE {
                assert!((got - want).abs() < 1e-4, "row {i} pos {t}: {got} vs {want}");
            }
        }
    }
    // At temperature 0.5 it scores the full forward's logits doubled.
    let (lp_t, _) = m.score_batch(&Cpu, &batch, &mut st, 0.5).unwrap();
    let logits = m.forward_logits(&Cpu, &batch.ids, batch.batch, batch.seq).unwrap();
    let v = m.cfg.vocab_size;
    let mut moved = 0f32;
    for (r, &t) in batch.targets.iter().enumerate().filter(|(_, &t)| t != IGNORE) {
        let z: Vec<f32> = logits[r * v..(r + 1) * v].iter().map(|x| 2.0 * x).collect();
        let log_z = z.iter().map(|x| x.exp()).sum::<f32>().ln();
        let want = z[t as usize] - log_z;
        assert!((lp_t[r] - want).abs() < 1e-4, "row {r}: {} vs {want}", lp_t[r]);
        moved = moved.max((lp_t[r] - lp[r]).abs());
    }
    assert!(moved > 0.1, "the temperature changed no logprob by more than {moved}");
}

/// PPO's ratio is of the policy that sampled: a rollout drawn at temperature
/// 0.7 has, under `score_batch` at 0.7, the logprobs generation returned.
#[test]
fn tempered_scores_are_the_sampling_distributions_logprobs() {
    let m = Transformer::load(&Cpu, &fixture_dir("qwen2_b")).unwrap();
    let prompt = vec![4u32, 8, 15, 16, 23, 42];
    let cfg = SamplingConfig { max_new_tokens: 10, temperature: 0.7, seed: 7, ..Default::default() };
    let g = generate(&Cpu, &m, std::slice::from_ref(&prompt), &cfg).unwrap().remove(0);
    let ids: Vec<u32> = prompt.iter().chain(&g.tokens).copied().collect();
    let n = ids.len();
    let batch = Batch::causal_lm(ids, &vec![true; n], 1, n, 1.0);
    let mut st = TrainState::new(&Cpu, &m.cfg, 1, n);
    let (lp, _) = m.score_batch(&Cpu, &batch, &mut st, 0.7).unwrap();
    let (lp_untempered, _) = m.score_batch(&Cpu, &batch, &mut st, 1.0).unwrap();
    let (scored, plain) = (&lp[prompt.len() - 1..n - 1], &lp_untempered[prompt.len() - 1..n - 1]);
    assert_close("tempered scores", scored, &g.logprobs, 1e-4, 1e-5);
    assert!(plain.iter().zip(&g.logprobs).any(|(a, b)| (a - b).abs() > 1e-2), "at temperature 1 the scores differ");
}

#[test]
fn critic_learns_a_fixed_return() {
    let m = Transformer::load(&Cpu, &fixture_dir("llama_a")).unwrap();
    let batch = fixture_batch(&m);
    let mut critic = Critic::new(&Cpu, m);
    let target = 0.7f32;
    let loss_at = |critic: &mut Critic<Cpu>| critic.values(&Cpu, &batch).unwrap().iter().map(|v| (v - target).powi(2)).sum::<f32>();
    let before = loss_at(&mut critic);
    for _ in 0..30 {
        critic
            .train_step(&Cpu, &batch, 1e-2, 1.0, |values| {
                let dv: Vec<f32> = values.iter().map(|v| (v - target) / values.len() as f32).collect();
                (dv, 0.0)
            })
            .unwrap();
    }
    assert!(loss_at(&mut critic) < 0.1 * before, "value loss falls");
}
