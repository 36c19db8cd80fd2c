"""fla's kernels (GPU backend) vs our ops, forward and backward, for every variant with an fla op.

On the CPU the kernels run under Triton's interpreter in a subprocess (fp32, tiny shapes; see
tests/fla_interpreter.py); on CUDA the same cases run directly in fp32 and bf16.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from harness.integrations import fla_kernels as backend
from harness.registry import VARIANTS
from harness.runtime.devices import resolve_backend

HERE = os.path.dirname(os.path.abspath(__file__))
fla_installed = pytest.mark.skipif(
    not backend.fla_installed(),
    reason="flash-linear-attention is not installed (pip install -e '.[gpu]')",
)


def _check(results: dict, atol: float) -> None:
    bad = {f"{case}.{k}": v for case, diffs in results.items() for k, v in diffs.items() if not v <= atol}
    assert not bad, f"fla and torch paths differ beyond {atol}: {bad}"
    linear = {n for n in VARIANTS.names() if n != "attention"}
    assert {f"module_{n}" for n in linear} <= set(results), "every linear variant must be compared"


@fla_installed
@pytest.mark.timeout(900)
def test_fla_kernels_match_torch_ops_in_the_triton_interpreter():
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, os.path.join(HERE, "fla_equality.py")], capture_output=True,
                          text=True, env=env, timeout=900)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS ")]
    assert proc.returncode == 0 and lines, f"equality script failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads(lines[-1][len("RESULTS "):])
    assert "gla_g_chan_chunk" in results and "dg_chan" in results["gla_g_chan_chunk"]  # backward was compared
    _check(results, atol=2e-4)


@fla_installed
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 2e-3), (torch.bfloat16, 1e-1)])
def test_fla_kernels_match_torch_ops_on_cuda(dtype, atol):
    sys.path.insert(0, HERE)
    from fla_equality import run_cases

    _check(run_cases("cuda", dtype), atol)


def test_auto_backend_is_torch_on_cpu():
    assert resolve_backend("auto", "cpu") == "torch"


def test_forcing_fla_on_cpu_fails_clearly(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr("harness.integrations.fla_kernels.fla_installed", lambda: True)
    with pytest.raises(RuntimeError, match="need a CUDA device"):
        resolve_backend("fla", "cpu")


def test_auto_on_cuda_registers_the_fla_kernels(monkeypatch):
    """"auto" on a CUDA device resolves to fla, and the fla ops must then exist: before the
    restructuring it returned "fla" without registering them, so every GPU cell would have
    failed with "no 'fla' implementation"."""
    import torch

    from harness.ops.dispatch import get_op

    calls = []
    monkeypatch.setattr("harness.integrations.fla_kernels.fla_installed", lambda: True)
    monkeypatch.setattr("harness.integrations.fla_kernels.register_fla_ops", lambda: calls.append(1))
    assert resolve_backend("auto", torch.device("cuda")) == "fla" and calls == [1]
    assert resolve_backend("auto", "cpu") == "torch" and calls == [1]
    with pytest.raises(ValueError, match="no 'nonexistent' implementation"):
        get_op("gla", "chunk", "nonexistent")


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown backend 'triton'"):
        resolve_backend("triton", "cpu")
