"""GPU check: each variant's fla path inside our module vs a direct fla layer call, same shape.

    python scripts/fla_overhead.py [--d-model 1024] [--heads 4] [--seq-len 4096] [--batch 4] [--out FILE.json]
                                   [--variants gla,deltanet] [--check]

Times forward+backward (bf16, synchronised wall clock, median of 20 after 5 warm-up calls) of
(a) our variant with backend "fla" and (b) fla's own layer of the same parameterisation, and
reports ours / fla - 1 as the overhead (target <= 10%). Needs CUDA and flash-linear-attention.
--out is rewritten after each variant (a variant that fails gets an "error" row), so a run
stopped by a timeout keeps what it measured. --check builds both modules of every variant on
the CPU and compares their parameter counts, timing nothing (gpu_check.sh's no-CUDA branch).
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from harness.registry import get_variant
from harness.runtime.timing import device_sync, time_calls

# our variant -> (fla layer class name, kwargs that give the same parameterisation as our defaults)
FLA_LAYERS = {
    "hgrn": ("HGRNAttention", lambda d, h: dict(expand_ratio=1)),
    "retnet": ("MultiScaleRetention", lambda d, h: dict(num_heads=h, expand_k=1.0, expand_v=2.0)),
    "gla": ("GatedLinearAttention", lambda d, h: dict(num_heads=h, expand_k=0.5, expand_v=1.0)),
    "hgrn2": ("HGRN2Attention", lambda d, h: dict(expand_ratio=d // h)),
    "deltanet": ("DeltaNet", lambda d, h: dict(num_heads=h, expand_k=1.0, expand_v=1.0)),
    "gated_deltanet": ("GatedDeltaNet", lambda d, h: dict(num_heads=h, head_dim=d // h, expand_v=2.0)),
    "kda": ("KimiDeltaAttention", lambda d, h: dict(num_heads=h, head_dim=d // h, expand_v=1.0)),
    "rwkv7": ("RWKV7Attention", lambda d, h: dict(num_heads=h, head_dim=d // h, num_hidden_layers=2)),
    # not mamba2: fla's Mamba2 layer runs its Triton path only with mamba_ssm and causal_conv1d
    # installed (absent from the lent image); without them it falls back to a PyTorch loop, so
    # "overhead against fla" would compare our fla path with fla's slow fallback.
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=1024)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--out", default=None)
    ap.add_argument("--variants", default=",".join(FLA_LAYERS), help="comma-separated subset")
    ap.add_argument("--check", action="store_true", help="CPU: build both modules, compare params, time nothing")
    args = ap.parse_args()
    names = [n for n in args.variants.split(",") if n]
    unknown = set(names) - set(FLA_LAYERS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; known: {list(FLA_LAYERS)}")
    import fla.layers

    if args.check:
        check(names, args.d_model, args.heads)
        return
    if not torch.cuda.is_available():
        raise SystemExit("fla_overhead.py needs CUDA (fla's kernels are GPU-only)")

    from harness.runtime.devices import resolve_backend

    resolve_backend("fla", "cuda")
    d, h, dev, dt = args.d_model, args.heads, "cuda", torch.bfloat16
    x = torch.randn(args.batch, args.seq_len, d, device=dev, dtype=dt)
    rows = []
    for name in names:
        cls_name, kwargs = FLA_LAYERS[name]
        base = {"variant": name, "fla_layer": cls_name, "d_model": d, "n_heads": h,
                "seq_len": args.seq_len, "batch": args.batch}
        t0 = time.perf_counter()
        try:
            torch.manual_seed(0)
            ours = get_variant(name)(d, h).to(dev, dt)
            ours.set_backend("fla")
            theirs = getattr(fla.layers, cls_name)(hidden_size=d, layer_idx=0, **kwargs(d, h)).to(dev, dt)

            def step(module):
                xi = x.detach().requires_grad_(True)
                y = module(xi)[0]  # both return (output, ...)
                y.float().pow(2).mean().backward()

            sync = device_sync(dev)
            t_ours = time_calls(lambda ours=ours: step(ours), warmup=5, repeats=20, sync=sync).median
            t_fla = time_calls(lambda theirs=theirs: step(theirs), warmup=5, repeats=20, sync=sync).median
            n_ours = sum(p.numel() for p in ours.parameters())
            n_fla = sum(p.numel() for p in theirs.parameters())
            row = {**base, "ours_fwd_bwd_s": t_ours, "fla_fwd_bwd_s": t_fla, "overhead": t_ours / t_fla - 1,
                   "params_ours": n_ours, "params_fla": n_fla, "wall_s": time.perf_counter() - t0}
            print(f"{name:16s} ours {t_ours * 1e3:8.2f} ms  fla {t_fla * 1e3:8.2f} ms  overhead {row['overhead']:+.1%}"
                  f"  (params {n_ours} vs {n_fla}; {row['wall_s']:.0f} s with compilation)", flush=True)
        except Exception as e:  # one variant's failure must not cost the others' numbers
            row = {**base, "error": f"{type(e).__name__}: {e}"[:2000], "wall_s": time.perf_counter() - t0}
            print(f"{name:16s} FAILED: {row['error']}", flush=True)
        rows.append(row)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=2)
    if any("error" in r for r in rows):
        raise SystemExit(1)


def check(names: list[str], d: int, h: int) -> None:
    """Build our module and fla's layer of each variant on the CPU; their parameter counts must match."""
    import fla.layers

    bad = []
    for name in names:
        cls_name, kwargs = FLA_LAYERS[name]
        ours = get_variant(name)(d, h)
        theirs = getattr(fla.layers, cls_name)(hidden_size=d, layer_idx=0, **kwargs(d, h))
        n_ours = sum(p.numel() for p in ours.parameters())
        n_fla = sum(p.numel() for p in theirs.parameters())
        print(f"{name:16s} {cls_name:22s} params ours {n_ours} fla {n_fla}", flush=True)
        if n_ours != n_fla:
            bad.append(name)
    if bad:
        raise SystemExit(f"parameter counts differ for {bad}")
    print(f"check: {len(names)} variants build on both sides with equal parameter counts")


if __name__ == "__main__":
    main()
