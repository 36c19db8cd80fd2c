"""Save and load a HybridLM as a directory: config.json (ModelConfig) + model.safetensors.

Importing this module does not import torch (the sweep driver uses `is_complete_checkpoint` to
decide whether a producing cell must run again); saving and loading do.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from harness.model.lm import HybridLM

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


def save_checkpoint(model: HybridLM, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write `directory/config.json` and `directory/model.safetensors` (atomically each; the
    config last, so a directory with a config.json holds the weights that go with it)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight", None)  # safetensors refuses shared storage; re-tied on load
    cfg_path = directory / CONFIG_NAME
    if cfg_path.exists():  # overwriting: the directory is incomplete until the new config lands
        cfg_path.unlink()
    tmp = directory / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, directory / WEIGHTS_NAME)
    meta = {"harness_config": model.cfg.to_dict(), **(extra or {})}
    tmp = directory / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, cfg_path)
    return directory


def is_complete_checkpoint(directory: str | Path) -> bool:
    """A directory holding both files of a checkpoint (never a half-written one: the config is
    written last)."""
    d = Path(directory)
    return (d / CONFIG_NAME).is_file() and (d / WEIGHTS_NAME).is_file()


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype | None = None) -> HybridLM:
    """The HybridLM saved in `directory` (float32 unless `dtype` says otherwise)."""
    import torch
    from safetensors.torch import load_file

    from harness.model.config import ModelConfig
    from harness.model.lm import HybridLM

    directory = Path(directory)
    cfg_path = directory / CONFIG_NAME
    if not cfg_path.exists():
        raise FileNotFoundError(f"{directory} is not a harness checkpoint: {CONFIG_NAME} is missing")
    meta = json.loads(cfg_path.read_text())
    if "harness_config" not in meta:
        raise ValueError(f"{cfg_path} has no 'harness_config'; for an fla checkpoint use harness.integrations.convert")
    cfg = ModelConfig.from_dict(meta["harness_config"])
    model = HybridLM(cfg)
    state = load_file(str(directory / WEIGHTS_NAME))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (cfg.tie_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"checkpoint {directory} does not match its config: missing {missing}, "
                         f"unexpected {unexpected}")
    return model.to(device=device, dtype=dtype if dtype is not None else torch.float32)
