"""HybridLM: embedding -> N pre-norm blocks (mixer + MLP) -> norm -> LM head.

Each block's mixer is the configured linear variant ("L"), softmax attention ("A") or a head-wise
hybrid of the two ("H", harness.model.headwise), as the layout says (harness.model.layout); the
block around it is `cfg.block` (harness.model.blocks). The same module serves training (`forward`),
prefill and token-by-token decoding (`prefill`, `decode_step`) with a `Cache` holding every layer's
state.
"""
from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from harness.model.blocks import Block, make_norm
from harness.model.config import ModelConfig
from harness.model.layout import ATTN, HEADWISE, attention_heads, resolve_layout
from harness.model.mixer import Mixer, State
from harness.registry import get_variant

#: decode steps of one model after which `HybridLM.decode_step` compiles its decode: with ~1.2 ms
#: per eager step at the recall size, the eager steps before the switch cost about what the
#: compile does (3-18 s of CPU), so a generation never pays more than ~2x the better choice
COMPILE_DECODE_AFTER = 8192
#: "0" in the environment keeps `decode_step` eager for every model (the compile opt-out)
COMPILE_DECODE_ENV = "HARNESS_COMPILE_DECODE"


@dataclass
class Cache:
    """Per-layer streaming state: recurrent states, short-conv tails and KV tensors."""

    states: list[State | None] = field(default_factory=list)
    seen_tokens: int = 0

    def nbytes(self) -> int:
        """Exact bytes held by the cache's tensors."""
        return sum(t.numel() * t.element_size() for s in self.states if s for t in s.values())


def build_mixer(cfg: ModelConfig, kind: str, layer_idx: int) -> Mixer:
    """The mixer of one layer of `kind` ("L", "A" or "H"); every kind is attention for variant
    "attention"."""
    if kind == ATTN or cfg.variant == "attention":
        return _attention(cfg, cfg.attn_heads or cfg.n_heads, layer_idx)
    if kind == HEADWISE:
        from harness.model.headwise import HeadwiseHybrid

        if cfg.attn_heads is not None:
            raise ValueError(f"attn_heads={cfg.attn_heads} does not apply to the head-wise layout {cfg.layout!r}: "
                             f"its softmax heads are that fraction of n_heads={cfg.n_heads}")
        k = attention_heads(cfg.layout, cfg.n_heads)
        attn = _attention(cfg, k, layer_idx, head_dim=cfg.d_model // cfg.n_heads)
        return HeadwiseHybrid(attn, build_mixer(cfg, "L", layer_idx))
    cls = get_variant(cfg.variant)
    try:
        return cls(cfg.d_model, cfg.n_heads, layer_idx=layer_idx, mode=cfg.mode, **cfg.mixer_kwargs)
    except TypeError as exc:
        raise TypeError(f"variant {cfg.variant!r} rejected mixer_kwargs {cfg.mixer_kwargs}: {exc}") from None


def _attention(cfg: ModelConfig, n_heads: int, layer_idx: int, **extra) -> Mixer:
    kwargs = {"n_kv_heads": cfg.attn_kv_heads, "rope_theta": cfg.rope_theta, "window": cfg.window,
              **extra, **cfg.attn_kwargs}
    return get_variant("attention")(cfg.d_model, n_heads, layer_idx=layer_idx, **kwargs)


class HybridLM(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.kinds = resolve_layout(cfg.layout, cfg.n_layers, cfg.placement, n_heads=cfg.n_heads)
        self.embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(Block(build_mixer(cfg, kind, i), cfg, i) for i, kind in enumerate(self.kinds))
        self.norm = make_norm(cfg.block, cfg.d_model, cfg.norm_eps)
        self.backend = "torch"
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if self.embeddings.weight.device.type != "meta":
            init_weights(self, cfg.init)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embeddings.weight
        #: decode steps after which `decode_step` runs compiled (None: always eager)
        self.compile_decode_after: int | None = COMPILE_DECODE_AFTER
        self._decoded_steps = 0
        self._compiled_decode: Callable | None = None  # built on the switch; never pickled

    # ---- running ------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, cache: Cache | None = None, mode: str | None = None,
                last_only: bool = False) -> torch.Tensor:
        """tokens [B, T] -> logits [B, T, vocab] ([B, 1, vocab] with `last_only`). With a cache,
        continue from it and update it."""
        offset = cache.seen_tokens if cache is not None else 0
        states = (cache.states if cache is not None else None) or [None] * len(self.layers)
        logits, new_states = self._run(tokens, states, offset, mode, last_only)
        if cache is not None:
            cache.states = new_states
            cache.seen_tokens += tokens.shape[1]
        return logits

    def _run(self, tokens: torch.Tensor, states: list[State | None], offset: int, mode: str | None,
             last_only: bool) -> tuple[torch.Tensor, list[State]]:
        """The network as a pure function of its inputs and per-layer states (what
        `decode_fn(compile=True)` hands to torch.compile): logits and the new states."""
        x = self.embeddings(tokens)  # [B, T, d_model]
        new_states = []
        context: dict = {}  # values shared across the layers of this call (Mixer.forward's `context`)
        for block, state in zip(self.layers, states):
            x, new_state = block(x, state, offset, mode, context)
            new_states.append(new_state)
        if last_only:  # a prompt needs only its last position's logits: skip the [T, vocab] head
            x = x[:, -1:]
        return self.lm_head(self.norm(x)), new_states

    @torch.no_grad()
    def prefill(self, tokens: torch.Tensor, mode: str | None = None,
                last_only: bool = False) -> tuple[torch.Tensor, Cache]:
        """Process a prompt in parallel; return its logits (every position, or with `last_only`
        just the last, as generation needs) and the cache to decode from."""
        cache = Cache()
        return self.forward(tokens, cache, mode, last_only), cache

    @torch.no_grad()
    def decode_step(self, token: torch.Tensor, cache: Cache) -> torch.Tensor:
        """One new token per sequence ([B] or [B, 1]) -> next-token logits [B, vocab].

        The default decode path: eager (`decode_fn(compile=False)`) for the first
        `compile_decode_after` steps of this model, then, on the torch backend, the compiled step
        (`decode_fn(compile=True)`, compiled once per model) where a long generation pays back the
        compile: ~3-18 s of CPU once, against ~1 ms saved per token at the recall size
        (docs/metrics.md, "Decode: eager and compiled"). `compile_decode_after = None` (or
        HARNESS_COMPILE_DECODE=0 in the environment) keeps every step eager; a compile that fails
        falls back to eager."""
        fast = self._auto_compiled_step()
        if fast is not None:
            return fast(token, cache)
        return self._eager_decode_step(token, cache)

    @torch.no_grad()
    def _eager_decode_step(self, token: torch.Tensor, cache: Cache) -> torch.Tensor:
        if token.dim() == 1:
            token = token[:, None]
        return self.forward(token, cache, mode="recurrent")[:, -1]

    def _auto_compiled_step(self) -> Callable[[torch.Tensor, Cache], torch.Tensor] | None:
        """The compiled step once this model has decoded `compile_decode_after` steps (None before,
        when opted out, off the torch backend, or after a failed compile)."""
        after = self.compile_decode_after
        if after is None or self.backend != "torch" or os.environ.get(COMPILE_DECODE_ENV, "1") == "0":
            return None
        self._decoded_steps += 1
        if self._decoded_steps <= after:
            return None
        if self._compiled_decode is None:
            self._compiled_decode = _fallback_to_eager(self, self.decode_fn(compile=True))
        return self._compiled_decode

    def __getstate__(self) -> dict:
        """Pickle and deepcopy without the compiled decode step (a closure; rebuilt on demand)."""
        state = super().__getstate__()
        return {**state, "_compiled_decode": None}

    def decode_fn(self, compile: bool = False) -> Callable[[torch.Tensor, Cache], torch.Tensor]:
        """The eager decode step, or with `compile` its torch.compile'd twin (inductor): the same
        math as one generated kernel program instead of hundreds of tiny eager ops, so a small
        model decodes each token 2-4x faster (reports/benchmarks/hot_paths_cpu_compiled.json
        against hot_paths_cpu_decode.json, scripts/bench_hot_paths.py). The first call compiles
        (~3-18 s of CPU at the recall size), a KV cache that grows recompiles once with dynamic
        shapes, and then each call runs the compiled graph; positions and cache offsets never
        recompile. `decode_step` switches to it by itself after `compile_decode_after` steps;
        ask for it directly for latency measurement (efficiency `compile_decode: true`)."""
        if not compile:
            return self._eager_decode_step
        import torch._dynamo.config as dynamo_config

        # dynamo keeps its compiled graphs per code object, and every model's `_run` is one
        # code object: past 8 graphs (about 4 models in one process) it silently falls back to
        # eager, which a benchmark over all variants measured as "compile does not help"
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
        core = torch.compile(self._run)
        graph_states = _GraphStates()

        @torch.no_grad()
        def step(token: torch.Tensor, cache: Cache) -> torch.Tensor:
            if token.dim() == 1:
                token = token[:, None]  # [B] -> [B, 1]
            states = graph_states.inputs(cache) or [None] * len(self.layers)
            # the position as a 0-d tensor: an int would be a compile-time constant (a recompile
            # per token, then symbolic shapes everywhere); only rotary reads it, as inv_freq * offset
            offset = torch.tensor(float(cache.seen_tokens), device=token.device)
            logits, cache.states = core(token, states, offset, "recurrent", False)
            cache.seen_tokens += token.shape[1]
            graph_states.outputs(cache)
            return logits[:, -1]

        return step

    # ---- introspection ------------------------------------------------------------------
    def set_backend(self, backend: str) -> str:
        """Run the linear mixers on `backend` ("auto", "torch" or "fla"); returns the one chosen."""
        from harness.runtime.devices import resolve_backend

        device = self.embeddings.weight.device
        resolved = resolve_backend(backend, device)
        for block in self.layers:
            block.mixer.set_backend(resolved)
        self.backend = resolved
        return resolved

    def expected_cache_bytes(self, batch: int, seq_len: int, dtype: torch.dtype = torch.float32) -> int:
        """What the cache holds after `seq_len` tokens, from each mixer's declared state shapes."""
        return sum(b.state_bytes(batch, seq_len, dtype) for b in self.layers)

    @property
    def n_full_attn_layers(self) -> int:
        return self.kinds.count(ATTN)


class _GraphStates:
    """Hands a compiled decode graph its states in the strides of its own outputs. Dynamo guards
    every input's strides, and a prompt's states differ from a decode step's (prefill's conv tails
    are views into a buffer as long as the prompt): fed as they come, each new prompt length
    recompiled (3 graphs per model, twice the compile time). Restrided once per cache, a model
    compiles its first graph, one more for the step's own layout, and no other."""

    def __init__(self) -> None:
        self.strides: dict[tuple[int, str], tuple[int, ...]] = {}  # (layer, key) -> output strides
        self.ready: dict[int, weakref.ref] = {}  # id -> the caches whose states this graph wrote

    def inputs(self, cache: Cache) -> list[State | None]:
        if not self.strides or self._wrote(cache):
            return cache.states
        return [None if s is None else {k: self._restride(t, self.strides.get((i, k))) for k, t in s.items()}
                for i, s in enumerate(cache.states)]

    def _wrote(self, cache: Cache) -> bool:
        ref = self.ready.get(id(cache))
        return ref is not None and ref() is cache

    @staticmethod
    def _restride(t: torch.Tensor, stride: tuple[int, ...] | None) -> torch.Tensor:
        if stride is None or t.stride() == stride:
            return t
        return torch.empty_strided(t.shape, stride, dtype=t.dtype, device=t.device).copy_(t)

    def outputs(self, cache: Cache) -> None:
        if self._wrote(cache):
            return
        key = id(cache)  # a Cache is unhashable (a dataclass): by id, dropped when it dies
        self.ready[key] = weakref.ref(cache, lambda _: self.ready.pop(key, None))
        for i, s in enumerate(cache.states):
            for k, t in (s or {}).items():
                self.strides.setdefault((i, k), t.stride())


def _fallback_to_eager(model: HybridLM, fast: Callable) -> Callable:
    """`fast`, falling back to the model's eager step for good if it raises (a compile that fails:
    no C compiler, an op inductor cannot lower). The cache is untouched by a failed call, since
    the compiled step writes it only after the graph returns."""
    state = {"ok": True}

    def step(token: torch.Tensor, cache: Cache) -> torch.Tensor:
        if state["ok"]:
            try:
                return fast(token, cache)
            except Exception as exc:  # noqa: BLE001 - any compile failure: decode eagerly instead
                state["ok"] = False
                warnings.warn(f"compiled decode failed ({type(exc).__name__}: {exc}); decoding eagerly",
                              RuntimeWarning, stacklevel=2)
        return model._eager_decode_step(token, cache)

    return step


INIT_SCHEMES = ("torch", "fla")


def init_weights(model: nn.Module, scheme: str) -> None:
    """Initialise every Linear and Embedding of `model`; mixer-specific parameters (A_log,
    dt_bias, conv weights, norms) keep the init their module gave them, as in fla, and then every
    mixer's `init_parameters(n_layers)` hook re-applies what depends on the depth or what this
    pass overwrote (RWKV-7: the LoRA biases that set its decay spectrum).

    - "torch": PyTorch's defaults: Linear `reset_parameters()` (Kaiming-uniform, fan-in scaled)
      with zero biases, embeddings N(0, 1). Measured (docs/training.md#initialisation): a
      4-layer, d_model 64 Transformer solves MQAR (4 kv pairs) in 600 steps with it, and sits
      on the 1/num_kv_pairs plateau with "fla". Both parts matter: changing only the
      embeddings or only the Linear layers is not enough.
    - "fla": N(0, 0.02) for every Linear and Embedding (fla's initializer_range), tuned for
      d_model >= 1024; use it for paper-scale training.
    """
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; known: {INIT_SCHEMES}")
    for module in model.modules():
        if isinstance(module, nn.Linear):
            if scheme == "fla":
                nn.init.normal_(module.weight, std=0.02)
            else:
                module.reset_parameters()
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02 if scheme == "fla" else 1.0)
    n_layers = len(getattr(model, "layers", ()))
    with torch.no_grad():
        for module in model.modules():  # a mixer's own init of what the Linear pass just reset
            if isinstance(module, Mixer):
                module.init_parameters(n_layers)


def build_model(cfg: ModelConfig, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                backend: str = "auto") -> HybridLM:
    """Build on `device` in `dtype`, with the linear mixers on `backend` (see harness.runtime.devices;
    "auto" = fla kernels on CUDA when fla is installed, else our torch ops). `model.backend`
    tells which backend was chosen, for the results table."""
    with torch.device(device):
        model = HybridLM(cfg)
    model = model.to(dtype=dtype)
    model.set_backend(backend)
    return model
