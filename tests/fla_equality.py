"""Equality cases: fla's kernels (through harness.integrations.fla_kernels' wrappers) vs our torch ops, forward
and backward, plus every variant's module on backend "fla" vs "torch".

Run as a script for the CPU (Triton interpreter, fp32, tiny shapes):
    python tests/fla_equality.py            -> prints {case: max abs diff} as JSON
On CUDA, tests/test_fla_backend.py imports `run_cases` directly.

fla's chunk_delta_rule refuses fp32 and bf16 is unreliable in the interpreter, so on the CPU the
DeltaNet chunk path is compared with fla's naive chunkwise reference instead of the kernel.
"""
from __future__ import annotations

import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _inputs(B, T, H, K, V, device, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, fn=None):
        t = torch.randn(*shape, generator=g)
        return (fn(t) if fn else t).to(device=device, dtype=dtype)

    return {
        "q": rnd(B, T, H, K), "k": rnd(B, T, H, K), "v": rnd(B, T, H, V),
        "qn": rnd(B, T, H, K, fn=lambda t: F.normalize(t, dim=-1)),
        "kn": rnd(B, T, H, K, fn=lambda t: F.normalize(t, dim=-1)),
        "g_chan": rnd(B, T, H, K, fn=F.logsigmoid).float(),
        "g_scalar": rnd(B, T, H, fn=F.logsigmoid).float(),
        "beta": rnd(B, T, H, fn=torch.sigmoid).float(),
        "h0": rnd(B, H, K, V).float(),
        "x": rnd(B, T, H * K), "gx": rnd(B, T, H * K, fn=F.logsigmoid),
        "hx0": rnd(B, H * K).float(),
        "kk": rnd(B, T, H, K, fn=lambda t: F.normalize(t, dim=-1)),
        "rate": rnd(B, T, H, K, fn=torch.sigmoid),
    }


def _fwd_bwd(fn, tensors: dict, names: list[str], backward: bool = True, state_grad: bool = True):
    leaves = {n: tensors[n].detach().clone().requires_grad_(backward) for n in names}
    o, s = fn(**leaves)
    if not backward:
        return o.detach().float(), s.detach().float(), {}
    gen = torch.Generator().manual_seed(1)
    w_o = torch.randn(o.shape, generator=gen).to(o.device, o.dtype)
    w_s = torch.randn(s.shape, generator=gen).to(s.device, s.dtype)
    loss = (o.float() * w_o.float()).sum()
    if state_grad:
        loss = loss + (s.float() * w_s.float()).sum()
    loss.backward()
    missing = [n for n in names if leaves[n].grad is None]
    if missing:
        raise RuntimeError(f"{fn}: no gradient reached {missing}")
    return o.detach().float(), s.detach().float(), {n: leaves[n].grad.float() for n in names}


def _diff(a, b) -> dict:
    (oa, sa, ga), (ob, sb, gb) = a, b
    out = {"o": (oa - ob).abs().max().item(), "state": (sa - sb).abs().max().item()}
    for n in ga:
        out[f"d{n}"] = (ga[n] - gb[n]).abs().max().item()
    return out


def op_cases(device: str = "cpu", dtype: torch.dtype = torch.float32, T: int = 72) -> dict:
    from harness.ops import (
        chunk_delta_rule,
        chunk_gla,
        chunk_hgrn,
        recurrent_delta_rule,
        recurrent_gla,
        recurrent_hgrn,
    )
    from harness.ops.dispatch import get_op
    from harness.runtime.devices import resolve_backend

    resolve_backend("fla", device)
    t = _inputs(1, T, 2, 16, 16, device, dtype)
    families = ("gla", "delta_rule", "kda", "dplr", "hgrn")
    fla = {(f, m): get_op(f, m, "fla") for f in families for m in ("chunk", "recurrent")}
    ours = {("gla", "chunk"): chunk_gla, ("gla", "recurrent"): recurrent_gla,
            ("delta_rule", "chunk"): chunk_delta_rule, ("delta_rule", "recurrent"): recurrent_delta_rule,
            ("hgrn", "chunk"): chunk_hgrn, ("hgrn", "recurrent"): recurrent_hgrn}
    cases = {}
    for mode in ("chunk", "recurrent"):
        # fla's fused_recurrent kernels serve decoding; GDN's has no backward at all: forward only
        bwd = mode == "chunk"
        for gate in ("g_chan", "g_scalar"):
            def run(impl, q, k, v, g, h0):
                return impl(q, k, v, g, initial_state=h0)
            names = ["q", "k", "v", gate, "h0"]
            call = lambda impl, gate=gate: (lambda q, k, v, h0, **g: run(impl, q, k, v, g[gate], h0))  # noqa: E731
            cases[f"gla_{gate}_{mode}"] = _diff(_fwd_bwd(call(fla[("gla", mode)]), t, names, bwd),
                                                 _fwd_bwd(call(ours[("gla", mode)]), t, names, bwd))
        gdn = lambda impl: (lambda qn, kn, v, beta, g_scalar, h0: impl(qn, kn, v, beta, g_scalar, initial_state=h0))  # noqa: E731
        names = ["qn", "kn", "v", "beta", "g_scalar", "h0"]
        cases[f"gated_delta_rule_{mode}"] = _diff(_fwd_bwd(gdn(fla[("delta_rule", mode)]), t, names, bwd),
                                                   _fwd_bwd(gdn(ours[("delta_rule", mode)]), t, names, bwd))
        kda = lambda impl: (lambda qn, kn, v, beta, g_chan, h0: impl(qn, kn, v, beta, g_chan, initial_state=h0))  # noqa: E731
        names = ["qn", "kn", "v", "beta", "g_chan", "h0"]
        cases[f"kda_{mode}"] = _diff(_fwd_bwd(kda(fla[("kda", mode)]), t, names, bwd),
                                     _fwd_bwd(kda(get_op("kda", mode)), t, names, bwd))
        # RWKV-7's parameterisation of the generalised delta rule: a = -kk, b = kk * rate, scale 1
        dplr = lambda impl: (lambda qn, kn, v, kk, rate, g_chan, h0: impl(  # noqa: E731
            qn, kn, v, -kk, kk * rate, g_chan, scale=1.0, initial_state=h0))
        names = ["qn", "kn", "v", "kk", "rate", "g_chan", "h0"]
        cases[f"dplr_{mode}"] = _diff(_fwd_bwd(dplr(fla[("dplr", mode)]), t, names, bwd),
                                      _fwd_bwd(dplr(get_op("dplr", mode)), t, names, bwd))
        # fla's chunk_hgrn neither returns a gradient for the initial state nor backpropagates
        # from the final state (dht): keep h0 constant and the loss on the outputs only
        hg = lambda impl: (lambda x, gx: impl(x, gx, initial_state=t["hx0"]))  # noqa: E731
        cases[f"hgrn_{mode}"] = _diff(_fwd_bwd(hg(fla[("hgrn", mode)]), t, ["x", "gx"], bwd, state_grad=False),
                                      _fwd_bwd(hg(ours[("hgrn", mode)]), t, ["x", "gx"], bwd, state_grad=False))
    dn = lambda impl: (lambda qn, kn, v, beta, h0: impl(qn, kn, v, beta, None, initial_state=h0))  # noqa: E731
    names = ["qn", "kn", "v", "beta", "h0"]
    cases["delta_rule_recurrent"] = _diff(_fwd_bwd(dn(fla[("delta_rule", "recurrent")]), t, names, False),
                                          _fwd_bwd(dn(ours[("delta_rule", "recurrent")]), t, names, False))
    if device == "cpu":  # chunk_delta_rule refuses fp32: compare with fla's naive chunkwise reference
        from fla.ops.delta_rule.naive import delta_rule_chunkwise

        def naive(qn, kn, v, beta):
            o, s = delta_rule_chunkwise(*(x.transpose(1, 2) for x in (qn, kn, v)), beta.transpose(1, 2), chunk_size=32)
            return o.transpose(1, 2), s

        Tn = 64  # the naive reference needs T divisible by its chunk
        tn = {k: (x[:, :Tn] if x.dim() > 2 and x.shape[1] == T else x) for k, x in t.items()}
        mine = lambda qn, kn, v, beta: chunk_delta_rule(qn, kn, v, beta)  # noqa: E731
        cases["delta_rule_chunk_vs_fla_naive"] = _diff(_fwd_bwd(naive, tn, ["qn", "kn", "v", "beta"]),
                                                       _fwd_bwd(mine, tn, ["qn", "kn", "v", "beta"]))
    else:
        cases["delta_rule_chunk"] = _diff(_fwd_bwd(dn(fla[("delta_rule", "chunk")]), t, names),
                                          _fwd_bwd(dn(ours[("delta_rule", "chunk")]), t, names))
    return cases


def module_cases(device: str = "cpu", dtype: torch.dtype = torch.float32, T: int = 40) -> dict:
    """Every linear variant: the same module and weights on backend fla vs torch (forward)."""
    from harness.registry import VARIANTS
    from harness.runtime.devices import resolve_backend

    resolve_backend("fla", device)
    cases = {}
    x = torch.randn(1, T, 32, generator=torch.Generator().manual_seed(0)).to(device, dtype)
    for name in VARIANTS.names():
        if name == "attention":
            continue
        torch.manual_seed(0)
        mixer = VARIANTS.get(name)(32, 2).to(device, dtype)
        out = {}
        for mode in ("chunk", "recurrent"):
            mixer.set_backend("torch")
            with torch.no_grad():
                ref, ref_state = mixer(x, mode=mode)
            mixer.set_backend("fla")
            with torch.no_grad():
                got, got_state = mixer(x, mode=mode)
            out[f"o_{mode}"] = (ref.float() - got.float()).abs().max().item()
            out[f"state_{mode}"] = max((ref_state[k].float() - got_state[k].float()).abs().max().item()
                                       for k in ref_state)
        cases[f"module_{name}"] = out
    return cases


def run_cases(device: str = "cpu", dtype: torch.dtype = torch.float32) -> dict:
    return {**op_cases(device, dtype), **module_cases(device, dtype)}


if __name__ == "__main__":
    import fla_interpreter

    fla_interpreter.enable()
    print("RESULTS " + json.dumps(run_cases("cpu", torch.float32)))
