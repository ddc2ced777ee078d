//! Device memory: cudarc allocates from the driver's stream-ordered pool
//! (cuMemAllocAsync). With its release threshold raised to "never", freed
//! blocks stay in the pool for the next step, so the pool is the caching
//! allocator and no step pays for cudaMalloc. Its high-water mark is the
//! peak memory that `bench train` reports.

use super::Cuda;
use anyhow::{bail, Result};
use cudarc::driver::{sys, CudaContext};
use std::ffi::c_void;
use std::sync::Arc;

fn check(what: &str, r: sys::CUresult) -> Result<()> {
    if r != sys::CUresult::CUDA_SUCCESS {
        bail!("{what}: {r:?}");
    }
    Ok(())
}

/// The device's default pool, set to keep what it has allocated.
pub(crate) fn caching_pool(ctx: &Arc<CudaContext>) -> Result<sys::CUmemoryPool> {
    ctx.bind_to_thread()?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut keep = u64::MAX;
    // SAFETY: plain driver calls on a bound context with valid out-pointers.
    unsafe {
        check("cuDeviceGetDefaultMemPool", sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()))?;
        check(
            "setting the pool's release threshold",
            sys::cuMemPoolSetAttribute(pool, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &mut keep as *mut u64 as *mut c_void),
        )?;
    }
    Ok(pool)
}

impl Cuda {
    /// The most bytes in use at once since the last `reset_peak_memory`.
    pub fn peak_memory_bytes(&self) -> u64 {
        let mut v = 0u64;
        // SAFETY: reads one u64 attribute of a live pool.
        let r = unsafe {
            sys::cuMemPoolGetAttribute(self.pool, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH, &mut v as *mut u64 as *mut c_void)
        };
        check("reading the pool's high-water mark", r).expect("memory pool query");
        v
    }

    /// Restarts the high-water mark from what is in use now.
    pub fn reset_peak_memory(&self) {
        let mut zero = 0u64;
        // SAFETY: the driver only accepts 0 here, which resets the mark.
        let r = unsafe {
            sys::cuMemPoolSetAttribute(self.pool, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH, &mut zero as *mut u64 as *mut c_void)
        };
        check("resetting the pool's high-water mark", r).expect("memory pool reset");
    }
}
