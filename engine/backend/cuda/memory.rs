//! Device memory: cudarc allocates from the driver's stream-ordered pool
//! (cuMemAllocAsync). With its release threshold raised to "never", freed
//! blocks stay in the pool for the next step, so the pool is the caching
//! allocator and no step pays for cudaMalloc. Its high-water mark is the
//! peak memory that `bench train` reports.

use super::Cuda;
use anyhow::{Context, Result};
use cudarc::driver::{sys, CudaContext};
use std::ffi::c_void;
use std::sync::Arc;

/// The device's default pool, set to keep what it has allocated.
pub(crate) fn caching_pool(ctx: &Arc<CudaContext>) -> Result<sys::CUmemoryPool> {
    ctx.bind_to_thread()?;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut keep = u64::MAX;
    // SAFETY: plain driver calls on a bound context with valid out-pointers.
    unsafe {
        sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()).result().context("cuDeviceGetDefaultMemPool")?;
        sys::cuMemPoolSetAttribute(pool, sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &mut keep as *mut u64 as *mut c_void)
            .result()
            .context("setting the pool's release threshold")?;
    }
    Ok(pool)
}

impl Cuda {
    /// The most bytes in use at once since the backend was opened.
    pub fn peak_memory_bytes(&self) -> u64 {
        let mut v = 0u64;
        // SAFETY: reads one u64 attribute of a live pool.
        let r = unsafe {
            sys::cuMemPoolGetAttribute(
                self.pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_HIGH,
                &mut v as *mut u64 as *mut c_void,
            )
        };
        r.result().expect("reading the memory pool's high-water mark");
        v
    }
}
