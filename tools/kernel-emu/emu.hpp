// Runs the CUDA kernels of kernels-ptx/ on the CPU, so their indexing,
// tiling, masking and warp-level data movement are tested on machines
// without a GPU (tests/cuda_emulated.rs, through driver.cpp and cublas.cpp).
// Each kernel source is compiled as C++ with this header standing in for the
// CUDA toolkit (include/cuda_bf16.h includes it): every GPU thread runs as a
// fiber (lanes.hpp), one block at a time, each until it reaches a barrier or
// a warp collective (collectives.hpp), in orders drawn from a seed
// (schedule.hpp); built with ThreadSanitizer, every access is checked for
// races by the GPU's ordering rules (race.hpp). What this cannot show:
// timing, register spills, bank conflicts (but ldmatrix's, which fail),
// and the fast-math intrinsics' last-bit differences.
#pragma once
#include "registry.hpp"
