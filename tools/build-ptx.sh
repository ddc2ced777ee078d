#!/usr/bin/env bash
# Regenerates kernels-ptx/*.ptx from the .cu files with the pinned CUDA 13.0
# nvcc (pip wheels, no GPU needed; the device driver loads PTX ISA <= 9.0),
# and checks each with ptxas for sm_90. Commit the .ptx files it writes.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-cuda
bin="$venv/lib/python3.11/site-packages/nvidia/cu13/bin"
if [ ! -x "$bin/nvcc" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88 \
    nvidia-cuda-crt==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
fi
for cu in kernels-ptx/*.cu; do
  ptx="${cu%.cu}.ptx"
  "$bin/nvcc" -ptx -arch=sm_80 -O3 "$cu" -o "$ptx"
  "$bin/ptxas" -arch=sm_90 "$ptx" -o /dev/null
  echo "$ptx: $(grep -c '^.visible .entry' "$ptx") kernels, ptxas sm_90 ok"
done
