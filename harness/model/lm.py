"""HybridLM: embedding -> N pre-norm blocks (mixer + MLP) -> norm -> LM head.

Each block's mixer is the configured linear variant ("L"), softmax attention ("A") or a head-wise
hybrid of the two ("H", harness.model.headwise), as the layout says (harness.model.layout); the
block around it is `cfg.block` (harness.model.blocks). The same module serves training (`forward`),
prefill and token-by-token decoding (`prefill`, `decode_step`) with a `Cache` holding every layer's
state.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from harness.model.blocks import Block, make_norm
from harness.model.config import ModelConfig
from harness.model.layout import ATTN, HEADWISE, attention_heads, resolve_layout
from harness.model.mixer import Mixer, State
from harness.registry import get_variant


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
        """One new token per sequence ([B] or [B, 1]) -> next-token logits [B, vocab]."""
        if token.dim() == 1:
            token = token[:, None]
        return self.forward(token, cache, mode="recurrent")[:, -1]

    def decode_fn(self, compile: bool = False) -> Callable[[torch.Tensor, Cache], torch.Tensor]:
        """`decode_step`, or with `compile` its torch.compile'd twin (inductor): the same math as
        one generated kernel program instead of hundreds of tiny eager ops, so a small model
        decodes each token faster (by how much: reports/benchmarks/hot_paths_cpu_compiled.json
        against hot_paths_cpu_after.json, scripts/bench_hot_paths.py). The first call compiles
        (~15-30 s on the CPU), and a KV cache that grows recompiles once with dynamic shapes;
        then each call runs the compiled graph. Use it for long generation or latency
        measurement (efficiency `compile_decode: true`), not for a handful of tokens."""
        if not compile:
            return self.decode_step
        import torch._dynamo.config as dynamo_config

        # dynamo keeps its compiled graphs per code object, and every model's `_run` is one
        # code object: past 8 graphs (about 4 models in one process) it silently falls back to
        # eager, which a benchmark over all variants measured as "compile does not help"
        dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
        core = torch.compile(self._run)

        @torch.no_grad()
        def step(token: torch.Tensor, cache: Cache) -> torch.Tensor:
            if token.dim() == 1:
                token = token[:, None]  # [B] -> [B, 1]
            states = cache.states or [None] * len(self.layers)
            # the position as a 0-d tensor: an int would be a compile-time constant (a recompile
            # per token, then symbolic shapes everywhere); only rotary reads it, as inv_freq * offset
            offset = torch.tensor(float(cache.seen_tokens), device=token.device)
            logits, cache.states = core(token, states, offset, "recurrent", False)
            cache.seen_tokens += token.shape[1]
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
