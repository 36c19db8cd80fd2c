"""A cell's model in canonical form, checked by building it: what a suite's cells store.

Importing it does not import torch; `resolve_model` builds one mixer of each kind on the meta
device (importing harness.model.lm then), so a config that cannot be built fails when the suite
is read, not when its cell runs.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from harness.model.config import BLOCKS, ModelConfig
from harness.model.layout import ATTN, HEADWISE, LINEAR, canonical_layout, head_fraction, resolve_layout


def resolve_model(model: dict[str, Any]) -> dict[str, Any]:
    """Fill in and canonicalise a model dict; raise ValueError if it cannot be built.

    The layout is stored under its canonical name and placement (harness.model.layout
    .canonical_layout: "LLLA" at depth 4 becomes "3:1", "AALLLLLL" becomes "3:1" placed
    "bottom", and the default placement is left out). A model with
    no linear layer is a Transformer whatever the variant, so its variant becomes "attention"
    (and its mixer_kwargs, which only the linear variant reads, are dropped): the Transformer
    baseline is then one cell, not one per variant. Variant "attention" likewise means every
    layer is softmax attention (as HybridLM builds it), so its layout becomes "transformer". A
    model with no attention layer drops its `window` (sliding-window attention) likewise; a
    head-wise layout ("heads:1/4", every layer part attention) keeps it, and is stored with its
    fraction reduced ("heads:2/8" is "heads:1/4").
    """
    model = {**ModelConfig().to_dict(), **model}
    if model["block"] not in BLOCKS:
        raise ValueError(f"unknown block {model['block']!r}; expected one of {', '.join(BLOCKS)}")
    kinds = resolve_layout(model["layout"], model["n_layers"], model["placement"], n_heads=model["n_heads"])
    if model["variant"] == "attention":
        kinds = [ATTN] * len(kinds)
    if LINEAR not in kinds and HEADWISE not in kinds:
        model["variant"] = "attention"
        model["mixer_kwargs"] = {}
    if ATTN not in kinds and HEADWISE not in kinds:  # a window of no attention layer changes nothing: one cell
        model["window"] = None
    model["layout"], model["placement"] = canonical_layout(kinds, head_fraction(model["layout"]))
    model = ModelConfig.from_dict(model).identity_dict()
    rest = {k: v for k, v in model.items() if k not in ("n_layers", "layout", "placement")}
    one_layer = model["layout"] if HEADWISE in kinds else "pure"  # "H" reads its fraction from the layout
    _check_mixers(json.dumps(rest, sort_keys=True, default=str), tuple(sorted(set(kinds))), one_layer)
    return model


@lru_cache(maxsize=1024)
def _check_mixers(model_json: str, kinds: tuple[str, ...], layout: str = "pure") -> None:
    """Build one mixer of each kind on the meta device: catches head counts that do not
    divide, mixer_kwargs the variant rejects, and the like, without allocating anything."""
    try:
        import torch

        from harness.model.lm import build_mixer
    except ImportError:  # model code unavailable: leave it to run time
        return
    cfg = ModelConfig.from_dict({**json.loads(model_json), "n_layers": 1, "layout": layout})
    for kind in kinds:
        try:
            with torch.device("meta"):
                build_mixer(cfg, kind, 0)
        except Exception as exc:
            what = {ATTN: "softmax attention", HEADWISE: f"a head-wise hybrid of {cfg.variant!r}"}.get(
                kind, f"variant {cfg.variant!r}")
            raise ValueError(f"cannot build {what} with this config: {exc}") from None
