#!/usr/bin/env bash
# The prepared GPU check (about 8 minutes on one H200; needs no internet):
#   1. the fla-vs-torch equality tests on CUDA (fp32 and bf16, forward and backward);
#   2. suites/gpu-check.yaml: analytic + measured efficiency at the paper's 340M shape, bf16;
#   3. scripts/fla_overhead.py: each variant's fla path inside our module vs fla's own layer;
#   then the report of (2). Everything lands in OUT_DIR (default: gpu-check-out).
#
#   scripts/gpu_check.sh [OUT_DIR]
#
# Without CUDA it still runs to completion, with the fla backend off: the CPU tests of the
# backend, and suites/gpu-check-smoke.yaml (a tiny CPU stand-in for step 2), so the script is
# known to work before GPU time is spent on it.
set -uo pipefail
OUT=${1:-gpu-check-out}
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export PYTHONUNBUFFERED=1
status=0
step() { echo; echo "=== $* ($(date -u +%H:%M:%S))"; }

step "environment"
$PY - <<'PYEOF' | tee "$OUT/environment.txt"
import importlib.util, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0))
for m in ("fla", "triton"):
    spec = importlib.util.find_spec(m)
    print(m, "installed" if spec else "missing")
PYEOF
CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))")

if [ "$CUDA" = 1 ]; then
    step "1. equality tests on CUDA"
    $PY -m pytest tests/test_fla_backend.py -q -k cuda 2>&1 | tee "$OUT/equality.log" || status=1
    step "2. efficiency at the 340M shape, bf16 (suites/gpu-check.yaml)"
    timeout 420 harness sweep suites/gpu-check.yaml --out "$OUT/results" --no-report 2>&1 | tail -40 | tee "$OUT/sweep.log" || status=1
    step "3. fla overhead: our module vs fla's layer"
    timeout 120 $PY scripts/fla_overhead.py --d-model 1024 --heads 4 --seq-len 4096 --batch 4 \
        --out "$OUT/fla_overhead.json" 2>&1 | tee "$OUT/fla_overhead.log" || status=1
else
    step "no CUDA: CPU smoke run with the fla backend off"
    $PY -m pytest tests/test_fla_backend.py -q -k "not interpreter" 2>&1 | tee "$OUT/equality.log" || status=1
    harness sweep suites/gpu-check-smoke.yaml --out "$OUT/results" --no-report 2>&1 | tail -40 | tee "$OUT/sweep.log" || status=1
fi

step "report"
harness report "$OUT/results" --out "$OUT/report" 2>&1 | tail -5 || status=1
$PY - "$OUT" <<'PYEOF' | tee "$OUT/summary.txt"
import sys, harness
df = harness.load_results(sys.argv[1] + "/results")
ok = df[df.status == "ok"]
print(f"{len(df)} rows, {df.cell_id.nunique()} cells, status counts: {df.status.value_counts().to_dict()}")
t = ok[ok.metric == "train_step_s"].pivot_table(index=["variant", "layout"], columns="seq_len", values="value")
if not t.empty:
    print("train_step_s (median, s):"); print(t.to_string())
    tf = t.xs("transformer", level="layout") if "transformer" in t.index.get_level_values("layout") else None
    if tf is not None:
        longest = t.columns.max()
        base = float(tf[longest].iloc[0])
        pure = t.xs("pure", level="layout")[longest] if "pure" in t.index.get_level_values("layout") else None
        if pure is not None:
            print(f"linear-over-softmax training-step speedup at T={longest}:")
            print((base / pure).round(2).to_string())
PYEOF
echo; echo "gpu_check: done, status $status, output in $OUT"
exit $status
