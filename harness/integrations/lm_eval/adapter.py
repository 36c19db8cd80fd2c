"""lm-eval adapter: evaluate our checkpoints (and converted fla checkpoints) with lm-evaluation-harness.

`HarnessLM` is an `lm_eval.api.model.TemplateLM` registered in lm-eval's model registry under the
name ``harness``. lm-eval 0.4 has no plug-in mechanism for models (no entry-point group; its CLI
only knows the models in `lm_eval.models.MODEL_MAPPING`), so the registration happens when this
module is imported:

- in Python: ``import harness.integrations.lm_eval.adapter`` then ``lm_eval.simple_evaluate(model="harness",
  model_args="pretrained=DIR", ...)``, or pass ``HarnessLM(pretrained=DIR)`` itself;
- from the shell: ``python -m harness.integrations.lm_eval.cli --model harness --model_args pretrained=DIR
  --tasks ...`` which registers the model and then runs lm-eval's own CLI (every lm-eval flag
  works, e.g. ``--include_path``, ``--limit``, ``--output_path``);
- the suite task ``lm_eval`` (harness.tasks.lm_eval) runs it in-process.

``pretrained`` may be a harness checkpoint directory (harness.model.checkpoint: byte-level model), an
fla / Hugging Face checkpoint directory, or a Hub id (converted by harness.integrations.convert; the Hub is
only reached when HF_HUB_OFFLINE is not set).

Tokenisation: our models are byte-level. `ByteTokenizer` maps UTF-8 bytes to ids 0..255; the
end-of-text / prefix id is 256 when the vocabulary has room for it (vocab_size > 256), else 0
(NUL, which never occurs in text); ``eot_token_id=`` overrides it. A converted fla checkpoint
uses its own Hugging Face tokenizer (transformers' AutoTokenizer on the checkpoint directory, or
``tokenizer=PATH_OR_ID``); when the checkpoint ships none, loading fails with a clear message
rather than silently scoring bytes against a 32k-token vocabulary.

Scoring follows lm-eval's HFLM for causal models: continuation tokens are scored from the logits
of the preceding positions, contexts are truncated from the left to `max_length`, an empty
context is replaced by the prefix token (BOS when the tokenizer has one, else EOT), and
`loglikelihood_rolling` uses lm-eval's disjoint rolling windows of `max_length` tokens.
`generate_until` is greedy, token by token from the model's recurrent cache (prefill + decode).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

#: imported only once lm-eval is known installed (the lm_eval task and harness-lm-eval check first)
REQUIRES_EXTRA = "lm-eval"

log = logging.getLogger(__name__)

MODEL_NAME = "harness"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


class ByteTokenizer:
    """UTF-8 bytes as token ids 0..255; ids >= 256 are special (never produced by `encode`)."""

    name = "byte"

    def __init__(self, vocab_size: int = 256, eot_token_id: int | None = None):
        if vocab_size < 256:
            raise ValueError(f"a byte-level model needs vocab_size >= 256, got {vocab_size}")
        self.vocab_size = vocab_size
        self.eot_token_id = int(eot_token_id) if eot_token_id is not None else (256 if vocab_size > 256 else 0)
        if not 0 <= self.eot_token_id < vocab_size:
            raise ValueError(f"eot_token_id {self.eot_token_id} is outside the vocabulary (size {vocab_size})")
        self.bos_token_id = None

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")


def _has_tokenizer_files(directory: Path) -> bool:
    names = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "spiece.model")
    return any((directory / n).is_file() for n in names)


def load_hf_tokenizer(source: str | Path):
    """A Hugging Face tokenizer from a directory (or Hub id), with a clear error when absent."""
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise RuntimeError(
            "converted fla checkpoints are scored with their Hugging Face tokenizer, which needs transformers "
            "(pip install transformers), or pass tokenizer=byte for a byte-level model"
        ) from None
    p = Path(source)
    if p.is_dir() and not _has_tokenizer_files(p):
        raise RuntimeError(
            f"checkpoint {p} has no tokenizer files (tokenizer.json / tokenizer.model / tokenizer_config.json); "
            "pass tokenizer=<directory or Hub id of the tokenizer it was trained with>"
        )
    try:
        return AutoTokenizer.from_pretrained(str(source))
    except Exception as exc:
        raise RuntimeError(f"cannot load a tokenizer from {source}: {type(exc).__name__}: {exc}") from None


def load_model_and_tokenizer(
    pretrained: str | Path,
    tokenizer: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    eot_token_id: int | None = None,
):
    """(HybridLM, tokenizer, kind) for a harness checkpoint, an fla checkpoint dir or a Hub id.
    kind is "harness" or "fla"."""
    from harness.integrations.convert import is_fla_checkpoint, load_fla_checkpoint
    from harness.integrations.hub import resolve_checkpoint_dir

    directory = resolve_checkpoint_dir(pretrained)
    cfg_path = directory / "config.json"
    meta = json.loads(cfg_path.read_text()) if cfg_path.is_file() else {}
    if "harness_config" in meta:
        from harness.model.checkpoint import load_checkpoint

        model = load_checkpoint(directory, device=device, dtype=dtype)
        kind = "harness"
    elif is_fla_checkpoint(directory):
        model = load_fla_checkpoint(directory, device=device, dtype=dtype)
        kind = "fla"
    else:
        raise ValueError(
            f"{pretrained}: not a harness checkpoint (config.json with 'harness_config') nor an fla checkpoint "
            f"(a config.json model_type that a registered variant converts: "
            f"harness.integrations.convert.fla_model_types()); model_type={meta.get('model_type')!r}"
        )
    tok_choice = tokenizer or ("byte" if kind == "harness" else "auto")
    if tok_choice == "byte":
        tok = ByteTokenizer(model.cfg.vocab_size, eot_token_id)
    else:
        tok = load_hf_tokenizer(directory if tok_choice == "auto" else tok_choice)
    return model.eval(), tok, kind


def _resolve_device(device: str | None) -> torch.device:
    from harness.runtime.devices import resolve_device

    dev = torch.device(resolve_device(device or "auto"))
    if dev.type == "cuda" and not torch.cuda.is_available():
        log.warning("device %r requested but CUDA is not available; using cpu", device)
        return torch.device("cpu")
    return dev


@register_model(MODEL_NAME)
class HarnessLM(TemplateLM):
    """lm-eval model wrapping a HybridLM (see the module docstring).

    model_args (all optional except one of pretrained / model): pretrained=DIR|HUB_ID,
    tokenizer=byte|auto|PATH, device=cpu|cuda[:i]|auto, dtype=float32|bfloat16|float16|auto,
    batch_size=N|auto, max_length=N (default 2048), max_gen_toks=N (default 256),
    backend=auto|torch|fla, mode=chunk|recurrent, eot_token_id=N, add_bos_token=true|false.
    """

    backend = "causal"  # lm-eval's name for decoder-only scoring (not our kernel backend)

    def __init__(
        self,
        pretrained: str | Path | None = None,
        model: torch.nn.Module | None = None,
        tokenizer: Any | None = None,
        device: str | None = None,
        dtype: str | torch.dtype = "auto",
        batch_size: int | str | None = 1,
        max_length: int | None = None,
        max_gen_toks: int = 256,
        kernel_backend: str = "auto",
        mode: str | None = None,
        eot_token_id: int | None = None,
        add_bos_token: bool = False,
        **kwargs: Any,
    ):
        super().__init__()
        # lm-eval passes these to every model; `backend` is our kernel backend when given as a model arg
        kwargs.pop("max_batch_size", None)
        kernel_backend = kwargs.pop("backend", kernel_backend)
        if kwargs:
            log.warning("HarnessLM ignores unknown model_args: %s", sorted(kwargs))
        dev = _resolve_device(device)
        if isinstance(dtype, str):
            dtype = (torch.bfloat16 if dev.type == "cuda" else torch.float32) if dtype == "auto" else DTYPES[dtype]
        self.kind = "object"
        if model is not None:
            if not isinstance(tokenizer, (ByteTokenizer, type(None))) and not hasattr(tokenizer, "encode"):
                raise TypeError("tokenizer must be a ByteTokenizer or a Hugging Face tokenizer when passing model=")
            self.model = model.to(device=dev, dtype=dtype).eval()
            self.tokenizer = tokenizer if tokenizer is not None else ByteTokenizer(model.cfg.vocab_size, eot_token_id)
        elif pretrained is not None:
            self.model, self.tokenizer, self.kind = load_model_and_tokenizer(
                pretrained, tokenizer if isinstance(tokenizer, str) else None, dev, dtype, eot_token_id)
            if tokenizer is not None and not isinstance(tokenizer, str):
                self.tokenizer = tokenizer
        else:
            raise ValueError("HarnessLM needs pretrained=<checkpoint dir or Hub id> or model=<HybridLM>")
        self.pretrained = str(pretrained) if pretrained is not None else None
        self._device = dev
        self.dtype = dtype
        if hasattr(self.model, "set_backend"):
            self.kernel_backend = self.model.set_backend(kernel_backend)
        else:  # pragma: no cover - any HybridLM has it
            self.kernel_backend = "torch"
        self.mode = mode
        self.batch_size = self._parse_batch_size(batch_size)
        self.max_length = int(max_length) if max_length else 2048
        self.max_gen_toks = int(max_gen_toks)
        self.add_bos_token = _as_bool(add_bos_token)
        if eot_token_id is not None and not isinstance(self.tokenizer, ByteTokenizer):
            self._eot = int(eot_token_id)
        else:
            self._eot = getattr(self.tokenizer, "eot_token_id", None)
            if self._eot is None:
                self._eot = self.tokenizer.eos_token_id
        if self._eot is None:
            raise ValueError("the tokenizer has no end-of-text token; pass eot_token_id=")

    # ---- lm-eval plumbing ------------------------------------------------------------------
    @staticmethod
    def _parse_batch_size(batch_size: int | str | None) -> int:
        if batch_size is None:
            return 1
        if isinstance(batch_size, str):
            if batch_size.startswith("auto"):
                return 16  # no automatic search; a safe size for the model sizes we run
            return int(batch_size)
        return int(batch_size)

    @property
    def eot_token_id(self) -> int:
        return self._eot

    @property
    def prefix_token_id(self) -> int:
        bos = getattr(self.tokenizer, "bos_token_id", None)
        return bos if bos is not None else self.eot_token_id

    @property
    def tokenizer_name(self) -> str:
        return getattr(self.tokenizer, "name_or_path", None) or getattr(self.tokenizer, "name", "byte")

    def get_model_info(self) -> dict[str, Any]:
        cfg = getattr(self.model, "cfg", None)
        return {
            "model_source": self.pretrained or "object",
            "harness_model_kind": self.kind,
            "harness_model_config": cfg.to_dict() if cfg is not None else None,
            "kernel_backend": self.kernel_backend,
        }

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, left_truncate_len=None,
                   **kwargs) -> list[int]:
        if isinstance(self.tokenizer, ByteTokenizer):
            ids = self.tokenizer.encode(string)
        else:
            special = self.add_bos_token if add_special_tokens is None else add_special_tokens
            ids = self.tokenizer.encode(string, add_special_tokens=special)
        if left_truncate_len:
            ids = ids[-left_truncate_len:]
        return ids

    def tok_decode(self, tokens: Iterable[int]) -> str:
        if isinstance(self.tokenizer, ByteTokenizer):
            return self.tokenizer.decode(tokens)
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True)

    # ---- scoring ---------------------------------------------------------------------------
    @torch.no_grad()
    def _logprobs(self, batch: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """For (context, continuation) token lists: (sum log p(continuation), greedy?) each.
        The whole sequence is truncated from the left to max_length + 1 tokens."""
        seqs, conts = [], []
        for ctx, cont in batch:
            if not cont:
                raise ValueError("loglikelihood of an empty continuation")
            full = (ctx + cont)[-(self.max_length + 1):]
            seqs.append(full[:-1])
            conts.append(cont[-self.max_length:])  # a continuation longer than the window: its tail
        width = max(len(s) for s in seqs)
        # right padding is exact for a causal model: positions never see what follows them
        inp = torch.zeros(len(seqs), width, dtype=torch.long, device=self._device)
        for i, s in enumerate(seqs):
            inp[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        logits = self.model(inp, mode=self.mode).float()
        out = []
        for i, (s, cont) in enumerate(zip(seqs, conts)):
            n = len(cont)
            lp = F.log_softmax(logits[i, len(s) - n : len(s)], dim=-1)
            target = torch.tensor(cont, dtype=torch.long, device=self._device)
            greedy = bool((lp.argmax(-1) == target).all())
            out.append((float(lp.gather(-1, target[:, None]).sum()), greedy))
        return out

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """requests: [((context, continuation) or None, context_ids, continuation_ids)]."""
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1] + requests[i][2]))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, res in zip(idx, self._logprobs([(requests[i][1], requests[i][2]) for i in idx])):
                results[i] = res
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], res)
        return results  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for (string,) in [req.args for req in requests]:
            windows = [
                make_disjoint_window(w)
                for w in get_rolling_token_windows(
                    token_list=self.tok_encode(string, add_special_tokens=False),
                    prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length,
                    context_len=1,
                )
            ]
            scores = self._loglikelihood_tokens([(None, ctx, cont) for ctx, cont in windows])
            total = sum(s for s, _ in scores)
            self.cache_hook.add_partial("loglikelihood_rolling", (string,), total)
            out.append(total)
        return out

    # ---- generation ------------------------------------------------------------------------
    @torch.no_grad()
    def _greedy(self, context: list[int], until: list[str], max_gen_toks: int) -> str:
        budget = max(1, self.max_length - max_gen_toks)
        context = context[-budget:] or [self.prefix_token_id]
        tokens = torch.tensor([context], dtype=torch.long, device=self._device)
        logits, cache = self.model.prefill(tokens, mode=self.mode)
        next_logits = logits[:, -1]
        generated: list[int] = []
        for _ in range(max_gen_toks):
            tok = int(next_logits.argmax(-1))
            if tok == self.eot_token_id:
                break
            generated.append(tok)
            text = self.tok_decode(generated)
            if any(u and u in text for u in until):
                break
            next_logits = self.model.decode_step(torch.tensor([tok], device=self._device), cache)
        text = self.tok_decode(generated)
        for u in until:
            if u:
                text = text.split(u)[0]
        return text

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            context, gen_kwargs = req.args
            gen_kwargs = dict(gen_kwargs or {})
            until = gen_kwargs.pop("until", None)
            if isinstance(until, str):
                until = [until]
            until = list(until or [])
            eot_text = self.tok_decode([self.eot_token_id])
            if eot_text and eot_text not in until:
                until.append(eot_text)
            max_gen = int(gen_kwargs.pop("max_gen_toks", self.max_gen_toks))
            if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature", 0.0) or 0.0) > 0:
                log.warning("HarnessLM generates greedily; ignoring sampling arguments %s", gen_kwargs)
            text = self._greedy(self.tok_encode(context), until, max_gen)
            self.cache_hook.add_partial("generate_until", (context, req.args[1]), text)
            out.append(text)
        return out


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def register() -> None:
    """Make sure `harness` is in lm-eval's model registry (importing this module does it)."""
    from lm_eval.api.registry import model_registry

    if MODEL_NAME not in model_registry:  # pragma: no cover - the decorator registered it
        model_registry.register(MODEL_NAME)(HarnessLM)


def offline_env() -> dict[str, str]:
    """The environment that keeps Hugging Face libraries off the network."""
    return {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


__all__ = ["HarnessLM", "ByteTokenizer", "MODEL_NAME", "load_model_and_tokenizer", "load_hf_tokenizer",
           "register", "offline_env"]


