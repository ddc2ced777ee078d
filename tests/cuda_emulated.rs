//! The CUDA backend's cases (tests/support/cuda_cases.rs) on the emulated
//! driver (tools/kernel-emu): the backend's own host code, buffers and
//! launches, with every kernel run by the CPU emulator and cuBLAS by a
//! plain CPU GEMM. This checks logic, never speed or the hardware:
//! tools/gpu-check runs cuda_backend.rs on a real GPU.

#[path = "support/cuda_cases.rs"]
mod cases;
mod common;
#[path = "support/kernel_emu.rs"]
mod kernel_emu;

use vul2safe::backend::cuda::Cuda;

fn open_device() -> anyhow::Result<Cuda> {
    anyhow::ensure!(kernel_emu::load_emulated_cuda(), "no g++ to build the kernel emulator with");
    Cuda::new(0)
}

/// The trainers through the binary on the emulated driver, as tools/gpu-check
/// runs them on a GPU: SFT on the CPU and on CUDA (recomputing the matmul
/// inputs in the backward) must log the same losses up to bf16 rounding, and PPO with
/// token-level rewards must run from the CUDA checkpoint (generation with
/// device sampling, the critic, the policy loss) and log finite metrics.
#[test]
fn sft_and_ppo_run_through_the_binary_on_the_emulated_driver() {
    use std::process::Command;
    let Some(emu) = kernel_emu::emulated_cuda() else { return };
    let dir = tempfile::tempdir().unwrap();
    let data = common::embedded_data(dir.path());
    let model = common::fixture_dir("qwen2_b");
    // On the emulator, optionally with its cuBLASLt declining every product; the run's stderr.
    let run = |args: &[&str], on_emulator: bool, lt_declines: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vul2safe"));
        c.args(args);
        if on_emulator {
            c.envs(emu.env());
        }
        if lt_declines {
            c.env("KERNEL_EMU_LT_DECLINE", "1");
        }
        let o = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{args:?}: {stderr}");
        stderr
    };
    let sft_out = |run: &str| dir.path().join(format!("sft-{run}"));
    // The CUDA runs: output projections on cuBLASLt, or on the fallback when it declines them.
    for name in ["cpu", "cuda", "cuda-lt-declined"] {
        let out = sft_out(name);
        let be = if name == "cpu" { "cpu" } else { "cuda" };
        let mut args = vec!["sft", "--backend", be, "--model", model.to_str().unwrap(), "--data", data.to_str().unwrap()];
        args.extend(["--out", out.to_str().unwrap(), "--steps", "4", "--batch", "4", "--seq", "64", "--eval-every", "2"]);
        args.extend(["--save-every", "4", "--warmup", "1", "--seed", "5"]);
        if be == "cuda" {
            args.push("--recompute");
        }
        let declined = name == "cuda-lt-declined";
        let stderr = run(&args, be == "cuda", declined);
        assert_eq!(stderr.contains("cuBLASLt declined"), declined, "{name}: {stderr}");
    }
    let cpu = common::metric_column(&sft_out("cpu"), "loss");
    assert_eq!(cpu.len(), 4);
    for name in ["cuda", "cuda-lt-declined"] {
        let losses = common::metric_column(&sft_out(name), "loss");
        assert_eq!(losses.len(), cpu.len(), "{name}");
        for (step, (c, g)) in cpu.iter().zip(&losses).enumerate() {
            assert!((c - g).abs() <= 1e-3 * c.abs(), "SFT step {step}: loss {g} on {name}, {c} on the CPU");
        }
    }
    let ppo = dir.path().join("ppo-cuda");
    let policy = sft_out("cuda").join("step-000004");
    let mut args = vec!["ppo", "--backend", "cuda", "--policy", policy.to_str().unwrap(), "--data", data.to_str().unwrap()];
    args.extend(["--out", ppo.to_str().unwrap(), "--iters", "1", "--rollout-batch", "4", "--max-new-tokens", "16", "--reward", "tlr"]);
    run(&args, true, false);
    for key in ["policy_loss", "value_loss", "kl", "reward_instance"] {
        let v = common::metric_column(&ppo, key);
        assert!(v.len() == 1 && v[0].is_finite(), "PPO {key}: {v:?}");
    }
}

/// The backend's cases again with the kernels under ThreadSanitizer
/// (tools/kernel-emu/race.hpp): every pair of accesses by two threads of a
/// block to the same shared or global memory must be ordered by a barrier
/// or a cp.async wait, whatever the schedule. Runs this binary's own cases
/// in a child process with the sanitizer's runtime preloaded, all but the
/// three that take minutes there (sampling over a vocabulary, graph replay,
/// generation; `tools/kernel-emu/run --tsan` runs them by hand).
#[test]
fn kernels_are_race_free_under_thread_sanitizer() {
    if kernel_emu::emulated_cuda().is_none() {
        return;
    }
    let Some(tsan) = kernel_emu::thread_sanitizer_runtime() else {
        eprintln!("SKIPPED: g++ has no ThreadSanitizer runtime (libtsan.so)");
        return;
    };
    let slow = [
        "cases::device_sampling_matches_the_cpu",
        "cases::decode_graphs_replay_exactly_what_eager_steps_compute",
        "cases::gpu_generation_matches_the_cpu",
    ];
    let mut args = vec!["cases::", "--test-threads", "1"];
    for case in slow {
        args.extend(["--skip", case]);
    }
    let o = std::process::Command::new(std::env::current_exe().unwrap())
        .args(&args)
        .env("KERNEL_EMU_TSAN", "1")
        // The engine's own (uninstrumented) copies are not the kernels' races.
        .env("TSAN_OPTIONS", "ignore_noninstrumented_modules=1")
        .env("LD_PRELOAD", &tsan)
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    // The runtime refusing this machine (an address-space layout it cannot map, say) is not a race.
    if let Some(fatal) = stderr.lines().find(|l| l.contains("FATAL: ThreadSanitizer")) {
        eprintln!("SKIPPED: ThreadSanitizer cannot run here: {fatal}");
        return;
    }
    assert!(!stderr.contains("ThreadSanitizer"), "{stderr}");
    let ran = stdout.lines().filter(|l| l.starts_with("test cases::") && l.ends_with(" ok")).count();
    assert!(o.status.success() && ran >= 20, "{} cases passed: {}\n{stdout}\n{stderr}", ran, o.status);
    assert!(stdout.contains("test cases::flash_variants_agree_bit_for_bit_and_tuning_keeps_one ... ok"), "{stdout}");
}

/// `bench generate` on the emulated driver: decode steps run as CUDA graphs
/// unless `--no-graphs` or VUL2SAFE_CUDA_GRAPHS=0 says otherwise, and any
/// other value of the variable is refused with a message naming it.
#[test]
fn decode_graphs_follow_the_flag_and_the_environment() {
    let Some(emu) = kernel_emu::emulated_cuda() else { return };
    let var = vul2safe::backend::cuda::GRAPHS_ENV;
    let args = ["generate", "--backend", "cuda", "--shape", "small", "--batch", "2", "--prompt-len", "4", "--new", "6"];
    let bench = |extra: &[&str], value: Option<&str>| emulated_bench(emu, &args, var, value).args(extra).output().unwrap();
    let graph_steps = |o: std::process::Output| {
        let v = last_json(&o);
        (v["graphs"].as_bool().unwrap(), v["graph_steps"].as_u64().unwrap())
    };
    let (on, steps) = graph_steps(bench(&[], None));
    assert!(on && steps >= 2, "graphs {on}, {steps} graph steps of 5");
    assert_eq!(graph_steps(bench(&["--no-graphs"], None)), (false, 0));
    assert_eq!(graph_steps(bench(&[], Some("0"))), (false, 0));
    let refused = bench(&[], Some("yes"));
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains(var));
}

/// `vul2safe bench ARGS` on the emulated driver, with the environment
/// variable `var` set to `value` (None: unset).
fn emulated_bench(emu: &kernel_emu::EmulatedCuda, args: &[&str], var: &str, value: Option<&str>) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_vul2safe"));
    c.arg("bench").args(args).envs(emu.env()).env_remove(var);
    if let Some(v) = value {
        c.env(var, v);
    }
    c
}

/// The JSON line a bench that succeeded printed last.
fn last_json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line = String::from_utf8_lossy(&o.stdout).lines().last().unwrap().to_string();
    serde_json::from_str(&line).unwrap()
}

/// `bench train` (kernels not run: the emulator's dry driver) adds dQ's
/// shares in the flash backward's fixed order unless VUL2SAFE_ORDERED_DQ=0
/// says otherwise (tools/gpu-check's retry), reports which in its JSON, and
/// refuses any other value of the variable with a message naming it.
#[test]
fn flash_dq_order_follows_the_environment() {
    let Some(emu) = kernel_emu::emulated_cuda() else { return };
    let var = vul2safe::backend::cuda::ORDERED_DQ_ENV;
    let args = ["train", "--backend", "cuda", "--shape", "small", "--batch", "2", "--seq", "64", "--steps", "1"];
    let bench = |value: Option<&str>| emulated_bench(emu, &args, var, value).env("KERNEL_EMU_DRY_RUN", "1").output().unwrap();
    let ordered = |o: std::process::Output| last_json(&o)["ordered_dq"].as_bool().unwrap();
    assert!(ordered(bench(None)));
    assert!(ordered(bench(Some("1"))));
    assert!(!ordered(bench(Some("0"))));
    let refused = bench(Some("yes"));
    assert!(!refused.status.success() && String::from_utf8_lossy(&refused.stderr).contains(var));
}

/// `cases::profile_counts_each_matmul_once` again, in a child process with
/// every cuBLASLt call failing: each product's first call falls back after
/// its algorithm was chosen, and the profile must still count it once.
#[test]
fn failed_cublaslt_calls_count_their_work_once() {
    if kernel_emu::emulated_cuda().is_none() {
        return;
    }
    let case = "cases::profile_counts_each_matmul_once";
    let o = std::process::Command::new(std::env::current_exe().unwrap())
        .args([case, "--exact", "--nocapture"])
        .env("KERNEL_EMU_LT_FAIL", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success() && stdout.contains("1 passed"), "{stdout}\n{stderr}");
    assert!(stderr.contains("cuBLASLt declined"), "the fallback ran: {stderr}");
}

/// `bench train --profile` on the emulated driver reports time per kernel
/// family with the bytes and FLOPs its launches declared, and, for every
/// kernel launched, what the driver compiled (here the emulator's stand-in
/// values: one block per SM, no attributes).
#[test]
fn profiled_bench_train_reports_families_and_kernel_resources() {
    use std::process::Command;
    let Some(emu) = kernel_emu::emulated_cuda() else { return };
    let o = Command::new(env!("CARGO_BIN_EXE_vul2safe"))
        .args(["bench", "train", "--backend", "cuda", "--shape", "small", "--batch", "2", "--seq", "64", "--steps", "1", "--profile"])
        .envs(emu.env())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let v = last_json(&o);
    // The steps trained: the kernels' loss on the fixed batch fell.
    assert!(v["loss_last"].as_f64().unwrap() < v["loss_first"].as_f64().unwrap(), "{v}");
    let families: Vec<&str> = v["profile"].as_array().unwrap().iter().map(|f| f["family"].as_str().unwrap()).collect();
    for f in ["gemm", "flash_fwd", "flash_bwd", "flash_dq_finish", "qkv_from_tokens", "adamw_multi"] {
        assert!(families.contains(&f), "family {f} in {families:?}");
    }
    // The work the launches declared, against the shapes (small: 4 layers,
    // hidden 256, 4 heads of 64, FFN 768, vocab 8192 untied; 2 × 64 tokens).
    let row = |f: &str| v["profile"].as_array().unwrap().iter().find(|r| r["family"] == f).unwrap().clone();
    let bytes = |f: &str| row(f)["bytes"].as_f64().unwrap();
    let flops = |f: &str| row(f)["flops"].as_f64().unwrap();
    assert!(families.iter().all(|&f| bytes(f) > 0.0), "every family declares its traffic: {}", v["profile"]);
    let cfg = vul2safe::bench::named_shape("small").unwrap();
    let (tokens, layers) = (128.0, 4.0);
    // The matmuls: 6 FLOPs per token and parameter, but for the input embedding (a lookup) and the norms' weights.
    let not_in_matmuls = (cfg.vocab_size + 2 * cfg.num_layers + 1) * cfg.hidden_size;
    let matmul_params = (vul2safe::model::weights::param_count(&cfg) - not_in_matmuls) as f64;
    assert_eq!(flops("gemm"), 6.0 * matmul_params * tokens);
    // Causal attention, 2 rows of 64 queries per head: QKᵀ and PV over half the square; the backward at 2.5×.
    let fwd = layers * 4.0 * 64.0 * 4.0 * 2.0 * (64.0 * 64.0 / 2.0);
    assert_eq!((flops("flash_fwd"), flops("flash_bwd")), (fwd, 2.5 * fwd));
    // SwiGLU forward: the bf16 gate/up projection in, the bf16 product out (a matmul's input alone).
    assert_eq!(bytes("swiglu_fwd"), layers * tokens * 768.0 * (2.0 * 2.0 + 2.0));
    assert_eq!(flops("swiglu_fwd"), 0.0);
    assert!(stderr.contains("| GB/s | TFLOP/s | of roofline |") && stderr.contains("(no roofline: "), "{stderr}");
    let kernels = v["kernels"].as_array().unwrap();
    let named = |k: &str| kernels.iter().find(|r| r["kernel"] == k).unwrap_or_else(|| panic!("{k} in {kernels:?}"));
    // Every kernel launched, none of cuBLAS's; the flash forward at its block size.
    assert!(kernels.iter().all(|r| r["threads"].as_u64().unwrap() > 0 && r["blocks_per_sm"] == 1));
    assert!(kernels.iter().all(|r| r["kernel"] != "gemm"));
    named("qkv_from_tokens_bf16_bf16_from_bf16");
    // The forward variant tuning kept (by the emulator's timing, either) is the one the step launched.
    let kept_fwd =
        v["tuning"].as_array().unwrap().iter().find(|t| t["chosen"] == true && t["kernel"].as_str().unwrap().starts_with("flash_fwd"));
    let kept_fwd = kept_fwd.unwrap_or_else(|| panic!("a kept flash forward in {}", v["tuning"]));
    assert_eq!(named(kept_fwd["kernel"].as_str().unwrap())["threads"], kept_fwd["resources"]["threads"]);
    assert!(stderr.contains("| kernel (of the 8 slowest families) | threads | registers |"), "{stderr}");
    assert!(v["gemm_tflops"].as_f64().is_some() && stderr.contains("matmuls: "), "{stderr}");
    // Each tuned variant with its launch: the wide backward's dynamic shared memory, the one-tile forward's 8 warps.
    let resources = |k: &str| v["tuning"].as_array().unwrap().iter().find(|t| t["kernel"] == k).unwrap()["resources"].clone();
    assert_eq!(resources("flash_bwd_d64_bf16_wide")["dynamic_smem_bytes"], 74752);
    assert_eq!(resources("flash_fwd_d64_bf16_one_tile")["threads"], 256);
    assert_eq!(resources("flash_fwd_d64_bf16")["threads"], 128);
    assert!(stderr.contains("tuned: flash_bwd_d64_bf16_wide "), "{stderr}");
    // Matmul timings carry their cuBLASLt rank (`candidate`); kernel variants their launch's resources.
    let (gemms, variants): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) =
        v["tuning"].as_array().unwrap().iter().partition(|t| t.get("candidate").is_some());
    fn pair<'a>(t: &&'a serde_json::Value) -> (&'a str, bool) {
        (t["kernel"].as_str().unwrap(), t["chosen"].as_bool().unwrap())
    }
    assert!(gemms.iter().all(|t| pair(t).0.starts_with("gemm ") && t.get("resources").is_none()), "{}", v["tuning"]);
    assert!(gemms.iter().any(|t| t["candidate"] == 0) && gemms.iter().any(|t| t["candidate"] == 1), "{}", v["tuning"]);
    // Each matmul problem timed its cuBLASLt candidates once and kept one.
    let gemms: Vec<(&str, bool)> = gemms.iter().map(pair).collect();
    let problems: std::collections::BTreeSet<&str> = gemms.iter().map(|t| t.0).collect();
    assert!(problems.len() >= 6, "the layer's products and the head's: {gemms:?}");
    for p in &problems {
        let kept = gemms.iter().filter(|t| t.0 == *p && t.1).count();
        assert_eq!(kept, 1, "{p}: {gemms:?}");
    }
    // Printed per problem: the algorithm kept against the heuristic's first pick.
    for p in &problems {
        assert!(stderr.contains(&format!("tuned: {p}: kept #")), "{p}: {stderr}");
    }
    assert!(stderr.contains("tuned matmuls: the heuristic's first picks "), "{stderr}");
    // The head_dim-64 flash forward and backward were tuned once each, among their variants.
    let tuned: Vec<(&str, bool)> = variants.iter().map(pair).collect();
    let want = [
        "flash_fwd_d64_bf16",
        "flash_fwd_d64_bf16_one_tile",
        "flash_bwd_d64_bf16",
        "flash_bwd_d64_bf16_two_blocks",
        "flash_bwd_d64_bf16_wide",
    ];
    assert_eq!(tuned.iter().map(|t| t.0).collect::<Vec<_>>(), want);
    assert_eq!(tuned.iter().filter(|t| t.1).count(), 2, "one kept per kernel: {tuned:?}");
}

/// `generate` and `score` with `--backend cuda` on the emulated driver, in
/// exact (f32) math: the same greedy tokens as the CPU's (the fixture model
/// has no near ties in its first steps) and the same log-probabilities up
/// to f32 rounding; a model whose head size the kernels do not take is
/// refused at load with the reason.
#[test]
fn generate_and_score_run_on_cuda_through_the_binary() {
    use std::process::Command;
    let Some(emu) = kernel_emu::emulated_cuda() else { return };
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("t.json");
    std::fs::write(&tokens, r#"{"tokens": [[1, 2, 3, 4, 5], [7, 8]]}"#).unwrap();
    let json_out = |args: &[&str], backend: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vul2safe"));
        c.args(args).args(["--backend", backend, "--math", "exact"]);
        if backend == "cuda" {
            c.envs(emu.env());
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{args:?} on {backend}: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let floats = |v: &serde_json::Value| -> Vec<f32> { v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect() };
    let (qwen, llama) = (common::fixture_dir("qwen2_b"), common::fixture_dir("llama_a"));
    let m = qwen.to_str().unwrap();
    let gen = ["generate", "--model", m, "--prompt", "int main(", "--max-new-tokens", "6", "--json"];
    let (cpu, gpu) = (json_out(&gen, "cpu"), json_out(&gen, "cuda"));
    assert_eq!(gpu["tokens"], cpu["tokens"], "greedy tokens");
    common::assert_close("generate logprobs", &floats(&gpu["logprobs"]), &floats(&cpu["logprobs"]), 1e-3, 1e-3);
    let score = ["score", "--model", m, "--tokens", tokens.to_str().unwrap()];
    let (cpu, gpu) = (json_out(&score, "cpu"), json_out(&score, "cuda"));
    for row in 0..2 {
        common::assert_close(&format!("score row {row}"), &floats(&gpu["logprobs"][row]), &floats(&cpu["logprobs"][row]), 1e-3, 1e-3);
    }
    let o = Command::new(env!("CARGO_BIN_EXE_vul2safe"))
        .args(["generate", "--model", llama.to_str().unwrap(), "--prompt", "x", "--backend", "cuda"])
        .envs(emu.env())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && !stderr.contains("panicked"), "{stderr}");
    assert!(stderr.contains("cannot run") && stderr.contains("head_dim 32, 64 or 128; the model's is 16"), "{stderr}");
    // The benchmarks, which build random weights of a folder's shape, refuse it the same way.
    let o = Command::new(env!("CARGO_BIN_EXE_vul2safe"))
        .args(["bench", "train", "--backend", "cuda", "--shape", llama.to_str().unwrap(), "--batch", "1", "--seq", "8", "--steps", "1"])
        .envs(emu.env())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("cannot run this shape") && !stderr.contains("panicked"), "{stderr}");
}

/// The flash variants a bench's JSON line says it timed, in order (its
/// operands come from matmuls, whose cuBLASLt algorithms are timed too).
fn flash_tunings(v: &serde_json::Value) -> Vec<&str> {
    v["tuning"].as_array().unwrap().iter().filter_map(|t| t["kernel"].as_str().filter(|k| k.starts_with("flash_"))).collect()
}

/// `bench attention` on the emulated driver at the two head sizes the
/// kernels are tuned for: a JSON line with positive rates, and the variants
/// the first launch of each pass timed (the staged ones at head_dim 128).
#[test]
fn bench_attention_times_both_passes_and_tunes_their_variants() {
    use std::process::Command;
    let Some(emu) = kernel_emu::emulated_cuda() else { return };
    let d64 = [
        "flash_fwd_d64_bf16",
        "flash_fwd_d64_bf16_one_tile",
        "flash_bwd_d64_bf16",
        "flash_bwd_d64_bf16_two_blocks",
        "flash_bwd_d64_bf16_wide",
    ];
    let d128 = ["flash_fwd_d128_bf16", "flash_fwd_d128_bf16_staged", "flash_bwd_d128_bf16", "flash_bwd_d128_bf16_staged"];
    for (hd, want) in [("64", &d64[..]), ("128", &d128[..])] {
        let o = Command::new(env!("CARGO_BIN_EXE_vul2safe"))
            .args(["bench", "attention", "--backend", "cuda", "--batch", "1", "--seq", "96", "--heads", "4", "--kv-heads", "2"])
            .args(["--head-dim", hd, "--reps", "1"])
            .envs(emu.env())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        for key in ["fwd_ms", "bwd_ms", "fwd_tflops", "bwd_tflops", "total_tflops"] {
            assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "head_dim {hd}: {key} in {v}");
        }
        assert_eq!(flash_tunings(&v), want, "head_dim {hd}");
    }
}

/// A variant whose block does not fit on the card's SMs (the emulator's
/// KERNEL_EMU_NO_ROOM: occupancy 0, launches refused, as a GPU does when
/// its JIT takes more registers than ptxas did) is left out of tuning with
/// a note; the run goes on with the variants that fit. A kernel with no
/// variant that fits fails with the reason.
#[test]
fn tuning_leaves_out_variants_that_do_not_fit() {
    use std::process::Command;
    let Some(emu) = kernel_emu::emulated_cuda() else { return };
    let bench = |no_room: &str| {
        Command::new(env!("CARGO_BIN_EXE_vul2safe"))
            .args(["bench", "attention", "--backend", "cuda", "--batch", "1", "--seq", "64"])
            .args(["--heads", "2", "--head-dim", "64", "--reps", "1"])
            .envs(emu.env())
            .env("KERNEL_EMU_NO_ROOM", no_room)
            .output()
            .unwrap()
    };
    let o = bench("flash_bwd_d64_bf16_wide,flash_fwd_d64_bf16");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(stderr.contains("note: flash_bwd_d64_bf16_wide does not fit on an SM here"), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(flash_tunings(&v), ["flash_fwd_d64_bf16_one_tile", "flash_bwd_d64_bf16", "flash_bwd_d64_bf16_two_blocks"]);
    let o = bench("flash_fwd_d64_bf16,flash_fwd_d64_bf16_one_tile");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("no variant of flash_fwd_d64_bf16 fits"), "{stderr}");
}
