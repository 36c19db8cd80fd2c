"""Every registered variant (built-in or plug-in) gets these checks for free."""
import pytest

from harness.model import conformance
from harness.registry import VARIANTS

NAMES = VARIANTS.names()


@pytest.mark.parametrize("name", NAMES)
def test_metadata(name):
    conformance.check_metadata(name)


@pytest.mark.parametrize("name", NAMES)
def test_init_parameters_hook_is_deterministic_and_idempotent(name):
    conformance.check_init_parameters(name)


@pytest.mark.parametrize("name", NAMES)
def test_chunk_equals_recurrent_forward_and_grads(name):
    conformance.check_chunk_equals_recurrent(name)


@pytest.mark.parametrize("name", NAMES)
def test_causal(name):
    conformance.check_causal(name)


@pytest.mark.parametrize("name", NAMES)
def test_prefill_then_decode_equals_forward(name):
    conformance.check_prefill_decode(name)


@pytest.mark.parametrize("name", NAMES)
def test_declared_state_bytes_equal_cache(name):
    conformance.check_state_bytes(name)


def test_the_paper_variants_are_registered():
    assert {"hgrn", "retnet", "gla", "hgrn2", "deltanet", "gated_deltanet", "attention"} <= set(NAMES)


def test_harness_variants_lists_ten():
    """The paper's six, the newer three and softmax attention, from the command line."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "harness.cli", "variants", "--json"], capture_output=True, text=True,
                         check=True).stdout
    names = {v["name"] for v in json.loads(out)}
    assert names == {"hgrn", "retnet", "gla", "hgrn2", "deltanet", "gated_deltanet", "kda", "mamba2", "rwkv7",
                     "attention"}


def test_conformance_catches_a_broken_variant(monkeypatch):
    """The checks can fail: a mixer whose chunked path leaks the future must be caught."""
    import torch

    mixer_cls = VARIANTS.get("gla")
    original = mixer_cls.forward

    def leaky(self, x, state=None, offset=0, mode=None, context=None):
        y, s = original(self, x, state, offset, mode, context)
        if self.resolve_mode(mode) == "chunk":
            y = y + 1e-3 * torch.roll(x, -1, dims=1).mean(-1, keepdim=True)  # peeks at t + 1
        return y, s

    monkeypatch.setattr(mixer_cls, "forward", leaky)
    with pytest.raises(AssertionError):
        conformance.check_causal("gla")
    with pytest.raises(AssertionError):
        conformance.check_chunk_equals_recurrent("gla")
