"""CPU rehearsal of the one GPU call: scripts/gpu_check.sh's install path and its no-CUDA branch,
in a fresh venv that holds only what the device image holds (torch and the image's packages; no
fla, no pydantic), installing from the prepared wheels with --no-index. It proves the wheel set
is complete and that the outputs pack into what comes back (<= 8 files, 16 MiB each, no folders),
before any device time is spent.

Needs wheels/gpu/ (scripts/gpu_prepare.sh; .ci/run runs it) and PyPI for the same set built for
this machine's Python (only pydantic-core's compiled wheel differs; the pure wheels are checked
to be byte-identical to the carried ones). About 2 minutes: ~65 s for the venv, ~50 s for the run.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CARRIED = ROOT / "wheels" / "gpu"
# What the device image holds of what the harness, fla and the check use (device KINDS.md), at the
# versions read there where this Python has them. typing-extensions is pinned below what pydantic
# 2.14 needs, so that the rehearsal takes the harder path (gpu_check.sh installs the fallback).
IMAGE_PACKAGES = [
    "triton==3.6.0", "transformers==5.17.0", "safetensors==0.8.0", "huggingface_hub==1.33.0", "tokenizers",
    "einops", "numpy", "pandas", "pyarrow", "matplotlib", "typer", "rich", "pyyaml", "packaging",
    "setuptools", "wheel", "pytest", "pytest-timeout", "typing_extensions==4.12.2",
]
NOT_IN_IMAGE = ["pydantic", "pydantic-core", "annotated-types", "typing-inspection", "fla-core",
                "flash-linear-attention"]
NAME_OK = re.compile(r"^[A-Za-z0-9._-]+$")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),
    pytest.mark.skipif(not (CARRIED / "MANIFEST.tsv").is_file(),
                       reason="no wheels/gpu/ to rehearse with: run scripts/gpu_prepare.sh (needs PyPI)"),
]


def manifest(d: Path) -> dict[str, dict[str, str]]:
    lines = (d / "MANIFEST.tsv").read_text().splitlines()
    head = lines[0].split("\t")
    return {r["name"]: r for r in (dict(zip(head, line.split("\t"))) for line in lines[1:])}


def sh(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


@pytest.fixture(scope="module")
def scratch():
    d = Path(tempfile.mkdtemp(prefix="gpu-rehearsal-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def local_wheels(scratch):
    """The carried set, built for this machine's Python: same names and versions, same pure wheels."""
    pyv = f"{sys.version_info.major}.{sys.version_info.minor}"
    dest = scratch / "wheels"
    p = sh(["bash", str(ROOT / "scripts/gpu_prepare.sh"), "--python-version", pyv, "--dest", str(dest)], cwd=ROOT)
    if p.returncode != 0:
        if "FAILED" in p.stdout + p.stderr and "got 0" not in p.stdout + p.stderr:
            pytest.fail(f"gpu_prepare.sh failed:\n{p.stdout}\n{p.stderr}")
        pytest.skip(f"could not fetch the wheels for Python {pyv} (PyPI unreachable?):\n{p.stderr[-1000:]}")
    ours, carried = manifest(dest), manifest(CARRIED)
    assert {(n, r["version"]) for n, r in ours.items()} == {(n, r["version"]) for n, r in carried.items()}, \
        "wheels/gpu/ is stale against scripts/gpu_prepare.sh: run it again"
    for name, r in carried.items():
        if r["file"].endswith("-none-any.whl"):
            assert ours[name]["sha256"] == r["sha256"], f"{name}: the rehearsed wheel differs from the carried one"
        else:
            assert "cp312-cp312" in r["file"] and "x86_64" in r["file"], f"{r['file']} is not for the device"
    return dest


@pytest.fixture(scope="module")
def image_venv(scratch):
    """A fresh venv like the device image: torch (the CPU wheel) and the image's packages only."""
    venv = scratch / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for args in (["torch==2.13.0"], IMAGE_PACKAGES):
        p = sh(pip + args)
        if p.returncode != 0:
            pytest.skip(f"could not build the image-like venv ({' '.join(args)}):\n{p.stderr[-1500:]}")
    # the image has none of these (typer pulls pydantic in here; there it is absent)
    sh([py, "-m", "pip", "uninstall", "-y", "-q", *NOT_IN_IMAGE])
    p = sh([py, "-c", "import torch, triton, transformers, pandas, pyarrow, matplotlib, typer, rich, yaml, einops"])
    assert p.returncode == 0, p.stderr
    for mod in ("pydantic", "fla"):
        assert sh([py, "-c", f"import {mod}"]).returncode != 0, f"{mod} must not be in the image-like venv"
    return py


def test_gpu_check_installs_offline_and_packs_in_a_bare_image(scratch, local_wheels, image_venv):
    out, work = scratch / "out", scratch / "work"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "CONDA")) and k != "PATH"}
    env.update(PATH=f"{Path(image_venv).parent}:/usr/bin:/bin", PIP_CONFIG_FILE=os.devnull,
               PYTHON=image_venv, GPU_WHEELS=str(local_wheels), GPU_CHECK_WORK=str(work))
    p = sh(["bash", str(ROOT / "scripts/gpu_check.sh"), str(out)], cwd=ROOT, env=env, timeout=600)
    if p.returncode != 0:
        failed = [line.split("\t")[0] for line in (work / "steps.tsv").read_text().splitlines()
                  if line.split("\t")[1] != "0"] if (work / "steps.tsv").is_file() else []
        logs = "".join(f"\n--- {n}.log (tail)\n" + (work / "logs" / f"{n}.log").read_text()[-3000:]
                       for n in failed if (work / "logs" / f"{n}.log").is_file())
        pytest.fail(f"gpu_check.sh failed (steps not ok: {failed}):{logs}\n--- output (tail)\n"
                    f"{p.stdout[-3000:]}{p.stderr[-2000:]}")

    # what comes back from a device call: <= 8 plain files, 16 MiB each, 64 MiB together
    files = [f for f in out.rglob("*")]
    assert all(f.is_file() and f.parent == out for f in files), files
    assert len(files) <= 8, files
    assert all(NAME_OK.match(f.name) and f.stat().st_size <= 16 * 2**20 for f in files), files
    assert sum(f.stat().st_size for f in files) <= 64 * 2**20
    names = {f.name for f in files}
    assert {"summary.md", "summary.json", "results.parquet", "report.tar.gz", "logs.tar.gz"} <= names, names

    s = json.loads((out / "summary.json").read_text())
    assert s["branch"] == "cpu" and s["status"] == "ok", s["steps"]
    assert [r["step"] for r in s["steps"]] == ["install", "equality", "overhead-check", "suite-check", "sweep",
                                               "report"]
    e = s["environment"]
    site = str(work / "site")
    assert e["fla"] == "0.6.0" and e["pydantic"].startswith("2.") and e["harness_file"].startswith(site), e
    assert e["typing_extensions"] != "4.12.2", "the fallback typing-extensions was not installed"
    assert s["equality"]["passed"] >= 3 and s["equality"]["skipped"] >= 2, s["equality"]  # CUDA cases selected
    assert s["results"]["rows"] > 0 and s["results"]["speedups"]["train_step_s"], s["results"]
    assert "linear / softmax speedup" in (out / "summary.md").read_text()
    with tarfile.open(out / "report.tar.gz") as t:
        assert "report/report.md" in t.getnames()
    with tarfile.open(out / "logs.tar.gz") as t:
        logs = set(t.getnames())
    assert {"logs/install.log", "logs/sweep.log", "logs/steps.tsv"} <= logs, logs
