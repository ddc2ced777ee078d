//! Builds the CPU emulator of kernels-ptx/ (tools/kernel-emu) and loads it
//! in place of the CUDA driver and cuBLAS. Each kernel family and stand-in
//! library is built once under the test target's scratch directory, named by
//! a hash of its sources, so reruns reuse it. Without g++ the tests skip and
//! say so.

use sha2::{Digest, Sha256};
use std::ffi::{c_char, c_void, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Kernel names of a family, from its committed PTX.
fn entries(family: &str) -> Vec<String> {
    let ptx = std::fs::read_to_string(repo().join(format!("kernels-ptx/{family}.ptx"))).expect("committed PTX");
    ptx.lines().filter_map(|l| l.split(".entry ").nth(1)).map(|rest| rest.trim_end_matches('(').trim().to_string()).collect()
}

/// A library to build: its name, the C++ it compiles and the files its hash covers.
struct Lib {
    name: String,
    source: String,
    inputs: Vec<PathBuf>,
    /// The shared-object name the dynamic loader matches (the driver's must be libcuda.so).
    soname: Option<&'static str>,
}

impl Lib {
    /// Kernel family `family`: its .cu with every entry point registered.
    fn family(family: &str) -> Lib {
        let cu = repo().join(format!("kernels-ptx/{family}.cu"));
        let mut source = format!("#include \"{}\"\n", cu.display());
        for name in entries(family) {
            source += &format!("EMU_ENTRY({name})\n");
        }
        let mut inputs = vec![cu, emu_dir().join("include/cuda_bf16.h")];
        for (dir, ext) in [(emu_dir(), "hpp"), (repo().join("kernels-ptx"), "cuh")] {
            for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
                let p = e.expect("dir entry").path();
                if p.extension().is_some_and(|x| x == ext) {
                    inputs.push(p);
                }
            }
        }
        Lib { name: family.to_string(), source, inputs, soname: None }
    }

    /// A stand-in for a CUDA library, from tools/kernel-emu/<file>.
    fn stand_in(file: &str, soname: &'static str) -> Lib {
        let path = emu_dir().join(file);
        Lib { name: soname.to_string(), source: format!("#include \"{}\"\n", path.display()), inputs: vec![path], soname: Some(soname) }
    }

    fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.source.as_bytes());
        let mut inputs = self.inputs.clone();
        inputs.sort();
        for f in inputs {
            h.update(std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display())));
        }
        h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Builds into `dir` unless a library of the same sources is there.
    fn build(&self, dir: &Path) -> Result<PathBuf, String> {
        let lib = dir.join(format!("{}-{}.so", self.name, self.hash()));
        if lib.exists() {
            return Ok(lib);
        }
        let cpp = dir.join(format!("{}.cpp", self.name));
        std::fs::write(&cpp, &self.source).map_err(|e| e.to_string())?;
        let tmp = dir.join(format!("{}.so.tmp", self.name));
        let mut cmd = Command::new("g++");
        // No fortified longjmp: the emulator jumps between fiber stacks on purpose.
        cmd.args(["-std=c++17", "-O1", "-g0", "-fPIC", "-shared", "-w", "-U_FORTIFY_SOURCE", "-I"]).arg(emu_dir().join("include"));
        if let Some(so) = self.soname {
            cmd.arg(format!("-Wl,-soname,{so}"));
        }
        let out = cmd.arg("-o").arg(&tmp).arg(&cpp).output().map_err(|e| format!("running g++: {e}"))?;
        if !out.status.success() {
            return Err(format!("g++ {}: {}", self.name, String::from_utf8_lossy(&out.stderr)));
        }
        std::fs::rename(&tmp, &lib).map_err(|e| e.to_string())?;
        // Builds of older sources are never loaded again.
        for e in std::fs::read_dir(dir).map_err(|e| e.to_string())?.flatten() {
            let stale = e.file_name().to_string_lossy().strip_prefix(&format!("{}-", self.name)).is_some_and(|rest| rest.ends_with(".so"));
            if stale && e.path() != lib {
                std::fs::remove_file(e.path()).ok();
            }
        }
        Ok(lib)
    }
}

fn emu_dir() -> PathBuf {
    repo().join("tools/kernel-emu")
}

/// Builds `libs` in parallel into the test target's scratch directory.
fn build_all(libs: Vec<Lib>) -> Result<Vec<PathBuf>, String> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kernel-emu");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::thread::scope(|s| {
        let jobs: Vec<_> = libs.iter().map(|l| s.spawn(|| l.build(&dir))).collect();
        jobs.into_iter().map(|j| j.join().expect("compile thread")).collect()
    })
}

fn dlopen(path: &Path, flags: i32) -> Result<usize, String> {
    let c = CString::new(path.to_string_lossy().as_bytes()).expect("no NUL");
    // SAFETY: dlopen of a library we built; its constructors only register kernels.
    let h = unsafe { libc::dlopen(c.as_ptr(), flags) };
    if h.is_null() {
        return Err(format!("dlopen {}", path.display()));
    }
    Ok(h as usize)
}

fn families() -> Vec<String> {
    let names: std::collections::BTreeSet<String> = std::fs::read_dir(repo().join("kernels-ptx"))
        .expect("kernels-ptx/")
        .filter_map(|e| e.ok()?.path().file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|f| repo().join(format!("kernels-ptx/{f}.cu")).exists())
        .collect();
    names.into_iter().collect()
}

/// The emulator's libraries: the driver and cuBLAS stand-ins and the kernel families.
pub struct EmulatedCuda {
    pub driver: PathBuf,
    pub cublas: PathBuf,
    pub families: Vec<PathBuf>,
}

impl EmulatedCuda {
    /// The environment that runs a vul2safe process on the emulator:
    /// LD_PRELOAD puts the stand-ins where cudarc looks for the real ones.
    pub fn env(&self) -> [(&'static str, String); 2] {
        let list: Vec<String> = self.families.iter().map(|p| p.display().to_string()).collect();
        [("LD_PRELOAD", format!("{}:{}", self.driver.display(), self.cublas.display())), ("KERNEL_EMU_FAMILIES", list.join("\n"))]
    }
}

/// Builds the emulator's libraries once; None when g++ is not installed. A
/// build that fails is a test failure, never a skip.
pub fn emulated_cuda() -> Option<&'static EmulatedCuda> {
    static BUILT: OnceLock<Result<Option<EmulatedCuda>, String>> = OnceLock::new();
    let r = BUILT.get_or_init(|| {
        if Command::new("g++").arg("--version").output().is_err() {
            return Ok(None);
        }
        let names = families();
        let mut libs: Vec<Lib> = names.iter().map(|f| Lib::family(f)).collect();
        libs.push(Lib::stand_in("driver.cpp", "libcuda.so"));
        libs.push(Lib::stand_in("cublas.cpp", "libcublas.so"));
        let mut built = build_all(libs)?;
        let cublas = built.pop().expect("cublas built");
        let driver = built.pop().expect("driver built");
        Ok(Some(EmulatedCuda { driver, cublas, families: built }))
    });
    match r {
        Ok(Some(e)) => Some(e),
        Ok(None) => {
            eprintln!("SKIPPED: the kernel emulator needs g++, which is not installed");
            None
        }
        Err(why) => panic!("building the kernel emulator failed: {why}"),
    }
}

/// Loads the emulated driver and cuBLAS into this process in place of the
/// real ones, with every kernel family behind them: afterwards
/// `Cuda::new(0)` opens the emulator. False when g++ is not installed.
pub fn load_emulated_cuda() -> bool {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    let Some(libs) = emulated_cuda() else { return false };
    let r = LOADED.get_or_init(|| {
        // Loaded globally under the sonames cudarc asks for, they answer its dlopen calls.
        let driver = dlopen(&libs.driver, libc::RTLD_NOW | libc::RTLD_GLOBAL)?;
        dlopen(&libs.cublas, libc::RTLD_NOW | libc::RTLD_GLOBAL)?;
        let list: String = libs.families.iter().map(|p| format!("{}\n", p.display())).collect();
        let list = CString::new(list).expect("no NUL");
        let sym = CString::new("emu_driver_init").expect("no NUL");
        // SAFETY: emu_driver_init(const char*) -> int, as driver.cpp defines it.
        let failed = unsafe {
            let f = libc::dlsym(driver as *mut c_void, sym.as_ptr());
            assert!(!f.is_null(), "emu_driver_init missing");
            std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*const c_char) -> i32>(f)(list.as_ptr())
        };
        if failed != 0 {
            return Err(format!("{failed} kernel families failed to load"));
        }
        Ok(())
    });
    if let Err(why) = r {
        panic!("loading the kernel emulator failed: {why}");
    }
    true
}
