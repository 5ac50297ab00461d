"""The output head runs only where labels are, on every path the CLI uses (issue 33, item 3).

Gemma 3 270M's head (262,144 tokens, tied) is 63% of its parameters; at every position it costs
about three times the rest of the forward. A forward hook on ``get_output_embeddings()`` counts
the positions (rows of the flattened input) of each call; every path must compute exactly the
labeled positions N, never B × T. Where full logits are computed anyway, one line is logged.

The audit (B rows, T text tokens, n prompt positions, L decoder targets, N labeled positions):

| path | reaches | where the head runs | positions |
|---|---|---|---|
| train/demo/sweep trial, ``objective: lm`` | ``model(**batch, return_logits=False)`` -> ``join.forward`` -> ``join.labeled_logits`` | shared/packed: ``DecoderOnlyJoin._labeled_logits`` -> ``_logits``; naive (gradient checkpointing, past a sliding window, probe failed): the model's own forward, head input cut by ``OutputHead.only`` | N (naive was B·(n+T)) |
| train, ``objective: class`` | ``forward(choice_*)`` -> ``choice_scores`` -> ``labeled_logits`` / ``score`` | as above | N: one per example for one-token label words |
| eval/predict/demo/sweep ``rank``, zero-shot ``NoPrompt``, ``PromptBank`` | ``evaluate.rank_choices`` -> ``choice_scores`` | as above | N (naive was B·(n+T)) |
| eval/predict ``generate`` (decoder-only) | ``join.generate`` -> ``backbone.generate`` | the model's forward, ``logits_to_keep=1`` (transformers sets it) | B per step (logged if the forward takes no ``logits_to_keep``) |
| encoder-decoder: loss, ``score``, ``choice_scores`` | ``EncoderDecoderJoin.labeled_logits`` | the model's forward on shifted targets, head cut by ``OutputHead.only`` | N targets (was B·L) |
| encoder-decoder ``generate`` | ``backbone.generate`` | the decoder, one new token a step | B per step |
| ``model(...)`` with ``return_logits=True`` (the default), harness ``_model_call`` | ``join.forward`` | every text position, as asked; one INFO line | B·T |
| a decoder-only join's first use (the probe of its shared path) | ``DecoderOnlyJoin._probe`` -> ``labeled_logits`` naive, shared, packed | as above | the probe's 7 labeled positions, each way (its naive reference was 2·(2+4)) |
| a model that applies its head other than through ``get_output_embeddings()`` | ``OutputHead.only`` falls back | every position, gathered; one WARNING line | B·(n+T) |
"""

from __future__ import annotations

import logging
from contextlib import contextmanager

import pytest
import torch

import softprompt
from softprompt.backbones import enable_checkpointing
from softprompt.config import TrainConfig
from softprompt.evaluate import NoPrompt, evaluate, generate_texts, rank_choices
from softprompt.tasks import Example, get_task
from softprompt.train import train
from conftest import tiny_bart, tiny_gpt2, tiny_llama, tiny_t5
from helpers import tiny_tokenizer, write_sst2

FULL = "computes its output head at every position"  # what every full-logits line says


def tiny_gemma3(window: int = 64):
    """Gemma 3 (text) built tiny: tied head, final logit softcapping, a sliding window."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    config = AutoConfig.for_model("gemma3_text", vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256,
                                  pad_token_id=0, bos_token_id=1, eos_token_id=2, final_logit_softcapping=3.0, sliding_window=window)
    return AutoModelForCausalLM.from_config(config).eval()


DECODERS = {"llama": tiny_llama, "gpt2": tiny_gpt2, "gemma3": tiny_gemma3}


@contextmanager
def head_rows(backbone):
    """Yields a list: for each call of the output head, how many positions it computed."""
    calls: list[int] = []
    head = backbone.get_output_embeddings()
    handle = head.register_forward_hook(lambda module, args, out: calls.append(args[0].reshape(-1, args[0].shape[-1]).shape[0]))
    try:
        yield calls
    finally:
        handle.remove()


def suffix_batch(B: int = 3, T: int = 7, k: int = 2, padding: str = "left", seed: int = 0):
    """``ids, mask [B, T]`` (rows of T, T-1, T-2 real tokens) and ``labels`` on each row's last
    ``k`` real tokens, as rank scoring and the LM objective label the target: N = B·k."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 128, (B, T), generator=g)
    lengths = torch.tensor([T - i % 3 for i in range(B)]).unsqueeze(1)
    pos = torch.arange(T).unsqueeze(0)
    mask = pos < lengths if padding == "right" else pos >= T - lengths
    end = lengths if padding == "right" else torch.full_like(lengths, T)
    labeled = (pos >= end - k) & (pos < end)
    ids = ids.masked_fill(~mask, 0)
    return ids, mask.long(), ids.masked_fill(~labeled, -100)


def one_each(labels: torch.Tensor) -> torch.Tensor:
    """Labels kept at each row's last labeled position only (choice_tokens' layout)."""
    last = torch.where(labels != -100, torch.arange(labels.shape[1]), -1).argmax(dim=1)
    keep = torch.zeros_like(labels, dtype=torch.bool).scatter(1, last.unsqueeze(1), True)
    return labels.masked_fill(~keep, -100)


def prompted(backbone, which: str):
    """``which``: "prompt" (a SoftPromptModel), "none" (NoPrompt) or "bank" (two prompts)."""
    if which == "none":
        return NoPrompt(backbone)
    if which == "bank":
        return softprompt.PromptBank(backbone, {"a": softprompt.attach(backbone, "prompt", length=2, seed=0, init="normal"),
                                               "b": softprompt.attach(backbone, "prompt", length=4, seed=1, init="normal")})
    return softprompt.attach(backbone, "prompt", length=3, seed=0, init="normal")


def names(which: str, B: int) -> dict:
    return {"prompt": ["b", "a", "b"][:B]} if which == "bank" else {}


def settle(model, which: str = "prompt"):
    """A decoder-only join's first use probes its shared path on a few positions: done here,
    before anything is counted."""
    ids, mask, labels = suffix_batch()
    with torch.no_grad():
        model.score(ids, mask, labels, **names(which, 3))


@pytest.fixture
def quiet(caplog):
    """Fails the test if anything logs a full-logits line."""
    caplog.set_level(logging.DEBUG, logger="softprompt")
    yield caplog
    assert not [r.getMessage() for r in caplog.records if FULL in r.getMessage()]


# -- decoder-only: loss, scores, choices, on the shared and the naive path ------------------


@pytest.mark.parametrize("which", ["prompt", "none", "bank"])
@pytest.mark.parametrize("path", ["shared", "naive"])
@pytest.mark.parametrize("arch", list(DECODERS))
def test_decoder_only_head_runs_at_labeled_positions_only(arch, path, which, quiet):
    backbone = DECODERS[arch]()
    model = prompted(backbone, which).eval()
    if path == "naive":
        model.join.can_share = False  # as for a body that takes no cache (and past a window, checkpointing: below)
    ids, mask, labels = suffix_batch()
    N, B = int((labels != -100).sum()), ids.shape[0]
    assert N == 6 and ids.numel() == 21
    kw = names(which, B)
    with torch.no_grad():
        reference = model(ids, mask, labels, **kw).loss  # the model's own loss over full logits (logged: asked for)
        model.score(ids, mask, labels, **kw)  # the first call probes the shared path: not counted
    quiet.clear()
    assert model.join.use_shared(model._inputs(ids, mask, kw.get("prompt"))[0], ids.shape[1]) == (path == "shared")
    with head_rows(backbone) as calls:
        loss = model(ids, mask, labels, return_logits=False, **kw).loss
    assert calls == [N]
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
    if which == "prompt":  # the training step: the gradient flows through the selected rows
        loss.backward()
        assert all(p.grad is not None for p in model.trainable_parameters())
    with torch.no_grad(), head_rows(backbone) as calls:
        model.score(ids, mask, labels, **kw)
        rows = torch.arange(B).unsqueeze(1)
        model.choice_scores(ids, mask, labels, choice_rows=rows, **kw)
        model.choice_scores(ids, mask, one_each(labels), choice_tokens=torch.tensor([[5, 6]] * B), **kw)
    assert calls == [N, N, B]


def test_gradient_checkpointing_step_runs_the_head_at_labels_only(quiet):
    """Training with gradient checkpointing takes the naive path: its head too runs at N rows."""
    backbone = tiny_llama()
    model = softprompt.attach(backbone, "prompt", length=3, seed=0, init="normal")
    enable_checkpointing(backbone)
    model.train()
    ids, mask, labels = suffix_batch(padding="right")
    assert not model.join.use_shared(model.prompt_embeddings(), ids.shape[1])
    with head_rows(backbone) as calls:
        model(ids, mask, labels, return_logits=False).loss.backward()
    assert calls == [int((labels != -100).sum())]
    assert all(p.grad is not None for p in model.trainable_parameters())


def test_past_the_sliding_window_the_naive_path_runs_the_head_at_labels_only(quiet):
    """Gemma 3's sliding window: prompt and text longer than it fall back to the naive layout."""
    model = softprompt.attach(tiny_gemma3(window=4), "prompt", length=3, seed=0, init="normal").eval()
    ids, mask, labels = suffix_batch()
    assert not model.join.use_shared(model.prompt_embeddings(), ids.shape[1])
    with torch.no_grad(), head_rows(model.backbone) as calls:
        model.score(ids, mask, labels)
        model(ids, mask, labels, return_logits=False)
    assert calls == [6, 6]


# -- encoder-decoder: the decoder targets are the labels --------------------------------


@pytest.mark.parametrize("which", ["prompt", "none", "bank"])
@pytest.mark.parametrize("build", [tiny_t5, tiny_bart], ids=["t5", "bart"])
def test_encoder_decoder_head_runs_at_the_targets_only(build, which, quiet):
    backbone = build()
    model = prompted(backbone, which).eval()
    ids, mask, _ = suffix_batch()
    targets = torch.tensor([[5, 6, 2], [7, 2, -100], [8, -100, -100]])  # padded to the longest: 6 of 9
    kw = names(which, 3)
    with torch.no_grad():
        reference = model(ids, mask, targets, **kw).loss  # the model's own loss (asked for the logits)
    quiet.clear()
    with head_rows(backbone) as calls:
        loss = model(ids, mask, targets, return_logits=False, **kw).loss
        with torch.no_grad():
            model.score(ids, mask, targets, **kw)
            model.choice_scores(ids, mask, targets[:, :1], choice_tokens=torch.tensor([[5, 6]] * 3), **kw)
    assert calls == [6, 6, 3]
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)


# -- generation: the last position only -------------------------------------------------


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("build", [tiny_llama, tiny_gemma3, tiny_t5], ids=["llama", "gemma3", "t5"])
def test_generation_runs_the_head_at_the_last_position(build, use_cache, caplog):
    """Each step, the first included (prompt and input, or the text after the kept prompt),
    computes B positions: transformers passes ``logits_to_keep=1``. T5's forward takes none:
    with the cache each step is one decoder position; without it (never the CLI's way) every
    step recomputes them all, and says so."""
    caplog.set_level(logging.DEBUG, logger="softprompt")
    model = softprompt.attach(build(), "prompt", length=3, seed=0, init="normal").eval()
    ids, mask, _ = suffix_batch()
    settle(model)
    with head_rows(model.backbone) as calls:
        new = model.generate(ids, mask, max_new_tokens=3, do_sample=False, use_cache=use_cache, min_new_tokens=3)
    recomputed = build is tiny_t5 and not use_cache
    assert new.shape[0] == 3 and calls == ([3, 6, 9] if recomputed else [3, 3, 3])
    lines = [r.getMessage() for r in caplog.records if FULL in r.getMessage()]
    assert len(lines) == recomputed and all("logits_to_keep" in line for line in lines)


# -- the CLI's paths end to end: eval, predict (a bank), zero-shot, train -----------------

TASK = get_task("sst2", label_words="names")  # negative, positive: one token each
TEXTS = ["great fun", "a very dull plot", "the acting was awful", "really good film", "boring and bad", "dull", "good acting"]
EXAMPLES = [Example(f"sentence : {t}", TASK.label_words[i % 2], i % 2, TASK.label_words) for i, t in enumerate(TEXTS)]
WORDY = [Example(e.input_text, "very good", 0, ("very good", "bad", "not very good")) for e in EXAMPLES]  # rows per choice


def spy(model, calls: list):
    """Record, for each ``choice_scores`` call, ``(labeled positions, head rows)``."""
    inner = model.choice_scores

    def choice_scores(input_ids, attention_mask, labels, *args, **kwargs):
        with head_rows(model.backbone) as rows:
            out = inner(input_ids, attention_mask, labels, *args, **kwargs)
        calls.append((int((labels != -100).sum()), rows))
        return out

    model.choice_scores = choice_scores


# an encoder-decoder has one path (the shared one)
@pytest.mark.parametrize("arch, path", [("llama", "shared"), ("llama", "naive"), ("t5", "shared")])
@pytest.mark.parametrize("which", ["prompt", "none", "bank"])
def test_rank_evaluation_runs_the_head_at_the_scored_positions(arch, which, path, quiet):
    """``evaluate`` (eval, demo, a trial's validation), the zero-shot baseline and ``predict``'s
    bank: every batch computes exactly its labeled positions, one-token and many-token choices."""
    backbone = tiny_llama() if arch == "llama" else tiny_t5()
    tok = tiny_tokenizer(eos_suffix=arch == "t5")
    model = prompted(backbone, which)
    if path == "naive":
        model.join.can_share = False
    settle(model, which)
    calls: list = []
    spy(model, calls)
    prompts = [["a", "b"][i % 2] for i in range(len(EXAMPLES))] if which == "bank" else None
    rank_choices(model, tok, EXAMPLES, TASK.label_words, batch_size=4, prompts=prompts)
    if arch == "llama":  # one-token label words: one position per example, the label word's
        assert [labeled for labeled, _ in calls] == [4, 3]
    rank_choices(model, tok, WORDY, None, batch_size=4, prompts=prompts)  # a row per choice, each its tokens
    if which == "prompt":
        assert evaluate(model, tok, TASK, EXAMPLES, mode="rank", batch_size=3)["n"] == len(EXAMPLES)
    assert len(calls) > 4 and all(rows == [labeled] for labeled, rows in calls), calls


def test_bank_generation_runs_the_head_at_the_last_position(quiet):
    backbone, tok = tiny_llama(), tiny_tokenizer()
    bank = prompted(backbone, "bank")
    settle(bank, "bank")
    with head_rows(backbone) as calls:
        generate_texts(bank, tok, EXAMPLES[:3], batch_size=3, max_new_tokens=2, prompts=["a", "b", "a"])
    assert calls == [3, 3]


@pytest.mark.parametrize("objective,checkpointing", [("lm", False), ("class", True)])
def test_a_training_run_never_computes_full_logits(tmp_path, objective, checkpointing, quiet):
    """``softprompt train`` (and demo, a sweep's trials): steps, validation, the zero-shot
    baseline and the test split. Every head call is the labeled rows ``[N, d]`` or one
    position per row; nothing logs a full-logits line."""
    backbone, tok = tiny_llama(), tiny_tokenizer()
    shapes: list = []
    backbone.get_output_embeddings().register_forward_hook(lambda module, args, out: shapes.append(tuple(args[0].shape)))
    config = TrainConfig(task="sst2", label_words="names", method="prompt", length=3, data_dir=str(write_sst2(tmp_path / "data")),
                         max_steps=2, batch_size=4, lr=0.1, warmup_steps=0, objective=objective, style="text-to-text", eval_every=2,
                         eval_batch_size=8, log_every=1, zero_shot=True, gradient_checkpointing=checkpointing,
                         output_dir=str(tmp_path / "run"))
    metrics = train(config, backbone, tok)
    assert metrics["steps"] == 2 and metrics["zero_shot"]["n"] == 6
    assert shapes and all(len(s) == 2 or s[1] == 1 for s in shapes), sorted(set(shapes))  # never [B, T > 1, d]


# -- the one line a full-logits path logs -----------------------------------------------


def test_asking_for_the_logits_logs_one_line_and_computes_every_position(caplog):
    caplog.set_level(logging.DEBUG, logger="softprompt")
    model = softprompt.attach(tiny_llama(), "prompt", length=3, seed=0, init="normal").eval()
    ids, mask, labels = suffix_batch()
    with torch.no_grad():
        model.score(ids, mask, labels)  # the probe: not counted, logs nothing
        assert not caplog.records
        with head_rows(model.backbone) as calls:
            model(ids, mask)
            model(ids, mask)
    assert calls == [21, 21]  # B·T, as asked
    lines = [r for r in caplog.records if FULL in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO and "return_logits=True" in lines[0].getMessage()


def test_a_head_the_hook_cannot_reach_falls_back_saying_so(caplog, monkeypatch):
    """A model that does not apply its head through ``get_output_embeddings()``: its full
    logits are gathered (same scores), and one warning names the reason."""
    caplog.set_level(logging.DEBUG, logger="softprompt")
    backbone = tiny_llama()
    model = softprompt.attach(backbone, "prompt", length=3, seed=0, init="normal").eval()
    model.join.can_share = False
    ids, mask, labels = suffix_batch()
    with torch.no_grad():
        expected = model.score(ids, mask, labels)
        assert not caplog.records
        monkeypatch.setattr(model.join.output_head, "module", torch.nn.Linear(32, 128))  # a head the model never calls
        got = [model.score(ids, mask, labels) for _ in range(2)]
    for scores in got:
        torch.testing.assert_close(scores, expected, rtol=1e-6, atol=1e-6)
    lines = [r for r in caplog.records if FULL in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING and "get_output_embeddings" in lines[0].getMessage()


def test_an_encoder_decoder_without_the_label_shift_falls_back_saying_so(caplog, monkeypatch):
    caplog.set_level(logging.DEBUG, logger="softprompt")
    model = softprompt.attach(tiny_t5(), "prompt", length=3, seed=0, init="normal").eval()
    ids, mask, _ = suffix_batch()
    targets = torch.tensor([[5, 6, 2], [7, 2, -100], [8, -100, -100]])
    with torch.no_grad():
        expected = model.score(ids, mask, targets)
        monkeypatch.setattr(type(model.backbone), "prepare_decoder_input_ids_from_labels", None)
        with head_rows(model.backbone) as calls:
            got = model.score(ids, mask, targets)
    assert calls == [9]  # B·L
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    lines = [r.getMessage() for r in caplog.records if FULL in r.getMessage()]
    assert len(lines) == 1 and "prepare_decoder_input_ids_from_labels" in lines[0]


# -- the real Gemma 3 270M ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("path", ["shared", "naive"])
def test_gemma3_rank_scoring_computes_only_the_labeled_positions(gemma3, path, quiet):
    """Rank scoring on real rows: the 262,144-token head sees exactly the scored positions."""
    backbone, tok = gemma3
    task = get_task("sst2")
    texts = ["a gripping, beautifully acted film", "a dull and lifeless plot", "the best thing I have seen this year",
             "two hours I will never get back"]
    examples = [Example(f"sentence: {t}", task.label_words[i % 2], i % 2, task.label_words) for i, t in enumerate(texts)]
    for model in (NoPrompt(backbone), softprompt.attach(backbone, "prompt", length=4, seed=0, tokenizer=tok)):
        if path == "naive":
            model.join.can_share = False
        settle(model)
        calls: list = []
        spy(model, calls)
        rank_choices(model, tok, examples, task.label_words, batch_size=4)
        assert calls and all(rows == [labeled] for labeled, rows in calls), calls
        assert sum(labeled for labeled, _ in calls) <= 2 * len(examples) * 3  # a few tokens per choice, not the rows
    assert not backbone.training and not any(p.requires_grad for p in backbone.parameters())
