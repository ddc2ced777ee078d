#!/usr/bin/env python3
"""Writes the small PyTorch-made fixtures that the Rust tests compare against.

Run from the repo root with torch, transformers, safetensors and tokenizers
installed (CPU is enough):  python3 tools/make_fixtures.py

  python3 tools/make_fixtures.py --check-load DIR TOKENS.json
      loads a vul2safe-saved DIR in transformers and prints its logprobs in
      the JSON of `vul2safe score`, so the two can be compared.

It writes
  models/tiny/tokenizer.json          byte-level BPE trained on the embedded corpus
  tests/fixtures/<name>/config.json   tiny random HF model (A: Llama, B: Qwen2)
  tests/fixtures/<name>/model.safetensors, tokenizer.json (a copy of the tiny one)
  tests/fixtures/<name>/expected.safetensors
      input_ids, labels, logits, loss, grad.<param>, step2.<param>, greedy_prompt, greedy_tokens
  tests/fixtures/<name>/adamw.json     the optimizer settings used
  tests/fixtures/adamw_unit.safetensors two AdamW updates on given gradients
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 331  # not a power of two, larger than the tokenizer's own vocab
SEQ = 37
BATCH = 2
ADAMW = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, max_grad_norm=1.0)


def make_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Trained on both sides of every pair of the embedded PrimeVul sample.
    corpus = os.path.join(ROOT, "engine/data/corpus/primevul_sample.jsonl")
    funcs = [json.loads(line)["func"] for line in open(corpus, encoding="utf-8")]
    tok.train_from_iterator(funcs, trainer)
    path = os.path.join(ROOT, "models/tiny/tokenizer.json")
    tok.save(path)
    print("tokenizer:", path, tok.get_vocab_size())


def model_a():
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=72, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128,
                      rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False,
                      bos_token_id=0, eos_token_id=0)
    return LlamaForCausalLM(cfg)


def model_b():
    cfg = Qwen2Config(vocab_size=VOCAB, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=3, num_key_value_heads=1, head_dim=32, max_position_embeddings=128,
                      rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
                      bos_token_id=0, eos_token_id=0)
    return Qwen2ForCausalLM(cfg)


def randomize(model):
    # Peaked, non-trivial weights: larger std than HF init (so greedy decoding
    # has no near-ties), norms away from 1 and biases away from 0.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith(".bias"):
                p.copy_(0.3 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.15)


def loss_and_grads(model, ids, labels):
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, labels=labels)
    out.loss.backward()
    return out


def transformers4_layout(path):
    """Rewrites a saved config.json into the transformers 4 layout."""
    with open(path) as f:
        c = json.load(f)
    rp = c.pop("rope_parameters", None) or {}
    c["rope_theta"] = rp.get("rope_theta", c.get("rope_theta", 10000.0))
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    c.pop("head_dim", None)
    with open(path, "w") as f:
        json.dump(c, f, indent=2)


def write(name, model, v4_layout):
    out_dir = os.path.join(ROOT, "tests/fixtures", name)
    os.makedirs(out_dir, exist_ok=True)
    randomize(model)
    model.save_pretrained(out_dir, safe_serialization=True)
    shutil.copy(os.path.join(ROOT, "models/tiny/tokenizer.json"), out_dir)
    if v4_layout:
        transformers4_layout(os.path.join(out_dir, "config.json"))

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=g)
    labels = ids.clone()
    labels[0, :6] = -100  # a prompt: no loss on its tokens
    labels[1, 20:23] = -100

    expected = {"input_ids": ids, "labels": labels}
    out = loss_and_grads(model, ids, labels)
    expected["logits"] = out.logits.detach().contiguous()
    expected["loss"] = out.loss.detach().reshape(1)
    for pname, p in model.named_parameters():
        expected["grad." + pname] = p.grad.detach().clone()

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": ADAMW["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"])
    for step in range(2):
        if step > 0:
            loss_and_grads(model, ids, labels)
        torch.nn.utils.clip_grad_norm_(model.parameters(), ADAMW["max_grad_norm"])
        opt.step()
    for pname, p in model.named_parameters():
        expected["step2." + pname] = p.detach().clone()

    # Greedy reference from a fresh copy of the saved (pre-training) weights.
    fresh = type(model).from_pretrained(out_dir).eval()
    prompt = ids[:1, :7]
    with torch.no_grad():
        gen = fresh.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    expected["greedy_prompt"] = prompt.reshape(-1).contiguous()
    expected["greedy_tokens"] = gen[0, prompt.shape[1]:].contiguous()

    save_file({k: v.clone().contiguous() for k, v in expected.items()}, os.path.join(out_dir, "expected.safetensors"))
    with open(os.path.join(out_dir, "adamw.json"), "w") as f:
        json.dump(ADAMW, f, indent=2)
    print(name, "loss", float(out.loss), "greedy", expected["greedy_tokens"].tolist())


def write_adamw_unit():
    """Two torch AdamW updates on given gradients: isolates the optimizer math,
    which the 2-step model comparison cannot check tightly (Adam's normalized
    direction amplifies f32 rounding: torch f32 vs f64 differ by ~2e-3 there)."""
    g = torch.Generator().manual_seed(2)
    p0 = torch.randn(517, generator=g)
    grads = [torch.randn(517, generator=g) * 0.1, torch.randn(517, generator=g) * 0.1]
    p = p0.clone().requires_grad_(True)
    opt = torch.optim.AdamW([p], lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"], weight_decay=ADAMW["weight_decay"])
    for gr in grads:
        p.grad = gr.clone()
        opt.step()
    save_file({"p0": p0, "g1": grads[0], "g2": grads[1], "p2": p.detach().clone()},
              os.path.join(ROOT, "tests/fixtures/adamw_unit.safetensors"))


def check_roundtrip(dir_, tokens_file):
    """Loads a checkpoint that vul2safe saved with transformers and prints the
    same JSON as `vul2safe score --model DIR --tokens FILE`, for diffing."""
    cfg = json.load(open(os.path.join(dir_, "config.json")))
    cls = Qwen2ForCausalLM if cfg["architectures"][0].startswith("Qwen2") else LlamaForCausalLM
    m = cls.from_pretrained(dir_).eval()
    rows = json.load(open(tokens_file))["tokens"]
    out = []
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row])
            lp = torch.log_softmax(m(input_ids=ids).logits[0, :-1].float(), -1)
            out.append(lp.gather(1, ids[0, 1:, None])[:, 0].tolist())
    print(json.dumps({"logprobs": out}))


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--check-load":
        check_roundtrip(sys.argv[2], sys.argv[3])
        sys.exit(0)
    torch.manual_seed(0)
    make_tokenizer()
    write("llama_a", model_a(), v4_layout=True)
    write("qwen2_b", model_b(), v4_layout=False)
    write_adamw_unit()
