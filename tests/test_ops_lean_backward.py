"""The memory-lean training path of the chunked ops (recompute over time blocks,
harness.ops.chunking.blockwise): fp64 gradients of every input and of the initial state equal
autograd through the step-by-step recurrence, with blocks small enough that several are
exercised, ragged lengths (T not a multiple of the chunk or the block) and extreme gates; and the
lean path keeps only the inputs and the block-boundary states for backward."""
import pytest
import torch
import torch.nn.functional as F

from harness.ops import (
    chunk_delta_rule,
    chunk_dplr,
    chunk_gla,
    chunk_hgrn,
    chunk_kda,
    chunking,
    recurrent_delta_rule,
    recurrent_dplr,
    recurrent_gla,
    recurrent_hgrn,
    recurrent_kda,
)

d = torch.float64
B, H, K, V = 2, 3, 8, 6


def _run(fn, inputs, weights, needs=None):
    """o, state and the input gradients of sum(o * w_o) + sum(state * w_s)."""
    needs = [True] * len(inputs) if needs is None else needs
    inputs = [None if t is None else t.detach().clone().requires_grad_(n) for t, n in zip(inputs, needs)]
    o, s = fn(*inputs)
    (o * weights[0]).sum().add((s * weights[1]).sum()).backward()
    return o.detach(), s.detach(), [None if t is None else t.grad for t in inputs]


def _assert_same(lean, ref, atol=1e-10):
    (o1, s1, g1), (o2, s2, g2) = lean, ref
    torch.testing.assert_close(o1, o2, atol=atol, rtol=1e-8)
    torch.testing.assert_close(s1, s2, atol=atol, rtol=1e-8)
    for i, (a, b) in enumerate(zip(g1, g2)):
        assert (a is None) == (b is None), f"input {i}: gradient presence differs"
        if a is not None:
            torch.testing.assert_close(a, b, atol=atol, rtol=1e-8, msg=lambda m, i=i: f"input {i}: {m}")


def _weights(T, state_shape, out_dim):
    g = torch.Generator().manual_seed(7)
    return torch.randn(B, T, *out_dim, generator=g, dtype=d), torch.randn(*state_shape, generator=g, dtype=d)


GATES = {
    "moderate": lambda *s: F.logsigmoid(torch.randn(*s, dtype=d) + 1),
    "near_zero": lambda *s: -1e-6 * torch.rand(*s, dtype=d),  # decay ~ 1: nothing forgets
    "very_negative": lambda *s: -30 - 20 * torch.rand(*s, dtype=d),  # exp(-30..-50) per step
    "mixed": lambda *s: torch.where(torch.rand(*s) < 0.5, -1e-6 * torch.rand(*s, dtype=d),
                                    -40 * torch.rand(*s, dtype=d)),
}


def _qkv(T, seed):
    torch.manual_seed(seed)
    return (torch.randn(B, T, H, K, dtype=d), torch.randn(B, T, H, K, dtype=d), torch.randn(B, T, H, V, dtype=d))


# T = 77 with chunk 16 and block 32: blocks of 32, 32, 13 and a padded last chunk
@pytest.mark.parametrize("T", [77, 128])
@pytest.mark.parametrize("gate", [None, *GATES])
def test_delta_rule_lean_grads_equal_recurrence(T, gate):
    q, k, v = _qkv(T, 0)
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    beta = torch.rand(B, T, H, dtype=d)
    S0 = torch.randn(B, H, K, V, dtype=d)
    w = _weights(T, (B, H, K, V), (H, V))
    if gate is None:
        inputs = [q, k, v, beta, S0]
        lean = lambda q, k, v, b, s: chunk_delta_rule(q, k, v, b, initial_state=s, chunk_size=16,  # noqa: E731
                                                      checkpoint_block=32)
        ref = lambda q, k, v, b, s: recurrent_delta_rule(q, k, v, b, initial_state=s)  # noqa: E731
    else:
        inputs = [q, k, v, beta, GATES[gate](B, T, H), S0]
        lean = lambda q, k, v, b, g, s: chunk_delta_rule(q, k, v, b, g, initial_state=s, chunk_size=16,  # noqa: E731
                                                         checkpoint_block=32)
        ref = lambda q, k, v, b, g, s: recurrent_delta_rule(q, k, v, b, g, initial_state=s)  # noqa: E731
    _assert_same(_run(lean, inputs, w), _run(ref, inputs, w))


@pytest.mark.parametrize("T", [77, 128])
@pytest.mark.parametrize("kind", ["none", "scalar", "channel"])
@pytest.mark.parametrize("gate", list(GATES))
def test_gla_lean_grads_equal_recurrence(T, kind, gate):
    if kind == "none" and gate != "moderate":
        pytest.skip("no gate")
    q, k, v = _qkv(T, 1)
    S0 = torch.randn(B, H, K, V, dtype=d)
    g = {"none": None, "scalar": (B, T, H), "channel": (B, T, H, K)}[kind]
    g = None if g is None else GATES[gate](*g)
    w = _weights(T, (B, H, K, V), (H, V))
    lean = lambda q, k, v, g, s: chunk_gla(q, k, v, g, initial_state=s, chunk_size=16, sub_chunk_size=4,  # noqa: E731
                                           checkpoint_block=40)  # rounds down to 32
    ref = lambda q, k, v, g, s: recurrent_gla(q, k, v, g, initial_state=s)  # noqa: E731
    inputs = [q, k, v, g, S0]
    _assert_same(_run(lean, inputs, w), _run(ref, inputs, w))


@pytest.mark.parametrize("T", [77, 128])
@pytest.mark.parametrize("gate", list(GATES))
def test_kda_lean_grads_equal_recurrence(T, gate):
    q, k, v = _qkv(T, 3)
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    beta, S0 = torch.rand(B, T, H, dtype=d), torch.randn(B, H, K, V, dtype=d)
    w = _weights(T, (B, H, K, V), (H, V))
    lean = lambda q, k, v, b, g, s: chunk_kda(q, k, v, b, g, initial_state=s, chunk_size=16,  # noqa: E731
                                              sub_chunk_size=4, checkpoint_block=32)
    ref = lambda q, k, v, b, g, s: recurrent_kda(q, k, v, b, g, initial_state=s)  # noqa: E731
    inputs = [q, k, v, beta, GATES[gate](B, T, H, K), S0]
    _assert_same(_run(lean, inputs, w), _run(ref, inputs, w))


@pytest.mark.parametrize("T", [77, 128])
@pytest.mark.parametrize("gate", list(GATES))
def test_dplr_lean_grads_equal_recurrence(T, gate):
    q, k, v = _qkv(T, 4)
    kk = F.normalize(torch.randn(B, T, H, K, dtype=d), dim=-1)
    a, b = -kk, kk * torch.rand(B, T, H, K, dtype=d)
    S0 = torch.randn(B, H, K, V, dtype=d)
    w = _weights(T, (B, H, K, V), (H, V))
    lean = lambda q, k, v, a, b, g, s: chunk_dplr(q, k, v, a, b, g, scale=1.0, initial_state=s,  # noqa: E731
                                                  chunk_size=16, sub_chunk_size=4, checkpoint_block=32)
    ref = lambda q, k, v, a, b, g, s: recurrent_dplr(q, k, v, a, b, g, scale=1.0, initial_state=s)  # noqa: E731
    inputs = [q, k, v, a, b, GATES[gate](B, T, H, K), S0]
    _assert_same(_run(lean, inputs, w), _run(ref, inputs, w))


@pytest.mark.parametrize("T", [45, 96])
@pytest.mark.parametrize("gate", list(GATES))
def test_hgrn_lean_grads_equal_recurrence(T, gate):
    torch.manual_seed(2)
    D = 10
    x, g, h0 = torch.randn(B, T, D, dtype=d), GATES[gate](B, T, D), torch.randn(B, D, dtype=d)
    w = _weights(T, (B, D), (D,))
    lean = lambda x, g, h: chunk_hgrn(x, g, h, chunk_size=8, checkpoint_block=16)  # noqa: E731
    _assert_same(_run(lean, [x, g, h0], w), _run(recurrent_hgrn, [x, g, h0], w))


def test_partial_requires_grad_and_no_initial_state():
    """Only some inputs need a gradient (here v and the initial state; then k alone with no
    initial state): the others get none, the rest still match the recurrence."""
    T = 70
    q, k, v = _qkv(T, 3)
    q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    beta, g, S0 = torch.rand(B, T, H, dtype=d), GATES["moderate"](B, T, H), torch.randn(B, H, K, V, dtype=d)
    w = _weights(T, (B, H, K, V), (H, V))
    lean = lambda *a: chunk_delta_rule(*a[:5], initial_state=a[5], chunk_size=16, checkpoint_block=16)  # noqa: E731
    ref = lambda *a: recurrent_delta_rule(*a[:5], initial_state=a[5])  # noqa: E731
    for needs, s0 in (([False, False, True, False, False, True], S0),
                      ([False, True, False, False, False, False], None)):
        inputs = [q, k, v, beta, g, s0]
        _assert_same(_run(lean, inputs, w, needs), _run(ref, inputs, w, needs))


def _saved_bytes(fn, *inputs):
    """Bytes autograd keeps for backward (every tensor packed by a saved-tensor hook; a view of
    an input counts in full, so this over-counts the inputs)."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(*inputs)
    return total[0]


@pytest.mark.parametrize("op", ["delta_rule", "gla_scalar", "gla_channel", "hgrn"])
def test_lean_path_keeps_only_inputs_and_states(op, monkeypatch):
    """By default (grad enabled, T over the block) an op keeps about its inputs plus one state
    per block; the full tape (checkpoint_block=0) keeps several times more."""
    monkeypatch.setattr(chunking, "CHECKPOINT_BLOCK", 64)
    T = 512
    torch.manual_seed(4)
    q, k, v = (torch.randn(1, T, H, 16, requires_grad=True) for _ in range(3))
    if op == "hgrn":
        inputs = [torch.randn(1, T, 48, requires_grad=True), F.logsigmoid(torch.randn(1, T, 48)).requires_grad_()]
        fn, state_bytes = chunk_hgrn, 48 * 4
    elif op == "delta_rule":
        inputs = [q, k, v, torch.rand(1, T, H, requires_grad=True), F.logsigmoid(torch.randn(1, T, H)).requires_grad_()]
        fn, state_bytes = chunk_delta_rule, H * 16 * 16 * 4
    else:
        g = torch.randn(1, T, H) if op == "gla_scalar" else torch.randn(1, T, H, 16)
        inputs = [q, k, v, F.logsigmoid(g).requires_grad_()]
        fn, state_bytes = chunk_gla, H * 16 * 16 * 4
    input_bytes = sum(t.numel() * t.element_size() for t in inputs)
    lean = _saved_bytes(fn, *inputs)
    assert lean <= input_bytes + (T // 64) * state_bytes
    full = _saved_bytes(lambda *a: fn(*a, checkpoint_block=0), *inputs)
    assert full > 3 * input_bytes


def test_lean_forward_equals_full_tape_and_no_grad():
    """Same numbers with the lean path, the full tape and under no_grad (fp32)."""
    T = 300
    q, k, v = (t.float() for t in _qkv(T, 5))
    g = F.logsigmoid(torch.randn(B, T, H, K))
    o0, s0 = chunk_gla(q, k, v, g, checkpoint_block=0)
    ql = q.clone().requires_grad_()
    o1, s1 = chunk_gla(ql, k, v, g, checkpoint_block=64)
    with torch.no_grad():
        o2, s2 = chunk_gla(q, k, v, g, checkpoint_block=64)
    torch.testing.assert_close(o1, o0, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(s1, s0, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(o2, o0, atol=1e-6, rtol=1e-5)
    assert o1.requires_grad and not o2.requires_grad


def test_lean_grads_equal_full_tape_in_bfloat16():
    """Half-precision inputs: the lean path gives the full tape's gradients (fp32 state carried
    between blocks, never rounded)."""
    T = 200
    q, k, v = (t.to(torch.bfloat16) for t in _qkv(T, 6))
    g = F.logsigmoid(torch.randn(B, T, H)).to(torch.bfloat16)
    w = tuple(t.float() for t in _weights(T, (B, H, K, V), (H, V)))
    full = _run(lambda *a: chunk_gla(*a[:4], initial_state=a[4], checkpoint_block=0), [q, k, v, g, None],
                (w[0].bfloat16(), w[1]))
    lean = _run(lambda *a: chunk_gla(*a[:4], initial_state=a[4], checkpoint_block=64), [q, k, v, g, None],
                (w[0].bfloat16(), w[1]))
    for a, b in zip(full[:2] + tuple(full[2][:4]), lean[:2] + tuple(lean[2][:4])):
        torch.testing.assert_close(a.float(), b.float(), atol=2e-2, rtol=2e-2)
