"""The token-mixer contract every variant implements.

A mixer maps hidden states [B, T, C] to [B, T, C]. It carries its streaming state in a plain dict
of tensors (recurrent state, short-conv tails, or the KV cache), so prefill and decode are the same
call: `forward(x, state)` returns `(y, new_state)`. `mode` picks the parallel path ("chunk": the
chunkwise algorithm in harness.ops, or the fla kernel when that backend is active) or the
step-by-step reference ("recurrent").

Analytic costs are instance methods so they see the real dimensions; build the module on the
`meta` device (see `meta_mixer`) to get them for paper-sized shapes without allocating weights.
"""
from __future__ import annotations

from typing import ClassVar, Optional

import torch
from torch import nn

State = dict[str, torch.Tensor]


class Mixer(nn.Module):
    # --- metadata (class attributes; `name` is set by the registry decorator) ---
    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    generation: ClassVar[Optional[int]] = None  # 1/2/3 as in the paper; None for softmax attention
    state_kind: ClassVar[str] = "matrix"  # "vector" | "matrix" | "kv"
    gating: ClassVar[str] = "none"  # e.g. "data-dependent per-channel", "fixed scalar"
    delta_rule: ClassVar[bool] = False
    #: FLOPs per token per layer = flops_coeff * (number of state elements), paper Table 7
    flops_coeff: ClassVar[int] = 0
    #: cache entries kept in at least fp32 whatever the model dtype (recurrent states, as fla does)
    fp32_state_keys: ClassVar[tuple[str, ...]] = ("S", "h")
    #: which fla op the GPU backend uses, for documentation
    fla_op: ClassVar[Optional[str]] = None

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, mode: str = "chunk"):
        super().__init__()
        if d_model <= 0 or n_heads <= 0:
            raise ValueError(f"d_model and n_heads must be positive, got {d_model} and {n_heads}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.layer_idx = layer_idx
        self.mode = mode

    # ---- to implement -------------------------------------------------------------------
    def forward(
        self, x: torch.Tensor, state: Optional[State] = None, offset: int = 0, mode: Optional[str] = None
    ) -> tuple[torch.Tensor, State]:
        """x [B, T, C] -> (y [B, T, C], new_state). `state` is what the previous call returned
        (None at the start of a sequence); `offset` is the number of tokens already seen."""
        raise NotImplementedError

    def state_shapes(self, batch: int, seq_len: int) -> dict[str, tuple[int, ...]]:
        """Shapes of every tensor held in the cache after `seq_len` tokens."""
        raise NotImplementedError

    def state_elements_per_head(self) -> int:
        """Elements in one head's recurrent state (d_k * d_v for a matrix state); used for FLOPs."""
        raise NotImplementedError

    # ---- derived ------------------------------------------------------------------------
    def state_bytes(self, batch: int = 1, seq_len: int = 0, dtype: torch.dtype = torch.float32) -> int:
        """Bytes the mixer's cache holds after `seq_len` tokens (recurrent state + conv tails + KV),
        for activations of `dtype`; recurrent states are fp32 regardless."""
        elem = torch.empty((), dtype=dtype).element_size()
        total = 0
        for key, shape in self.state_shapes(batch, seq_len).items():
            n = 1
            for s in shape:
                n *= s
            total += n * (max(4, elem) if key in self.fp32_state_keys else elem)
        return total

    def flops_per_token(self, seq_len: int) -> int:
        """Forward token-mixing FLOPs per token for this layer, by the paper's Table 7 rules
        (projections, gates and norms excluded; 1 FLOP = one multiply or one add)."""
        return self.flops_coeff * self.n_heads_state * self.state_elements_per_head()

    def short_convs(self, state: State, new_state: State, **inputs: torch.Tensor) -> list[torch.Tensor]:
        """Pass each named input through its `<name>_conv1d` short conv when the mixer has them
        (`use_short_conv`), carrying the conv tails in `state` / `new_state` as `conv_<name>`."""
        if not getattr(self, "use_short_conv", False):
            return list(inputs.values())
        if len(inputs) > 1 and not torch.is_grad_enabled():
            joint = self._joint_conv_step(state, new_state, inputs)
            if joint is not None:
                return joint
        out = []
        for name, t in inputs.items():
            t, new_state[f"conv_{name}"] = getattr(self, f"{name}_conv1d")(t, state.get(f"conv_{name}"))
            out.append(t)
        return out

    def _joint_conv_step(self, state: State, new_state: State, inputs: dict) -> Optional[list[torch.Tensor]]:
        """A decode step (T = 1, cached tails, no autograd) of all short convs at once: one
        concatenated tail, one multiply and sum over the conv width, one activation. None when
        the call does not qualify (then each conv runs on its own)."""
        from harness.model.modules import _fused_weight

        xs = list(inputs.values())
        if xs[0].shape[1] != 1:
            return None
        caches = [state.get(f"conv_{n}") for n in inputs]
        mods = [getattr(self, f"{n}_conv1d") for n in inputs]
        act = mods[0].activation
        if any(c is None or c.dtype != xs[0].dtype for c in caches) or any(
            m.activation != act or m.bias is not None or m.kernel_size != mods[0].kernel_size for m in mods
        ):
            return None
        W = _fused_weight(mods)  # [sum D, 1, W], cached while the weights are unchanged
        sizes = [m.dim for m in mods]
        xp = torch.cat([torch.cat(caches, -1), torch.cat(xs, -1)], 1)  # [B, W, sum D]
        y = (xp * W[:, 0].t()).sum(1, keepdim=True)
        if act == "silu":
            y = torch.nn.functional.silu(y)
        for n, tail in zip(inputs, xp[:, 1:].split(sizes, -1)):
            new_state[f"conv_{n}"] = tail
        return list(y.split(sizes, -1))

    def conv_state_shapes(self, batch: int) -> dict[str, tuple[int, ...]]:
        """Cache shapes of the short convs (`<name>_conv1d` children), as `conv_<name>`."""
        from harness.model.modules import ShortConv

        return {
            f"conv_{n[: -len('_conv1d')]}": m.cache_shape(batch)
            for n, m in self.named_children()
            if isinstance(m, ShortConv) and n.endswith("_conv1d")
        }

    @property
    def n_heads_state(self) -> int:
        return self.n_heads

    def op(self, family: str, mode: Optional[str], seq_len: Optional[int] = None):
        """The recurrence implementation for this call (see harness.ops.dispatch); pass the call's
        `seq_len` so that a one-token recurrent call (a decode step) gets the lean step op."""
        from harness.ops.dispatch import get_op

        return get_op(family, self.resolve_mode(mode), getattr(self, "backend", "torch"), seq_len)

    def resolve_mode(self, mode: Optional[str]) -> str:
        mode = mode or self.mode
        if mode not in ("chunk", "recurrent"):
            raise ValueError(f"unknown mode {mode!r}; expected 'chunk' or 'recurrent'")
        return mode

    @classmethod
    def metadata(cls) -> dict:
        return {
            "name": cls.name,
            "display_name": cls.display_name or cls.name,
            "generation": cls.generation,
            "state_kind": cls.state_kind,
            "gating": cls.gating,
            "delta_rule": cls.delta_rule,
            "flops_coeff": cls.flops_coeff,
            "fla_op": cls.fla_op,
            "module": f"{cls.__module__}.{cls.__qualname__}",
        }


def meta_mixer(cls: type[Mixer], d_model: int, n_heads: int, **kwargs) -> Mixer:
    """Build a mixer without allocating weights, for analytic costs at any size."""
    with torch.device("meta"):
        return cls(d_model=d_model, n_heads=n_heads, **kwargs)
