"""Scoring choices: one forward per example when every choice is one token, equal to scoring
each choice as its own row; the prompt's keys and values computed once per evaluation; the
class objective is the cross-entropy over exactly those scores."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import softprompt
from softprompt.batching import ChoiceSet, encode_choice_set
from softprompt.evaluate import NoPrompt, rank_predictions
from softprompt.tasks import Example, get_task
from conftest import tiny_gpt2, tiny_llama, tiny_t5
from helpers import tiny_tokenizer

TASK = get_task("sst2", label_words="names")  # negative, positive: one token each here
TEXTS = ["great fun", "a very dull plot", "the acting was awful", "really good film", "boring and bad",
         "not very good", "the movie is fun", "dull"]
EXAMPLES = [Example(f"sentence : {t}", TASK.label_words[i % 2], i % 2, TASK.label_words) for i, t in enumerate(TEXTS)]
# choices of several tokens (and different counts per example): one row per choice
MULTI = [Example(f"sentence : {t}", "", 0, ("very good", "bad", "not good")[: 2 + i % 2]) for i, t in enumerate(TEXTS)]
BUILDERS = {"llama": (tiny_llama, dict(bos=True)), "gpt2": (tiny_gpt2, dict()), "t5": (tiny_t5, dict(eos_suffix=True))}


def as_rows(choices: ChoiceSet) -> ChoiceSet:
    """The same rows scored one row per choice (the general path)."""
    return ChoiceSet(choices.rows, choices.groups, None)


def kind_of(backbone) -> str:
    return "encoder-decoder" if backbone.config.is_encoder_decoder else "decoder-only"


@pytest.mark.parametrize("name", list(BUILDERS))
@pytest.mark.parametrize("method", softprompt.METHODS)
@pytest.mark.parametrize("padding", ["left", "right"])
def test_one_forward_per_example_equals_one_row_per_choice(name, method, padding):
    build, tok_options = BUILDERS[name]
    backbone, tok = build(), tiny_tokenizer(**tok_options)
    options = {"max_length": 16} if method == "dept" else {}
    model = softprompt.attach(backbone, method, length=3, seed=1, **options).eval()
    choices = encode_choice_set(EXAMPLES, tok, kind_of(backbone), 64, default_choices=TASK.label_words)
    assert choices.single_token and len(choices.tokens[0]) == 2
    index = list(range(len(EXAMPLES)))
    with torch.no_grad():
        fast = model.choice_scores(**choices.batch(index, 0, padding))
        slow = model.choice_scores(**as_rows(choices).batch(index, 0, padding))
    assert fast.shape == (len(EXAMPLES), 2)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_multi_token_choices_pad_with_minus_inf_and_match_score():
    backbone, tok = tiny_llama(), tiny_tokenizer(bos=True)
    model = softprompt.attach(backbone, "prompt", length=2, seed=0).eval()
    choices = encode_choice_set(MULTI, tok, "decoder-only", 64)
    assert not choices.single_token
    batch = choices.batch([0, 1], 0)
    with torch.no_grad():
        scores = model.choice_scores(**batch)
        rows = model.score(batch["input_ids"], batch["attention_mask"], batch["labels"])
    assert scores[0, 2] == float("-inf") and torch.isfinite(scores[1]).all()
    assert torch.equal(scores[0, :2], rows[:2]) and torch.equal(scores[1], rows[2:5])


def test_rank_evaluation_runs_one_forward_per_example_and_the_prompt_once(monkeypatch):
    backbone, tok = tiny_llama(), tiny_tokenizer(bos=True)
    model = softprompt.attach(backbone, "ulpt", length=4, rank=2, seed=0).eval()
    assert model.join.use_shared(model.prompt_embeddings())  # the first use's probe, not counted below
    calls = []
    body = model.join.body
    original = body.forward

    def counting(*args, **kwargs):
        calls.append(kwargs["inputs_embeds"].shape[:2])
        return original(*args, **kwargs)

    monkeypatch.setattr(body, "forward", counting)
    reference = rank_predictions(model, tok, TASK, EXAMPLES, batch_size=64)  # 1 batch
    predictions = rank_predictions(model, tok, TASK, EXAMPLES, batch_size=3)  # 3 batches
    assert predictions == reference
    prefix_runs = [shape for shape in calls if tuple(shape) == (1, 4)]
    text_rows = sum(shape[0] for shape in calls if tuple(shape) != (1, 4))
    # the prompt's keys and values: once for both evaluations (kept across batches and calls)
    assert len(prefix_runs) == 1
    assert text_rows == 2 * len(EXAMPLES)  # one row per example, not one per label word
    # a changed prompt is never met with the kept keys and values: the next call recomputes them
    with torch.no_grad():
        model.prompt.shift.add_(1.0)
    calls.clear()
    changed = rank_predictions(model, tok, TASK, EXAMPLES, batch_size=3)
    assert len([s for s in calls if tuple(s) == (1, 4)]) == 1
    fresh = softprompt.attach(tiny_llama(), "ulpt", length=4, rank=2, seed=0).eval()
    with torch.no_grad():
        fresh.prompt.shift.add_(1.0)
    assert changed == rank_predictions(fresh, tok, TASK, EXAMPLES, batch_size=3)


def test_frozen_prompt_gives_the_same_scores_as_recomputing():
    backbone, tok = tiny_llama(), tiny_tokenizer(bos=True)
    model = softprompt.attach(backbone, "dpt", length=3, bottleneck=2, seed=0).eval()
    choices = encode_choice_set(EXAMPLES, tok, "decoder-only", 64, default_choices=TASK.label_words)
    with torch.no_grad():
        plain = [model.choice_scores(**choices.batch([i, i + 1], 0)) for i in (0, 2, 4)]
        with model.frozen_prompt():
            frozen = [model.choice_scores(**choices.batch([i, i + 1], 0)) for i in (0, 2, 4)]
    for a, b in zip(plain, frozen):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_class_objective_is_cross_entropy_over_the_choice_scores_and_trains():
    backbone, tok = tiny_llama(), tiny_tokenizer(bos=True)
    model = softprompt.attach(backbone, "prompt", length=3, seed=0)
    choices = encode_choice_set(EXAMPLES, tok, "decoder-only", 64, default_choices=TASK.label_words)
    gold = torch.tensor([e.label for e in EXAMPLES])
    batch = {**choices.batch(list(range(8)), 0), "choice_labels": gold}
    out = model(**batch)
    with torch.no_grad():
        by_hand = F.cross_entropy(model.choice_scores(**choices.batch(list(range(8)), 0)), gold)
    torch.testing.assert_close(out.loss.detach(), by_hand)
    out.loss.backward()
    assert model.prompt.embedding.grad is not None and model.prompt.embedding.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())


def test_no_prompt_scores_the_bare_backbone():
    backbone, tok = tiny_llama(), tiny_tokenizer(bos=True)
    choices = encode_choice_set(EXAMPLES[:2], tok, "decoder-only", 64, default_choices=TASK.label_words)
    batch = choices.batch([0, 1], 0)
    with torch.no_grad():
        scores = NoPrompt(backbone).choice_scores(**batch)
        logits = backbone(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    last = batch["attention_mask"].sum(1) - 2  # the position before the label token
    expected = torch.log_softmax(logits[torch.arange(2), last].float(), -1).gather(1, batch["choice_tokens"])
    torch.testing.assert_close(scores, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("padding", ["left", "right"])
def test_no_prompt_fast_path_equals_the_plain_model(padding):
    """Zero-shot scoring runs the head only where labels are, like the prompted path, and
    equals the plain model's log-likelihood (GPT-2: absolute positions; Llama: rotary)."""
    for build, options in ((tiny_llama, dict(bos=True)), (tiny_gpt2, dict())):
        backbone, tok = build(), tiny_tokenizer(**options)
        choices = encode_choice_set(MULTI, tok, "decoder-only", 64)
        batch = choices.batch(list(range(len(MULTI))), 0, padding)
        with torch.no_grad():
            fast = NoPrompt(backbone).score(batch["input_ids"], batch["attention_mask"], batch["labels"])
            slow = NoPrompt(backbone).score(batch["input_ids"], batch["attention_mask"], batch["labels"], shared=False)
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)


def test_inits_start_from_what_the_embedding_module_returns():
    """Gemma multiplies its embedding table by sqrt(d) in the module: vocab init copies the
    module's output, and DPT's scaled init matches the embeddings' standard deviation."""
    from transformers import GemmaConfig, GemmaForCausalLM

    torch.manual_seed(0)
    gemma = GemmaForCausalLM(GemmaConfig(vocab_size=128, hidden_size=64, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, head_dim=32)).eval()
    model = softprompt.attach(gemma, "prompt", length=5, seed=3)
    ids = torch.randint(0, 128, (5,), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = gemma.get_input_embeddings()(ids)
    assert torch.equal(model.prompt.embedding.detach(), expected)
    assert not torch.allclose(expected, gemma.get_input_embeddings().weight[ids])  # scaled by sqrt(64)
    with torch.no_grad():
        std = float(gemma.get_input_embeddings()(torch.arange(128)).std())
    dpt = softprompt.attach(gemma, "dpt", length=100, bottleneck=10, init="scaled", seed=0)
    assert abs(float(dpt.prompt_embeddings().std()) - std) < 0.1 * std
    uniform = softprompt.attach(gemma, "dpt", length=100, bottleneck=10, seed=0)
    # the authors' U(-0.5, 0.5) is untouched: entries of A·B have std sqrt(b)/12 whatever the model
    assert uniform.prompt.a.abs().max() <= 0.5 and abs(float(uniform.prompt_embeddings().std()) - 10**0.5 / 12) < 0.03
