"""Save and load a HybridLM as a directory: config.json (ModelConfig) + model.safetensors."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file, save_file

from harness.config import ModelConfig
from harness.model import HybridLM

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


def save_checkpoint(model: HybridLM, directory: str | Path, extra: Optional[dict[str, Any]] = None) -> Path:
    """Write `directory/config.json` and `directory/model.safetensors` (atomically each)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if model.cfg.tie_embeddings:
        state.pop("lm_head.weight", None)  # safetensors refuses shared storage; re-tied on load
    tmp = directory / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, directory / WEIGHTS_NAME)
    meta = {"harness_config": model.cfg.to_dict(), **(extra or {})}
    tmp = directory / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, directory / CONFIG_NAME)
    return directory


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> HybridLM:
    directory = Path(directory)
    cfg_path = directory / CONFIG_NAME
    if not cfg_path.exists():
        raise FileNotFoundError(f"{directory} is not a harness checkpoint: {CONFIG_NAME} is missing")
    meta = json.loads(cfg_path.read_text())
    if "harness_config" not in meta:
        raise ValueError(f"{cfg_path} has no 'harness_config'; for an fla checkpoint use harness.convert")
    cfg = ModelConfig.from_dict(meta["harness_config"])
    model = HybridLM(cfg)
    state = load_file(str(directory / WEIGHTS_NAME))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (cfg.tie_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise ValueError(f"checkpoint {directory} does not match its config: missing {missing}, unexpected {unexpected}")
    return model.to(device=device, dtype=dtype)
