"""Exact on the real Gemma 3 270M (base, float32): every path softprompt takes computes what the
naive concatenation computes: the backbone's own forward on ``[prompt, text]`` embeddings built
here by hand (the text embedded by the backbone's embedding module, √d included; the rows padded
on the right, where plain positions are right, so nothing of softprompt's left-padding layout is
reused), then the loss softprompt trains on (the mean cross-entropy). Within 1e-4 (relative, and
absolute in units of the reference's largest value, as tests/test_architectures.py's ``agree``):
the loss and every trainable parameter's gradient on the packed training path and on the shared
path unpacked; each row's score (and so the loss) on the cached prefix path, its keys and values
kept and reused; a bank mixing every method row by row; inputs past the 512-token sliding window
(the naive path, checked to be the one that ran); the tokenizer's left padding throughout;
``sink="bos"`` after the tokenizer's own BOS.

Each check prints its largest difference and the share of the tolerance it used (``pytest -s``).
The prompts are at their methods' inits (zero-started tensors moved off zero): pushed far off, a
prompt makes float32 itself ill-conditioned (a rank_probe prompt twice the tokens' norm: float32
gradients 1.5e-3 off float64's, on the naive path as on softprompt's). Slow; skipped when the
model is not installed."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch

import softprompt
from helpers import SMALL_PROMPTS, naive_row, off_zero, own_text, tokenized

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("gemma3_as_found")]

TEXTS = ["The movie was great and fun.", "A dull film.", "Question: what is the capital of France? Answer:"]


def assert_agree(what: str, got, want) -> None:
    """``got`` equals ``want`` (a tensor or a list of them) within 1e-4: relative, and absolute
    in units of ``want``'s largest value."""
    pairs = list(zip(got, want, strict=True)) if isinstance(want, (list, tuple)) else [(got, want)]
    worst = used = 0.0
    for x, y in pairs:
        atol = 1e-4 * max(1.0, float(y.abs().max()))
        worst = max(worst, float((x - y).abs().max()))
        used = max(used, float(((x - y).abs() / (atol + 1e-4 * y.abs())).max()))
    print(f"\n  {what}: max |diff| {worst:.2g}, {used:.0%} of the tolerance", end="")
    assert used <= 1, what  # torch.allclose(x, y, rtol=1e-4, atol=atol) for every pair


@contextmanager
def training(model):
    """Train mode within the block; the backbone back in eval mode after it, whatever happens."""
    model.train()
    try:
        yield
    finally:
        model.eval()


def loss_and_grads(model, params, ids, mask, labels, **kwargs):
    """The training step's loss (labeled positions only) and each parameter's gradient."""
    loss = model(ids, mask, labels, return_logits=False, **kwargs).loss
    return loss.detach(), list(torch.autograd.grad(loss, params))


def naive_run(backbone, aheads, rows, adjusts=None, labeled=None, alone=False):
    """The naive concatenation: row ``b`` is ``naive_row(aheads[b] [m_b, d], rows[b])``, the rows
    padded on the right into one batch (positions 0, 1, ... as the model counts them by default;
    ``alone``: each row a batch of its own) through the backbone's own forward, its logits kept
    where a labeled token is predicted (token ``t`` of row ``b`` at column ``m_b + t - 1``: the
    first by the prompt's last row), and the mean cross-entropy over them, the loss softprompt and
    transformers compute (a log-sum-exp's gradient rounds differently in float32, by 2e-4 of the
    largest on this model). ``labeled``: each row's labeled token indices (default: all).
    Returns ``(loss, tokens)``, ``tokens`` each row's labeled tokens' log-probabilities."""
    adjusts = adjusts or [None] * len(rows)
    labeled = labeled or [range(len(r)) for r in rows]
    joined = [naive_row(backbone, ahead, ids, adjust) for ahead, ids, adjust in zip(aheads, rows, adjusts)]
    selected = []
    for group in ([[b] for b in range(len(rows))] if alone else [range(len(rows))]):
        L = max(joined[b].shape[0] for b in group)
        embeds = torch.stack([torch.cat([joined[b], joined[b].new_zeros(L - joined[b].shape[0], joined[b].shape[1])]) for b in group])
        mask = torch.tensor([[1] * joined[b].shape[0] + [0] * (L - joined[b].shape[0]) for b in group])
        picks = [(i, aheads[b].shape[0] + t - 1) for i, b in enumerate(group) for t in labeled[b]]  # (row, column)
        columns = sorted({c for _, c in picks})
        logits = backbone(inputs_embeds=embeds, attention_mask=mask, logits_to_keep=torch.tensor(columns)).logits  # [B, C, V]
        at = {c: i for i, c in enumerate(columns)}
        selected.append(logits[[i for i, _ in picks], [at[c] for _, c in picks]].float())  # [N, V]
    selected = torch.cat(selected)
    targets = torch.tensor([rows[b][t] for b in range(len(rows)) for t in labeled[b]])
    loss = torch.nn.functional.cross_entropy(selected, targets)
    logprobs = -torch.nn.functional.cross_entropy(selected.detach(), targets, reduction="none")
    return loss, list(logprobs.split([len(t) for t in labeled]))


def naive_logprobs(backbone, aheads, rows, adjusts=None):
    """Each row's tokens' log-probabilities on the naive concatenation (``naive_run``)."""
    with torch.no_grad():
        return naive_run(backbone, aheads, rows, adjusts)[1]


def reference(backbone, aheads, rows, params, adjusts=None, labeled=None, alone=False):
    """The naive loss, its gradients, each row's score ``[B]`` and each row's tokens' log-probabilities."""
    with torch.enable_grad():
        loss, tokens = naive_run(backbone, aheads, rows, adjusts, labeled, alone)
        grads = list(torch.autograd.grad(loss, params))
    return loss.detach(), grads, torch.stack([t.sum() for t in tokens]), tokens


def counting(monkeypatch, join, *names):
    """Count calls of the join's ``names`` from now on: ``{name: calls}``."""
    calls = dict.fromkeys(names, 0)
    for name in names:
        original = getattr(join, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(join, name, counted)
    return calls


PATHS = ("_packed_hidden", "_prefix", "_naive_run")  # packed; the prompt's own pass (cached or not); naive


def test_the_facts_these_checks_rely_on(gemma3):
    backbone, tok = gemma3
    config = backbone.config
    assert type(backbone).__name__ == "Gemma3ForCausalLM" and backbone.dtype == torch.float32
    assert config.sliding_window == 512 and config.layer_types.count("sliding_attention") == 15
    assert config.final_logit_softcapping is None and config.hidden_size == 640
    ids, mask, _, rows = tokenized(tok, TEXTS)
    assert tok.padding_side == "left" and (mask[:, 0] == 0).any() and len({len(r) for r in rows}) == 3
    assert all(r[0] == tok.bos_token_id == 2 and r.count(2) == 1 for r in rows)  # the tokenizer adds BOS once
    assert all(ids[b][mask[b].bool()].tolist() == r for b, r in enumerate(rows))
    table = backbone.get_input_embeddings()
    with torch.no_grad():  # the module scales the table by √d: the naive rows are built with it
        assert torch.allclose(table(ids), table.weight[ids] * 640 ** 0.5, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("method", softprompt.METHODS)
def test_every_path_equals_the_naive_concatenation(gemma3, method, monkeypatch):
    backbone, tok = gemma3
    model = off_zero(softprompt.attach(backbone, method, tokenizer=tok, seed=1, **SMALL_PROMPTS[method]), seed=2)
    params = model.trainable_parameters()
    ids, mask, labels, rows = tokenized(tok, TEXTS)
    prompt = model.prompt_embeddings()
    want_loss, want_grads, want_scores, _ = reference(backbone, [prompt] * 3, rows, params, [own_text(model.prompt)] * 3)
    assert model.join.use_shared(prompt, ids.shape[1]) and model.join.packs  # the probe's verdict
    calls = counting(monkeypatch, model.join, *PATHS)

    with training(model):
        packed = loss_and_grads(model, params, ids, mask, labels)  # the training step's default
        assert calls == {"_packed_hidden": 1, "_prefix": 0, "_naive_run": 0}
        monkeypatch.setattr(model.join, "packs", False)  # a model packing cannot run: the prompt's cache, expanded
        unpacked = loss_and_grads(model, params, ids, mask, labels)
        assert calls == {"_packed_hidden": 1, "_prefix": 1, "_naive_run": 0}
    for path, (loss, grads) in (("packed", packed), ("unpacked", unpacked)):
        assert_agree(f"{method} {path} loss", loss, want_loss)
        assert_agree(f"{method} {path} grads", grads, want_grads)

    with torch.no_grad():  # the cached prefix path: the prompt's keys kept under its slot, then reused
        scores = model.score(ids, mask, labels)
        assert calls["_prefix"] == 2 and softprompt.SoftPromptModel.NAME in model.join._kept  # (reuse: the bank's test)
    assert_agree(f"{method} cached scores", scores, want_scores)
    assert_agree(f"{method} cached loss", -scores.sum() / mask.sum(), want_loss)


def test_a_bank_mixing_every_method_equals_each_row_alone(gemma3, monkeypatch):
    """Seven rows, each method's prompt (lengths 4 to 8, so shorter ones get spare columns) on
    one and ULPT's on two: the shared path gives each row what it gives alone (the reference
    runs each row as a batch of its own), the loss and gradients of a training step (each
    distinct prompt run once, with its graph) and, cached, the scores; DePT's update reaches its
    own row only."""
    backbone, tok = gemma3
    models = {m: off_zero(softprompt.attach(backbone, m, tokenizer=tok, seed=i, **SMALL_PROMPTS[m]), seed=10 + i)
              for i, m in enumerate(softprompt.METHODS)}
    bank = softprompt.PromptBank(backbone, models)
    names = ["ulpt", "dept", "prompt", "rank_probe", "ulpt", "dpt", "residual"]
    texts = ["Fine.", "The acting was awful and the plot was thin.", "A great film.", "I liked it a lot.",
             "Boring.", "What a fun ride this was!", "Not bad at all."]
    ids, mask, labels, rows = tokenized(tok, texts)
    params = [p for m in models.values() for p in m.trainable_parameters()]
    aheads = [models[n].prompt_embeddings() for n in names]
    adjusts = [own_text(models[n].prompt) for n in names]
    want_loss, want_grads, want_scores, _ = reference(backbone, aheads, rows, params, adjusts, alone=True)
    assert bank.join.use_shared(aheads[0], ids.shape[1])
    calls = counting(monkeypatch, bank.join, *PATHS)
    with training(bank):
        loss, grads = loss_and_grads(bank, params, ids, mask, labels, prompt=names)
    assert calls == {"_packed_hidden": 0, "_prefix": 6, "_naive_run": 0}  # each distinct prompt once
    assert_agree("bank loss", loss, want_loss)
    assert_agree("bank grads", grads, want_grads)
    with torch.no_grad():
        runs = bank.join.prefix_runs
        first = bank.score(ids, mask, labels, prompt=names)
        again = bank.score(ids, mask, labels, prompt=names)
        assert bank.join.prefix_runs == runs + 6 and set(bank.join._kept) == set(names)  # kept, then reused
    assert_agree("bank cached scores", first, want_scores)
    assert torch.equal(first, again)


def test_inputs_past_the_sliding_window_take_the_naive_path_exactly(gemma3, monkeypatch):
    """A 20-token prompt before a row of about 530 tokens (past the 512-token window by itself)
    and a short row: the shared layout would put the prompt before the short row's pads, so
    softprompt takes the naive path there (and keeps the shared one up to 512 positions); its
    loss and gradient are the naive concatenation's (each row run alone), window included.
    Labeled: the long row's first 8 tokens (read right after the prompt) and last 24 (past the
    window: sliding layers no longer see the prompt), the short row whole."""
    backbone, tok = gemma3
    model = softprompt.attach(backbone, "prompt", tokenizer=tok, seed=3, length=20)
    params = model.trainable_parameters()
    long = " ".join(f"Line {i}: the film was {w}, and the plot went on." for i, w in
                    zip(range(34), ["great", "dull", "fun", "slow", "long", "odd"] * 6))
    ids, mask, _, rows = tokenized(tok, [long, "A short row."])
    T = ids.shape[1]
    assert 512 < T < 560 and len(rows[1]) < 10, T
    labeled = [list(range(8)) + list(range(T - 24, T)), range(len(rows[1]))]
    labels = torch.full_like(ids, -100)
    for b, (row, tokens) in enumerate(zip(rows, labeled)):
        for t in tokens:
            labels[b, T - len(row) + t] = row[t]  # left padded
    prompt = model.prompt_embeddings()
    assert not model.join.use_shared(prompt, T) and model.join.use_shared(prompt, 512 - 20)
    want_loss, want_grads, _, _ = reference(backbone, [prompt] * 2, rows, params, labeled=labeled, alone=True)
    calls = counting(monkeypatch, model.join, *PATHS)
    with training(model):
        loss, grads = loss_and_grads(model, params, ids, mask, labels)
    assert calls == {"_packed_hidden": 0, "_prefix": 0, "_naive_run": 1}
    assert_agree("past the window: loss", loss, want_loss)
    assert_agree("past the window: grads", grads, want_grads)


def test_sink_bos_is_read_before_the_prompt_and_the_text_keeps_its_own(gemma3):
    """``sink="bos"`` puts the model's BOS before the prompt; the text keeps the tokenizer's own
    BOS (docs/serving.md: a row is ``[sink tokens, prompt, text]``, the text tokenized as training
    tokenizes it). So a row reads ``[BOS, prompt, BOS, text]``, one BOS ahead of the prompt: every
    path computes that layout's numbers, and without the sink, or without the text's own BOS,
    the numbers differ."""
    backbone, tok = gemma3
    model = softprompt.attach(backbone, "prompt", tokenizer=tok, seed=4, length=6, sink="bos")
    params = model.trainable_parameters()
    ids, mask, labels, rows = tokenized(tok, TEXTS)
    prompt = model.prompt_embeddings()
    assert prompt.shape[0] == 6  # the sink is not counted in n
    with torch.no_grad():
        bos = backbone.get_input_embeddings()(torch.tensor([tok.bos_token_id]))  # [1, d], √d scaled
    ahead = torch.cat([bos, prompt])
    want_loss, want_grads, want_scores, want = reference(backbone, [ahead] * 3, rows, params)
    assert model.join.use_shared(ahead, ids.shape[1]) and model.join.packs
    with training(model):
        packed = loss_and_grads(model, params, ids, mask, labels)
        naive = loss_and_grads(model, params, ids, mask, labels, shared=False)
        model.join.packs = False  # the prompt's own pass with its graph, its cache expanded
        unpacked = loss_and_grads(model, params, ids, mask, labels)
    with torch.no_grad():
        cached = model.score(ids, mask, labels)
        naive_scores = model.score(ids, mask, labels, shared=False)
    for path, (loss, grads) in (("packed", packed), ("unpacked", unpacked), ("naive", naive)):
        assert_agree(f"sink=bos {path} loss", loss, want_loss)
        assert_agree(f"sink=bos {path} grads", grads, want_grads)
    assert_agree("sink=bos cached scores", cached, want_scores)
    assert_agree("sink=bos naive scores", naive_scores, want_scores)
    with torch.no_grad():  # the other layouts give other numbers: the checks above tell them apart
        no_sink = naive_logprobs(backbone, [prompt] * 3, rows)  # [prompt, BOS, text]
        one_bos = naive_logprobs(backbone, [ahead] * 3, [r[1:] for r in rows])  # [BOS, prompt, text]
    assert all((a - b).abs().max() > 1e-2 for a, b in zip(no_sink, want))
    assert all((a - b[1:]).abs().max() > 1e-2 for a, b in zip(one_bos, want))
