//! The CPU kernel emulator (tools/kernel-emu) in place of the CUDA driver,
//! cuBLAS and cuBLASLt: `tools/kernel-emu/build` builds its libraries (again only when a
//! source changed); this loads them into the test process, or gives the
//! environment that preloads them into a vul2safe process. Without g++ the
//! tests skip and say so; a build that fails is a test failure.

use std::ffi::{c_char, c_void, CString};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// The emulator's libraries: the driver, cuBLAS and cuBLASLt stand-ins and the kernel families.
pub struct EmulatedCuda {
    pub driver: PathBuf,
    pub blas: [PathBuf; 2],
    pub families: Vec<PathBuf>,
}

impl EmulatedCuda {
    /// The environment that runs a vul2safe process on the emulator:
    /// LD_PRELOAD puts the stand-ins where cudarc looks for the real ones.
    pub fn env(&self) -> [(&'static str, String); 2] {
        let list: Vec<String> = self.families.iter().map(|p| p.display().to_string()).collect();
        let preload = format!("{}:{}:{}", self.driver.display(), self.blas[0].display(), self.blas[1].display());
        [("LD_PRELOAD", preload), ("KERNEL_EMU_FAMILIES", list.join("\n"))]
    }
}

/// Builds the emulator's libraries once per test process; None when g++ is not installed.
pub fn emulated_cuda() -> Option<&'static EmulatedCuda> {
    static BUILT: OnceLock<Result<Option<EmulatedCuda>, String>> = OnceLock::new();
    let r = BUILT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let out = Command::new("bash")
            .arg(root.join("tools/kernel-emu/build"))
            .env("KERNEL_EMU_OUT", PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kernel-emu"))
            // A sanitizer runtime preloaded into the tests is not for the compiler.
            .env_remove("LD_PRELOAD")
            .output()
            .map_err(|e| format!("running tools/kernel-emu/build: {e}"))?;
        match out.status.code() {
            Some(0) => {}
            Some(3) => return Ok(None),
            _ => return Err(String::from_utf8_lossy(&out.stderr).into_owned()),
        }
        let mut libs = String::from_utf8_lossy(&out.stdout).lines().map(PathBuf::from).collect::<Vec<_>>().into_iter();
        let (Some(driver), Some(cublas), Some(cublas_lt)) = (libs.next(), libs.next(), libs.next()) else {
            return Err("the build listed no libraries".into());
        };
        Ok(Some(EmulatedCuda { driver, blas: [cublas, cublas_lt], families: libs.collect() }))
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

fn dlopen(path: &std::path::Path, flags: i32) -> Result<*mut c_void, String> {
    let c = CString::new(path.to_string_lossy().as_bytes()).expect("no NUL");
    // SAFETY: dlopen of a library the build just made; its constructors only register kernels.
    let h = unsafe { libc::dlopen(c.as_ptr(), flags) };
    if h.is_null() {
        return Err(format!("dlopen {}", path.display()));
    }
    Ok(h)
}

/// Loads the emulated driver, cuBLAS and cuBLASLt into this process in place of the
/// real ones, with every kernel family behind them: afterwards
/// `Cuda::new(0)` opens the emulator. False when g++ is not installed.
pub fn load_emulated_cuda() -> bool {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    let Some(libs) = emulated_cuda() else { return false };
    let r = LOADED.get_or_init(|| {
        // Loaded globally under the sonames cudarc asks for, they answer its dlopen calls.
        let driver = dlopen(&libs.driver, libc::RTLD_NOW | libc::RTLD_GLOBAL)?;
        for blas in &libs.blas {
            dlopen(blas, libc::RTLD_NOW | libc::RTLD_GLOBAL)?;
        }
        let list: String = libs.families.iter().map(|p| format!("{}\n", p.display())).collect();
        let list = CString::new(list).expect("no NUL");
        let sym = CString::new("emu_driver_init").expect("no NUL");
        // SAFETY: emu_driver_init(const char*) -> int, as driver.cpp defines it.
        let failed = unsafe {
            let f = libc::dlsym(driver, sym.as_ptr());
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

/// GCC's ThreadSanitizer runtime, to preload for `KERNEL_EMU_TSAN=1`
/// (tools/kernel-emu/race.hpp); None when g++ has none.
pub fn thread_sanitizer_runtime() -> Option<PathBuf> {
    let out = Command::new("g++").arg("-print-file-name=libtsan.so").output().ok()?;
    // Without the library g++ prints the bare name back.
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && path.is_absolute() && path.exists()).then_some(path)
}
