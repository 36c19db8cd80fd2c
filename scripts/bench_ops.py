"""Op benchmark on the CPU: each chunked op alone, ours beside the committed version (git HEAD),
fla's pure-PyTorch naive references and SDPA causal attention, side by side in one process on the
same inputs.

    python scripts/bench_ops.py [--lengths 2048 8192] [--ops kda dplr ...] [--repeats 3]
        [--impls ours head fla_naive sdpa] [--base REV] [--mem-len 16384] [--mem-impls ours sdpa]
        [--out PATH]

Shapes: B = 1, H = 4, head dims 64, fp32, one thread (torch.set_num_threads(1)); hgrn runs on
x, g of [B, T, H * 64]. Inputs as the layers pass them (L2-normalised q and k for the delta rules,
beta after its sigmoid, log-space gates; RWKV-7's a = -kk, b = kk * rate and scale 1 for dplr).
- time: process CPU time (time.process_time, stable under other load on a shared machine) of the
  forward (no grad) and of forward + backward (loss = mean(o^2)), the least over --repeats runs,
  the implementations taking turns within each repeat; one untimed warm-up per implementation at
  the first length. Our op runs with its defaults
  (the memory-lean checkpointed path in training), as the layers call it;
- head: the same op from `git show REV:harness/ops/*` (--base REV, default HEAD; loaded as a
  temporary package), so a change is measured against the committed code (or the code before a
  series of commits) in the same process;
- fla_naive: harness.integrations.fla_references (fla's `naive.py` chunked forms; the step-loop
  references are skipped: minutes per call in backward at these lengths);
- sdpa: F.scaled_dot_product_attention(is_causal=True) on q, k, v [B, H, T, 64] of the op's shapes;
- memory (--mem-len): peak RSS of one forward + backward above the RSS before the inputs are made,
  each in its own subprocess (harness.runtime.memory); inputs, output and input gradients included;
- matmul roofline: GFLOP/s of a [128, 64, 64] batched matmul in the same process.
Writes reports/benchmarks/ops_cpu.json (machine, threads, clock, settings, numbers, Markdown
table). A benchmark that records numbers, not a test.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from harness.runtime.devices import machine_info  # noqa: E402

B, H, D = 1, 4, 64
OPS = ("gla_scalar", "gla_channel", "delta_rule", "kda", "dplr", "hgrn")
FAMILY = {"gla_scalar": "gla", "gla_channel": "gla", "delta_rule": "delta_rule", "kda": "kda", "dplr": "dplr",
          "hgrn": "hgrn"}
OUT = ROOT / "reports" / "benchmarks" / "ops_cpu.json"


def inputs(op: str, T: int) -> dict[str, Any]:
    """The op's keyword arguments at length T (seeded)."""
    gen = torch.Generator().manual_seed(0)
    rn = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    if op == "hgrn":
        return {"x": rn(B, T, H * D), "g": F.logsigmoid(rn(B, T, H * D) + 2)}
    q, k, v = rn(B, T, H, D), rn(B, T, H, D), rn(B, T, H, D)
    if op == "sdpa":
        return {"q": q.transpose(1, 2), "k": k.transpose(1, 2), "v": v.transpose(1, 2)}  # [B, H, T, D]
    if op.startswith("gla"):
        shape = (B, T, H) if op == "gla_scalar" else (B, T, H, D)
        return {"q": q, "k": k, "v": v, "g": F.logsigmoid(rn(*shape) + 3) / 4}
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    if op == "delta_rule":  # Gated DeltaNet: scalar gate
        return {"q": q, "k": k, "v": v, "beta": rn(B, T, H).sigmoid(), "g": F.logsigmoid(rn(B, T, H) + 3)}
    if op == "kda":
        return {"q": q, "k": k, "v": v, "beta": rn(B, T, H).sigmoid(), "g": F.logsigmoid(rn(B, T, H, D) + 3)}
    kk = F.normalize(rn(B, T, H, D), dim=-1)  # dplr, RWKV-7's parameterisation
    return {"q": q, "k": k, "v": v, "a": -kk, "b": kk * rn(B, T, H, D).sigmoid(),
            "g": -0.6065 * rn(B, T, H, D).sigmoid(), "scale": 1.0}


def load_head_ops(rev: str = "HEAD") -> Any | None:
    """harness/ops as committed at git revision `rev`, importable as `harness_head.ops` (None without
    git)."""
    try:
        names = subprocess.run(["git", "ls-tree", "--name-only", rev, "harness/ops/"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.split()
        tmp = Path(tempfile.mkdtemp(prefix="bench_ops_head_"))
        (tmp / "harness_head" / "ops").mkdir(parents=True)
        (tmp / "harness_head" / "__init__.py").write_text("")
        for name in names:
            text = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT, capture_output=True, text=True,
                                  check=True).stdout
            (tmp / "harness_head" / "ops" / Path(name).name).write_text(text.replace("harness.ops", "harness_head.ops"))
    except (OSError, subprocess.CalledProcessError):
        return None
    sys.path.insert(0, str(tmp))
    import importlib

    return importlib.import_module("harness_head.ops.dispatch")


def implementations(op: str, kw: dict[str, Any], impls: list[str], head: Any) -> dict[str, Callable[..., Any]]:
    """name -> fn(**kw) for the implementations that exist for this op."""
    from harness.integrations.fla_references import fla_reference
    from harness.ops.dispatch import get_op

    family = FAMILY[op]
    out: dict[str, Callable[..., Any]] = {}
    if "ours" in impls:
        out["ours"] = get_op(family, "chunk", "torch")
    if "head" in impls and head is not None:
        out["head"] = head.get_op(family, "chunk", "torch")
    if "fla_naive" in impls:
        ref = fla_reference(family, kw)
        if ref is not None and not ref.stepwise:
            out["fla_naive"] = ref.fn
    return out


def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, k, v, is_causal=True)


def closures(fn: Callable[..., Any], kw: dict[str, Any]) -> tuple[Callable[[], None], Callable[[], None]]:
    """(forward without grad, forward + backward) of fn on kw; the loss is mean(o^2). The floating
    inputs become leaves that require grad, in place (no copies: they would count in the memory)."""
    grads = {n: (t.requires_grad_(True) if torch.is_tensor(t) and t.is_floating_point() else t)
             for n, t in kw.items()}

    def fwd() -> None:
        with torch.no_grad():
            fn(**kw)

    def fwd_bwd() -> None:
        for t in grads.values():
            if torch.is_tensor(t):
                t.grad = None
        o = fn(**grads)
        o = o[0] if isinstance(o, tuple) else o
        o.float().pow(2).mean().backward()

    return fwd, fwd_bwd


def cpu_ms(fn: Callable[[], None], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        gc.collect()
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best * 1e3


def interleaved(runs: dict[str, tuple[Callable[[], None], Callable[[], None]]], repeats: int
                ) -> tuple[dict[str, float], dict[str, float]]:
    """Least ms of each implementation's forward and forward + backward, the implementations taking
    turns within each repeat: a burst of load on a shared machine then hits all of them alike.
    Each turn runs its call once untimed, then timed: after another implementation ran, the
    first call re-faults freed memory (SDPA's 2K scores alone are 64 MiB), which added up to 30%
    to a 20 ms op here, while a training loop calls the same op on warm memory every step."""
    fwd = {i: float("inf") for i in runs}
    fwd_bwd = dict(fwd)
    for _ in range(repeats):
        for impl, (f, fb) in runs.items():
            f()
            fwd[impl] = min(fwd[impl], cpu_ms(f, 1))
            fb()
            fwd_bwd[impl] = min(fwd_bwd[impl], cpu_ms(fb, 1))
    return fwd, fwd_bwd


def matmul_gflops() -> float:
    a, b = torch.randn(128, 64, 64), torch.randn(128, 64, 64)
    ms = cpu_ms(lambda: [a @ b for _ in range(20)], 5) / 20
    return 2 * 128 * 64**3 / (ms * 1e-3) / 1e9


def memory_child(op: str, impl: str, T: int) -> dict[str, float]:
    """Peak RSS (MiB) of one forward + backward above the RSS before the inputs, in this process."""
    from harness.runtime.memory import PeakMemory

    torch.set_num_threads(1)
    head = load_head_ops() if impl == "head" else None
    small = inputs(op, 256)
    fn = sdpa if op == "sdpa" else implementations(op, small, [impl], head)[impl]
    closures(fn, small)[1]()  # warm-up: load the kernels
    del small
    gc.collect()
    with PeakMemory("cpu") as pm:
        kw = inputs(op, T)
        closures(fn, kw)[1]()
    return {"peak_mib": pm.bytes / 2**20, "method": pm.method,
            "inputs_mib": sum(t.numel() * t.element_size() for t in kw.values() if torch.is_tensor(t)) / 2**20}


def spawn_memory(op: str, impl: str, T: int) -> dict[str, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", op, impl, str(T)]
    out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _len(T: int) -> str:
    return f"{T // 1024}K" if T % 1024 == 0 else str(T)


def markdown(res: dict[str, Any]) -> str:
    lens = res["settings"]["lengths"]
    impls = [i for i in ("ours", "head", "fla_naive", "sdpa") if i in res["settings"]["impls"]]
    lines = ["### Forward + backward, ms (B 1, H 4, head dim 64, fp32, 1 thread, process CPU time, min of repeats)",
             "", "| op | " + " | ".join(f"{i} {_len(T)}" for T in lens for i in impls)
             + " | " + " | ".join(f"fla / ours {_len(T)} | ours / sdpa {_len(T)}" for T in lens) + " |",
             "|---|" + "---|" * (len(lens) * len(impls) + 2 * len(lens))]
    for op, per_T in res["fwd_bwd_ms"].items():
        cells = [f"{per_T[str(T)][i]:.0f}" if i in per_T.get(str(T), {}) else "–" for T in lens for i in impls]
        for T in lens:
            r = per_T.get(str(T), {})
            cells.append(f"{r['fla_naive'] / r['ours']:.1f}x" if "fla_naive" in r and "ours" in r else "–")
            cells.append(f"{r['ours'] / r['sdpa']:.2f}" if "sdpa" in r and "ours" in r else "–")
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    lines += ["", "### Forward only, ms", "", "| op | " + " | ".join(f"{i} {_len(T)}" for T in lens for i in impls)
              + " |", "|---|" + "---|" * (len(lens) * len(impls))]
    for op, per_T in res["fwd_ms"].items():
        lines.append(f"| {op} | " + " | ".join(f"{per_T[str(T)][i]:.0f}" if i in per_T.get(str(T), {}) else "–"
                                             for T in lens for i in impls) + " |")
    if res.get("memory_mib"):
        sd = res["memory_mib"].get("sdpa", {}).get("sdpa", {}).get("peak_mib")
        lines += ["", f"### Forward + backward peak memory at {res['settings']['mem_len']} tokens, MiB (x SDPA)", "",
                  "| op | impl | peak MiB | x SDPA |", "|---|---|---|---|"]
        for op, per_impl in res["memory_mib"].items():
            for impl, m in per_impl.items():
                ratio = f"{m['peak_mib'] / sd:.2f}" if sd else "–"
                lines.append(f"| {op} | {impl} | {m['peak_mib']:.0f} | {ratio} |")
    lines += ["", f"Matmul roofline in the same process: {res['matmul_gflops']:.1f} GFLOP/s."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="*", default=[2048, 8192])
    ap.add_argument("--ops", nargs="*", default=list(OPS), choices=OPS)
    ap.add_argument("--impls", nargs="*", default=["ours", "head", "fla_naive", "sdpa"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--mem-len", type=int, default=16384, help="0: no memory measurement")
    ap.add_argument("--mem-impls", nargs="*", default=["ours", "sdpa"])
    ap.add_argument("--base", default="HEAD", help="git revision the 'head' implementation is loaded from")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--memory-child", nargs=3, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        op, impl, T = args.memory_child
        print(json.dumps(memory_child(op, impl, int(T))))
        return
    torch.set_num_threads(1)
    head = load_head_ops(args.base) if "head" in args.impls else None
    res: dict[str, Any] = {
        "machine": machine_info(), "threads": torch.get_num_threads(),
        "clock": "time.process_time (process CPU time), min over repeats; one warm-up per implementation",
        "settings": {"B": B, "H": H, "head_dim": D, "dtype": "float32", "lengths": args.lengths,
                     "repeats": args.repeats, "impls": args.impls, "mem_len": args.mem_len,
                     "loss": "mean(o^2)", "head": f"harness/ops at git {args.base}" if head is not None else None},
        "load_avg_before": list(os.getloadavg()), "matmul_gflops": matmul_gflops(), "fwd_ms": {}, "fwd_bwd_ms": {}}
    warm: set[tuple[str, str]] = set()
    for op in args.ops:
        res["fwd_ms"][op], res["fwd_bwd_ms"][op] = {}, {}
        for T in args.lengths:
            kw = inputs(op, T)
            fns = {i: (fn, kw) for i, fn in implementations(op, kw, args.impls, head).items()}
            if "sdpa" in args.impls:
                fns["sdpa"] = (sdpa, inputs("sdpa", T))
            runs = {impl: closures(fn, impl_kw) for impl, (fn, impl_kw) in fns.items()}
            for impl, (_, fwd_bwd) in runs.items():
                if (op, impl) not in warm:
                    fwd_bwd()
                    warm.add((op, impl))
            f_row, fb_row = interleaved(runs, args.repeats)
            for impl in runs:
                print(f"{op:12s} T={T:6d} {impl:10s} fwd {f_row[impl]:9.1f} ms  "
                      f"fwd+bwd {fb_row[impl]:9.1f} ms", flush=True)
            res["fwd_ms"][op][str(T)], res["fwd_bwd_ms"][op][str(T)] = f_row, fb_row
    if args.mem_len:
        res["memory_mib"] = {}
        if "sdpa" in args.mem_impls:
            res["memory_mib"]["sdpa"] = {"sdpa": spawn_memory("sdpa", "sdpa", args.mem_len)}
        for op in args.ops:
            res["memory_mib"][op] = {i: spawn_memory(op, i, args.mem_len) for i in args.mem_impls if i != "sdpa"}
            print(f"{op:12s} memory at {args.mem_len}: "
                  + ", ".join(f"{i} {m['peak_mib']:.0f} MiB" for i, m in res["memory_mib"][op].items()), flush=True)
    res["load_avg_after"] = list(os.getloadavg())
    res["markdown"] = markdown(res)
    print(res["markdown"])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
