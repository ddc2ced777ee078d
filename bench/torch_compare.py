#!/usr/bin/env python3
"""PyTorch on the GPU on the same shapes as `vul2safe bench train`,
`bench generate` and `bench attention`, in the same run (based on
../shared/torch_baseline.py: random init, SDPA, autocast bf16, fused AdamW;
HF `generate` in bf16 with sampling; SDPA's flash backend, which is
FlashAttention-2), then tables of vul2safe / torch ratios.

Usage (on the GPU machine, after the vul2safe benches of the same run):
    python3 bench/torch_compare.py bench.jsonl [--no-eager]
where bench.jsonl holds `vul2safe bench train` / `generate` / `attention` JSON lines.
"""
import json
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

SHAPES = [("llama-124m", 16, 1024), ("qwen2-0.5b", 8, 1024)]


def model(name):
    if name == "llama-124m":
        return LlamaForCausalLM(LlamaConfig(vocab_size=50304, hidden_size=768, intermediate_size=2048, num_hidden_layers=12,
                                            num_attention_heads=12, num_key_value_heads=12, max_position_embeddings=2048,
                                            tie_word_embeddings=True, attn_implementation="sdpa"))
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                                        num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=4096,
                                        tie_word_embeddings=True, attn_implementation="sdpa"))


def torch_tok_s(name, b, t, compile_, steps=8):
    torch.manual_seed(0)
    m = model(name).cuda()
    if compile_:
        m = torch.compile(m)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, 50000, (b, t), device="cuda")
    times = []
    for _ in range(steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = m(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    med = sorted(times[3:])[len(times[3:]) // 2]
    peak = torch.cuda.max_memory_allocated() / 2**30
    del m, opt
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return b * t / med, peak


def hf_generate_tok_s(name, b, p, n):
    torch.manual_seed(0)
    m = model(name).to("cuda", dtype=torch.bfloat16).eval()
    x = torch.randint(0, 50000, (b, p), device="cuda")
    with torch.no_grad():
        m.generate(x, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        m.generate(x, max_new_tokens=n, min_new_tokens=n, do_sample=True, top_k=0, top_p=1.0)
        torch.cuda.synchronize()
        secs = time.perf_counter() - t0
    del m
    torch.cuda.empty_cache()
    return b * n / secs


def flash_attention_tflops(b, h, hkv, t, d, reps=10):
    """FlashAttention-2 through SDPA's flash backend, causal, bf16, on q
    [b, h, t, d] and k/v [b, hkv, t, d] (repeated up to h heads when hkv < h):
    forward, backward and overall TFLOP/s, the backward counted as 2.5x the
    forward's FLOPs, as `vul2safe bench attention` counts them."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    torch.manual_seed(0)
    q = torch.randn(b, h, t, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(b, hkv, t, d, device="cuda", dtype=torch.bfloat16).repeat_interleave(h // hkv, dim=1).requires_grad_()
            for _ in range(2))
    dout = torch.randn_like(q)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def timed(run):
        run()
        torch.cuda.synchronize()
        start.record()
        for _ in range(reps):
            run()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / reps

    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        fwd_ms = timed(lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True))
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        bwd_ms = timed(lambda: torch.autograd.grad(out, (q, k, v), dout, retain_graph=True))
    flops = 2.0 * b * t * t * h * d
    return flops / fwd_ms / 1e9, 2.5 * flops / bwd_ms / 1e9, 3.5 * flops / (fwd_ms + bwd_ms) / 1e9


def unordered(r):
    """A marker for a run whose flash backward added dQ's shares in any order (tools/gpu-check's retry)."""
    return " (dQ unordered)" if r.get("ordered_dq") is False else ""


def ours(path):
    train, gen, attention = {}, {}, []
    for line in open(path):
        if line.startswith("{"):
            r = json.loads(line)
            if r["bench"] == "attention":
                if r["backend"] == "cuda" and r.get("math", "bf16") == "bf16":
                    attention.append(r)
            elif r["bench"] == "generate":
                key = (r["shape"], r["batch"], r["prompt_len"], r["new"])
                if "profile" in r:  # events per launch slow a launch-bound decode
                    continue
                if r.get("graphs", True):  # not the ablation that launches decode steps kernel by kernel
                    gen[key] = r
            elif r.get("math", "bf16") == "bf16" and not r.get("recompute"):  # the default mode; others are ablations
                key = (r["shape"], r["batch"], r["seq"])
                if "profile" not in r or key not in train:  # an unprofiled run is the headline (no events per launch)
                    train[key] = r
    return train, gen, attention


def main():
    measured, generated, attention = ours(sys.argv[1] if len(sys.argv) > 1 else "bench.jsonl")
    eager_too = "--no-eager" not in sys.argv
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
    rows = []
    for name, b, t in SHAPES:
        r = measured.get((name, b, t), {})
        eager, eager_mem = torch_tok_s(name, b, t, False) if eager_too else (float("nan"), float("nan"))
        compiled, comp_mem = torch_tok_s(name, b, t, True)
        rows.append((name + unordered(r), b, t, r.get("tok_s", float("nan")), r.get("peak_gib", float("nan")), eager, compiled, comp_mem))
        print(json.dumps({"shape": name, "torch_eager_tok_s": round(eager) if eager == eager else None, "torch_eager_peak_gib": eager_mem,
                          "torch_compile_tok_s": round(compiled), "torch_compile_peak_gib": round(comp_mem, 1)}), flush=True)
    print("| shape | B×T | vul2safe tok/s | peak GiB | torch eager | torch.compile | peak GiB | vs eager | vs compile |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, b, t, tok, mem, eager, compiled, comp_mem in rows:
        print(f"| {name} | {b}×{t} | {tok:.0f} | {mem} | {eager:.0f} | {compiled:.0f} | {comp_mem:.1f} | {tok / eager:.2f}× | {tok / compiled:.2f}× |")
    att_rows = []
    for r in attention:
        shape = (r["batch"], r["heads"], r["kv_heads"], r["seq"], r["head_dim"])
        try:
            fa2 = flash_attention_tflops(*shape)
        except RuntimeError as e:  # no flash kernel for this shape or card: say so, keep the other tables
            print(f"FlashAttention-2 through SDPA failed on {shape}: {e}", flush=True)
            fa2 = (float("nan"),) * 3
        att_rows.append((shape, (r["fwd_tflops"], r["bwd_tflops"], r["total_tflops"]), fa2, unordered(r)))
        print(json.dumps({"attention": list(shape), "fa2_fwd_tflops": fa2[0], "fa2_bwd_tflops": fa2[1], "fa2_total_tflops": fa2[2]}),
              flush=True)
    if att_rows:
        print("| attention (causal) | B, H/Hkv, T, D | vul2safe fwd / bwd / fwd+bwd TFLOP/s | FlashAttention-2 (SDPA) fwd / bwd / fwd+bwd | vs FA2 fwd+bwd |")
        print("|---|---|---|---|---|")
        for (b, h, hkv, t, d), ours_, fa2, note in att_rows:
            print(f"| {note} | {b}, {h}/{hkv}, {t}, {d} | {ours_[0]:.0f} / {ours_[1]:.0f} / {ours_[2]:.0f} | {fa2[0]:.0f} / {fa2[1]:.0f} / {fa2[2]:.0f} "
                  f"| {ours_[2] / fa2[2]:.2f}× |")
    gen_rows = []
    for (name, b, p, n), r in sorted(generated.items()):
        # HF generate makes well under 1K tok/s: longer runs cost the device session minutes.
        hf = hf_generate_tok_s(name, b, p, n) if n <= 64 else float("nan")
        gen_rows.append((name, b, p, n, r["new_tok_s"], r.get("share_of_roofline"), r.get("prefill_tok_s", float("nan")), hf))
        print(json.dumps({"shape": name, "batch": b, "prompt_len": p, "new": n, "hf_generate_new_tok_s": round(hf)}), flush=True)
    if gen_rows:
        print("| generate | B, prompt, new | vul2safe new tok/s | share of roofline | prefill tok/s | HF generate | vs HF |")
        print("|---|---|---|---|---|---|---|")
        for name, b, p, n, tok, share, prefill, hf in gen_rows:
            print(f"| {name} | {b}, {p}, {n} | {tok:.0f} | {share} | {prefill:.0f} | {hf:.0f} | {tok / hf:.1f}× |")


if __name__ == "__main__":
    main()
