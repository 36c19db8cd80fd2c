"""Benchmark: chunked vs step-by-step recurrent forward+backward time per variant (CPU by default).

    python scripts/bench_chunk_vs_recurrent.py [--seq-len 2048] [--d-model 256] [--heads 4] [--out FILE.json]

Times one mixer layer (batch 1, fp32), median of --repeats runs after one warm-up; writes a JSON
list of rows and prints a Markdown table. This is a benchmark that records numbers, not a test.
"""
from __future__ import annotations

import argparse
import json

import torch

from harness.measure import time_calls
from harness.registry import VARIANTS


def fwd_bwd_seconds(mixer, x, mode: str, repeats: int) -> float:
    """Median forward+backward time of one mixer call (one warm-up call first)."""
    def step() -> None:
        mixer.zero_grad(set_to_none=True)
        y, _ = mixer(x.detach().requires_grad_(True), mode=mode)
        y.float().pow(2).mean().backward()

    return time_calls(step, warmup=1, repeats=repeats).median


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variants", nargs="*", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    names = args.variants or [n for n in VARIANTS.names() if n != "attention"]
    for name in names:
        mixer = VARIANTS.get(name)(args.d_model, args.heads)
        x = torch.randn(1, args.seq_len, args.d_model)
        chunk, rec = (fwd_bwd_seconds(mixer, x, m, args.repeats) for m in ("chunk", "recurrent"))
        row = {"variant": name, "seq_len": args.seq_len, "d_model": args.d_model, "n_heads": args.heads,
               "state_kind": VARIANTS.get(name).state_kind, "chunk_fwd_bwd_s": chunk,
               "recurrent_fwd_bwd_s": rec, "speedup": rec / chunk, "threads": torch.get_num_threads()}
        rows.append(row)
        print(f"{name:16s} chunk {chunk * 1e3:8.1f} ms   recurrent {rec * 1e3:8.1f} ms   speedup {rec / chunk:6.1f}x", flush=True)
    print("\n| variant | state | chunk fwd+bwd (ms) | recurrent fwd+bwd (ms) | speedup |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['state_kind']} | {r['chunk_fwd_bwd_s'] * 1e3:.1f} | "
              f"{r['recurrent_fwd_bwd_s'] * 1e3:.1f} | {r['speedup']:.1f}x |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
