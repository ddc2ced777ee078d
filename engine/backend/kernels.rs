//! The CUDA kernels' PTX, embedded at build time from kernels-ptx/ (see
//! build.rs). The CUDA backend loads these modules by family name.

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// The PTX of one kernel family, if it exists.
pub fn ptx(family: &str) -> Option<&'static str> {
    KERNEL_PTX.iter().find(|(f, _)| *f == family).map(|(_, p)| *p)
}

/// Entry points (`.visible .entry name(`) declared in a PTX text.
pub fn entry_points(ptx: &str) -> Vec<&str> {
    ptx.lines().filter_map(|l| l.strip_prefix(".visible .entry ")).filter_map(|l| l.split('(').next()).collect()
}

/// The PTX ISA a text declares (`.version 9.0` → `(9, 0)`).
pub fn ptx_isa(ptx: &str) -> Option<(u32, u32)> {
    let v = ptx.lines().find_map(|l| l.strip_prefix(".version "))?.trim();
    let (major, minor) = v.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The oldest CUDA release whose driver loads PTX of this ISA, as drivers
/// report versions (1000 · major + 10 · minor); `None` past what this knows.
pub fn cuda_for_isa(isa: (u32, u32)) -> Option<i32> {
    let cuda = |major: i32, minor: u32| 1000 * major + 10 * minor as i32;
    match isa {
        (7, m @ 0..=8) => Some(cuda(11, m)),
        (8, m @ 0..=5) => Some(cuda(12, m)),
        // CUDA 12.6 kept ISA 8.5, so from 8.6 on the minor versions part.
        (8, m @ 6..=8) => Some(cuda(12, m + 1)),
        (9, 0) => Some(cuda(13, 0)),
        _ => None,
    }
}

/// Refuses a driver (its `cuDriverGetVersion`) older than the embedded
/// kernels' PTX needs: the module load would fail later with only
/// CUDA_ERROR_UNSUPPORTED_PTX_VERSION to say why.
pub fn check_driver(driver: i32) -> anyhow::Result<()> {
    let version = |v: i32| format!("{}.{}", v / 1000, v % 1000 / 10);
    for (family, text) in KERNEL_PTX {
        let Some((isa, need)) = ptx_isa(text).and_then(|isa| Some((isa, cuda_for_isa(isa)?))) else { continue };
        anyhow::ensure!(
            driver >= need,
            "this NVIDIA driver supports CUDA {}, but the embedded kernels ({family} and the rest) are PTX ISA {}.{}, \
             which needs a driver for CUDA {} or newer: update the driver (docs/cuda.md, \"Drivers\")",
            version(driver),
            isa.0,
            isa.1,
            version(need)
        );
    }
    Ok(())
}
