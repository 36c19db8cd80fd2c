import json
import os
import subprocess
import sys

import pytest

from harness.registry import VARIANTS, Registry, UnknownNameError

PLUGIN = '''
"""A third-party variant: plain (undecayed) linear attention, registered by entry point only.
It declares its colour, display name and how it converts from an fla-style checkpoint, and has
the one shape of every variant: metadata one per line, plain projections, `forward` with the
context, custom initialisation in `init_parameters`."""
from torch import nn
from harness.model.mixer import MatrixStateMixer
from harness.model.modules import RMSNorm, split_heads


class PlainLinearAttention(MatrixStateMixer):
    display_name = "Plain linear attention (plug-in)"
    color = "#123456"
    generation = 2
    gating = "none"
    flops_coeff = 5
    fla_model_types = ("plain_linear_attn",)

    def __init__(self, d_model, n_heads, layer_idx=0, mode="chunk"):
        super().__init__(d_model, n_heads, layer_idx, mode)
        self.set_dims(d_model, d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.norm = RMSNorm(self.head_v)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def init_parameters(self, n_layers):
        self.norm.weight.fill_(n_layers ** -0.5)  # a depth-scaled output

    def forward(self, x, state=None, offset=0, mode=None, context=None):
        q, k, v = (split_heads(t, self.head_k) for t in self.qkv(x).chunk(3, -1))
        o, S = self.op("gla", mode, x.shape[1])(q.sigmoid(), k.sigmoid(), v, None,
                                                initial_state=(state or {}).get("S"))
        return self.o_proj(self.norm(o).flatten(-2)), {"S": S}

    @classmethod
    def fla_config_fields(cls, cfg):
        return {"n_heads": int(cfg.get("num_heads", 2))}

    @classmethod
    def fla_mixer_param(cls, name):
        return "qkv.weight" if name == "qkv_proj.weight" else name
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


def test_entry_point_variant_initialises_through_its_hook(plugin_path):
    """A plug-in's `init_parameters` runs after construction (the layer on its own) and again in
    a model, with the model's depth."""
    from harness.model import ModelConfig, build_model
    from harness.registry import get_variant

    assert get_variant("plain_linear")(32, 2, layer_idx=2).norm.weight.eq(3 ** -0.5).all()
    model = build_model(ModelConfig(variant="plain_linear", n_layers=4, d_model=32, n_heads=2, vocab_size=61))
    assert all(block.mixer.norm.weight.eq(0.5).all() for block in model.layers)


def test_entry_point_variant_converts_from_its_checkpoint(plugin_path, tmp_path):
    """The plug-in's own conversion hooks (fla_model_types, fla_config_fields, fla_mixer_param)
    load an fla-style checkpoint of its model type, with no edit to the converter."""
    import torch
    from safetensors.torch import save_file

    from harness.integrations.convert import load_fla_checkpoint
    from harness.model import ModelConfig, build_model

    torch.manual_seed(0)
    ours = build_model(ModelConfig(variant="plain_linear", layout="pure", n_layers=2, d_model=32, n_heads=2,
                                   vocab_size=61), backend="torch").eval()
    fla_names = {}
    for key, tensor in ours.state_dict().items():  # our names -> an fla checkpoint's
        key = key.replace(".mixer.qkv.", ".attn.qkv_proj.").replace(".mixer.", ".attn.")
        fla_names[key if key == "lm_head.weight" else f"model.{key}"] = tensor.contiguous()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    save_file(fla_names, str(ckpt / "model.safetensors"))
    (ckpt / "config.json").write_text(json.dumps({
        "model_type": "plain_linear_attn", "hidden_size": 32, "num_hidden_layers": 2, "vocab_size": 61,
        "num_heads": 2, "intermediate_size": ours.cfg.mlp_hidden, "norm_eps": 1e-6, "hidden_act": "swish"}))
    loaded = load_fla_checkpoint(ckpt)
    assert (loaded.cfg.variant, loaded.cfg.layout, loaded.cfg.n_heads) == ("plain_linear", "pure", 2)
    x = torch.randint(0, 61, (2, 12))
    with torch.no_grad():
        assert torch.equal(loaded(x), ours(x))


def test_a_report_names_and_colours_a_plugin_without_importing_torch(plugin_path, tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{plugin_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    suite = tmp_path / "plug.yaml"
    suite.write_text("name: plug\ntask: analytic\nmodel: {n_layers: 2, d_model: 32, n_heads: 2}\n"
                     "axes: {variant: [plain_linear, gla], layout: [pure, '1:1'], seq_len: [64, 256]}\n")
    subprocess.run([sys.executable, "-m", "harness.cli", "sweep", str(suite), "--out", str(tmp_path / "res"),
                    "--no-report"], env=env, check=True, capture_output=True)
    code = ("import json, sys; from harness.report import build_report; "
            f"build_report({str(tmp_path / 'res')!r}, {str(tmp_path / 'rep')!r}); "
            "from harness.report.style import variant_color as c, variant_label as l; "
            "print(json.dumps([l('plain_linear'), c('plain_linear'), c('gla'), 'torch' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == ["Plain linear attention (plug-in)", "#123456", "#1f77b4", False]
    assert (tmp_path / "rep" / "report.md").read_text().count("plain_linear") > 0


def test_what_registers_is_checked():
    from harness.registry import TASKS

    with pytest.raises(TypeError, match="a variant must subclass harness.model.mixer.Mixer"):
        @VARIANTS.register("not_a_mixer")
        class NotAMixer:
            pass

    with pytest.raises(TypeError, match="a task must subclass harness.tasks.base.Task"):
        @TASKS.register("not_a_task")
        class NotATask:
            pass

    assert "not_a_mixer" not in VARIANTS.names() and "not_a_task" not in TASKS.names()


def test_names_are_listed_without_importing_and_match_what_loads():
    code = ("import json, sys; from harness.registry import VARIANTS, TASKS; "
            "static = [VARIANTS.names(), TASKS.names(), VARIANTS.describe('gla').get('display_name')]; "
            "before = 'torch' in sys.modules; VARIANTS.load(); TASKS.load(); "
            "print(json.dumps(static + [before, sorted(VARIANTS._items), sorted(TASKS._items)]))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    variants, tasks, gla, torch_before, loaded_variants, loaded_tasks = json.loads(out.strip().splitlines()[-1])
    assert not torch_before and gla == "GLA"
    assert variants == loaded_variants and tasks == loaded_tasks  # the source scan finds what registers


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
