"""Benchmark the two hot paths of small models on the CPU: per-token decode and the training step.

    python scripts/bench_hot_paths.py [--label after] [--only decode train] [--variants gla ...] [--compile]

(a) decode: ms per token of the eager decode step (`HybridLM.decode_fn()`) after a prefill of 512 and 8192 tokens
    (4 layers, d_model 64, n_heads 2, vocab 256, batch 1): the median of `--decode-steps` steps,
    each timed on its own after 3 untimed ones, the least of 3 such rounds;
(b) train: ms per optimiser step of `harness.runtime.train.train` on the recall-size models (4 layers,
    d_model 64, n_heads 2, vocab 64, batch 32 x 64 tokens, fp32): forward + loss + backward +
    clip + AdamW + data sampling, the least over `--train-repeats` runs of `--train-steps` steps.
With --compile, decode goes through HybridLM.decode_fn(compile=True) (torch.compile; e.g.
`--label compiled --only decode --compile`), and each model's row also holds `compile_s` (the
first steps' CPU time above a steady step: the compile, once per model; cold only with an empty
inductor cache, e.g. TORCHINDUCTOR_CACHE_DIR=$(mktemp -d)) and `graphs_compiled`. `--only train-compiled` measures
the training step eager and with TrainConfig(compile=True) in one run (train_step_compiled_cpu.json).
The least-disturbed of several measurements, because on a shared machine load only adds time.
Every variant pure plus the Transformer. One thread, the process CPU clock (time.process_time),
so other load on a shared machine does not inflate the numbers. Writes
reports/benchmarks/hot_paths_cpu_<label>.json, and with label "after" also
reports/benchmarks/hot_paths_cpu.json holding the "before" file's numbers beside the new ones,
and prints Markdown tables.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.model.config import ModelConfig  # noqa: E402
from harness.model.lm import build_model  # noqa: E402
from harness.registry import VARIANTS  # noqa: E402
from harness.runtime.devices import machine_info  # noqa: E402
from harness.runtime.train import TrainConfig, train  # noqa: E402

OUT_DIR = ROOT / "reports" / "benchmarks"
CONTEXTS = (512, 8192)


def models() -> list[tuple[str, str]]:
    return [(n, "pure") for n in VARIANTS.names() if n != "attention"] + [("attention", "transformer")]


def key(variant: str, layout: str) -> str:
    return "transformer" if layout == "transformer" else f"{variant} {layout}"


def bench_decode(variant: str, layout: str, steps: int, rounds: int = 3, compile: bool = False) -> dict:
    """{"512": ms, "8192": ms} of the eager step; with `compile`, of the compiled step, measured
    round by round alternately with the eager step on a twin cache (load hits both alike), the
    eager numbers under "eager", and the compile's cost (`compile_s`, `graphs_compiled`)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(variant=variant, layout=layout, n_layers=4, d_model=64, n_heads=2,
                                    vocab_size=256), backend="torch").eval()
    fns = {"eager": model.decode_fn()}
    if compile:
        fns["compiled"] = model.decode_fn(compile=True)
    out: dict = {}
    first = []  # the first call of each context: for the compiled step, it compiles
    frames0 = _compiled_frames()
    for ctx in CONTEXTS:
        tokens = torch.randint(0, 256, (1, ctx))
        caches = {name: model.prefill(tokens, last_only=True)[1] for name in fns}
        tok = torch.randint(0, 256, (1,))
        medians: dict[str, list[float]] = {name: [] for name in fns}
        for r in range(rounds):  # the least-disturbed of `rounds` medians: robust to load bursts
            for name, fn in fns.items():
                times, tok = _decode_steps(fn, caches[name], tok, steps)
                if r == 0 and name == "compiled":
                    first.append(times[0])
                medians[name].append(statistics.median(times[3:]))
        for name in fns:
            out.setdefault(name, {})[str(ctx)] = min(medians[name]) * 1e3
    if not compile:
        return out["eager"]
    res = {**out["compiled"], "eager": out["eager"]}
    # compile cost: the first calls' time above a steady step; graphs compiled for this model
    res["compile_s"] = sum(f - res[str(c)] / 1e3 for f, c in zip(first, CONTEXTS))
    res["graphs_compiled"] = _compiled_frames() - frames0
    return res


def _decode_steps(fn, cache, tok: torch.Tensor, steps: int) -> tuple[list[float], torch.Tensor]:
    """3 + `steps` decode steps, each timed on its own (CPU s), and the last greedy token."""
    times = []
    for _ in range(3 + steps):
        t0 = time.process_time()
        logits = fn(tok, cache)
        times.append(time.process_time() - t0)
        tok = logits.argmax(-1)
    return times, tok


def _compiled_frames() -> int:
    """Frames dynamo compiled so far in this process (a recompile counts again)."""
    from torch._dynamo.utils import counters

    return int(counters["frames"]["ok"])


def recall_data(n: int = 512, T: int = 64, vocab: int = 64) -> dict[str, torch.Tensor]:
    from harness.data.mqar import MQARConfig, generate_mqar

    return generate_mqar(MQARConfig(vocab_size=vocab, seq_len=T, num_kv_pairs=4), n, seed=0)


def bench_train(variant: str, layout: str, data, steps: int, repeats: int) -> float:
    per_step = []
    for r in range(repeats + 1):  # the first run is warm-up
        torch.manual_seed(0)
        model = build_model(ModelConfig(variant=variant, layout=layout, n_layers=4, d_model=64, n_heads=2,
                                        vocab_size=64), backend="torch")
        t0 = time.process_time()
        res = train(model, data, TrainConfig(steps=steps if r else 2, batch_size=32, lr=3e-3, seed=0))
        dt = time.process_time() - t0
        assert res.ok, res.error
        if r:
            per_step.append(dt / steps)
    return min(per_step) * 1e3  # the least-disturbed run: robust to load bursts


def bench_train_compiled(variant: str, layout: str, data, steps: int, repeats: int) -> dict[str, float]:
    """Eager and compiled (TrainConfig(compile=True)) training steps of one model, measured in
    the same process one after the other: {eager_ms, compiled_ms, compile_s, speedup}. The
    compiled model is built once, so only its first run compiles (`compile_s`: that run's
    time above the steady steps); later runs reuse the compiled graph, as a long run does."""
    eager = bench_train(variant, layout, data, steps, repeats)
    torch.manual_seed(0)
    model = build_model(ModelConfig(variant=variant, layout=layout, n_layers=4, d_model=64, n_heads=2,
                                    vocab_size=64), backend="torch")
    runs = []
    for _r in range(repeats + 1):
        t0 = time.process_time()
        res = train(model, data, TrainConfig(steps=steps, batch_size=32, lr=3e-3, seed=0, compile=True,
                                            diverge_factor=1e30))  # reruns start from trained weights
        runs.append(time.process_time() - t0)
        assert res.ok, res.error
    compiled = min(runs[1:]) / steps * 1e3
    return {"eager_ms": eager, "compiled_ms": compiled, "compile_s": runs[0] - min(runs[1:]),
            "speedup": eager / compiled}


def tables(res: dict, before: dict | None) -> str:
    """Markdown tables; with `before`, its numbers beside these (label "before" prints alone)."""
    lines = []
    if "decode_ms" in res:
        lines += ["### Decode, ms per token (1 thread, process CPU time)", "",
                  f"| model | before 512 | before 8K | {res['label']} 512 | {res['label']} 8K | 8K / 512 "
                  "| vs Transformer at 8K |",
                  "|---|---|---|---|---|---|---|"]
        tr = res["decode_ms"].get("transformer", {}).get("8192")
        for m, d in res["decode_ms"].items():
            b = (before or {}).get("decode_ms", {}).get(m, {})
            bs = lambda c, b=b: f"{b[c]:.3f}" if c in b else "–"  # noqa: E731
            ratio = f"{d['8192'] / tr:.2f}" if tr else "–"
            lines.append(f"| {m} | {bs('512')} | {bs('8192')} | {d['512']:.3f} | {d['8192']:.3f} | "
                         f"{d['8192'] / d['512']:.2f} | {ratio} |")
        lines.append("")
    if "train_step_ms" in res:
        lines += ["### Training step, ms (recall size, batch 32 x 64, 1 thread, process CPU time)", "",
                  f"| model | before | {res['label']} | speed-up |", "|---|---|---|---|"]
        for m, v in res["train_step_ms"].items():
            b = (before or {}).get("train_step_ms", {}).get(m)
            lines.append(f"| {m} | {f'{b:.1f}' if b else '–'} | {v:.1f} | {f'{b / v:.2f}x' if b else '–'} |")
        lines.append("")
    return "\n".join(lines)


def decode_compiled_table(res: dict) -> str:
    """Eager vs compiled decode of one --compile run (measured alternately), with the compile's cost."""
    lines = ["### Decode, eager vs torch.compile, ms per token (1 thread, process CPU time)", "",
             "| model | eager 512 | eager 8K | compiled 512 | compiled 8K | speed-up at 8K "
             "| compile (s CPU, once per model) | graphs |", "|---|---|---|---|---|---|---|---|"]
    for m, d in res["decode_ms"].items():
        e = d["eager"]
        lines.append(f"| {m} | {e['512']:.3f} | {e['8192']:.3f} | {d['512']:.3f} | {d['8192']:.3f} "
                     f"| {e['8192'] / d['8192']:.1f}x | {d['compile_s']:.1f} | {d['graphs_compiled']} |")
    return "\n".join(lines) + "\n"


def compiled_table(res: dict) -> str:
    lines = ["### Training step, eager vs torch.compile (recall size, batch 32 x 64, 1 thread, process CPU time)", "",
             "| model | eager ms | compiled ms | speed-up | compile (s CPU, once per model) |", "|---|---|---|---|---|"]
    for m, t in res["train_step_compiled"].items():
        lines.append(f"| {m} | {t['eager_ms']:.1f} | {t['compiled_ms']:.1f} | {t['speedup']:.2f}x "
                     f"| {t['compile_s']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", default="after", help="'before' or 'after' (default)")
    ap.add_argument("--only", nargs="*", default=["decode", "train"], choices=["decode", "train", "train-compiled"],
                    help="train-compiled: eager vs compiled training step in one run "
                         "(reports/benchmarks/train_step_compiled_cpu.json)")
    ap.add_argument("--variants", nargs="*", default=None, help="subset (names; 'transformer' for attention)")
    ap.add_argument("--decode-steps", type=int, default=20)
    ap.add_argument("--decode-rounds", type=int, default=3, help="rounds per context (the least median counts)")
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--train-repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="decode through HybridLM.decode_fn(compile=True)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    todo = [(v, l) for v, l in models()
            if args.variants is None or v in args.variants or key(v, l) in args.variants]
    res: dict = {"label": args.label, "compile_decode": args.compile, "machine": machine_info(),
                 "threads": torch.get_num_threads(),
                 "clock": "time.process_time (process CPU time)", "load_avg_before": os.getloadavg(),
                 # compile_s is a cold compile only with an empty inductor cache (e.g. a fresh dir here)
                 "inductor_cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR", "default (may be warm)"),
                 "settings": {"decode": "4 layers, d_model 64, n_heads 2, vocab 256, batch 1, fp32; min over "
                                        f"{args.decode_rounds} rounds (with --compile, eager and compiled "
                                        "alternately, each on its own cache) "
                                        f"of the median of {args.decode_steps} steps (3 warm-up each), contexts "
                                        f"{list(CONTEXTS)}",
                              "train": "4 layers, d_model 64, n_heads 2, vocab 64, batch 32 x 64 (MQAR 4 kv), fp32, "
                                       f"harness.runtime.train.train, min over {args.train_repeats} runs of "
                                       f"{args.train_steps} steps"}}
    if "decode" in args.only:
        res["decode_ms"] = {}
        for v, l in todo:
            res["decode_ms"][key(v, l)] = d = bench_decode(v, l, args.decode_steps, args.decode_rounds,
                                                           compile=args.compile)
            extra = (f"  (eager {d['eager']['512']:.3f} / {d['eager']['8192']:.3f}; compile "
                     f"{d['compile_s']:.1f} s CPU, {d['graphs_compiled']} graph(s))" if args.compile else "")
            print(f"decode {key(v, l):24s} 512: {d['512']:.3f} ms  8K: {d['8192']:.3f} ms{extra}", flush=True)
    if "train" in args.only:
        data = recall_data()
        res["train_step_ms"] = {}
        for v, l in todo:
            res["train_step_ms"][key(v, l)] = t = bench_train(v, l, data, args.train_steps, args.train_repeats)
            print(f"train  {key(v, l):24s} {t:.1f} ms/step", flush=True)
    if "train-compiled" in args.only:
        data = recall_data()
        res["train_step_compiled"] = {}
        for v, l in todo:
            res["train_step_compiled"][key(v, l)] = t = bench_train_compiled(v, l, data, args.train_steps,
                                                                               args.train_repeats)
            print(f"train  {key(v, l):24s} eager {t['eager_ms']:.1f} ms  compiled {t['compiled_ms']:.1f} ms  "
                  f"({t['speedup']:.2f}x; compile {t['compile_s']:.0f} s CPU)", flush=True)
        res["load_avg_after"] = os.getloadavg()
        md = compiled_table(res)
        print("\n" + md)
        if not args.no_write:
            res["markdown"] = md
            (OUT_DIR / "train_step_compiled_cpu.json").write_text(json.dumps(res, indent=2) + "\n")
        return
    res["load_avg_after"] = os.getloadavg()
    before = None
    bpath = OUT_DIR / "hot_paths_cpu_before.json"
    if args.label != "before" and bpath.exists():
        before = json.loads(bpath.read_text())
    md = tables(res, before) + ("\n" + decode_compiled_table(res) if args.compile and "decode_ms" in res else "")
    print("\n" + md)
    if args.no_write:
        return
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    (OUT_DIR / f"hot_paths_cpu_{args.label}.json").write_text(json.dumps(res, indent=2) + "\n")
    if args.label == "after":
        combined = {"machine": res["machine"], "threads": res["threads"], "clock": res["clock"],
                    "settings": res["settings"], "before": before, "after": res, "markdown": md}
        (OUT_DIR / "hot_paths_cpu.json").write_text(json.dumps(combined, indent=2) + "\n")


if __name__ == "__main__":
    main()
