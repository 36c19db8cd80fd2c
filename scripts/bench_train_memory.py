"""Benchmark: training (forward + backward) peak memory and CPU time of the chunked ops, old path
(full autograd tape) vs lean path (checkpointed time blocks), against SDPA causal attention.

    OMP_NUM_THREADS=1 python scripts/bench_train_memory.py [--mem-len 16384] [--time-lens 2048 8192]
        [--block N] [--ops ...] [--out reports/benchmarks/train_memory_cpu.json]

Every measurement runs in its own subprocess (1 thread, fp32, B = 1, H = 4, D = 64):
- memory: peak RSS above the process's RSS before the inputs are made (ru_maxrss after the run
  minus the current RSS before; a small warm-up run first loads the kernels). The inputs, the
  output gradient and the input gradients are counted, for every path alike;
- time: process CPU time (time.process_time) of forward + backward, min over --repeats runs after
  one warm-up.
Paths: "old" = checkpoint_block=0 (today's op: autograd keeps every intra-chunk intermediate),
"lean" = the op's default (checkpointing over time blocks), "sdpa" = F.scaled_dot_product_attention
(is_causal) on the same q, k, v. hgrn runs on x, g of [B, T, H * D] (the same element count as v).
This is a benchmark that records numbers, not a test.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import resource
import subprocess
import sys
import time

B, H, D = 1, 4, 64
OPS = ("delta_rule", "gated_delta_rule", "gla_scalar", "gla_channel", "hgrn")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _inputs(op: str, T: int):
    """scripts/bench_ops.py's seeded inputs (the same tensors): its delta_rule is Gated DeltaNet's
    (DeltaNet's is that without g), and sdpa's q, k, v go back to the ops' [B, T, H, D]."""
    from bench_ops import inputs  # this script's folder is on sys.path when it runs

    if op == "sdpa":
        return {n: t.transpose(1, 2) for n, t in inputs("sdpa", T).items()}
    d = inputs("delta_rule" if op.endswith("delta_rule") else op, T)
    if op == "delta_rule":
        del d["g"]
    return d


def _call(op: str, path: str, block: int | None):
    """fwd+bwd closure builder: returns run(inputs) -> None."""
    import torch
    import torch.nn.functional as F

    from harness.ops import chunk_delta_rule, chunk_gla, chunk_hgrn

    if op == "sdpa":
        def run(t, warmup=False):
            o = F.scaled_dot_product_attention(*(t[n].transpose(1, 2) for n in "qkv"), is_causal=True)
            o.backward(torch.ones_like(o))
        return run
    fn = {"hgrn": chunk_hgrn, "gla_scalar": chunk_gla, "gla_channel": chunk_gla}.get(op, chunk_delta_rule)
    kw = {}
    if "checkpoint_block" in inspect.signature(fn).parameters:  # absent before the lean path existed
        kw["checkpoint_block"] = 0 if path == "old" else block
    elif path != "old":
        raise SystemExit(f"{fn.__name__} has no lean path (checkpoint_block)")

    def run(t, warmup=False):
        kw_ = dict(kw, checkpoint_block=64) if warmup and kw.get("checkpoint_block") != 0 and kw else kw
        o, s = fn(**t, **kw_)
        torch.autograd.backward([o, s], [torch.ones_like(o), torch.ones_like(s)])
    return run


def child(kind: str, op: str, path: str, T: int, block: int | None, repeats: int) -> dict:
    import gc

    import torch

    torch.set_num_threads(1)
    run = _call("sdpa" if path == "sdpa" else op, path, block)
    name = "sdpa" if path == "sdpa" else op

    def fresh(T_):
        return {n: t.requires_grad_(True) for n, t in _inputs(name, T_).items()}

    run(fresh(256), warmup=True)  # warm-up: load kernels (the lean path with small blocks)
    gc.collect()
    if kind == "mem":
        base = _rss_bytes()
        t = fresh(T)
        inputs_bytes = sum(x.numel() * x.element_size() for x in t.values())
        run(t)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        return {"peak_mib": peak / 2**20, "inputs_mib": inputs_bytes / 2**20}
    t = fresh(T)
    run(t)  # warm-up at this length
    times = []
    for _ in range(repeats):
        for x in t.values():
            x.grad = None
        c0 = time.process_time()
        run(t)
        times.append(time.process_time() - c0)
    return {"cpu_ms_min": min(times) * 1e3, "cpu_ms_all": [x * 1e3 for x in times]}


def spawn(kind: str, op: str, path: str, T: int, block: int | None, repeats: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", kind, op, path, str(T),
           str(-1 if block is None else block), str(repeats)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mem-len", type=int, default=16384)
    ap.add_argument("--time-lens", type=int, nargs="*", default=[2048, 8192])
    ap.add_argument("--block", type=int, default=None, help="checkpoint block of the lean path (default: the op's)")
    ap.add_argument("--ops", nargs="*", default=list(OPS))
    ap.add_argument("--paths", nargs="*", default=["old", "lean"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--label", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", nargs=6, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, op, path, T, block, repeats = args.child
        block = None if int(block) < 0 else int(block)
        print(json.dumps(child(kind, op, path, int(T), block, int(repeats))))
        return

    try:
        from harness.ops.chunking import CHECKPOINT_BLOCK
    except ImportError:  # before the lean path existed: only "old" can run
        CHECKPOINT_BLOCK = None

    from harness.runtime.devices import machine_info

    res = {"label": args.label, "machine": machine_info(), "threads": 1,
           "clock": "time.process_time (process CPU time), min over repeats after one warm-up",
           "memory": "peak RSS above the pre-input RSS (ru_maxrss), isolated subprocess; inputs, output grads "
                     "and input grads included",
           "settings": {"B": B, "H": H, "D": D, "dtype": "float32", "mem_len": args.mem_len,
                        "time_lens": args.time_lens, "repeats": args.repeats,
                        "block": args.block if args.block is not None else CHECKPOINT_BLOCK},
           "load_avg_before": list(os.getloadavg()), "memory_mib": {}, "cpu_ms": {}}
    if args.mem_len:
        sdpa = spawn("mem", "sdpa", "sdpa", args.mem_len, None, 1)
        res["memory_mib"]["sdpa"] = sdpa
        print(f"memory T={args.mem_len}: sdpa {sdpa['peak_mib']:.0f} MiB (inputs {sdpa['inputs_mib']:.0f})", flush=True)
        for op in args.ops:
            row = {}
            for path in args.paths:
                m = spawn("mem", op, path, args.mem_len, args.block, 1)
                m["ratio_vs_sdpa"] = m["peak_mib"] / sdpa["peak_mib"]
                row[path] = m
                print(f"  {op:18s} {path:5s} {m['peak_mib']:8.0f} MiB  {m['ratio_vs_sdpa']:5.2f}x sdpa "
                      f"(inputs {m['inputs_mib']:.0f})", flush=True)
            res["memory_mib"][op] = row
    for T in args.time_lens:
        res["cpu_ms"][str(T)] = {"sdpa": spawn("time", "sdpa", "sdpa", T, None, args.repeats)}
        print(f"time T={T}: sdpa {res['cpu_ms'][str(T)]['sdpa']['cpu_ms_min']:.0f} ms", flush=True)
        for op in args.ops:
            row = {p: spawn("time", op, p, T, args.block, args.repeats) for p in args.paths}
            res["cpu_ms"][str(T)][op] = row
            print("  " + f"{op:18s} " + "  ".join(f"{p} {r['cpu_ms_min']:7.1f} ms" for p, r in row.items()), flush=True)
    res["load_avg_after"] = list(os.getloadavg())
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
