#!/usr/bin/env bash
# A real pretrained model through the method on the CPU: SmolLM2-135M-Instruct
# (models/smollm2-135m, from tools/setup.sh), PrimeVul+ from the embedded
# corpus (heuristic teacher), SFT, then PPO with token-level rewards. Every
# model is evaluated on the held-out PrimeVul+ prompts and the embedded
# security prompts (all five analyzers) and on HumanEval (pass@1, sandboxed;
# asked for the whole function, as a chat model).
# Usage: bash bench/smollm2_cpu.sh [OUT]   (about an hour on 2 cores;
# VUL2SAFE=path runs another build of the binary)
# Prints one JSON line per evaluation ({"model", "bench", ...report summary}).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-smollm2-run}
exe=${VUL2SAFE:-target/release/vul2safe}
[ -x "$exe" ] || cargo build --release
[ -f models/smollm2-135m/model.safetensors ] || { echo "models/smollm2-135m is missing: run bash tools/setup.sh" >&2; exit 1; }
# A rerun starts over: the trainers refuse to start afresh over a run's checkpoints.
rm -rf "$out/sft" "$out/ppo-tlr"
mkdir -p "$out"

evaluate() {  # name, model folder
  local tools=builtin,cppcheck,flawfinder,bandit,icd
  "$exe" eval --model "$2" --bench "$out/data/primevul_plus.jsonl" --samples 4 --temperature 0.7 --max-new-tokens 192 \
    --prompt-format chatml --tools $tools --out "$out/eval-$1-held-out" | sed "s/^{/{\"model\":\"$1\",\"bench\":\"held-out\",/"
  "$exe" eval --model "$2" --bench security --samples 2 --temperature 0.7 --max-new-tokens 192 \
    --prompt-format chatml --tools $tools --out "$out/eval-$1-security" | sed "s/^{/{\"model\":\"$1\",\"bench\":\"security\",/"
  "$exe" eval --model "$2" --bench humaneval --samples 1 --temperature 0.2 --max-new-tokens 192 \
    --prompt-format chatml --out "$out/eval-$1-humaneval" | sed "s/^{/{\"model\":\"$1\",\"bench\":\"humaneval\",/"
}

"$exe" data build --out "$out/data" >/dev/null
evaluate base models/smollm2-135m
"$exe" sft --model models/smollm2-135m --data "$out/data" --out "$out/sft" --steps 60 --batch 4 --seq 256 --lr 5e-5 --warmup 5 \
  --eval-every 30 --save-every 60 --prompt-format chatml >&2
evaluate sft "$out/sft/step-000060"
"$exe" ppo --policy "$out/sft/step-000060" --data "$out/data" --out "$out/ppo-tlr" --reward tlr --iters 8 --rollout-batch 8 \
  --max-new-tokens 160 --epochs 1 --minibatch 8 --lr 5e-6 --critic-lr 5e-6 --save-every 8 --prompt-format chatml >&2
evaluate ppo-tlr "$out/ppo-tlr/step-000008"
