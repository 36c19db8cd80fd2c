#!/usr/bin/env bash
# The newcomer's path: in CLONE (a fresh clone), a fresh venv VENV with nothing in it, the README's
# command 1 exactly as written, then the installed tool alone (no extras) from outside the clone.
#
#   .ci/newcomer.sh CLONE VENV "pip install torch==2.13.0 && pip install -e . && harness sweep"
#
# Checks: the command exits 0; results/quickstart/results.parquet and its report exist; the
# checkout is unchanged (git status --porcelain empty); harness --version / suites / variants
# --json / sweep --dry-run / report / recommend exit 0 in the base-only venv; pip check is clean.
set -euo pipefail
CLONE=$1 VENV=$2 CMD=$3
step() { echo "== newcomer: $*"; }
die() { echo "newcomer check failed: $*" >&2; exit 1; }

python3 -m venv "$VENV"
. "$VENV/bin/activate"
cd "$CLONE"
step "README command 1: $CMD"
start=$(date +%s)
bash -euo pipefail -c "$CMD" || die "the command exited $?"
echo "newcomer: README command 1 took $(( $(date +%s) - start )) s wall (install included)"
for f in results/quickstart/results.parquet results/quickstart/report/report.md; do
    [ -s "$f" ] || die "$f was not written"
done
[ -z "$(git status --porcelain)" ] || { git status --porcelain >&2; die "command 1 changed the checkout"; }

OUTSIDE=$(mktemp -d)
cd "$OUTSIDE"  # the installed tool, from a folder that is not the checkout
step "the installed tool alone, from $OUTSIDE"
harness --version || die "harness --version"
harness suites >/dev/null || die "harness suites"
harness variants --json >/dev/null || die "harness variants --json"
harness sweep --dry-run >/dev/null || die "harness sweep --dry-run (outside the checkout)"
harness report "$CLONE/reports/quickstart/results.parquet" --out "$OUTSIDE/quickstart-report" >/dev/null \
    || die "harness report on the committed quickstart table"
[ -s "$OUTSIDE/quickstart-report/report.md" ] || die "harness report wrote no report.md"
harness recommend "$CLONE/reports/cpu-recall/results.parquet" --seq-len 64 --objective cache --min-score 0.95 \
    >/dev/null || die "harness recommend on the committed cpu-recall table"
# an extra's command without its extra says what to install (exit != 0, no traceback)
msg=$(harness-lm-eval --help 2>&1) && die "harness-lm-eval ran without lm-eval installed?"
case "$msg" in *"pip install 'hybrid-attention-harness[lm-eval]'"*) ;; *) die "harness-lm-eval without lm-eval: $msg" ;; esac
pip check || die "pip check"
cd "$CLONE"
[ -z "$(git status --porcelain)" ] || { git status --porcelain >&2; die "the tool changed the checkout"; }
rm -rf "$OUTSIDE"
step "ok"
