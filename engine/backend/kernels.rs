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
