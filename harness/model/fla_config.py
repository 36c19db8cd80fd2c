"""The fla config.json as a variant reads it (`Mixer.fla_config_fields`), and the error for a
checkpoint our variants do not implement. It lives beside the mixer contract, which names it, so
that model/ never imports the conversion integration (integrations/convert.py uses it)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.model.config import ModelConfig


class ConversionError(ValueError):
    """The checkpoint cannot be found, or not converted exactly (or at all) into our HybridLM."""


def mlp_hidden_fields(inter: int, d: int) -> dict[str, Any]:
    """(mlp_ratio, mlp_multiple) that give ModelConfig.mlp_hidden == `inter` at width `d`."""
    # ModelConfig: hidden = round_up(int(d * ratio * 2/3), multiple). Aim at inter + 0.5 so float
    # rounding can never land on inter - 1; multiple 1 keeps it.
    ratio = (inter + 0.5) * 1.5 / d
    out = {"mlp_ratio": ratio, "mlp_multiple": 1}
    if ModelConfig(d_model=d, **out).mlp_hidden != inter:  # pragma: no cover - arithmetic guard
        raise ConversionError(f"intermediate_size={inter} cannot be expressed with mlp_ratio/mlp_multiple")
    return out


class FlaConfig:
    """An fla config.json as a variant's `fla_config_fields` reads it: values with defaults, the
    options it requires, and the error for one it does not implement."""

    def __init__(self, config: Mapping[str, Any]):
        self.config = config
        self.model_type = str(config.get("model_type"))
        self.d_model = int(config["hidden_size"])
        self.norm_eps = float(config.get("norm_eps", 1e-6))

    def get(self, key: str, default: Any = None) -> Any:
        return self.config.get(key, default)

    def unsupported(self, why: str) -> ConversionError:
        return ConversionError(f"{self.model_type}: {why}")

    def require(self, key: str, *, ok: Any, default: Any, why: str) -> None:
        """Refuse the checkpoint unless option `key` (default `default`) is one of `ok`."""
        value = self.config.get(key, default)
        allowed = ok if isinstance(ok, (list, tuple, set)) else [ok]
        if value not in allowed:
            raise self.unsupported(f"{key}={value!r} is not supported ({why})")

    def mlp_hidden_fields(self, inter: int) -> dict[str, Any]:
        """ModelConfig's mlp_ratio / mlp_multiple for an MLP (or channel mix) of `inter` hidden units."""
        return mlp_hidden_fields(inter, self.d_model)

    def linear_attention_fields(self, default_heads: int, expand_k: float, expand_v: float) -> dict[str, Any]:
        """n_heads and mixer_kwargs of fla's linear-attention layers with an output gate (GLA,
        RetNet): expand_k / expand_v, no grouped keys, no feature map, a swish gate."""
        heads = int(self.get("num_heads", default_heads))
        if self.get("num_kv_heads") not in (None, heads):
            raise self.unsupported(f"num_kv_heads={self.get('num_kv_heads')} (grouped keys) is not implemented")
        self.require("feature_map", ok=[None], default=None, why="no q/k feature map in our variant")
        self.require("use_output_gate", ok=[True], default=True, why="our variant always has the output gate")
        self.require("hidden_act", ok=["swish", "silu"], default="swish", why="the output gate is swish")
        return {"n_heads": heads, "mixer_kwargs": {"expand_k": float(self.get("expand_k", expand_k)),
                                                   "expand_v": float(self.get("expand_v", expand_v)),
                                                   "norm_eps": self.norm_eps}}
