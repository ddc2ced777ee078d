//! Embeds kernels-ptx/*.ptx into the binary (as `KERNEL_PTX` in
//! `$OUT_DIR/kernels.rs`). When nvcc is available (`$VUL2SAFE_NVCC`, the
//! project's `.venv-cuda`, or PATH), each .cu is compiled again and compared
//! with its committed .ptx, and a mismatch is reported as a build warning.
//! A CPU-only build needs no CUDA at all.

use std::path::{Path, PathBuf};
use std::process::Command;

fn nvcc() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VUL2SAFE_NVCC") {
        return Some(PathBuf::from(p));
    }
    let venv = Path::new(".venv-cuda/lib/python3.11/site-packages/nvidia/cu13/bin/nvcc");
    if venv.is_file() {
        return Some(venv.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("nvcc")).find(|p| p.is_file())
}

fn main() {
    println!("cargo:rerun-if-changed=kernels-ptx");
    println!("cargo:rerun-if-env-changed=VUL2SAFE_NVCC");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let mut families: Vec<String> = std::fs::read_dir("kernels-ptx")
        .expect("kernels-ptx/ exists")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .map(|p| p.file_stem().expect("named file").to_string_lossy().into_owned())
        .collect();
    families.sort();
    let compiler = nvcc();
    let mut table = String::from("/// Each kernel family's name and its PTX text.\npub const KERNEL_PTX: &[(&str, &str)] = &[\n");
    for f in &families {
        let committed = Path::new("kernels-ptx").join(format!("{f}.ptx"));
        if !committed.exists() {
            panic!("kernels-ptx/{f}.cu has no committed {f}.ptx: run tools/build-ptx.sh");
        }
        if let Some(nvcc) = &compiler {
            let fresh = out.join(format!("{f}.ptx"));
            let ok = Command::new(nvcc)
                .args(["-ptx", "-arch=sm_80", "-O3"])
                .arg(Path::new("kernels-ptx").join(format!("{f}.cu")))
                .arg("-o")
                .arg(&fresh)
                .status()
                .is_ok_and(|s| s.success());
            let same = ok && std::fs::read(&fresh).ok() == std::fs::read(&committed).ok();
            if !same {
                println!(
                    "cargo:warning=kernels-ptx/{f}.ptx is not what nvcc makes of {f}.cu now: run tools/build-ptx.sh and commit the result"
                );
            }
        }
        let abs = std::fs::canonicalize(&committed).expect("committed PTX is readable");
        table.push_str(&format!("    ({f:?}, include_str!({:?})),\n", abs.display().to_string()));
    }
    table.push_str("];\n");
    std::fs::write(out.join("kernels.rs"), table).expect("OUT_DIR is writable");
}
