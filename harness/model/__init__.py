"""The model: configuration, layouts, the token-mixer contract, building blocks, HybridLM and its
cache, analytic costs, checkpoints and the conformance checks every variant passes.

    from harness.model import ModelConfig, build_model
    model = build_model(ModelConfig(variant="gla", layout="3:1", n_layers=4))

Names are imported lazily, so `harness.model.config` and `harness.model.layout` stay free of
torch (suite validation uses them).
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ModelConfig": "harness.model.config",
    "resolve_layout": "harness.model.layout",
    "Mixer": "harness.model.mixer",
    "HybridLM": "harness.model.lm",
    "Cache": "harness.model.lm",
    "build_model": "harness.model.lm",
    "model_costs": "harness.model.costs",
    "save_checkpoint": "harness.model.checkpoint",
    "load_checkpoint": "harness.model.checkpoint",
    "check_variant": "harness.model.conformance",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'harness.model' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
