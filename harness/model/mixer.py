"""The token-mixer contract every variant implements, and the state schema all of them share.

A mixer maps hidden states [B, T, C] to [B, T, C]. It carries its streaming state in a plain dict
of tensors (recurrent state, short-conv tails, or the KV cache), so prefill and decode are the same
call: `forward(x, state)` returns `(y, new_state)`. `mode` picks the parallel path ("chunk": the
chunkwise algorithm in harness.ops, or the fla kernel when that backend is active) or the
step-by-step reference ("recurrent").

The state schema: `state_spec(batch, seq_len)` declares every entry of that dict with its shape
and its role, and the role decides how it is stored:
- "recurrent": a recurrent state (S [B, H, K, V], h [B, D]); kept in at least fp32 whatever the
  model dtype, as fla does;
- "conv": a short convolution's tail of the last W - 1 inputs; in the activation dtype;
- "kv": softmax attention's keys or values; in the activation dtype.
`state_bytes` and the conformance checks (fp32 and bf16) follow the roles, never the key names.

Short convolutions are declared (`declare_short_convs`), not discovered: the declaration creates
fla's `<name>_conv1d` modules (so checkpoints map one-to-one), and `short_convs` and the state
spec use the declared list. `MatrixStateMixer` is the base of the matrix-state variants: it
derives the state spec and the Table 7 FLOPs from the head sizes.

The shape of a variant, in full:
- `forward(x, state=None, offset=0, mode=None, context=None)`, one signature for every mixer.
  `context` is a dict the model passes to every layer of one forward call, for values shared
  across layers (RWKV-7's v_first); a mixer that shares nothing ignores it.
- projections are plain modules called as such (`self.q_proj(x)`);
- a parameter gets its initial value where it is declared (`nn.Parameter(torch.ones(n))`, or a
  random draw there: the draws then follow the construction order, as in fla). On the `meta`
  device every such op is a no-op, so no guard is needed;
- `init_parameters(n_layers)` is the one hook for initialisation that depends on the model's
  depth or that the model's Linear and Embedding init would overwrite (RWKV-7's LoRA biases).
  It runs once the mixer is constructed (with n_layers = layer_idx + 1: the mixer on its own)
  and again from the model's `init_weights` with the model's depth; it draws nothing from the
  RNG, so calling it again changes nothing (conformance checks both);
- metadata: literal class attributes, one per line (the registry reads them from the source).

Analytic costs are instance methods so they see the real dimensions; build the module on the
`meta` device to get them for paper-sized shapes without allocating weights.

A variant also owns its edges: its report colour (`color`), its display name, and how it converts
from fla checkpoints (`fla_model_types`, `fla_config_fields`, `fla_key`, `fla_mixer_param`; see
harness.integrations.convert), so adding a variant is one file.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
from torch import nn

from harness.model.modules import GatedRMSNorm, RMSNorm, ShortConv, _fused_weight, l2norm_pair, split_heads

if TYPE_CHECKING:
    from harness.model.fla_config import FlaConfig

State = dict[str, torch.Tensor]

RECURRENT, CONV, KV = "recurrent", "conv", "kv"
STATE_ROLES = (RECURRENT, CONV, KV)


class StateEntry(NamedTuple):
    """One tensor of a mixer's state: its shape after `seq_len` tokens, and its role."""

    shape: tuple[int, ...]
    role: str


def spec_bytes(spec: dict[str, StateEntry], dtype: torch.dtype, owner: str = "") -> int:
    """Bytes of the state entries in `spec` for activations of `dtype`: recurrent states are at
    least fp32 (their role says so), conv tails and KV entries in `dtype`."""
    elem = torch.empty((), dtype=dtype).element_size()
    total = 0
    for key, (shape, role) in spec.items():
        if role not in STATE_ROLES:
            raise ValueError(f"{owner}: state {key!r} has role {role!r}; expected one of {STATE_ROLES}")
        n = 1
        for s in shape:
            n *= s
        total += n * (max(4, elem) if role == RECURRENT else elem)
    return total


class Mixer(nn.Module):
    # --- metadata (class attributes; `name` is set by the registry decorator) ---
    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    #: the variant's colour in reports (hex); None: one is assigned, unique within a report
    color: ClassVar[str | None] = None
    generation: ClassVar[int | None] = None  # 1/2/3 as in the paper; None for softmax attention
    state_kind: ClassVar[str] = "matrix"  # "vector" | "matrix" | "kv"
    gating: ClassVar[str] = "none"  # e.g. "data-dependent per-channel", "fixed scalar"
    delta_rule: ClassVar[bool] = False
    #: FLOPs per token per layer = flops_coeff * (number of state elements), paper Table 7
    flops_coeff: ClassVar[int] = 0
    #: which fla op the GPU backend uses, for documentation
    fla_op: ClassVar[str | None] = None
    #: fla checkpoint `model_type`s that convert to this variant (harness.integrations.convert)
    fla_model_types: ClassVar[tuple[str, ...]] = ()

    def __init__(self, d_model: int, n_heads: int, layer_idx: int = 0, mode: str = "chunk"):
        super().__init__()
        if d_model <= 0 or n_heads <= 0:
            raise ValueError(f"d_model and n_heads must be positive, got {d_model} and {n_heads}")
        self.d_model = d_model
        self.n_heads = n_heads
        self.layer_idx = layer_idx
        self.mode = mode
        self.backend = "torch"  # set_backend: "torch" (harness.ops) or "fla" (its kernels)
        self.conv_names: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Wrap the subclass's own `__init__` so that `init_parameters` runs once the outermost
        constructor has returned (a variant never calls it itself)."""
        super().__init_subclass__(**kwargs)
        own_init = cls.__dict__.get("__init__")
        if own_init is None:
            return

        @functools.wraps(own_init)
        def __init__(self, *args: Any, **kw: Any) -> None:
            own_init(self, *args, **kw)
            if type(self).__init__ is __init__:  # not a super().__init__ call of a subclass
                with torch.no_grad():
                    self.init_parameters(self.layer_idx + 1)

        cls.__init__ = __init__  # type: ignore[method-assign]

    @property
    def linear_mixer(self) -> Mixer:
        """The mixer whose kind this layer's costs and label read: itself; a composite layer
        (harness.model.headwise) names its linear branch."""
        return self

    # ---- to implement -------------------------------------------------------------------
    def forward(
        self, x: torch.Tensor, state: State | None = None, offset: int = 0, mode: str | None = None,
        context: dict | None = None,
    ) -> tuple[torch.Tensor, State]:
        """x [B, T, C] -> (y [B, T, C], new_state). `state` is what the previous call returned
        (None at the start of a sequence); `offset` is the number of tokens already seen;
        `context` holds values shared across the layers of one forward call of the model (None
        for a mixer called on its own)."""
        raise NotImplementedError

    def init_parameters(self, n_layers: int) -> None:
        """Initialise what depends on the model's depth `n_layers` or what the model's Linear and
        Embedding init overwrites; nothing by default. Runs after construction (n_layers =
        layer_idx + 1) and from the model's `init_weights`, both under torch.no_grad(); must not
        draw from the RNG (random initial values belong where the parameter is declared)."""

    def state_spec(self, batch: int, seq_len: int) -> dict[str, StateEntry]:
        """Every tensor held in the cache after `seq_len` tokens: shape and role."""
        raise NotImplementedError

    def state_elements_per_head(self) -> int:
        """Elements in one head's recurrent state (d_k * d_v for a matrix state); used for FLOPs."""
        raise NotImplementedError

    # ---- derived ------------------------------------------------------------------------
    def state_bytes(self, batch: int = 1, seq_len: int = 0, dtype: torch.dtype = torch.float32) -> int:
        """Bytes the mixer's cache holds after `seq_len` tokens (recurrent state + conv tails + KV),
        for activations of `dtype`; recurrent states are at least fp32 (their role says so)."""
        return spec_bytes(self.state_spec(batch, seq_len), dtype, type(self).__name__)

    def flops_per_token(self, seq_len: int) -> int:
        """Forward token-mixing FLOPs per token for this layer, by the paper's Table 7 rules
        (projections, gates and norms excluded; 1 FLOP = one multiply or one add)."""
        return self.flops_coeff * self.n_heads_state * self.state_elements_per_head()

    @property
    def n_heads_state(self) -> int:
        return self.n_heads

    # ---- short convolutions -------------------------------------------------------------
    def declare_short_convs(self, kernel_size: int, activation: str | None = "silu", bias: bool = False,
                            **dims: int) -> None:
        """Create one short causal conv per named input (`q=key_dim, k=key_dim, ...`), as fla's
        `<name>_conv1d` modules; their tails are the state entries `conv_<name>`."""
        for name, dim in dims.items():
            setattr(self, f"{name}_conv1d", ShortConv(dim, kernel_size, bias=bias, activation=activation))
        self.conv_names = tuple(dims)

    @property
    def use_short_conv(self) -> bool:
        return bool(self.conv_names)

    def _conv(self, name: str) -> nn.Module:
        return self._modules[f"{name}_conv1d"]  # type: ignore[return-value]

    def short_convs(self, state: State, new_state: State, **inputs: torch.Tensor) -> list[torch.Tensor]:
        """Pass each named input through its declared short conv (unchanged without convs),
        carrying the conv tails in `state` / `new_state` as `conv_<name>`."""
        if not self.conv_names:
            return list(inputs.values())
        if len(inputs) > 1 and not torch.is_grad_enabled():
            joint = self._joint_conv_step(state, new_state, inputs)
            if joint is not None:
                return joint
        out = []
        for name, t in inputs.items():
            t, new_state[f"conv_{name}"] = self._conv(name)(t, state.get(f"conv_{name}"))
            out.append(t)
        return out

    def _joint_conv_step(self, state: State, new_state: State, inputs: dict) -> list[torch.Tensor] | None:
        """A decode step (T = 1, cached tails, no autograd) of all short convs at once: one
        concatenated tail, one multiply and sum over the conv width, one activation. None when
        the call does not qualify (then each conv runs on its own)."""
        xs = list(inputs.values())
        if xs[0].shape[1] != 1:
            return None
        caches = [state.get(f"conv_{n}") for n in inputs]
        mods = [self._conv(n) for n in inputs]
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

    def conv_state_spec(self, batch: int) -> dict[str, StateEntry]:
        """The state entries of the declared short convs, `conv_<name>`."""
        return {f"conv_{n}": StateEntry(self._conv(n).cache_shape(batch), CONV) for n in self.conv_names}

    # ---- running ------------------------------------------------------------------------
    def set_backend(self, backend: str) -> None:
        """Run the recurrences on `backend` ("torch" or "fla", already resolved)."""
        self.backend = backend

    def op(self, family: str, mode: str | None, seq_len: int | None = None):
        """The recurrence implementation for this call (see harness.ops.dispatch); pass the call's
        `seq_len` so that a one-token recurrent call (a decode step) gets the lean step op."""
        from harness.ops.dispatch import get_op

        return get_op(family, self.resolve_mode(mode), self.backend, seq_len)

    def resolve_mode(self, mode: str | None) -> str:
        mode = mode or self.mode
        if mode not in ("chunk", "recurrent"):
            raise ValueError(f"unknown mode {mode!r}; expected 'chunk' or 'recurrent'")
        return mode

    # ---- conversion from fla checkpoints (harness.integrations.convert) -----------------
    @classmethod
    def fla_config_fields(cls, cfg: FlaConfig) -> dict[str, Any]:
        """ModelConfig fields for an fla config.json of one of `fla_model_types`: `n_heads` and
        `mixer_kwargs` for a linear variant. Raise `cfg.unsupported(...)` for an option this
        variant does not implement (never convert wrongly)."""
        raise NotImplementedError(f"variant {cls.name!r} does not convert fla checkpoints")

    @classmethod
    def fla_key(cls, key: str, model_type: str) -> str | None:
        """An fla checkpoint's tensor name in fla's naming (e.g. a Llama name -> fla's), or None
        to drop the tensor (then `fla_dropped_note` says why the conversion is not exact)."""
        return key

    #: why a tensor `fla_key` drops makes the conversion approximate
    fla_dropped_note: ClassVar[str] = ""

    @classmethod
    def fla_mixer_param(cls, name: str) -> str:
        """Our name of a parameter inside one of this variant's layers, given fla's."""
        return name

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
            "color": cls.color,
            "module": f"{cls.__module__}.{cls.__qualname__}",
        }


class MatrixStateMixer(Mixer):
    """A variant whose recurrent state is one matrix S [B, H, head_k, head_v] per layer (linear
    attention with decay, the delta rule): the state spec and FLOPs follow from the head sizes."""

    def add_qkv(self, key_dim: int, value_dim: int) -> None:
        """`set_dims`, then fla's q_proj, k_proj [d_model -> key_dim] and v_proj [-> value_dim]."""
        self.set_dims(key_dim, value_dim)
        self.q_proj = nn.Linear(self.d_model, key_dim, bias=False)
        self.k_proj = nn.Linear(self.d_model, key_dim, bias=False)
        self.v_proj = nn.Linear(self.d_model, value_dim, bias=False)

    def set_dims(self, key_dim: int, value_dim: int) -> None:
        """key_dim / value_dim over all heads (each must divide by n_heads)."""
        if key_dim % self.n_heads or value_dim % self.n_heads:
            raise ValueError(f"{self.name or type(self).__name__}: key_dim {key_dim} and value_dim {value_dim} "
                             f"must divide by n_heads={self.n_heads}")
        self.key_dim, self.value_dim = key_dim, value_dim
        self.head_k, self.head_v = key_dim // self.n_heads, value_dim // self.n_heads

    def state_spec(self, batch: int, seq_len: int) -> dict[str, StateEntry]:
        return {"S": StateEntry((batch, self.n_heads, self.head_k, self.head_v), RECURRENT),
                **self.conv_state_spec(batch)}

    def state_elements_per_head(self) -> int:
        return self.head_k * self.head_v

    def add_gated_output(self, norm_eps: float, gated: bool) -> None:
        """fla's output stage of the delta-rule layers: a per-head RMSNorm, swish-gated by
        g_proj(x) when `gated`, then o_proj."""
        self.use_gate = gated
        if gated:
            self.g_proj = nn.Linear(self.d_model, self.value_dim, bias=False)
            self.o_norm = GatedRMSNorm(self.head_v, norm_eps)
        else:
            self.o_norm = RMSNorm(self.head_v, norm_eps)
        self.o_proj = nn.Linear(self.value_dim, self.d_model, bias=False)

    def gated_output(self, o: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
        """o [B, T, H, head_v] -> [B, T, d_model] through the stage `add_gated_output` built."""
        o = self.o_norm(o, split_heads(gate, self.head_v)) if self.use_gate else self.o_norm(o)
        return self.o_proj(o.flatten(-2))

    def delta_rule_layer(self, x: torch.Tensor, state: State | None, mode: str | None) -> tuple[torch.Tensor, State]:
        """fla's delta-rule layer, (y, new state): `delta_rule_inputs` of x's q/k/v projections,
        then the variant's `delta_rule_gates(x)` (beta, and its decay g where it has one), the
        delta-rule op and `gated_output`. In this order: it is the order of the gradients' sums."""
        state, new = state or {}, {}
        q, k, v = self.delta_rule_inputs(state, new, self.q_proj(x), self.k_proj(x), self.v_proj(x))
        gates = self.delta_rule_gates(x)
        o, new["S"] = self.op("delta_rule", mode, x.shape[1])(q, k, v, *gates, initial_state=state.get("S"))
        return self.gated_output(o, self.g_proj(x) if self.use_gate else None), new

    def delta_rule_gates(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(beta,) or (beta, g) for `delta_rule_layer`: a variant that uses that layer defines it."""
        raise NotImplementedError

    def delta_rule_inputs(self, state: State, new: State, q: torch.Tensor, k: torch.Tensor,
                          v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """fla's delta-rule input stage: short convs with SiLU (SiLU alone without convs), then
        heads, q and k L2-normalised: [B, T, H, head_k] twice and [B, T, H, head_v]."""
        q, k, v = self.short_convs(state, new, q=q, k=k, v=v)
        if not self.use_short_conv:  # fla applies the activation in the conv; without one, here
            q, k, v = (torch.nn.functional.silu(t) for t in (q, k, v))
        q, k = l2norm_pair(split_heads(q, self.head_k), split_heads(k, self.head_k))
        return q, k, split_heads(v, self.head_v)

