"""The conformance checks every variant must pass (run by tests/test_conformance.py for every
registered variant, built-in or plug-in; plug-in authors can call `check_variant` in their own tests),
and every linear variant inside a head-wise hybrid (`check_headwise`, tests/test_headwise.py).

All checks run in float64 on small random inputs, so tolerances can be tight.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from harness.model.config import ModelConfig
from harness.model.layout import HEADWISE
from harness.model.lm import HybridLM, build_mixer
from harness.model.mixer import Mixer
from harness.registry import get_variant

D_MODEL, N_HEADS, BATCH, SEQ = 32, 2, 2, 70  # 70 tokens: several chunks, and a ragged last one


def make_mixer(name: str, seed: int = 0, **kwargs) -> Mixer:
    torch.manual_seed(seed)
    return _perturbed(get_variant(name)(D_MODEL, N_HEADS, **kwargs).double())


def make_headwise(variant: str, layout: str = "heads:1/2", seed: int = 0, **model) -> Mixer:
    """A head-wise hybrid layer (harness.model.headwise) of linear `variant`, built as HybridLM
    builds one, with its parameters moved off their init like `make_mixer`'s."""
    torch.manual_seed(seed)
    cfg = ModelConfig(**{"variant": variant, "layout": layout, "n_layers": 1, "d_model": D_MODEL,
                         "n_heads": N_HEADS, **model})
    return _perturbed(build_mixer(cfg, HEADWISE, 0).double())


def _perturbed(mixer: Mixer) -> Mixer:
    with torch.no_grad():  # move every parameter off its init so gates and norms are exercised
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return mixer


def check_chunk_equals_recurrent(name: str, atol: float = 1e-9, make: Callable[[], Mixer] | None = None) -> None:
    """`make` builds the mixer under test (default: `make_mixer(name)`); `name` labels messages."""
    mixer = make() if make else make_mixer(name)
    x = torch.randn(BATCH, SEQ, D_MODEL, dtype=torch.float64, requires_grad=True)
    outs, grads = [], []
    for mode in ("chunk", "recurrent"):
        mixer.zero_grad()
        x.grad = None
        y, state = mixer(x, mode=mode)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        outs.append((y.detach(), {k: v.detach() for k, v in state.items()}))
        grads.append([x.grad.clone()] + [p.grad.clone() if p.grad is not None else torch.zeros_like(p)
                                         for p in mixer.parameters()])
    (y_c, s_c), (y_r, s_r) = outs
    torch.testing.assert_close(y_c, y_r, atol=atol, rtol=1e-7, msg=f"{name}: chunk vs recurrent outputs differ")
    for k in s_r:
        torch.testing.assert_close(s_c[k], s_r[k], atol=atol, rtol=1e-7, msg=f"{name}: final state {k!r} differs")
    names = ["input"] + [n for n, _ in mixer.named_parameters()]
    for n, g_c, g_r in zip(names, *grads):
        torch.testing.assert_close(g_c, g_r, atol=atol, rtol=1e-7, msg=f"{name}: gradient of {n} differs")


def check_causal(name: str, t: int = 40, make: Callable[[], Mixer] | None = None) -> None:
    mixer = make() if make else make_mixer(name)
    x = torch.randn(BATCH, SEQ, D_MODEL, dtype=torch.float64)
    x2 = x.clone()
    x2[:, t] += torch.randn(BATCH, D_MODEL, dtype=torch.float64)
    for mode in ("chunk", "recurrent"):
        y1, _ = mixer(x, mode=mode)
        y2, _ = mixer(x2, mode=mode)
        assert torch.equal(y1[:, :t], y2[:, :t]), f"{name} ({mode}): output before t={t} changed"
        assert not torch.allclose(y1[:, t], y2[:, t]), f"{name} ({mode}): output at t={t} ignores its input"


def check_prefill_decode(name: str, atol: float = 1e-9, layout: str | None = None, n_heads: int = N_HEADS) -> None:
    """Prefill then token-by-token decode of a 2-layer model equals its forward pass; the layout
    defaults to "1:1" ("transformer" for attention)."""
    layout = layout or ("transformer" if name == "attention" else "1:1")
    torch.manual_seed(0)
    cfg = ModelConfig(variant=name, layout=layout, n_layers=2, d_model=D_MODEL, n_heads=n_heads, vocab_size=61)
    model = HybridLM(cfg).double().eval()
    tokens = torch.randint(0, cfg.vocab_size, (BATCH, SEQ))
    full = model(tokens)
    split = 50
    logits, cache = model.prefill(tokens[:, :split])
    torch.testing.assert_close(logits, full[:, :split], atol=atol, rtol=1e-7, msg=f"{name}: prefill logits differ")
    for t in range(split, SEQ):
        step = model.decode_step(tokens[:, t], cache)
        torch.testing.assert_close(step, full[:, t], atol=atol, rtol=1e-7, msg=f"{name}: decode logits differ at t={t}")
    assert cache.seen_tokens == SEQ


def check_state_bytes(name: str, make: Callable[[], Mixer] | None = None) -> None:
    """The declared state (keys, shapes, roles) is what the cache holds, in fp64, fp32 and bf16:
    recurrent states at least fp32, conv tails and KV in the activation dtype."""
    from harness.model.mixer import RECURRENT, STATE_ROLES

    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        mixer = (make() if make else make_mixer(name)).to(dtype)
        with torch.no_grad():
            _, state = mixer(torch.randn(BATCH, SEQ, D_MODEL, dtype=dtype))
        spec = mixer.state_spec(BATCH, SEQ)
        assert set(spec) == set(state), f"{name}: declared state keys {sorted(spec)} != held {sorted(state)}"
        for k, t in state.items():
            shape, role = spec[k]
            assert role in STATE_ROLES, f"{name}: state {k!r} has role {role!r}; expected one of {STATE_ROLES}"
            assert tuple(t.shape) == tuple(shape), f"{name}: state {k!r} is {tuple(t.shape)}, declared {shape}"
            want = torch.promote_types(dtype, torch.float32) if role == RECURRENT else dtype
            assert t.dtype == want, f"{name} ({dtype}): state {k!r} ({role}) is {t.dtype}, expected {want}"
        held = sum(t.numel() * t.element_size() for t in state.values())
        declared = mixer.state_bytes(BATCH, SEQ, dtype)
        assert held == declared, f"{name} ({dtype}): cache holds {held} bytes, state_bytes() declares {declared}"


def check_metadata(name: str) -> None:
    cls = get_variant(name)
    meta = cls.metadata()
    assert meta["name"] == name
    assert meta["state_kind"] in ("vector", "matrix", "kv"), f"{name}: bad state_kind {meta['state_kind']!r}"
    assert meta["generation"] in (None, 1, 2, 3), f"{name}: bad generation {meta['generation']!r}"
    mixer = make_mixer(name)
    assert mixer.flops_per_token(1024) > 0, f"{name}: flops_per_token must be positive"


def check_init_parameters(name: str, n_layers: int = 4) -> None:
    """The `init_parameters` hook draws nothing from the RNG and gives the same parameters when run
    again (the model runs it after construction and again after its own init), and the mixer builds
    on the meta device with no guard in its initialisation."""
    torch.manual_seed(0)
    mixer = get_variant(name)(D_MODEL, N_HEADS, layer_idx=n_layers - 1)
    rng = torch.get_rng_state()
    with torch.no_grad():
        mixer.init_parameters(n_layers)
    first = {k: v.clone() for k, v in mixer.state_dict().items()}
    with torch.no_grad():
        mixer.init_parameters(n_layers)
    assert torch.equal(rng, torch.get_rng_state()), f"{name}: init_parameters draws from the RNG"
    for k, v in mixer.state_dict().items():
        assert torch.equal(first[k], v), f"{name}: init_parameters changes {k!r} when run again"
    with torch.device("meta"):
        meta = get_variant(name)(D_MODEL, N_HEADS, layer_idx=n_layers - 1)
    assert [(k, v.shape) for k, v in meta.state_dict().items()] == [(k, v.shape) for k, v in first.items()], (
        f"{name}: the meta-device build has other parameters")


def check_variant(name: str) -> None:
    """Run every conformance check on one registered variant."""
    check_metadata(name)
    check_init_parameters(name)
    check_chunk_equals_recurrent(name)
    check_causal(name)
    check_prefill_decode(name)
    check_state_bytes(name)


def check_headwise(variant: str, layout: str = "heads:1/2") -> None:
    """The conformance checks on a head-wise hybrid of linear `variant` (harness.model.headwise):
    chunk == recurrent (outputs, states, gradients), causality, declared state == held state in
    fp64/fp32/bf16, and prefill + decode == forward in a 2-layer model of that layout."""
    label = f"{variant} {layout}"

    def make() -> Mixer:
        return make_headwise(variant, layout)

    check_chunk_equals_recurrent(label, make=make)
    check_causal(label, make=make)
    check_state_bytes(label, make=make)
    check_prefill_decode(variant, layout=layout)
