"""Head-wise (intra-layer) hybrids: softmax-attention heads and a linear mixer side by side in one layer.

A layout ``"heads:f"`` (harness.model.layout, e.g. ``"heads:1/4"``) makes every layer a
`HeadwiseHybrid`: its attention branch `attn` is the softmax-attention variant with
k = f * n_heads heads of head_dim d_model / n_heads (the model's head size; with the layer's
window, GQA and attention kwargs), and its linear branch `linear` is the configured linear
variant built exactly as for an "L" layer (all n_heads heads, the model's mixer_kwargs). Both
read the same input x, in parallel, as Hymba's parallel heads do, and the layer's output is
``attn(x) + linear(x)``. Each branch keeps its own output projection: the sum of two output
projections equals one projection over the concatenated heads (``[W_a W_l] @ [o_a; o_l] = W_a o_a
+ W_l o_l``), so this is one layer of n_heads linear heads and k softmax heads. The softmax heads
are added beside the linear ones, not carved out of them (the linear branch is exactly a pure
layer's): a head-wise model has k heads' q/k/v/o projections per layer more than the pure model,
and more token-mixing FLOPs and parameters than the layer-ratio hybrid of the same KV cache.

What it costs: the attention branch holds a KV cache of k heads (k / n_heads of a full attention
layer's, bounded by the window if there is one), the linear branch its usual state; FLOPs are the
two branches' sums. "One attention head in four" at depth D thus holds the same KV cache as "one
attention layer in four" (3:1) at depth D: D layers x 1/4 of the heads vs D/4 full layers.

State: the union of the two branches' state dicts with their keys prefixed, ``"attn.k"``,
``"attn.v"``, ``"linear.S"``, ``"linear.conv_q"``...; `state_spec` likewise, with the branches'
roles unchanged (so the KV bytes are the entries of role "kv", harness.model.costs). Parameter
names are ``mixer.attn.*`` and ``mixer.linear.*``.

A composite, not a token-mixer choice: it is not registered as a variant (`harness variants`
does not list it). Converted-from-nothing: no fla checkpoint has this layout, and
harness.integrations.convert refuses it; head-wise models are trained from scratch.
"""
from __future__ import annotations

import torch

from harness.model.mixer import Mixer, State, StateEntry

BRANCHES = ("attn", "linear")


class HeadwiseHybrid(Mixer):
    """`attn(x) + linear(x)` over the same input, with the two branches' states side by side."""

    display_name = "head-wise hybrid"

    def __init__(self, attn: Mixer, linear: Mixer):
        if attn.d_model != linear.d_model:
            raise ValueError(f"head-wise hybrid: attention d_model {attn.d_model} != linear d_model {linear.d_model}")
        super().__init__(linear.d_model, linear.n_heads, linear.layer_idx, linear.mode)
        self.attn = attn
        self.linear = linear

    @property
    def linear_mixer(self) -> Mixer:
        return self.linear

    def forward(
        self, x: torch.Tensor, state: State | None = None, offset: int = 0, mode: str | None = None,
        context: dict | None = None,
    ) -> tuple[torch.Tensor, State]:
        parts: dict[str, State] = {b: {} for b in BRANCHES}
        for key, t in (state or {}).items():  # the block's own entries (rwkv's ffn_shift) have no branch
            branch, _, name = key.partition(".")
            if branch in parts and name:
                parts[branch][name] = t
        y_attn, s_attn = self.attn(x, parts["attn"] or None, offset, mode, context)
        y_lin, s_lin = self.linear(x, parts["linear"] or None, offset, mode, context)
        return y_attn + y_lin, {**_prefixed("attn", s_attn), **_prefixed("linear", s_lin)}

    def state_spec(self, batch: int, seq_len: int) -> dict[str, StateEntry]:
        return {**_prefixed("attn", self.attn.state_spec(batch, seq_len)),
                **_prefixed("linear", self.linear.state_spec(batch, seq_len))}

    def state_elements_per_head(self) -> int:
        """The linear branch's (the attention branch holds no recurrent state)."""
        return self.linear.state_elements_per_head()

    def flops_per_token(self, seq_len: int) -> int:
        """The two branches' token-mixing FLOPs: k heads of softmax attention (2 * min(L, W) * k *
        head_dim) plus the linear variant's Table 7 count."""
        return self.attn.flops_per_token(seq_len) + self.linear.flops_per_token(seq_len)

    def set_backend(self, backend: str) -> None:
        super().set_backend(backend)
        self.attn.set_backend(backend)
        self.linear.set_backend(backend)

    @property
    def n_attn_heads(self) -> int:
        return self.attn.n_heads


def _prefixed(branch: str, entries: dict) -> dict:
    return {f"{branch}.{k}": v for k, v in entries.items()}
