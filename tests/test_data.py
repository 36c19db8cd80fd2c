"""Data generators: answers are right, nothing leaks, seeds determine the data, the cache hits,
and the text corpus has a fixed split."""
from __future__ import annotations

import math
from collections import Counter

import pytest
import torch

from harness.data import IGNORE
from harness.data import cache as cache_mod
from harness.data import mqar as mqar_mod
from harness.data import niah as niah_mod
from harness.data.mqar import MQARConfig, gap_probabilities, generate_mqar, mqar_dataset
from harness.data.niah import (
    ANSWER,
    IS,
    NEEDLE,
    QUERY,
    SEP,
    SUBTASKS,
    NIAHConfig,
    generate_niah,
    niah_dataset,
    niah_mixture,
)
from harness.data.text import eval_windows, load_corpus, random_windows
from harness.tasks.recall import TEST_SEED, drop_overlap


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv(cache_mod.ENV_VAR, str(tmp_path / "cache"))


# ---------------------------------------------------------------------------------------------
# MQAR


def test_mqar_answers_are_the_values_paired_with_the_queried_keys():
    cfg = MQARConfig(vocab_size=64, seq_len=64, num_kv_pairs=8)
    d = generate_mqar(cfg, 200, seed=3)
    x, y, g = d["inputs"], d["targets"], d["groups"]
    K = cfg.num_kv_pairs
    for i in range(x.shape[0]):
        pairs = {int(x[i, 2 * j]): int(x[i, 2 * j + 1]) for j in range(K)}
        assert len(pairs) == K  # distinct keys
        assert all(1 <= k < 32 for k in pairs) and all(32 <= v < 64 for v in pairs.values())
        qpos = (y[i] != IGNORE).nonzero().flatten().tolist()
        assert len(qpos) == K  # every key is queried once
        assert sorted(int(x[i, p]) for p in qpos) == sorted(pairs)
        assert sorted(int(g[i, p]) for p in qpos) == list(range(K))
        for p in qpos:
            assert p >= 2 * K and (p - 2 * K) % 2 == 0
            assert int(y[i, p]) == pairs[int(x[i, p])]
        assert ((g[i] >= 0) == (y[i] != IGNORE)).all()


def test_mqar_no_leakage():
    cfg = MQARConfig(vocab_size=64, seq_len=96, num_kv_pairs=8)
    d = generate_mqar(cfg, 200, seed=0)
    x, y = d["inputs"], d["targets"]
    for i in range(x.shape[0]):
        counts = Counter(x[i].tolist())
        for p in (y[i] != IGNORE).nonzero().flatten().tolist():
            ans, key = int(y[i, p]), int(x[i, p])
            assert int(x[i, p]) != ans  # the answer is not the token at the query
            if p + 1 < x.shape[1]:
                assert int(x[i, p + 1]) != ans  # nor the token after it (teacher forcing leaks nothing)
            assert counts[ans] == 1  # the value appears only in its pair, before the query
            assert (x[i, :p] == ans).nonzero().flatten().tolist() == [
                2 * (x[i, 0 : 2 * cfg.num_kv_pairs : 2] == key).nonzero().item() + 1
            ]
            assert counts[key] == 2  # its pair and its query


def test_mqar_gaps_follow_a_power_law():
    cfg = MQARConfig(vocab_size=128, seq_len=256, num_kv_pairs=4, alpha=0.01)
    p = gap_probabilities(cfg)
    assert math.isclose(float(p.sum()), 1.0, rel_tol=1e-9)
    assert (p[:-1] >= p[1:]).all()  # decreasing: short gaps are likelier
    d = generate_mqar(cfg, 2000, seed=1)
    qpos = (d["targets"] != IGNORE).nonzero()[:, 1]
    gaps = (qpos - 2 * cfg.num_kv_pairs) // 2
    half = cfg.n_gaps // 2
    # p(x) ∝ 1/x: the first half of the gap range holds clearly more than half of the queries
    assert (gaps < half).float().mean() > 0.6
    assert int(gaps.max()) < cfg.n_gaps


def test_mqar_is_deterministic_per_seed():
    cfg = MQARConfig(vocab_size=64, seq_len=64, num_kv_pairs=4)
    a, b, c = generate_mqar(cfg, 50, 7), generate_mqar(cfg, 50, 7), generate_mqar(cfg, 50, 8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["inputs"], c["inputs"])


def test_mqar_rejects_impossible_configs():
    with pytest.raises(ValueError, match="too short"):
        MQARConfig(seq_len=30, num_kv_pairs=8).validate()
    with pytest.raises(ValueError, match="too small"):
        MQARConfig(vocab_size=16, seq_len=64, num_kv_pairs=8).validate()


def test_mqar_without_random_noise_uses_token_zero():
    cfg = MQARConfig(vocab_size=64, seq_len=32, num_kv_pairs=4, random_non_queries=False)
    d = generate_mqar(cfg, 10, 0)
    region = d["inputs"][:, 8:]
    assert set(region.unique().tolist()) - {0} <= set(range(1, 32))  # only zeros and query keys


# ---------------------------------------------------------------------------------------------
# NIAH


def _parse_needles(seq: list[int], cfg: NIAHConfig) -> list[tuple[tuple, tuple, int]]:
    """(key, value, position) of every needle, in order."""
    out = []
    for i, t in enumerate(seq):
        if t == NEEDLE:
            k = tuple(seq[i + 1 : i + 1 + cfg.key_len])
            assert seq[i + 1 + cfg.key_len] == IS
            v = tuple(seq[i + 2 + cfg.key_len : i + 2 + cfg.key_len + cfg.value_len])
            assert seq[i + 2 + cfg.key_len + cfg.value_len] == SEP
            out.append((k, v, i))
    return out


@pytest.mark.parametrize("subtask", SUBTASKS)
@pytest.mark.parametrize("haystack", ["repeat", "random"])
def test_niah_answers_are_the_needles_values(subtask, haystack):
    cfg = NIAHConfig(vocab_size=128, seq_len=96, subtask=subtask, key_len=2, value_len=2, n_needles=4,
                     n_queries=3, n_values=3, haystack=haystack)
    d = generate_niah(cfg, 50, seed=5)
    for i in range(50):
        seq, y, g = d["inputs"][i].tolist(), d["targets"][i].tolist(), d["groups"][i].tolist()
        needles = _parse_needles(seq, cfg)
        assert len(needles) == cfg.needles
        q = seq.index(QUERY)
        assert all(pos < q for *_, pos in needles)  # needles in the haystack, the question at the end
        # the expected answers, read from the needles
        expected: list[tuple] = []
        j = q
        while j < len(seq) and seq[j] == QUERY:
            key = tuple(seq[j + 1 : j + 1 + cfg.key_len])
            assert seq[j + 1 + cfg.key_len] == ANSWER
            vals = [v for k, v, _ in needles if k == key]
            expected += vals
            j += 2 + cfg.key_len + sum(len(v) for v in vals) + (len(vals) - 1)
        assert j == len(seq)
        n_groups = max(g) + 1
        assert n_groups == {"single": 1, "multikey": 1, "multiquery": 3, "multivalue": 3}[subtask] == len(expected)
        for grp in range(n_groups):
            pos = [p for p in range(len(seq)) if g[p] == grp]
            assert tuple(y[p] for p in pos) == expected[grp]
            for p in pos:
                assert y[p] == seq[p + 1]  # the target is the next token...
                assert seq[p] != y[p]  # ...never the token at the scored position
        # the answer tokens appear before the question only inside their needle
        for val in expected:
            for tok in val:
                before = [p for p in range(q) if seq[p] == tok]
                assert len(before) == 1
                assert any(pos < before[0] < pos + 3 + cfg.key_len + cfg.value_len for _, v, pos in needles if tok in v)
        if subtask == "multivalue":
            assert len({k for k, _, _ in needles}) == 1
        else:
            assert len({k for k, _, _ in needles}) == len(needles)


def test_niah_repeat_haystack_is_the_filler_pattern():
    cfg = NIAHConfig(vocab_size=128, seq_len=80, subtask="single", n_filler=16)
    seq = generate_niah(cfg, 1, 0)["inputs"][0].tolist()
    start = seq.index(NEEDLE)
    hay = seq[:start] + seq[start + cfg.key_len + cfg.value_len + 3 : seq.index(QUERY)]
    lo, _ = cfg.filler_range
    assert hay == [lo + (i % 16) for i in range(len(hay))]


def test_niah_depth_places_the_needles():
    base = dict(vocab_size=128, seq_len=128, subtask="multikey", n_needles=3)
    hay_len = NIAHConfig(**base).haystack_len
    for depth in (0.0, 0.5, 1.0):
        cfg = NIAHConfig(**base, depth=depth)
        d = generate_niah(cfg, 20, 1)
        for seq in d["inputs"].tolist():
            first = seq.index(NEEDLE)
            assert abs(first - depth * hay_len) <= cfg.sentence_len
            # the needles sit together at that depth
            pos = [p for p, t in enumerate(seq) if t == NEEDLE]
            assert pos == [first + i * (cfg.key_len + cfg.value_len + 3) for i in range(3)]
    # random depths spread the needles over the haystack
    d = generate_niah(NIAHConfig(**base), 200, 2)
    firsts = [seq.index(NEEDLE) / hay_len for seq in d["inputs"].tolist()]
    assert min(firsts) < 0.2 and max(firsts) > 0.6


def test_niah_validation():
    with pytest.raises(ValueError, match="haystack"):
        NIAHConfig(seq_len=20, subtask="multiquery").validate()
    with pytest.raises(ValueError, match="n_queries"):
        NIAHConfig(subtask="multiquery", n_queries=5, n_needles=4).validate()
    NIAHConfig(subtask="multikey", n_queries=5, n_needles=4).validate()  # n_queries is multiquery's
    with pytest.raises(ValueError, match="unknown subtask"):
        NIAHConfig(subtask="needle").validate()


def test_niah_mixture_labels_subtasks_and_is_deterministic():
    base = NIAHConfig(vocab_size=128, seq_len=64)
    a = niah_mixture(base, list(SUBTASKS), 10, seed=0, cache=False)
    b = niah_mixture(base, list(SUBTASKS), 10, seed=0, cache=False)
    assert a["subtask"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = niah_mixture(base, list(SUBTASKS), 10, seed=1, cache=False)
    assert not torch.equal(a["inputs"], c["inputs"])


# ---------------------------------------------------------------------------------------------
# train / test separation


def test_train_and_test_sets_share_no_sequences():
    cfg = MQARConfig(vocab_size=64, seq_len=32, num_kv_pairs=4)
    train = generate_mqar(cfg, 4000, 0)
    test = generate_mqar(cfg, 256, TEST_SEED + 7919 * 32)
    rows = {bytes(r.numpy().tobytes()) for r in train["inputs"]}
    assert not any(bytes(r.numpy().tobytes()) in rows for r in test["inputs"])
    ncfg = NIAHConfig(vocab_size=64, seq_len=32, subtask="single", value_len=1)
    ntrain = niah_mixture(ncfg, ["single"], 3000, 0, cache=False)
    ntest = generate_niah(ncfg, 64, TEST_SEED)
    kept = drop_overlap(ntrain, [ntest])
    rows = {bytes(r.numpy().tobytes()) for r in kept["inputs"]}
    assert not any(bytes(r.numpy().tobytes()) in rows for r in ntest["inputs"])


def test_drop_overlap_removes_shared_sequences():
    cfg = MQARConfig(vocab_size=64, seq_len=32, num_kv_pairs=4)
    train = generate_mqar(cfg, 20, 0)
    test = {k: v[5:8].clone() for k, v in train.items()}
    kept = drop_overlap(train, [test])
    assert kept["inputs"].shape[0] == 17
    assert all(k in kept for k in train)
    other_len = generate_mqar(MQARConfig(vocab_size=64, seq_len=40, num_kv_pairs=4), 3, 0)
    assert drop_overlap(train, [other_len]) is train


# ---------------------------------------------------------------------------------------------
# cache


def test_cache_hits_and_keys(tmp_path, monkeypatch):
    cfg = MQARConfig(vocab_size=64, seq_len=32, num_kv_pairs=4)
    calls = []
    real = mqar_mod.generate_mqar

    def counting(*a, **k):
        calls.append(a)
        return real(*a, **k)

    monkeypatch.setattr(mqar_mod, "generate_mqar", counting)
    a = mqar_dataset(cfg, 16, seed=0)
    b = mqar_dataset(cfg, 16, seed=0)
    assert len(calls) == 1  # the second call is a hit
    assert all(torch.equal(a[k], b[k]) for k in a)
    files = list((tmp_path / "cache").glob("*.pt"))
    assert len(files) == 1 and len(files[0].stem) == 64  # sha256 hex
    mqar_dataset(cfg, 16, seed=1)  # another seed: another file
    mqar_dataset(MQARConfig(vocab_size=64, seq_len=32, num_kv_pairs=5), 16, seed=0)  # another config
    assert len(calls) == 3 and len(list((tmp_path / "cache").glob("*.pt"))) == 3
    mqar_dataset(cfg, 16, seed=0, cache=False)
    assert len(calls) == 4
    assert not list((tmp_path / "cache").glob("*.tmp"))  # atomic writes leave nothing behind


def test_cache_regenerates_a_corrupt_file(tmp_path):
    cfg = NIAHConfig(vocab_size=64, seq_len=48)
    a = niah_dataset(cfg, 8, 0)
    (f,) = list((tmp_path / "cache").glob("*.pt"))
    f.write_bytes(b"not a torch file")
    b = niah_dataset(cfg, 8, 0)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert torch.load(f, weights_only=True)["inputs"].shape == (8, 48)


def test_cache_key_depends_on_kind_config_and_seed():
    k = cache_mod.cache_key("mqar", {"a": 1}, 0)
    assert k == cache_mod.cache_key("mqar", {"a": 1.0}, 0)  # canonical JSON
    assert len({k, cache_mod.cache_key("niah", {"a": 1}, 0), cache_mod.cache_key("mqar", {"a": 2}, 0),
                cache_mod.cache_key("mqar", {"a": 1}, 1)}) == 4


def test_generator_versions_are_in_the_cache_key(tmp_path, monkeypatch):
    cfg = MQARConfig(vocab_size=64, seq_len=32, num_kv_pairs=4)
    mqar_dataset(cfg, 4, 0)
    monkeypatch.setattr(mqar_mod, "GENERATOR_VERSION", mqar_mod.GENERATOR_VERSION + 1)
    mqar_dataset(cfg, 4, 0)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 2
    assert niah_mod.GENERATOR_VERSION >= 1


# ---------------------------------------------------------------------------------------------
# text


def test_pydoc_corpus_split_is_fixed_and_byte_level():
    c = load_corpus("pydoc")
    import pydoc_data.topics as t

    raw = "\n\n".join(t.topics[k] for k in sorted(t.topics)).encode()
    assert c.vocab_size == 256 and c.tokenizer == "bytes"
    assert len(c.train) + len(c.val) == len(raw)
    assert abs(len(c.val) - 0.1 * len(raw)) <= 1
    assert bytes(c.val.to(torch.uint8).tolist()) == raw[-len(c.val):]  # the tail is validation
    assert bytes(c.train[:100].to(torch.uint8).tolist()) == raw[:100]
    assert math.isclose(c.bits_per_byte(math.log(2)), 1.0)


def test_local_text_files_and_globs(tmp_path):
    (tmp_path / "a.txt").write_text("hello " * 50)
    (tmp_path / "b.txt").write_text("world " * 50)
    (tmp_path / "skip.bin").write_bytes(b"\x00\x01")
    by_dir = load_corpus(str(tmp_path))
    by_glob = load_corpus(str(tmp_path / "*.txt"))
    assert torch.equal(by_dir.train, by_glob.train) and torch.equal(by_dir.val, by_glob.val)
    assert len(by_dir.train) + len(by_dir.val) == 600 + 2  # both files, joined by a blank line
    one = load_corpus(str(tmp_path / "a.txt"), val_fraction=0.5)
    assert len(one.val) == 150
    with pytest.raises(FileNotFoundError, match="no text files"):
        load_corpus(str(tmp_path / "nothing*.txt"))
    with pytest.raises(ValueError, match="hf:"):
        load_corpus("pydoc", tokenizer="gpt2")


def test_hf_corpus_fails_clearly_offline(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="datasets|offline"):
        load_corpus("hf:wikitext:wikitext-2-raw-v1", tokenizer="gpt2")


def test_windows():
    tokens = torch.arange(1000)
    g = torch.Generator().manual_seed(0)
    b = random_windows(tokens, 16, 4, g)
    assert b["inputs"].shape == (4, 16) and torch.equal(b["targets"], b["inputs"] + 1)
    b2 = random_windows(tokens, 16, 4, torch.Generator().manual_seed(0))
    assert torch.equal(b["inputs"], b2["inputs"])
    e = eval_windows(tokens, 100)
    assert e["inputs"].shape == (9, 100) and int(e["inputs"][1, 0]) == 100  # non-overlapping
    assert torch.equal(e["targets"], e["inputs"] + 1)
    assert eval_windows(tokens, 100, max_windows=3)["inputs"].shape == (3, 100)
    with pytest.raises(ValueError):
        eval_windows(tokens[:10], 16)


def test_reference_levels_match_their_definitions():
    from harness.data.mqar import MQARConfig, reference_levels
    from harness.data.niah import NIAHConfig

    assert reference_levels(MQARConfig(vocab_size=64, num_kv_pairs=4)) == (1 / 32, 1 / 4)
    assert reference_levels(MQARConfig(vocab_size=8192, num_kv_pairs=64)) == (1 / 4096, 1 / 64)
    for sub, needles in (("single", 1), ("multikey", 4), ("multiquery", 4), ("multivalue", 2)):
        cfg = NIAHConfig(vocab_size=256, subtask=sub, n_needles=4, n_values=2, value_len=2)
        lo, hi = cfg.value_range
        chance, plateau = cfg.reference_levels()
        assert chance == pytest.approx((1 / (hi - lo)) ** 2)
        assert plateau == (chance if needles == 1 else 1 / needles)


def test_mqar_trains_on_an_even_mix_of_pair_counts_and_probes_at_the_test_count():
    from harness.registry import TASKS

    task = TASKS.get("mqar")()
    p = task.Params(num_kv_pairs=8, train_kv_pairs=[2, 4, 8], cache=False)
    train = task.make_train(p, 128, 64, 301, seed=5)
    pairs = (train["targets"] != -100).sum(1)  # one scored query per pair
    assert train["inputs"].shape == (301, 64)
    assert [int((pairs == k).sum()) for k in (2, 4, 8)] == [101, 100, 100]
    probe = task.make_probe(p, 128, 64, 16, seed=5)
    assert bool(((probe["targets"] != -100).sum(1) == 8).all())
    # the default trains at num_kv_pairs alone, exactly as before the setting existed
    plain = task.Params(num_kv_pairs=8, cache=False)
    assert torch.equal(task.make_train(plain, 128, 64, 32, seed=5)["inputs"],
                       generate_mqar(MQARConfig(vocab_size=128, seq_len=64, num_kv_pairs=8), 32, 5)["inputs"])
    with pytest.raises(ValueError, match="train_kv_pairs"):
        task.Params(train_kv_pairs=[])
    with pytest.raises(ValueError, match="num_kv_pairs"):  # 40 pairs do not fit in 64 tokens
        task.validate_generator(task.Params(num_kv_pairs=8, train_kv_pairs=[40]), 128, 64)
