"""lm-eval integration: the adapter against lm-eval's interface, an end-to-end run of the
repository's local JSONL tasks through the `lm_eval` suite task, checkpoint round trips, and
lm-eval's own CLI through `python -m harness.integrations.lm_eval.cli`.

Needs `pip install -e .[lm-eval]` (skipped otherwise). Nothing is downloaded: the models are tiny
random HybridLMs saved to tmp, the tasks read JSONL files shipped in harness/lm_eval_tasks.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("lm_eval", reason="lm-eval not installed (pip install -e .[lm-eval])")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.model import TemplateLM  # noqa: E402

from harness.integrations.hub import OFFLINE_VARS, hf_offline  # noqa: E402
from harness.integrations.lm_eval.adapter import ByteTokenizer, HarnessLM  # noqa: E402
from harness.model.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from harness.model.config import ModelConfig  # noqa: E402
from harness.model.lm import HybridLM  # noqa: E402
from harness.model.resolve import resolve_model  # noqa: E402
from harness.sweep import expand_cells  # noqa: E402
from harness.sweep.cell import Cell  # noqa: E402
from harness.sweep.validate import validate  # noqa: E402
from harness.tasks.lm_eval import LmEval, results_to_rows  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CFG = ModelConfig(variant="gla", layout="1:1", n_layers=2, d_model=32, n_heads=2, vocab_size=257,
                  mlp_ratio=2, mlp_multiple=8)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: one intra-op thread is several times faster than two on a busy 2-core box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ckpt")
    save_checkpoint(HybridLM(CFG), d)
    return d


@pytest.fixture(scope="module")
def lm(ckpt) -> HarnessLM:
    return HarnessLM(pretrained=str(ckpt), device="cpu", dtype="float32", batch_size=3, max_gen_toks=6)


def _ll(ctx: str, cont: str) -> Instance:
    return Instance("loglikelihood", {}, (ctx, cont), 0)


def _direct_logprob(model, ctx_ids: list[int], cont_ids: list[int]) -> tuple[float, bool]:
    seq = torch.tensor([ctx_ids + cont_ids])
    with torch.no_grad():
        lp = F.log_softmax(model(seq[:, :-1]).float(), -1)[0]
    pos = torch.arange(len(ctx_ids) - 1, len(ctx_ids) + len(cont_ids) - 1)
    target = torch.tensor(cont_ids)
    return float(lp[pos, target].sum()), bool((lp[pos].argmax(-1) == target).all())


# ---------------------------------------------------------------------------------------------
# The adapter against lm-eval's interface


def test_registered_with_lm_eval(ckpt):
    from lm_eval.api.registry import get_model

    cls = get_model("harness")
    assert cls is HarnessLM and issubclass(cls, TemplateLM)
    lm = cls.create_from_arg_string(f"pretrained={ckpt},batch_size=2,max_length=64",
                                    {"device": "cpu", "batch_size": None})
    assert lm.batch_size == 2 and lm.max_length == 64 and lm.kind == "harness"
    assert lm.eot_token_id == 256 and lm.prefix_token_id == 256  # vocab 257: the first id past the bytes
    assert isinstance(lm.tokenizer, ByteTokenizer) and lm.tok_encode("hé") == [104, 195, 169]


def test_loglikelihood_matches_direct(lm):
    reqs = [("The cat sat on the", " mat"), ("A", "bcdefgh ijk"), ("Hello", ","), ("x" * 40, " end"),
            ("", "starts from the prefix token")]
    got = lm.loglikelihood([_ll(c, x) for c, x in reqs])
    for (ctx, cont), (score, greedy) in zip(reqs, got):
        ctx_ids = list(ctx.encode()) if ctx else [lm.prefix_token_id]
        want, want_greedy = _direct_logprob(lm.model, ctx_ids, list(cont.encode()))
        assert score == pytest.approx(want, abs=1e-4), (ctx, cont)
        assert greedy == want_greedy
        assert score < 0


def test_batching_and_padding_do_not_change_scores(ckpt, lm):
    reqs = [_ll("short", " one"), _ll("a much longer context than the others", " two"), _ll("mid length", " three")]
    one = HarnessLM(pretrained=str(ckpt), batch_size=1).loglikelihood(reqs)
    many = lm.loglikelihood(reqs)
    for (a, ga), (b, gb) in zip(one, many):
        assert a == pytest.approx(b, abs=1e-5) and ga == gb


def test_trailing_context_space_moves_to_continuation(lm):
    (a, _), (b, _) = lm.loglikelihood([_ll("The cat sat on the ", "mat"), _ll("The cat sat on the", " mat")])
    assert a == pytest.approx(b, abs=1e-6)


def test_loglikelihood_rolling_is_total_nll(ckpt):
    text = "Linear attention keeps a fixed-size state. Softmax attention keeps every key."
    lm = HarnessLM(pretrained=str(ckpt), max_length=256)
    ids = [lm.prefix_token_id] + list(text.encode())
    with torch.no_grad():
        lp = F.log_softmax(lm.model(torch.tensor([ids[:-1]])).float(), -1)[0]
    total = float(lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].sum())
    (got,) = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    assert got == pytest.approx(total, abs=1e-3)
    # with a window shorter than the text, every token is still scored exactly once (lm-eval's
    # disjoint rolling windows): the total differs only by the lost context
    short = HarnessLM(pretrained=str(ckpt), max_length=16)
    (windowed,) = short.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    assert windowed < 0 and abs(windowed - total) < 0.2 * abs(total)


def test_generate_until_is_greedy_and_stops(lm):
    ctx = "Q: What is 3 + 4?\nA:"
    ids = list(ctx.encode())
    want: list[int] = []
    with torch.no_grad():
        for _ in range(6):
            nxt = int(lm.model(torch.tensor([ids + want]))[0, -1].argmax())
            if nxt == lm.eot_token_id:
                break
            want.append(nxt)
    want_text = lm.tok_decode(want)
    (got,) = lm.generate_until([Instance("generate_until", {}, (ctx, {"until": ["\n\n\n"], "max_gen_toks": 6}), 0)])
    assert got == want_text.split("\n\n\n")[0]
    # a stop string cuts the text; max_gen_toks bounds it
    if len(want_text) > 1:
        stop = want_text[1]
        (cut,) = lm.generate_until([Instance("generate_until", {}, (ctx, {"until": [stop], "max_gen_toks": 6}), 0)])
        assert cut == want_text.split(stop)[0]
    (one,) = lm.generate_until([Instance("generate_until", {}, (ctx, {"until": [], "max_gen_toks": 1}), 0)])
    assert len(one.encode()) <= 1 or one == lm.tok_decode(want[:1])


def test_hf_tokenizer_for_fla_checkpoints(tmp_path):
    """An fla-format checkpoint is scored with the tokenizer saved next to it; without one,
    loading fails clearly instead of scoring bytes against the wrong vocabulary."""
    pytest.importorskip("transformers")
    from safetensors.torch import save_file
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<unk>", "</s>", "<s>", "the", "cat", "sat", "on", "mat", "a", "dog"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    cfg = ModelConfig(variant="gated_deltanet", n_layers=1, d_model=32, n_heads=2, vocab_size=len(words),
                      mlp_ratio=2, mlp_multiple=8, mixer_kwargs={"head_dim": 16, "expand_v": 1.0})
    torch.manual_seed(0)
    model = HybridLM(cfg).eval()
    fla_cfg = {"model_type": "gated_deltanet", "hidden_size": 32, "num_hidden_layers": 1, "num_heads": 2,
               "head_dim": 16, "expand_v": 1.0, "intermediate_size": cfg.mlp_hidden, "vocab_size": len(words),
               "norm_eps": 1e-6}
    (tmp_path / "config.json").write_text(json.dumps(fla_cfg))
    state = {("model." + k.replace(".mixer.", ".attn.")) if k != "lm_head.weight" else k: v
             for k, v in model.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(RuntimeError, match="no tokenizer files"):
        HarnessLM(pretrained=str(tmp_path))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>", bos_token="<s>")
    fast.save_pretrained(tmp_path)
    lm = HarnessLM(pretrained=str(tmp_path))
    assert lm.kind == "fla" and lm.eot_token_id == 1 and lm.prefix_token_id == 2
    assert lm.tok_encode("the cat sat") == [3, 4, 5]
    ((score, _),) = lm.loglikelihood([_ll("the cat", " sat")])
    want, _ = _direct_logprob(lm.model, [3, 4], [5])
    assert score == pytest.approx(want, abs=1e-5)


# ---------------------------------------------------------------------------------------------
# Checkpoint round trips


def test_checkpoint_round_trip(ckpt, lm):
    torch.manual_seed(0)
    fresh = HybridLM(CFG).eval()  # same seed as the fixture: the same weights
    back = load_checkpoint(ckpt).eval()
    x = torch.randint(0, 257, (2, 20))
    with torch.no_grad():
        assert torch.equal(fresh(x), back(x))
        assert torch.equal(lm.model(x), back(x))
    assert back.cfg == CFG


# ---------------------------------------------------------------------------------------------
# The `lm_eval` suite task, end to end on the repository's JSONL tasks


def _cell(ckpt: Path | None, model: ModelConfig = CFG, **params) -> Cell:
    p = LmEval.Params(tasks=["harness_toy"], checkpoint=str(ckpt) if ckpt else None, limit=10, batch_size=4,
                      max_gen_toks=4, bootstrap_iters=100, **params)
    return Cell(suite="t", task="lm_eval", params=p.model_dump(mode="json"), model=resolve_model(model.to_dict()),
                seq_len=256, backend="torch")


def test_lm_eval_task_end_to_end(ckpt, monkeypatch):
    monkeypatch.delenv("HARNESS_ONLINE", raising=False)
    for var in OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    cell = _cell(ckpt)
    LmEval().check(cell)
    rows = LmEval().run(cell)
    by = {r["metric"]: r for r in rows}
    expected = {
        "lm_eval/harness_toy_mc/acc", "lm_eval/harness_toy_mc/acc_norm", "lm_eval/harness_toy_lambada/acc",
        "lm_eval/harness_toy_lambada/perplexity", "lm_eval/harness_toy_gen/exact_match",
        "lm_eval/harness_toy_ppl/word_perplexity", "lm_eval/harness_toy_ppl/byte_perplexity",
        "lm_eval/harness_toy_ppl/bits_per_byte",
    }
    assert expected <= set(by), sorted(by)
    for name in ("harness_toy_mc/acc", "harness_toy_mc/acc_norm", "harness_toy_lambada/acc",
                 "harness_toy_gen/exact_match"):
        assert 0.0 <= by[f"lm_eval/{name}"]["value"] <= 1.0
        assert by[f"lm_eval/{name}"]["unit"] == "score"
    assert by["lm_eval/harness_toy_ppl/byte_perplexity"]["value"] > 1.0
    assert by["lm_eval/harness_toy_ppl/byte_perplexity"]["unit"] == "ppl"
    assert "spread" in by["lm_eval/harness_toy_mc/acc"]  # the standard error
    assert all(r["subtask"] == r["metric"].split("/")[1] and r["backend"] == "torch" for r in rows)
    # the run kept Hugging Face offline and restored the environment afterwards
    assert not any(v in os.environ for v in OFFLINE_VARS)


def test_lm_eval_task_without_checkpoint_uses_cell_model():
    params = LmEval.Params(tasks=["harness_toy_mc"], limit=4, bootstrap_iters=0).model_dump(mode="json")
    cell = Cell(suite="t", task="lm_eval", params=params, model=resolve_model(CFG.to_dict()), seq_len=128,
                backend="torch")
    rows = LmEval().run(cell)
    assert {r["metric"] for r in rows} == {"lm_eval/harness_toy_mc/acc", "lm_eval/harness_toy_mc/acc_norm"}


def test_checkpoint_must_match_the_cell(ckpt):
    other = ModelConfig(variant="gated_deltanet", layout="pure", n_layers=2, d_model=32, n_heads=2, vocab_size=257)
    with pytest.raises(ValueError, match="does not match"):
        LmEval().check(_cell(ckpt, other))
    assert LmEval.model_from_params({"checkpoint": str(ckpt)})["layout"] == "1:1"
    assert LmEval.model_from_params({"checkpoint": None}) is None
    # through a suite, the checkpoint's own model is the cell's, whatever the suite's axes say
    # (Task.model_from_params), so rows are labelled with what was evaluated
    raw = {"name": "lmeval", "task": "lm_eval", "params": {"tasks": ["harness_toy_mc"], "checkpoint": str(ckpt)},
           "model": {"n_layers": 8, "d_model": 16},
           "axes": {"variant": ["hgrn"], "layout": ["pure"]}}
    (cell,) = expand_cells(validate(raw, None))
    assert (cell.model["variant"], cell.model["layout"], cell.model["n_layers"], cell.model["d_model"]) == (
        CFG.variant, "1:1", CFG.n_layers, CFG.d_model)
    LmEval().check(cell)  # and it passes the task's own consistency check


def test_offline_env_context(monkeypatch):
    for var in OFFLINE_VARS:
        monkeypatch.delenv(var, raising=False)
    import huggingface_hub.constants as hub_constants

    before = hub_constants.HF_HUB_OFFLINE
    with hf_offline():
        assert all(os.environ[v] == "1" for v in OFFLINE_VARS)
        assert hub_constants.HF_HUB_OFFLINE is True
    assert hub_constants.HF_HUB_OFFLINE == before and not any(v in os.environ for v in OFFLINE_VARS)
    with hf_offline(enabled=False):
        assert not any(v in os.environ for v in OFFLINE_VARS)


def test_results_to_rows_shapes():
    rows = results_to_rows({"results": {
        "niah_single_1": {"alias": "niah_single_1", "4096,none": 0.75, "4096_stderr,none": "N/A"},
        "arc_easy": {"acc,none": 0.5, "acc_stderr,none": 0.1, "acc_norm,none": 0.6, "acc_norm_stderr,none": 0.1},
        "gsm": {"exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.05, "bad,none": "N/A"},
    }})
    by = {r["metric"]: r for r in rows}
    niah = by["lm_eval/niah_single_1/score"]
    assert niah["context_len"] == 4096 and "spread" not in niah
    assert by["lm_eval/arc_easy/acc"]["spread"] == 0.1 and by["lm_eval/arc_easy/acc_norm"]["value"] == 0.6
    assert by["lm_eval/gsm/exact_match/strict-match"]["value"] == 0.25 and len(rows) == 4


# ---------------------------------------------------------------------------------------------
# lm-eval's own CLI


@pytest.mark.slow
def test_lm_eval_cli_with_our_model(ckpt, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    env.pop("HARNESS_ONLINE", None)
    proc = subprocess.run(
        # the project's tasks need no --include_path
        [sys.executable, "-m", "harness.integrations.lm_eval.cli", "--model", "harness",
         "--model_args", f"pretrained={ckpt}", "--tasks", "harness_toy_mc", "--limit", "3",
         "--device", "cpu", "--output_path", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = list(out.rglob("results_*.json"))
    assert results, proc.stdout[-2000:]
    data = json.loads(results[0].read_text())
    assert 0.0 <= data["results"]["harness_toy_mc"]["acc,none"] <= 1.0
