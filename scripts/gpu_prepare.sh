#!/usr/bin/env bash
# Run on the CPU machine (it needs PyPI), before the one device call of scripts/gpu_check.sh.
#
# The lent GPU machine runs its own image (Python 3.12, torch 2.11 + CUDA 13, triton 3.6,
# transformers 5.17, einops, pandas, pyarrow, matplotlib, typer, rich, safetensors, pyyaml, ...)
# and reaches no package registry. Of what the harness and fla need, the image lacks exactly
# fla-core, flash-linear-attention, pydantic, pydantic-core, annotated-types and
# typing-inspection. This script downloads those wheels (pinned, no dependencies resolved, for
# cp312 / manylinux x86_64) into a git-ignored folder that the device call names in its carry:
#
#   scripts/gpu_prepare.sh [--python-version 3.12] [--dest wheels/gpu]
#
# It also keeps typing-extensions in DEST/fallback/: pydantic 2.14 needs typing-extensions >= 4.16,
# which the image may predate; gpu_check.sh installs it only when the image's is too old.
# fla-core and flash-linear-attention are taken at the versions that pyproject.toml's `gpu`
# extra pins. Every wheel's Requires-Dist is checked against this set plus the packages the
# image is known to hold (a requirement met by neither fails the script, naming it), one
# version of each name is kept, and DEST/MANIFEST.tsv lists name, version, file, bytes, sha256.
# About 4.4 MB, a few seconds. --python-version 3.11 gives the same set for this machine's
# Python (tests/test_gpu_rehearsal.py uses it: only pydantic-core's compiled wheel differs).
#
# The whole GPU sequence (README, "Running on a GPU"):
#   1. scripts/gpu_prepare.sh                                   # here
#   2. device run, carry ["wheels/gpu"]:  bash scripts/gpu_check.sh "$OUT"
#   3. read $OUT/summary.md (key numbers), then results.parquet, report.tar.gz, logs.tar.gz
set -euo pipefail
cd "$(dirname "$0")/.."

PYV=3.12
DEST=wheels/gpu
while [ $# -gt 0 ]; do
    case "$1" in
        --python-version) PYV=$2; shift 2 ;;
        --dest) DEST=$2; shift 2 ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "gpu_prepare: unknown argument $1" >&2; exit 2 ;;
    esac
done
PY=${PYTHON:-python3}

# The pins. fla's come from pyproject.toml's gpu extra, so the two cannot drift apart.
FLA_PINS=$($PY - <<'PYEOF'
import re, tomllib
extra = tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["gpu"]
pins = [r for r in extra if re.match(r"(fla-core|flash-linear-attention)==", r)]
assert len(pins) == 2, f"pyproject's gpu extra must pin fla-core and flash-linear-attention with ==, got {extra}"
print(" ".join(pins))
PYEOF
)
PINS="$FLA_PINS pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5"
FALLBACK_PINS="typing-extensions==4.16.0"

rm -rf "$DEST"
mkdir -p "$DEST/fallback"
fetch() {  # fetch DIR PIN...
    local dir=$1; shift
    $PY -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --python-version "$PYV" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$dir" "$@" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
    local want=$#
    local got; got=$(ls "$dir"/*.whl 2>/dev/null | wc -l)
    if [ "$got" -ne "$want" ]; then
        echo "gpu_prepare: FAILED: asked for $want wheels ($*), got $got in $dir" >&2
        exit 1
    fi
}
echo "gpu_prepare: downloading for cp${PYV/./} manylinux x86_64 into $DEST"
fetch "$DEST" $PINS
fetch "$DEST/fallback" $FALLBACK_PINS

# Check the set: one wheel per name, tags fit the target, every requirement met.
$PY - "$DEST" "$PYV" <<'PYEOF'
import hashlib, re, sys, zipfile
from email.parser import Parser
from pathlib import Path
try:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version
except ImportError:
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.utils import canonicalize_name
    from pip._vendor.packaging.version import Version

dest, pyv = Path(sys.argv[1]), sys.argv[2]
# What the device image holds (KINDS.md, read 2026-11), with versions where they were read;
# None = there, version not read. torch's and triton's are what fla's cuda extra asks for.
IMAGE = {"torch": "2.11.0", "triton": "3.6.0", "transformers": "5.17.0", "einops": None,
         "numpy": "2.5.2", "safetensors": "0.8.0", "packaging": None, "typing-extensions": None}
env = {"python_version": pyv, "python_full_version": pyv + ".0", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
       "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}

def meta(whl):
    with zipfile.ZipFile(whl) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return Parser().parsestr(z.read(name).decode())

wheels = {}
for whl in sorted(dest.glob("*.whl")) + sorted((dest / "fallback").glob("*.whl")):
    m = meta(whl)
    name = canonicalize_name(m["Name"])
    if name in wheels:
        sys.exit(f"gpu_prepare: FAILED: two wheels of {name}: {wheels[name][1].name}, {whl.name}")
    tags = whl.name[:-4].split("-")[-3:]
    if tags[0] not in ("py3", f"cp{pyv.replace('.', '')}") or not re.search(r"any|x86_64", tags[2]):
        sys.exit(f"gpu_prepare: FAILED: {whl.name} is not for cp{pyv.replace('.', '')} manylinux x86_64")
    wheels[name] = (m, whl)

problems, rows = [], []
for name, (m, whl) in wheels.items():
    for line in m.get_all("Requires-Dist") or []:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue  # an extra, or another platform
        rn = canonicalize_name(req.name)
        if rn in wheels:
            have = wheels[rn][0]["Version"]
        elif rn in IMAGE:
            have = IMAGE[rn]
        else:
            problems.append(f"{name} needs {line}: neither fetched nor in the device image")
            continue
        if have is not None and not req.specifier.contains(Version(have), prereleases=True):
            if not (rn == "typing-extensions" and "typing-extensions" in wheels):
                problems.append(f"{name} needs {req}, the set/image has {rn} {have}")
    data = whl.read_bytes()
    rows.append((name, m["Version"], str(whl.relative_to(dest)), len(data), hashlib.sha256(data).hexdigest()))
if problems:
    sys.exit("gpu_prepare: FAILED, unmet requirements:\n  " + "\n  ".join(problems))
with open(dest / "MANIFEST.tsv", "w") as f:
    f.write("name\tversion\tfile\tbytes\tsha256\n")
    for r in rows:
        f.write("\t".join(map(str, r)) + "\n")
for name, ver, file, size, _ in rows:
    print(f"  {file:80s} {size / 1e6:7.2f} MB")
total = sum(r[3] for r in rows)
print(f"gpu_prepare: {len(rows)} wheels, {total / 1e6:.2f} MB in all; requirements met by the set "
      f"and the image; manifest {dest / 'MANIFEST.tsv'}")
PYEOF
TREE=$(git ls-files -co --exclude-standard -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
WH=$(du -sb "$DEST" | cut -f1)
echo "gpu_prepare: a device call with carry [\"$DEST\"] sends about $(( (TREE + WH) / 1000000 )) MB (limit 64 MiB)"
[ $((TREE + WH)) -lt $((60 * 1048576)) ] || { echo "gpu_prepare: FAILED: over 60 MiB; the call would be refused" >&2; exit 1; }
