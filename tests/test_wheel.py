"""The installed tool is complete: a wheel built from the checkout carries the suites and the
variants inside the harness namespace (no top-level `variants` package), and its command line
runs its main job's dry run and lists its suites from an unrelated folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from harness.sweep import expand_cells, load_suite

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel, installed (without dependencies: the test's environment has them) into a folder."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "dist"), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("hybrid_attention_harness-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "harness/variants/gla.py" in names and "harness/suites/quickstart.yaml" in names
    assert "harness/metrics.yaml" in names and "harness/integrations/lm_eval/tasks/harness_toy_mc.yaml" in names
    assert not [n for n in names if n.startswith("variants/") or n.startswith("suites/")]
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(tmp / "site"),
                    str(wheel)], check=True, capture_output=True, timeout=300)
    return tmp / "site"


def _run(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site), "COLUMNS": "200"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_installed_cli_runs_from_any_folder(installed, tmp_path):
    (tmp_path / "variants").mkdir()  # a user's folder named variants must not shadow anything
    (tmp_path / "variants" / "__init__.py").write_text("raise ImportError('the user folder was imported')\n")
    where = _run(installed, tmp_path, "-c", "import json, harness, harness.variants, harness.suites; "
                 "print(json.dumps([harness.__file__, list(harness.variants.__path__), "
                 "list(harness.suites.__path__)]))")
    assert where.returncode == 0, where.stderr
    files = json.loads(where.stdout.strip().splitlines()[-1])
    assert all(str(installed) in f for f in [files[0], *files[1], *files[2]]), files
    dry = _run(installed, tmp_path, "-m", "harness.cli", "sweep", "--dry-run")
    assert dry.returncode == 0, dry.stderr[-2000:]
    n_cells = len(expand_cells(load_suite(REPO / "suites" / "quickstart.yaml")))
    assert f"quickstart: {n_cells} cells" in dry.stdout  # the shipped copy, not a stale one
    listed = _run(installed, tmp_path, "-m", "harness.cli", "suites", "--json")
    assert listed.returncode == 0, listed.stderr[-2000:]
    rows = {r["name"]: r for r in json.loads(listed.stdout)}
    n_cpu_recall = len(expand_cells(load_suite(REPO / "suites" / "cpu-recall.yaml")))
    assert rows["quickstart"]["where"] == "shipped" and rows["cpu-recall"]["cells"] == str(n_cpu_recall)
    variants = _run(installed, tmp_path, "-m", "harness.cli", "variants", "--json")
    assert {r["name"] for r in json.loads(variants.stdout)} >= {"gla", "gated_deltanet", "attention"}
