"""The model: configuration, layouts, the token-mixer contract, building blocks, HybridLM and its
cache, analytic costs, checkpoints and the conformance checks every variant passes.

    from harness.model import ModelConfig, build_model
    model = build_model(ModelConfig(variant="gla", layout="3:1", n_layers=4))

Names are imported lazily, so `harness.model.config` and `harness.model.layout` stay free of
torch (suite validation uses them).
"""
from __future__ import annotations

from harness._lazy import lazy_exports

_EXPORTS = {
    "ModelConfig": "harness.model.config", "resolve_model": "harness.model.resolve",
    **dict.fromkeys(["HybridLM", "Cache", "build_model"], "harness.model.lm"),
    **dict.fromkeys(["save_checkpoint", "load_checkpoint"], "harness.model.checkpoint"),
    "resolve_layout": "harness.model.layout", "Mixer": "harness.model.mixer", "model_costs": "harness.model.costs",
    "check_variant": "harness.model.conformance",
}
__all__ = list(_EXPORTS)


__getattr__ = lazy_exports('harness.model', _EXPORTS)
