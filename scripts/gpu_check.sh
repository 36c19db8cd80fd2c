#!/usr/bin/env bash
# The prepared GPU check: one call on the lent device, at most GPU_CHECK_BUDGET_S (450 s) in all.
#
# The exact sequence (README, "Running on a GPU"):
#   1. here, on the CPU machine:   scripts/gpu_prepare.sh          (fetches wheels/gpu/, ~4.4 MB, seconds)
#      optional CPU rehearsal:     .venv/bin/python -m pytest tests/test_gpu_rehearsal.py
#   2. one device call:            run(command="bash scripts/gpu_check.sh \"$OUT\"",
#                                      carry=["wheels/gpu"], timeout_s=540)
#   3. read OUT/summary.md (the key numbers); OUT also holds summary.json, results.parquet,
#      fla_overhead.json, report.tar.gz (report.md + figures) and logs.tar.gz: 6 files.
#
# On the device (its own image: Python 3.12, torch, triton, transformers, pandas, ...; no fla, no
# pydantic, no network) it
#   0. installs the carried wheels offline into a target folder (pip --no-index --no-deps
#      --target WORK/site; typing-extensions from wheels/gpu/fallback/ only if the image's is
#      older than pydantic needs), checks every requirement of the wheels and of pyproject.toml
#      against what is then importable, installs the harness itself (--no-deps, from a copy of
#      the tree) and records versions; the image's torch and triton are used as they are;
#   1. the fla-vs-torch equality tests on CUDA (fp32 and bf16, forward and backward);
#   2. scripts/fla_overhead.py: each variant's fla path inside our module vs fla's own layer
#      (340M width, T=4096, batch 4), the overhead per variant against the 10% target;
#   3. suites/gpu-check.yaml: analytic + measured efficiency at the paper's 340M shape, bf16,
#      pure / 3:1 / Transformer at 4K and 32K (26 measured cells; cells are stored one by one,
#      so a sweep stopped by its timeout keeps every finished cell);
#   4. the report of (3); then the summary and the packing.
# Each step runs under its own `timeout`, clipped to what is left of the budget (less a reserve
# for the report and the packing), so the whole call ends inside ~7.5 minutes even when a step
# hangs, well inside the 10-minute call limit. With a machine's start (1-2 min) that leaves a few of
# the session's 15 device minutes: enough for a short rerun with a smaller GPU_CHECK_BUDGET_S (a
# fresh machine starts bare and resumes nothing), not for a second full run; else give_back at once.
# Step caps (seconds, env to change): install 120 (GPU_CHECK_INSTALL_S), equality 100
# (GPU_CHECK_EQUALITY_S), overhead 100 (GPU_CHECK_OVERHEAD_S), sweep: the rest, report 40.
# TRITON_PRINT_AUTOTUNING=1 puts fla's autotuning times in the logs: the first real run measures
# Triton's first-call cost, which nobody has seen yet (see README).
#
# Without CUDA (and on the CPU rehearsal) the same install path runs, then a no-CUDA branch:
# the CPU tests of the fla backend (the CUDA cases are selected and show as skipped),
# fla_overhead.py --check (both modules of every variant built, parameter counts compared),
# `sweep --dry-run` of suites/gpu-check.yaml, and suites/gpu-check-smoke.yaml (a tiny CPU
# stand-in for step 3); then the same report, summary and packing.
#
#   scripts/gpu_check.sh [OUT_DIR]      (default: $OUT, else gpu-check-out)
#   env: PYTHON (default python3), GPU_WHEELS (default wheels/gpu), GPU_CHECK_WORK (scratch;
#        default a new /tmp/gpu-check.XXXXXX), GPU_CHECK_BUDGET_S (450), GPU_CHECK_RESERVE_S (45)
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT_DIR=${1:-${OUT:-gpu-check-out}}
mkdir -p "$OUT_DIR" && OUT_DIR=$(cd "$OUT_DIR" && pwd)
rm -f "$OUT_DIR"/{summary.md,summary.json,results.parquet,fla_overhead.json,report.tar.gz,logs.tar.gz}
WORK=${GPU_CHECK_WORK:-$(mktemp -d /tmp/gpu-check.XXXXXX)}
mkdir -p "$WORK/logs" && WORK=$(cd "$WORK" && pwd)
WHEELS=${GPU_WHEELS:-$ROOT/wheels/gpu}
WHEELS=$(cd "$WHEELS" 2>/dev/null && pwd || echo "$WHEELS")
SITE=$WORK/site
PY=${PYTHON:-$(command -v python3 || command -v python)}
BUDGET=${GPU_CHECK_BUDGET_S:-450}
RESERVE=${GPU_CHECK_RESERVE_S:-45}
START=$SECONDS
cd "$ROOT"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PYTHONDONTWRITEBYTECODE=1
export PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$WORK/triton-cache}
export PY WORK WHEELS SITE ROOT
: >"$WORK/steps.tsv"
echo "gpu_check: out $OUT_DIR, scratch $WORK, wheels $WHEELS, python $PY, budget ${BUDGET}s"

# step NAME CAP_S CMD...: run CMD under `timeout`, capped by the budget left; log to WORK/logs/NAME.log
step() {
    local name=$1 cap=$2; shift 2
    local left=$((BUDGET - RESERVE - (SECONDS - START)))
    [ "$name" = report ] && left=$((BUDGET - 15 - (SECONDS - START)))
    local limit=$((cap < left ? cap : left))
    echo; echo "=== $name (limit ${limit}s, $((SECONDS - START))s elapsed, $(date -u +%H:%M:%S))"
    if [ "$limit" -lt 5 ]; then
        echo "skipped: no time left in the budget" | tee "$WORK/logs/$name.log"
        printf '%s\t124\t0\t%s\n' "$name" "$limit" >>"$WORK/steps.tsv"
        return 124
    fi
    local t0=$SECONDS
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$WORK/logs/$name.log"
    local rc=${PIPESTATUS[0]}
    printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - t0))" "$limit" >>"$WORK/steps.tsv"
    [ "$rc" = 124 ] && echo "--- $name: stopped by its ${limit}s timeout"
    return "$rc"
}

# --- 0. install: carried wheels, offline, into $SITE; then the harness; then check and record ---
cat >"$WORK/deps_check.py" <<'PYEOF'
"""Print the fallback wheels needed, or exit 1 naming an unmet requirement (argv: WHEELS [--strict])."""
import importlib.metadata as md, sys, tomllib, zipfile
from email.parser import Parser
from pathlib import Path
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

wheels, strict = Path(sys.argv[1]), "--strict" in sys.argv
def have(name):
    for n in (name, name.replace("-", "_"), name.replace("_", "-")):
        try:
            return md.version(n)
        except md.PackageNotFoundError:
            pass
def meta(whl):
    with zipfile.ZipFile(whl) as z:
        return Parser().parsestr(z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode())
reqs = [(whl.name, Requirement(r)) for whl in sorted(wheels.glob("*.whl")) for r in meta(whl).get_all("Requires-Dist") or []]
reqs += [("pyproject.toml", Requirement(r)) for r in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]]
fallback = {canonicalize_name(meta(w)["Name"]): (w, meta(w)["Version"]) for w in sorted((wheels / "fallback").glob("*.whl"))}
need, unmet = {}, []
for who, req in reqs:
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        continue
    v = have(req.name)
    if v is not None and req.specifier.contains(Version(v), prereleases=True):
        continue
    fb = fallback.get(canonicalize_name(req.name))
    if not strict and fb and req.specifier.contains(Version(fb[1]), prereleases=True):
        need[fb[0]] = f"{req.name} {v or 'missing'} does not meet {who}'s {req}"
    else:
        unmet.append(f"{who} needs {req}; this environment has {v or 'none'}")
for w, why in need.items():
    print(w)
    print(f"deps_check: fallback {w.name}: {why}", file=sys.stderr)
if unmet:
    sys.exit("deps_check: FAILED, unmet requirements:\n  " + "\n  ".join(unmet))
print(f"deps_check: {len(reqs)} requirements checked" + (", all met" if not need else f", {len(need)} fallback(s) needed"), file=sys.stderr)
PYEOF

do_install() {
    set -e
    local pipi=("$PY" -m pip install --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check --upgrade --target "$SITE")
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        echo "install: FAILED: no wheels in $WHEELS. Run scripts/gpu_prepare.sh on the CPU machine and name wheels/gpu in the call's carry."
        exit 1
    fi
    [ -f "$WHEELS/MANIFEST.tsv" ] && cat "$WHEELS/MANIFEST.tsv"
    "${pipi[@]}" "$WHEELS"/*.whl
    "$PY" "$WORK/deps_check.py" "$WHEELS" >"$WORK/fallback.txt"
    if [ -s "$WORK/fallback.txt" ]; then
        "${pipi[@]}" $(cat "$WORK/fallback.txt")
        "$PY" "$WORK/deps_check.py" "$WHEELS" --strict >/dev/null
    fi
    # the harness itself, no dependencies, built from a copy (the tree is left untouched)
    rm -rf "$WORK/src" && mkdir -p "$WORK/src"
    tar -C "$ROOT" --exclude=__pycache__ -cf - pyproject.toml README.md harness variants suites | tar -C "$WORK/src" -xf -
    "$PY" -m pip install --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
        --disable-pip-version-check --upgrade --target "$SITE" "$WORK/src"
    cd "$WORK"  # so that `import harness` below is the installed one, not the tree's
    "$PY" - <<'PYEOF'
import importlib.metadata as md, json, os, platform, sys
import torch, triton, pydantic, fla, fla.layers, harness
from harness.integrations.fla_kernels import fla_installed
site = os.environ["SITE"]
for m in (pydantic, fla, harness):
    assert m.__file__.startswith(site), f"{m.__name__} comes from {m.__file__}, not from {site}"
assert fla_installed()
def v(n):
    try: return md.version(n)
    except md.PackageNotFoundError: return None
cuda = torch.cuda.is_available()
env = {"python": platform.python_version(), "torch": torch.__version__, "torch_file": torch.__file__,
       "triton": triton.__version__, "fla": v("fla-core"), "flash_linear_attention": v("flash-linear-attention"),
       "pydantic": pydantic.VERSION, "pydantic_core": v("pydantic-core"), "typing_extensions": v("typing-extensions"),
       "transformers": v("transformers"), "einops": v("einops"), "harness_file": harness.__file__,
       "cuda": cuda, "cuda_version": torch.version.cuda,
       "device": torch.cuda.get_device_name(0) if cuda else "cpu"}
json.dump(env, open(os.path.join(os.environ["WORK"], "environment.json"), "w"), indent=2)
print(json.dumps(env, indent=2))
PYEOF
}
export -f do_install
status=0
step install "${GPU_CHECK_INSTALL_S:-120}" bash -c do_install || status=1
if [ ! -f "$WORK/environment.json" ]; then  # record what there is, so the summary can say it
    "$PY" -c "import json, torch, sys; c = torch.cuda.is_available(); json.dump({'torch': torch.__version__, 'cuda': c, \
'device': torch.cuda.get_device_name(0) if c else 'cpu', 'install': 'failed'}, open(sys.argv[1], 'w'))" \
        "$WORK/environment.json" || echo '{"install": "failed"}' >"$WORK/environment.json"
fi
CUDA=$("$PY" -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
command -v nvidia-smi >/dev/null && nvidia-smi >"$WORK/logs/nvidia-smi.log" 2>&1

if [ "$CUDA" = 1 ]; then
    export TRITON_PRINT_AUTOTUNING=1
    step equality "${GPU_CHECK_EQUALITY_S:-100}" "$PY" -m pytest tests/test_fla_backend.py -q -rA -k cuda \
        -p no:cacheprovider || status=1
    cp "$WORK/logs/equality.log" "$WORK/equality.log"
    step overhead "${GPU_CHECK_OVERHEAD_S:-100}" "$PY" scripts/fla_overhead.py --d-model 1024 --heads 4 \
        --seq-len 4096 --batch 4 --out "$WORK/fla_overhead.json" || status=1
    step sweep 100000 "$PY" -m harness.cli sweep suites/gpu-check.yaml --out "$WORK/results" --no-report || status=1
else
    echo; echo "gpu_check: no CUDA: the no-CUDA branch (CPU tests, --check, dry run, tiny smoke sweep)"
    step equality 120 "$PY" -m pytest tests/test_fla_backend.py -q -rA -k "cuda or not interpreter" \
        -p no:cacheprovider || status=1
    cp "$WORK/logs/equality.log" "$WORK/equality.log"
    step overhead-check 60 "$PY" scripts/fla_overhead.py --check --d-model 1024 --heads 4 || status=1
    step suite-check 60 "$PY" -m harness.cli sweep suites/gpu-check.yaml --dry-run --out "$WORK/dry-run" || status=1
    step sweep 180 "$PY" -m harness.cli sweep suites/gpu-check-smoke.yaml --out "$WORK/results" --no-report || status=1
fi

if [ -d "$WORK/results" ]; then
    step report 40 "$PY" -m harness.cli report "$WORK/results" --out "$WORK/report" || status=1
fi

# --- pack: at most 8 files in OUT_DIR, none in folders ---
echo; echo "=== pack ($((SECONDS - START))s elapsed)"
FILES=()
if [ -d "$WORK/results" ] && "$PY" - "$WORK/results" "$OUT_DIR/results.parquet" <<'PYEOF'
import sys, harness
df = harness.load_results(sys.argv[1])  # consolidates the per-cell files, also of a stopped sweep
df.to_parquet(sys.argv[2], index=False)
print(f"results.parquet: {len(df)} rows, {df.cell_id.nunique()} cells")
PYEOF
then FILES+=(results.parquet); fi
if [ -f "$WORK/fla_overhead.json" ]; then cp "$WORK/fla_overhead.json" "$OUT_DIR/" && FILES+=(fla_overhead.json); fi
if [ -d "$WORK/report" ]; then
    tar -C "$WORK" -czf "$OUT_DIR/report.tar.gz" report
    if [ "$(stat -c %s "$OUT_DIR/report.tar.gz")" -gt 15000000 ]; then  # 16 MiB a file comes back
        echo "report.tar.gz over 15 MB: packing report.md without the figures"
        tar -C "$WORK" -czf "$OUT_DIR/report.tar.gz" report/report.md
    fi
    FILES+=(report.tar.gz)
fi
echo "$((SECONDS - START))" >"$WORK/total_s"
"$PY" "$ROOT/scripts/gpu_summary.py" "$WORK" "$OUT_DIR" "${FILES[@]}" summary.md summary.json logs.tar.gz \
    >"$WORK/logs/summary.log" 2>&1 || { status=1; cat "$WORK/logs/summary.log"; }
[ -f "$OUT_DIR/summary.md" ] && FILES+=(summary.md summary.json) && cat "$OUT_DIR/summary.md"
cp "$WORK/steps.tsv" "$WORK/environment.json" "$WORK/logs/" 2>/dev/null
[ -f "$WORK/fla_overhead.json" ] && cp "$WORK/fla_overhead.json" "$WORK/logs/"
"$PY" -m pip list --disable-pip-version-check >"$WORK/logs/pip-list.txt" 2>&1
tar -C "$WORK" -czf "$OUT_DIR/logs.tar.gz" logs && FILES+=(logs.tar.gz)

n=$(find "$OUT_DIR" -type f | wc -l)
echo; echo "gpu_check: $n files in $OUT_DIR (at most 8 come back):"
ls -l "$OUT_DIR"
[ "$n" -le 8 ] || { echo "gpu_check: more than 8 files in $OUT_DIR"; status=1; }
echo "gpu_check: done in $((SECONDS - START))s, status $status"
exit $status
