//! The embedded PTX: every kernel family is present, targets sm_80 with a
//! PTX ISA the device driver (CUDA 13.0) loads, and declares the entry points
//! the CUDA backend launches. Runs without a GPU.

use vul2safe::backend::kernels::{check_driver, cuda_for_isa, entry_points, ptx, ptx_isa, KERNEL_PTX};

#[test]
fn every_family_is_embedded_with_a_loadable_isa() {
    let families: Vec<&str> = KERNEL_PTX.iter().map(|(f, _)| *f).collect();
    for f in ["adamw", "attention", "decode", "elementwise", "embedding", "flash", "layout", "loss", "norm", "rl", "sampling"] {
        assert!(families.contains(&f), "{f} missing from {families:?}");
    }
    for (f, text) in KERNEL_PTX {
        let version: f32 = text.lines().find_map(|l| l.strip_prefix(".version ")).and_then(|v| v.trim().parse().ok()).unwrap_or(99.0);
        assert!(version <= 9.0, "{f}: PTX ISA {version} is newer than the CUDA 13.0 driver loads");
        assert!(text.lines().any(|l| l.trim() == ".target sm_80"), "{f}: not built for sm_80");
    }
}

/// A driver too old for the embedded PTX is refused up front, naming both
/// versions; the device's (CUDA 13.0) and newer ones pass.
#[test]
fn drivers_too_old_for_the_ptx_are_named() {
    assert_eq!(ptx_isa(".version 8.4\n.target sm_80"), Some((8, 4)));
    assert_eq!(ptx_isa(".target sm_80"), None);
    for (isa, cuda) in [((7, 8), 11080), ((8, 0), 12000), ((8, 4), 12040), ((8, 5), 12050), ((8, 7), 12080), ((9, 0), 13000)] {
        assert_eq!(cuda_for_isa(isa), Some(cuda), "{isa:?}");
    }
    assert_eq!(cuda_for_isa((9, 5)), None, "an ISA past the table is left to the driver");
    let isa = ptx_isa(ptx("flash").unwrap()).unwrap();
    let need = cuda_for_isa(isa).unwrap();
    assert!(check_driver(need).is_ok() && check_driver(13000).is_ok() && check_driver(13020).is_ok());
    let e = check_driver(12040).unwrap_err().to_string();
    assert!(
        e.contains("supports CUDA 12.4") && e.contains(&format!("PTX ISA {}.{}", isa.0, isa.1)) && e.contains("update the driver"),
        "{e}"
    );
}

#[test]
fn kernels_exist_for_both_storage_types() {
    let elementwise = entry_points(ptx("elementwise").unwrap());
    for k in ["bias_grad_partial", "column_partials_add"] {
        for s in ["f32", "bf16"] {
            assert!(elementwise.contains(&format!("{k}_{s}").as_str()), "{k}_{s} in {elementwise:?}");
        }
    }
    // SwiGLU's outputs are f32; its projection is f32 or bf16 (training).
    for k in ["swiglu_fwd", "swiglu_bwd"] {
        for s in ["f32", "bf16in_f32"] {
            assert!(elementwise.contains(&format!("{k}_{s}").as_str()), "{k}_{s} in {elementwise:?}");
        }
    }
    assert!(elementwise.contains(&"swiglu_bwd_bf16"), "a bf16 output gradient in training");
    assert!(elementwise.contains(&"cast_f32_to_bf16") && elementwise.contains(&"cast_bf16_to_f32"));
    let norm = entry_points(ptx("norm").unwrap());
    for k in ["rmsnorm_fwd_bf16", "rmsnorm_bwd_dx_bf16", "rmsnorm_bwd_dw_partial_bf16"] {
        assert!(norm.contains(&k), "{k}");
    }
    // The backward in one kernel or two, from an f32 or bf16 (training's) output gradient.
    for stem in ["rmsnorm_bwd", "rmsnorm_bwd_dx", "rmsnorm_bwd_dw_partial"] {
        for s in ["f32", "bf16in_f32"] {
            assert!(norm.contains(&format!("{stem}_{s}").as_str()), "{stem}_{s}");
        }
    }
    assert_eq!(entry_points(ptx("adamw").unwrap()), vec!["adamw_f32", "adamw_multi_f32", "sum_squares_multi", "sum_squares_partial"]);
    // Attention's entry (queries, then keys and values, from the projection) and exit.
    let layout = entry_points(ptx("layout").unwrap());
    for k in ["qkv_from_tokens_f32_f32_from_f32", "qkv_from_tokens_bf16_bf16_from_f32", "qkv_from_tokens_bf16_bf16_from_bf16"] {
        assert!(layout.contains(&k), "{k} in {layout:?}");
    }
    // The exact backward's exit; flash writes the projection's gradient itself.
    for k in ["tokens_from_qkv_f32", "tokens_from_qkv_bf16_to_f32"] {
        assert!(layout.contains(&k), "{k} in {layout:?}");
    }
    assert!(entry_points(ptx("flash").unwrap()).contains(&"flash_dq_finish"));
    let rl = entry_points(ptx("rl").unwrap());
    for k in ["rl_segment_sum", "rl_assemble", "rl_gae", "rl_policy_loss", "rl_value_loss"] {
        assert!(rl.contains(&k), "{k} in {rl:?}");
    }
    for (family, kernels) in [
        ("embedding", &["embedding_fwd", "embedding_bwd"][..]),
        ("loss", &["cross_entropy", "logprob_entropy", "logit_grad"][..]),
        (
            "attention",
            &[
                "attention_fwd_d64",
                "attention_fwd_d128",
                "attention_rowdot_d64",
                "attention_bwd_dq_d64",
                "attention_bwd_dkdv_d64",
                "attention_bwd_dq_d128",
                "attention_bwd_dkdv_d128",
                "attention_fwd_d32",
            ][..],
        ),
        (
            "flash",
            &["flash_fwd_d32", "flash_fwd_d64", "flash_fwd_d128", "flash_bwd_d32", "flash_bwd_d64", "flash_bwd_d128", "flash_group_sum"][..],
        ),
    ] {
        let entries = entry_points(ptx(family).unwrap());
        for k in kernels {
            for s in ["f32", "bf16"] {
                assert!(entries.contains(&format!("{k}_{s}").as_str()), "{family}: {k}_{s} in {entries:?}");
            }
        }
    }
}

#[test]
fn generation_kernels_exist_for_f32_and_bf16_caches() {
    let all: Vec<&str> = KERNEL_PTX.iter().flat_map(|(_, p)| entry_points(p)).collect();
    let mut want: Vec<String> =
        ["sample_rows_f32", "qkv_from_tokens_f32_f32_from_f32", "qkv_from_tokens_f32_bf16_from_f32", "tokens_from_qkv_f32"]
            .map(String::from)
            .to_vec();
    for d in [32, 64, 128] {
        for stem in ["attention_decode", "attention_decode_bf16kv", "flash_fwd_bf16kv", "attention_fwd_bf16kv"] {
            want.push(format!("{stem}_d{d}_f32"));
        }
        want.push(format!("attention_decode_combine_d{d}"));
    }
    for k in &want {
        assert!(all.contains(&k.as_str()), "{k} is not in the embedded PTX");
    }
}

/// Every kernel the CUDA backend names literally — in a `launch!` or as a
/// `..._f32` / `..._bf16` string — is in the embedded PTX, so a typo fails
/// here rather than on a GPU. (Names built with `format!` are listed above.)
#[test]
fn every_literal_kernel_name_in_the_cuda_backend_exists() {
    let all: Vec<&str> = KERNEL_PTX.iter().flat_map(|(_, p)| entry_points(p)).collect();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("engine/backend/cuda");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let src = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let launched: Vec<&str> = src.split("launch!(").skip(1).filter_map(|rest| rest.trim_start().strip_prefix("self,")).collect();
        let after_launch = launched.iter().filter_map(|rest| rest.trim_start().strip_prefix('"')).filter_map(|s| s.split('"').next());
        let typed = src.split('"').skip(1).step_by(2).filter(|s| {
            s.starts_with(|c: char| c.is_ascii_lowercase())
                && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && (s.ends_with("_f32") || s.ends_with("_bf16"))
        });
        for name in after_launch.chain(typed) {
            assert!(all.contains(&name), "{name} (engine/backend/cuda) is not in the embedded PTX");
            checked += 1;
        }
    }
    assert!(checked > 30, "found only {checked} kernel names: the scan is broken");
}
