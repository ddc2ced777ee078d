//! PPO end to end on a tiny model: both reward modes run and log their
//! metrics, a resumed run matches an uninterrupted one bit for bit, and bad
//! flags are refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let policy = common::tiny_model(dir, "policy", 1, 256, 5);
    let data = common::embedded_data(dir);
    (policy, data)
}

fn ppo(policy: &Path, data: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_vul2safe"))
        .args(["ppo", "--policy", policy.to_str().unwrap(), "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()])
        .args(["--rollout-batch", "4", "--minibatch", "2", "--epochs", "2", "--max-new-tokens", "24", "--seed", "3"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn both_reward_modes_train_and_log() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, data) = setup(dir.path());
    // The last samples and trains at a temperature other than 1.
    for (mode, clip, temp) in
        [("instance", "standard", "1"), ("tlr", "decoupled", "1"), ("tlr", "dual", "1"), ("tlr", "token-aware", "0.7")]
    {
        let out = dir.path().join(format!("{mode}-{clip}"));
        let o = ppo(&policy, &data, &out, &["--reward", mode, "--clip", clip, "--iters", "2", "--temperature", temp]);
        assert!(o.status.success(), "{mode}/{clip}: {}", String::from_utf8_lossy(&o.stderr));
        let rows: Vec<serde_json::Value> =
            std::fs::read_to_string(out.join("metrics.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(rows.len(), 2);
        for key in [
            "reward_instance",
            "reward_secure_bonus",
            "reward_penalty",
            "kl",
            "kl_coef",
            "clip_frac",
            "policy_loss",
            "value_loss",
            "vuln_rate",
            "code_rate",
            "similarity",
            "length_ratio",
            "rollout_tok_s",
        ] {
            assert!(rows[1][key].as_f64().is_some_and(f64::is_finite), "{mode}/{clip}: {key} in {}", rows[1]);
        }
        assert!(out.join("step-000002/critic/value_head.safetensors").exists());
    }
}

#[test]
fn a_resumed_run_matches_an_uninterrupted_one() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, data) = setup(dir.path());
    let (full, split) = (dir.path().join("full"), dir.path().join("split"));
    assert!(ppo(&policy, &data, &full, &["--iters", "4", "--save-every", "2"]).status.success());
    assert!(ppo(&policy, &data, &split, &["--iters", "2", "--save-every", "2"]).status.success());
    // Without --resume the run is refused, its checkpoint and log kept.
    let kept =
        |run: &Path| (std::fs::read(run.join("step-000002/model.safetensors")).unwrap(), std::fs::read(run.join("metrics.jsonl")).unwrap());
    let before = kept(&split);
    let o = ppo(&policy, &data, &split, &["--iters", "4", "--save-every", "2"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("already holds a run") && err.contains("--resume"), "{err}");
    assert!(kept(&split) == before, "the refused run changed the old one");
    let o = ppo(&policy, &data, &split, &["--iters", "4", "--save-every", "2", "--resume"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for f in [
        "model.safetensors",
        "trainer.safetensors",
        "critic/model.safetensors",
        "critic/trainer.safetensors",
        "critic/value_head.safetensors",
    ] {
        let a = std::fs::read(full.join("step-000004").join(f)).unwrap();
        let b = std::fs::read(split.join("step-000004").join(f)).unwrap();
        assert!(a == b, "{f} differs after resume");
    }
    // Same iteration, KL coefficient and data position (the log offset counts timing text, which varies).
    let state = |run: &Path| {
        let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(run.join("step-000004/state.json")).unwrap()).unwrap();
        v.as_object_mut().unwrap().remove("metrics_offset");
        v
    };
    assert_eq!(state(&full), state(&split));
    assert_eq!(
        common::metric_column(&full, "policy_loss"),
        common::metric_column(&split, "policy_loss"),
        "each iteration logged once, with the same losses"
    );
}

#[test]
fn bad_ppo_flags_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (policy, data) = setup(dir.path());
    for (flags, want) in [
        (vec!["--reward", "dense"], "--reward must be instance or tlr"),
        (vec!["--clip", "soft"], "--clip must be"),
        (vec!["--penalty", "middle"], "--penalty must be"),
        (vec!["--kl-estimator", "k2"], "--kl-estimator must be k1 or k3"),
        (vec!["--gamma", "1.5"], "0 < --gamma ≤ 1"),
        (vec!["--dual-clip", "0.5"], "--dual-clip > 1"),
        (vec!["--max-grad-norm", "0"], "positive learning rates and --max-grad-norm"),
        (vec!["--clean-coverage=-0.5"], "--clean-coverage ≥ 0"),
        (vec!["--temperature", "0"], "--temperature must be positive for PPO"),
    ] {
        let o = ppo(&policy, &data, &dir.path().join("x"), &flags);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want) && !err.contains("panicked"), "{flags:?}: {err}");
    }
}
