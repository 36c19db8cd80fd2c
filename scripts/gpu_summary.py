"""The key numbers of a scripts/gpu_check.sh run, as summary.md and summary.json.

    python scripts/gpu_summary.py WORK_DIR OUT_DIR

Reads what gpu_check.sh left in WORK_DIR (steps.tsv, environment.json, equality.log,
fla_overhead.json, results/) and writes OUT_DIR/summary.md and OUT_DIR/summary.json:
- each step's exit status and seconds (124 = stopped by its timeout);
- the equality tests' pass / fail / skip counts;
- fla path inside our module vs fla's own layer: overhead per variant, against the 10% target;
- linear / softmax speedups (Transformer time / linear time) of the training step and of the
  prefill, per variant and layout, at each measured length (4K and 32K on the GPU);
- decode per token at each context length; peak memory of the training step and the prefill;
- the cells that are missing or not ok.
Any input may be absent (a step that failed or ran out of time): the summary says so and goes on.
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

OVERHEAD_TARGET = 0.10
GIB = 2**30


def read_steps(work: Path) -> list[dict[str, Any]]:
    p = work / "steps.tsv"
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text().splitlines():
        name, rc, secs, limit = (line.split("\t") + ["", "", "", ""])[:4]
        rows.append({"step": name, "rc": int(rc), "seconds": float(secs), "limit_s": int(limit) if limit else None})
    return rows


def read_equality(work: Path) -> dict[str, Any]:
    p = work / "equality.log"
    if not p.is_file():
        return {"ran": False}
    text = p.read_text(errors="replace")
    out: dict[str, Any] = {"ran": True}
    tail = [line for line in text.splitlines() if re.search(r"\b(passed|failed|skipped|deselected|error)", line)]
    if tail:
        out["pytest_line"] = tail[-1].strip("= ")
        for key in ("passed", "failed", "skipped", "deselected", "error"):
            m = re.search(rf"(\d+) {key}", tail[-1])
            out[key] = int(m.group(1)) if m else 0
    out["failed_tests"] = sorted(set(re.findall(r"FAILED (\S+)", text)))
    return out


def read_overhead(work: Path) -> list[dict[str, Any]]:
    p = work / "fla_overhead.json"
    if not p.is_file():
        return []
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:
        return []


def _num(x: Any) -> Any:
    if x is None:
        return None
    try:
        f = float(x)
    except (TypeError, ValueError):
        return x
    return None if math.isnan(f) else f


def results_numbers(work: Path) -> dict[str, Any]:
    rdir = work / "results"
    if not rdir.is_dir():
        return {"rows": 0}
    try:
        import harness
        df = harness.load_results(rdir)
    except Exception as e:  # noqa: BLE001 - the summary must still be written
        return {"rows": 0, "error": f"{type(e).__name__}: {e}"}
    out: dict[str, Any] = {"rows": int(len(df)), "cells": int(df.cell_id.nunique()),
                           "status_counts": {str(k): int(v) for k, v in df.status.value_counts().items()}}
    bad = df[df.status != "ok"].drop_duplicates("cell_id")
    out["not_ok_cells"] = [{"variant": r.variant, "layout": r.layout, "seq_len": int(r.seq_len), "status": r.status,
                            "error": (str(r.error) if r.error is not None else "")[:300]} for r in bad.itertuples()]
    ok = df[(df.status == "ok") & (df.task == "efficiency")]
    out["backends"] = sorted(str(b) for b in ok.backend.dropna().unique())
    out["devices"] = sorted(str(b) for b in ok.device.dropna().unique())

    def table(metric: str) -> Any:
        t = ok[ok.metric == metric]
        return t.groupby(["variant", "layout", "seq_len"]).value.median() if not t.empty else None

    speedups: dict[str, list[dict[str, Any]]] = {}
    for metric in ("train_step_s", "prefill_s"):
        s = table(metric)
        rows = []
        if s is not None:
            for (variant, layout, seq_len), v in s.items():
                if layout == "transformer":
                    continue
                key = ("attention", "transformer", seq_len)
                base = s.get(key)
                rows.append({"variant": variant, "layout": layout, "seq_len": int(seq_len), "linear_s": float(v),
                             "softmax_s": _num(base), "speedup": _num(base / v) if base is not None and v else None})
        speedups[metric] = rows
    out["speedups"] = speedups

    dec = ok[ok.metric == "decode_token_s"]
    out["decode_token_s"] = [
        {"variant": v, "layout": lay, "seq_len": int(t), "context_len": int(c), "seconds": float(x)}
        for (v, lay, t, c), x in dec.groupby(["variant", "layout", "seq_len", "context_len"]).value.median().items()
    ] if not dec.empty else []
    mem = []
    for metric in ("peak_mem_bytes", "prefill_peak_mem_bytes"):
        s = table(metric)
        if s is not None:
            mem += [{"metric": metric, "variant": v, "layout": lay, "seq_len": int(t), "gib": float(x) / GIB}
                    for (v, lay, t), x in s.items()]
    out["peak_memory"] = mem
    return out


def fmt(x: Any, spec: str = ".2f", none: str = "–") -> str:
    return none if x is None else format(x, spec)


def markdown(s: dict[str, Any]) -> str:
    env = s.get("environment", {})
    lines = [f"# GPU check summary ({s['branch']} branch)", "",
             f"status **{s['status']}**, {fmt(s.get('total_s'), '.0f')} s in all; "
             f"python {env.get('python', '?')}, torch {env.get('torch', '?')}, triton {env.get('triton', '?')}, "
             f"fla {env.get('fla', '?')}, pydantic {env.get('pydantic', '?')}; device {env.get('device', 'cpu')}", "",
             "| step | exit | seconds | limit |", "| --- | --- | --- | --- |"]
    lines += [f"| {r['step']} | {r['rc']}{' (timeout)' if r['rc'] == 124 else ''} | {r['seconds']:.0f} | "
              f"{r['limit_s'] or ''} |" for r in s["steps"]]
    eq = s["equality"]
    lines += ["", "## Equality tests (fla vs torch)", "",
              (eq.get("pytest_line", "no pytest summary line") if eq.get("ran") else "not run")]
    if eq.get("failed_tests"):
        lines += ["", "failed: " + ", ".join(eq["failed_tests"])]
    lines += ["", f"## fla overhead: our module's fla path vs fla's own layer (target <= {OVERHEAD_TARGET:.0%})", ""]
    if s["overhead"]:
        lines += ["| variant | fla layer | ours ms | fla ms | overhead | within target |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in s["overhead"]:
            if "error" in r:
                lines.append(f"| {r['variant']} | {r['fla_layer']} | – | – | error: {r['error'][:80]} | – |")
            else:
                lines.append(f"| {r['variant']} | {r['fla_layer']} | {r['ours_fwd_bwd_s'] * 1e3:.2f} | "
                             f"{r['fla_fwd_bwd_s'] * 1e3:.2f} | {r['overhead']:+.1%} | "
                             f"{'yes' if r['overhead'] <= OVERHEAD_TARGET else 'NO'} |")
    else:
        lines.append("no overhead numbers" + (" (needs CUDA)" if s["branch"] == "cpu" else ""))
    res = s["results"]
    lines += ["", "## Efficiency sweep", "",
              f"{res.get('rows', 0)} rows, {res.get('cells', 0)} cells, status {res.get('status_counts', {})}, "
              f"backends {res.get('backends', [])}" + (f"; error: {res['error']}" if res.get("error") else "")]
    for metric, title in (("train_step_s", "training step"), ("prefill_s", "prefill")):
        rows = res.get("speedups", {}).get(metric, [])
        if not rows:
            continue
        lens = sorted({r["seq_len"] for r in rows})
        lines += ["", f"### linear / softmax speedup, {title} (Transformer s / linear s)", "",
                  "| variant | layout | " + " | ".join(f"T={t}" for t in lens) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in lens) + " |"]
        by = {}
        for r in rows:
            by.setdefault((r["variant"], r["layout"]), {})[r["seq_len"]] = r["speedup"]
        for (v, lay), d in sorted(by.items()):
            cells = (fmt(d.get(t)) + ("x" if d.get(t) else "") for t in lens)
            lines.append(f"| {v} | {lay} | " + " | ".join(cells) + " |")
    if res.get("decode_token_s"):
        ctxs = sorted({r["context_len"] for r in res["decode_token_s"]})
        lines += ["", "### decode, ms per token, by context length", "",
                  "| variant | layout | T | " + " | ".join(f"ctx {c}" for c in ctxs) + " |",
                  "| --- | --- | --- | " + " | ".join("---" for _ in ctxs) + " |"]
        by: dict = {}
        for r in res["decode_token_s"]:
            by.setdefault((r["variant"], r["layout"], r["seq_len"]), {})[r["context_len"]] = r["seconds"] * 1e3
        lines += [f"| {v} | {lay} | {t} | " + " | ".join(fmt(d.get(c)) for c in ctxs) + " |"
                  for (v, lay, t), d in sorted(by.items())]
    if res.get("peak_memory"):
        lines += ["", "### peak memory, GiB (above the built model)", "",
                  "| variant | layout | T | train step | prefill |", "| --- | --- | --- | --- | --- |"]
        by = {}
        for r in res["peak_memory"]:
            by.setdefault((r["variant"], r["layout"], r["seq_len"]), {})[r["metric"]] = r["gib"]
        lines += [f"| {v} | {lay} | {t} | {fmt(d.get('peak_mem_bytes'))} | {fmt(d.get('prefill_peak_mem_bytes'))} |"
                  for (v, lay, t), d in sorted(by.items())]
    if res.get("not_ok_cells"):
        lines += ["", "### cells not ok", ""]
        lines += [f"- {r['variant']} {r['layout']} T={r['seq_len']}: {r['status']} {r['error']}"
                  for r in res["not_ok_cells"]]
    if s.get("files"):
        lines += ["", "## Files", ""] + [f"- {f}" for f in s["files"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    work, out = Path(sys.argv[1]), Path(sys.argv[2])
    steps = read_steps(work)
    envp = work / "environment.json"
    env = json.loads(envp.read_text()) if envp.is_file() else {}
    s: dict[str, Any] = {
        "branch": "cuda" if env.get("cuda") else "cpu",
        "status": "ok" if steps and all(r["rc"] == 0 for r in steps) else "failed",
        "total_s": _num((work / "total_s").read_text().strip()) if (work / "total_s").is_file() else None,
        "environment": env, "steps": steps, "equality": read_equality(work),
        "overhead": read_overhead(work), "results": results_numbers(work),
        "files": sys.argv[3:],
    }
    ok_over = [r["overhead"] for r in s["overhead"] if "overhead" in r]
    s["overhead_max"] = max(ok_over) if ok_over else None
    s["overhead_within_target"] = (max(ok_over) <= OVERHEAD_TARGET) if ok_over else None
    (out / "summary.json").write_text(json.dumps(s, indent=2, default=str))
    md = markdown(s)
    (out / "summary.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
