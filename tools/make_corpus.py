#!/usr/bin/env python3
"""Renders the embedded sample corpus into PrimeVul's paired JSONL.

Sources: engine/data/corpus/src/*.c and *.py. Each pair starts with a header
line `//@@ project=P cwe=CWE-N msg="commit message"` (`#@@` in Python),
followed by one function in which a line ending in `//-` (`#-`) exists only
in the vulnerable version and one ending in `//+` (`#+`) only in the fix.

Output: engine/data/corpus/primevul_sample.jsonl, vulnerable row then patched
row per pair, with PrimeVul's fields. Deterministic: rerunning changes nothing.

  python3 tools/make_corpus.py
"""
import glob
import hashlib
import json
import os
import re
import shlex

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC = os.path.join(ROOT, "engine/data/corpus/src")
OUT = os.path.join(ROOT, "engine/data/corpus/primevul_sample.jsonl")


def split_pairs(path):
    comment = "#" if path.endswith(".py") else "//"
    header = re.compile(r"^" + re.escape(comment) + r"@@ (.*)$")
    pairs, current = [], None
    for line in open(path, encoding="utf-8").read().splitlines():
        m = header.match(line)
        if m:
            current = {"meta": dict(kv.split("=", 1) for kv in shlex.split(m.group(1))), "lines": []}
            pairs.append(current)
        elif current is not None:
            current["lines"].append(line)
    return comment, pairs


def render(lines, comment, keep):
    drop = comment + ("+" if keep == "-" else "-")
    mark = comment + keep
    out = []
    for line in lines:
        stripped = line.rstrip()
        if stripped.endswith(drop):
            continue
        if stripped.endswith(mark):
            stripped = stripped[: -len(mark)].rstrip()
        out.append(stripped)
    while out and not out[-1]:
        out.pop()
    return "\n".join(out) + "\n"


def main():
    rows, idx = [], 0
    for path in sorted(glob.glob(os.path.join(SRC, "*.c")) + glob.glob(os.path.join(SRC, "*.py"))):
        comment, pairs = split_pairs(path)
        ext = ".py" if comment == "#" else ".c"
        for p in pairs:
            meta = p["meta"]
            vuln = render(p["lines"], comment, "-")
            fixed = render(p["lines"], comment, "+")
            name = re.search(r"(?:def\s+|\b)(\w+)\s*\(", fixed).group(1)
            commit = hashlib.sha1(f"{meta['project']}/{name}/{meta['msg']}".encode()).hexdigest()
            for target, func in ((1, vuln), (0, fixed)):
                rows.append({
                    "idx": idx, "project": meta["project"], "commit_id": commit, "target": target, "func": func,
                    "cwe": [meta["cwe"]], "message": meta["msg"],
                    "hash": int(hashlib.md5(func.encode()).hexdigest()[:12], 16), "size": func.count("\n"),
                    "file_name": f"src/{name}{ext}",
                    "commit_url": f"https://example.invalid/{meta['project']}/commit/{commit}",
                })
                idx += 1
    with open(OUT, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{OUT}: {len(rows) // 2} pairs")


if __name__ == "__main__":
    main()
