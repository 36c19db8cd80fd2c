import json
import os
import subprocess
import sys

import pytest

from harness.registry import VARIANTS, Registry, UnknownNameError

PLUGIN = '''
"""A third-party variant: plain (undecayed) linear attention, registered by entry point only."""
from torch import nn
from harness.model.mixer import Mixer
from harness.model.modules import RMSNorm, split_heads


class PlainLinearAttention(Mixer):
    display_name = "Plain linear attention (plug-in)"
    generation = 2
    gating = "none"
    flops_coeff = 5

    def __init__(self, d_model, n_heads, layer_idx=0, mode="chunk"):
        super().__init__(d_model, n_heads, layer_idx, mode)
        self.head = d_model // n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.norm = RMSNorm(self.head)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, state=None, offset=0, mode=None):
        q, k, v = (split_heads(t, self.head) for t in self.qkv(x).chunk(3, -1))
        o, S = self.op("gla", mode)(q.sigmoid(), k.sigmoid(), v, None, initial_state=(state or {}).get("S"))
        return self.o_proj(self.norm(o).flatten(-2)), {"S": S}

    def state_shapes(self, batch, seq_len):
        return {"S": (batch, self.n_heads, self.head, self.head)}

    def state_elements_per_head(self):
        return self.head * self.head
'''


@pytest.fixture
def plugin_path(tmp_path):
    """A separately installed package: a module plus a dist-info declaring the entry point."""
    (tmp_path / "harness_plugin_demo.py").write_text(PLUGIN)
    dist = tmp_path / "harness_plugin_demo-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: harness-plugin-demo\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[harness.variants]\nplain_linear = harness_plugin_demo:PlainLinearAttention\n"
    )
    sys.path.insert(0, str(tmp_path))
    VARIANTS._loaded = False
    yield tmp_path
    sys.path.remove(str(tmp_path))
    VARIANTS._items.pop("plain_linear", None)
    sys.modules.pop("harness_plugin_demo", None)


def test_entry_point_variant_registers_and_conforms(plugin_path):
    from harness.model import conformance

    assert "plain_linear" in VARIANTS.names()
    conformance.check_variant("plain_linear")  # the same checks as the built-ins, no harness edit


def test_entry_point_variant_shows_in_cli(plugin_path):
    env = {**os.environ, "PYTHONPATH": f"{plugin_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, "-m", "harness.cli", "variants", "--json"], env=env,
                         capture_output=True, text=True, check=True).stdout
    names = {row["name"] for row in json.loads(out)}
    assert "plain_linear" in names and "gated_deltanet" in names


def test_cli_variants_json_lists_the_seven_with_metadata():
    out = subprocess.run([sys.executable, "-m", "harness.cli", "variants", "--json"],
                         capture_output=True, text=True, check=True).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert {"hgrn", "retnet", "gla", "hgrn2", "deltanet", "gated_deltanet", "attention"} <= set(rows)
    assert rows["hgrn"]["generation"] == 1 and rows["hgrn"]["state_kind"] == "vector"
    assert rows["gla"]["generation"] == 2 and rows["hgrn2"]["generation"] == 2 and rows["retnet"]["generation"] == 2
    assert rows["deltanet"]["delta_rule"] and rows["gated_deltanet"]["delta_rule"]
    assert rows["gated_deltanet"]["generation"] == 3 and not rows["gla"]["delta_rule"]
    assert rows["attention"]["state_kind"] == "kv"


def test_cli_variants_table():
    out = subprocess.run([sys.executable, "-m", "harness.cli", "variants"], capture_output=True, text=True,
                         check=True, env={**os.environ, "COLUMNS": "200"}).stdout
    assert "gated_deltanet" in out and "hgrn2" in out


def test_unknown_variant_suggests_close_names():
    with pytest.raises(UnknownNameError) as err:
        VARIANTS.get("gated_delta_net")
    msg = str(err.value)
    assert "did you mean 'gated_deltanet'" in msg.lower()
    assert "hgrn2" in msg  # lists what is registered


def test_duplicate_registration_is_rejected():
    reg = Registry("thing", "harness.none", ())
    reg._loaded = True

    @reg.register("a")
    class A:
        pass

    with pytest.raises(ValueError, match="already registered"):
        @reg.register("a")
        class B:
            pass
