#!/usr/bin/env bash
# The SASS ptxas makes of the committed PTX for sm_90, read without a GPU:
#   bash tools/sass.sh flash            per kernel of kernels-ptx/flash.ptx: spill
#                                       stores/loads, atomics, reductions, memory
#                                       barriers and block barriers, by instruction
#   bash tools/sass.sh flash KERNEL     that kernel's whole SASS
# ptxas is tools/build-ptx.sh's pinned 13.0; cuobjdump and nvdisasm come
# from pip at 13.2 (no 13.0 wheel of them exists), which read its cubins.
set -euo pipefail
cd "$(dirname "$0")/.."
family=${1:?usage: tools/sass.sh FAMILY [KERNEL]}
[ -f "kernels-ptx/$family.ptx" ] || { echo "no kernel family $family: $(cd kernels-ptx && ls ./*.ptx | sed 's|./||; s|.ptx||' | tr '\n' ' ')" >&2; exit 1; }
bin=.venv-cuda/lib/python3.11/site-packages/nvidia/cu13/bin
[ -x "$bin/ptxas" ] || { echo "run tools/build-ptx.sh first (it installs ptxas)" >&2; exit 1; }
if [ ! -x "$bin/nvdisasm" ]; then
  .venv-cuda/bin/pip install -q --disable-pip-version-check nvidia-cuda-cuobjdump==13.2.86 nvidia-cuda-nvdisasm==13.2.86
fi
cubin=$(mktemp --suffix .cubin)
trap 'rm -f "$cubin"' EXIT
"$bin/ptxas" -arch=sm_90 "kernels-ptx/$family.ptx" -o "$cubin"
if [ -n "${2:-}" ]; then
  PATH="$bin:$PATH" "$bin/cuobjdump" -sass -fun "$2" "$cubin"
  exit 0
fi
PATH="$bin:$PATH" "$bin/cuobjdump" -sass "$cubin" | awk '
  /Function : / { kernel = $3 }
  {
    for (i = 1; i <= NF; i++)
      if ($i ~ /^(STL|LDL|ATOMG|ATOMS|REDG|REDS|MEMBAR|BAR)(\.|;|$)/) { sub(/;$/, "", $i); n[kernel "\t" $i]++; break }
  }
  END { for (k in n) print k "\t" n[k] }' | sort | column -t -s $'\t'
