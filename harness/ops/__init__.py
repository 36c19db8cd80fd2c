"""The math, as functions over tensors (pure PyTorch). Variants call these; the fla backend swaps
in fla's Triton kernels with the same conventions ([B, T, H, D], log-space gates, [B, H, K, V]
states). Every chunked form has a step-by-step twin, and the tests hold them equal."""
from harness.ops.conv import short_conv
from harness.ops.delta_rule import chunk_delta_rule, recurrent_delta_rule
from harness.ops.dplr import chunk_dplr, recurrent_dplr
from harness.ops.gla import chunk_gla, recurrent_gla
from harness.ops.hgrn import chunk_hgrn, recurrent_hgrn
from harness.ops.kda import chunk_kda, recurrent_kda

__all__ = [
    "short_conv",
    "chunk_delta_rule",
    "recurrent_delta_rule",
    "chunk_dplr",
    "recurrent_dplr",
    "chunk_kda",
    "recurrent_kda",
    "chunk_gla",
    "recurrent_gla",
    "chunk_hgrn",
    "recurrent_hgrn",
]
