#!/usr/bin/env python3
"""PyTorch CPU eager on the same model and batch as `vul2safe bench cpu`
(Llama 4 layers, hidden 256, 4 heads, FFN 768, vocab 8192, untied; B8 T256,
fp32, AdamW), then the ratio against vul2safe measured in the same run.

Usage: python3 bench/torch_cpu_compare.py [path/to/vul2safe]
"""
import json
import subprocess
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

B, T, STEPS, WARMUP = 8, 256, 5, 2


def torch_tok_s():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=8192, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                      tie_word_embeddings=False, attn_implementation="sdpa")
    m = LlamaForCausalLM(cfg)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    x = torch.randint(0, cfg.vocab_size, (B, T))
    times = []
    for i in range(WARMUP + STEPS):
        t = time.perf_counter()
        loss = m(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    med = sorted(times[WARMUP:])[STEPS // 2]
    return B * T / med, med


def main():
    exe = sys.argv[1] if len(sys.argv) > 1 else "target/release/vul2safe"
    ours = json.loads(subprocess.check_output([exe, "bench", "cpu", "--batch", str(B), "--seq", str(T), "--steps", str(STEPS)]))
    tok_s, med = torch_tok_s()
    print(json.dumps({
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "torch_tok_s": round(tok_s), "torch_step_ms": round(med * 1e3, 1),
        "vul2safe_tok_s": ours["tok_s"], "vul2safe_step_ms": ours["step_ms"],
        "ratio": round(ours["tok_s"] / tok_s, 2),
    }))


if __name__ == "__main__":
    main()
