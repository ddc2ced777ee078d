//! Loads the kernels of kernels-ptx/ compiled for the CPU emulator
//! (tools/kernel-emu/emu.hpp) and launches them on host buffers. Each kernel
//! family is built once into its own shared library under the test target's
//! scratch directory, named by a hash of its sources, so reruns reuse it.
//! Without a C++ compiler the tests skip and say so.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Guard bytes on each side of a buffer: a kernel writing past either end
/// changes them, and the launch reports it.
const GUARD: usize = 64;
const GUARD_BYTE: u8 = 0xA5;

/// A host buffer a kernel reads and writes through its address, 16-byte aligned.
pub struct Mem {
    /// Owns the allocation; all access goes through `base`, which kernels share.
    _words: Vec<u128>,
    base: *mut u8,
    bytes: usize,
}

impl Mem {
    pub fn zeros(bytes: usize) -> Mem {
        let mut words = vec![0u128; (2 * GUARD + bytes).div_ceil(16)];
        let base = words.as_mut_ptr() as *mut u8;
        let m = Mem { _words: words, base, bytes };
        // SAFETY: base spans total() bytes of the owned allocation, referred to nowhere else yet.
        let all = unsafe { std::slice::from_raw_parts_mut(m.base, m.total()) };
        all[..GUARD].fill(GUARD_BYTE);
        all[GUARD + bytes..].fill(GUARD_BYTE);
        m
    }
    fn total(&self) -> usize {
        (2 * GUARD + self.bytes).div_ceil(16) * 16
    }
    /// Guards and data; kernels write only inside `Emulator::launch`, which this never overlaps.
    fn all_bytes(&self) -> &[u8] {
        // SAFETY: base spans total() bytes of the owned allocation.
        unsafe { std::slice::from_raw_parts(self.base, self.total()) }
    }
    fn data(&self) -> &[u8] {
        &self.all_bytes()[GUARD..GUARD + self.bytes]
    }
    fn fill(self, src: &[u8]) -> Mem {
        assert_eq!(src.len(), self.bytes);
        // SAFETY: the data region lies inside the allocation; nothing else refers to it yet.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), self.base.add(GUARD), self.bytes) };
        self
    }
    pub fn f32(v: &[f32]) -> Mem {
        Mem::zeros(4 * v.len()).fill(bytemuck::cast_slice(v))
    }
    /// `v` rounded to bf16, as the device stores it.
    pub fn bf16(v: &[f32]) -> Mem {
        let bits: Vec<u16> = v.iter().map(|&x| half::bf16::from_f32(x).to_bits()).collect();
        Mem::zeros(2 * v.len()).fill(bytemuck::cast_slice(&bits))
    }
    pub fn u32(v: &[u32]) -> Mem {
        Mem::zeros(4 * v.len()).fill(bytemuck::cast_slice(v))
    }
    pub fn i64(v: &[i64]) -> Mem {
        Mem::zeros(8 * v.len()).fill(bytemuck::cast_slice(v))
    }
    pub fn to_f32(&self) -> Vec<f32> {
        bytemuck::pod_collect_to_vec(self.data())
    }
    pub fn bf16_to_f32(&self) -> Vec<f32> {
        let bits: Vec<u16> = bytemuck::pod_collect_to_vec(self.data());
        bits.into_iter().map(|b| half::bf16::from_bits(b).to_f32()).collect()
    }
    pub fn to_u32(&self) -> Vec<u32> {
        bytemuck::pod_collect_to_vec(self.data())
    }
    /// The address a kernel sees, for tables of pointers.
    pub fn addr(&self) -> u64 {
        self.data().as_ptr() as u64
    }
    pub fn guards_intact(&self) -> bool {
        let all = self.all_bytes();
        all[..GUARD].iter().chain(&all[GUARD + self.bytes..]).all(|&b| b == GUARD_BYTE)
    }
}

/// One kernel argument, as the CUDA backend passes it.
pub enum Arg<'a> {
    Buf(&'a Mem),
    Null,
    I32(i32),
    I64(i64),
    F32(f32),
}

impl Arg<'_> {
    fn code_and_bits(&self) -> (char, u64) {
        match self {
            Arg::Buf(m) => ('p', m.addr()),
            Arg::Null => ('p', 0),
            Arg::I32(x) => ('i', *x as u32 as u64),
            Arg::I64(x) => ('l', *x as u64),
            Arg::F32(x) => ('f', x.to_bits() as u64),
        }
    }
}

type LaunchFn = unsafe extern "C" fn(*const c_char, *const c_char, *const u64, *const u32, *const u32, u64) -> *const c_char;

pub struct Emulator {
    /// Family name -> dlopen handle (kept open for the process's life).
    libs: HashMap<String, usize>,
    /// The emulated kernels share globals (the running block), so launches take turns.
    turn: Mutex<()>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The emulator, built on first use; None (after printing why) without g++.
pub fn emulator() -> Option<&'static Emulator> {
    static EMU: OnceLock<Option<Emulator>> = OnceLock::new();
    let emu = EMU.get_or_init(|| match build() {
        Ok(e) => Some(e),
        Err(why) => {
            eprintln!("kernel emulator unavailable: {why}");
            None
        }
    });
    if emu.is_none() {
        eprintln!("SKIPPED: the kernel emulator needs g++ (see above)");
    }
    emu.as_ref()
}

/// Kernel names of a family, from its committed PTX.
fn entries(family: &str) -> Vec<String> {
    let ptx = std::fs::read_to_string(repo().join(format!("kernels-ptx/{family}.ptx"))).expect("committed PTX");
    ptx.lines().filter_map(|l| l.split(".entry ").nth(1)).map(|rest| rest.trim_end_matches('(').trim().to_string()).collect()
}

fn sources_hash(family: &str) -> String {
    let mut h = Sha256::new();
    let emu_dir = repo().join("tools/kernel-emu");
    let mut files = vec![emu_dir.join("emu.hpp"), emu_dir.join("include/cuda_bf16.h"), repo().join(format!("kernels-ptx/{family}.cu"))];
    for e in std::fs::read_dir(repo().join("kernels-ptx")).expect("kernels-ptx/") {
        let p = e.expect("dir entry").path();
        if p.extension().is_some_and(|x| x == "cuh") {
            files.push(p);
        }
    }
    files.sort();
    for f in files {
        h.update(std::fs::read(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display())));
    }
    h.update(entries(family).join(",").as_bytes());
    h.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn compile(family: &str, dir: &Path) -> Result<PathBuf, String> {
    let lib = dir.join(format!("{family}-{}.so", sources_hash(family)));
    if lib.exists() {
        return Ok(lib);
    }
    let mut src = format!("#include \"{}\"\n", repo().join(format!("kernels-ptx/{family}.cu")).display());
    for name in entries(family) {
        src += &format!("EMU_ENTRY({name})\n");
    }
    let cpp = dir.join(format!("{family}.cpp"));
    std::fs::write(&cpp, src).map_err(|e| e.to_string())?;
    let tmp = dir.join(format!("{family}.so.tmp"));
    let out = Command::new("g++")
        .args(["-std=c++17", "-O1", "-g0", "-fPIC", "-shared", "-w", "-I"])
        .arg(repo().join("tools/kernel-emu/include"))
        .arg("-o")
        .arg(&tmp)
        .arg(&cpp)
        .output()
        .map_err(|e| format!("running g++: {e}"))?;
    if !out.status.success() {
        return Err(format!("g++ {family}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    std::fs::rename(&tmp, &lib).map_err(|e| e.to_string())?;
    Ok(lib)
}

fn build() -> Result<Emulator, String> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kernel-emu");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let families: Vec<String> = std::fs::read_dir(repo().join("kernels-ptx"))
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.path().file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|f| repo().join(format!("kernels-ptx/{f}.cu")).exists())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let built: Vec<Result<PathBuf, String>> = std::thread::scope(|s| {
        let jobs: Vec<_> = families.iter().map(|f| s.spawn(|| compile(f, &dir))).collect();
        jobs.into_iter().map(|j| j.join().expect("compile thread")).collect()
    });
    let mut libs = HashMap::new();
    for (family, lib) in families.iter().zip(built) {
        let path = CString::new(lib?.to_string_lossy().as_bytes()).expect("no NUL");
        // SAFETY: dlopen of a library we just built; it runs no constructors but the entry registrations.
        let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            return Err(format!("dlopen {family}"));
        }
        libs.insert(family.clone(), h as usize);
    }
    Ok(Emulator { libs, turn: Mutex::new(()) })
}

impl Emulator {
    /// Runs kernel `name` of `family` over `grid` blocks of `block` threads.
    /// Fibers are scheduled in an order drawn from `seed`. Err: the kernel
    /// is missing, its signature differs from `args`, a warp misused a
    /// collective, or a buffer's guard bytes were overwritten.
    pub fn launch(&self, family: &str, name: &str, grid: (u32, u32, u32), block: u32, args: &[Arg], seed: u64) -> Result<(), String> {
        let h = *self.libs.get(family).ok_or_else(|| format!("no kernel family {family}"))?;
        let sym = CString::new("emu_launch").expect("no NUL");
        // SAFETY: h is a live handle; emu_launch has the LaunchFn signature (emu.hpp).
        let f: LaunchFn = unsafe {
            let p = libc::dlsym(h as *mut c_void, sym.as_ptr());
            assert!(!p.is_null(), "emu_launch missing from {family}");
            std::mem::transmute::<*mut c_void, LaunchFn>(p)
        };
        let (codes, bits): (String, Vec<u64>) = args.iter().map(Arg::code_and_bits).unzip();
        let (cname, csig) = (CString::new(name).expect("no NUL"), CString::new(codes).expect("no NUL"));
        let g = [grid.0, grid.1, grid.2];
        let b = [block, 1, 1];
        let err = {
            let _turn = self.turn.lock().unwrap_or_else(|p| p.into_inner());
            // SAFETY: every pointer argument is a live Mem sized by the caller for the kernel.
            let e = unsafe { f(cname.as_ptr(), csig.as_ptr(), bits.as_ptr(), g.as_ptr(), b.as_ptr(), seed) };
            // SAFETY: a non-null result is a NUL-terminated message owned by the library.
            (!e.is_null()).then(|| unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned())
        };
        if let Some(e) = err {
            return Err(e);
        }
        for (i, a) in args.iter().enumerate() {
            if let Arg::Buf(m) = a {
                if !m.guards_intact() {
                    return Err(format!("{name} wrote outside argument {i}'s buffer"));
                }
            }
        }
        Ok(())
    }
}
