// Stands in for the CUDA toolkit's header when kernels-ptx/ is compiled for
// the CPU emulator (the kernels include only this one).
#pragma once
#include "../emu.hpp"
