"""Evaluation: rank mode equals a naive log-likelihood computation, NoPrompt is the bare
backbone, generate mode counts invalid texts as wrong, both backbone kinds run."""

from __future__ import annotations

import pytest
import torch

import softprompt
from softprompt.evaluate import NoPrompt, evaluate, generate_texts, rank_predictions
from softprompt.tasks import Example, get_task
from conftest import tiny_llama, tiny_t5
from helpers import tiny_tokenizer

TASK = get_task("sst2", label_words="names")  # label words: negative, positive
TEXTS = ["great fun", "a very dull plot", "the acting was awful", "really good film", "boring and bad",
         "not very good", "the movie is fun", "dull"]
EXAMPLES = [Example(f"sentence : {t}", TASK.label_words[i % 2], i % 2, TASK.label_words) for i, t in enumerate(TEXTS)]


def naive_choice_logprob(backbone, tokenizer, text: str, choice: str) -> float:
    """log p(choice | text) by a plain forward over the concatenated ids, no batching."""
    ctx = tokenizer(text, add_special_tokens=False)["input_ids"]
    ans = tokenizer(choice, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([ctx + ans])
    with torch.no_grad():
        logprobs = torch.log_softmax(backbone(input_ids=ids).logits[0].float(), -1)
    return sum(logprobs[len(ctx) - 1 + k, a].item() for k, a in enumerate(ans))


def test_rank_mode_no_prompt_matches_naive_loglikelihood():
    backbone, tok = tiny_llama(), tiny_tokenizer()
    naive = []
    for e in EXAMPLES:
        scores = [naive_choice_logprob(backbone, tok, e.input_text, c) for c in e.choices]
        naive.append(max(range(len(scores)), key=scores.__getitem__))
    predictions = rank_predictions(NoPrompt(backbone), tok, TASK, EXAMPLES, batch_size=3)
    assert predictions == naive
    result = evaluate(NoPrompt(backbone), tok, TASK, EXAMPLES, mode="rank", batch_size=3)
    expected = sum(p == e.label for p, e in zip(naive, EXAMPLES)) / len(EXAMPLES)
    assert result == {"accuracy": pytest.approx(expected), "invalid": 0, "n": len(EXAMPLES)}


def test_rank_mode_with_prompt_matches_full_forward():
    tok = tiny_tokenizer(bos=True)
    model = softprompt.attach(tiny_llama(), "prompt", length=4, seed=1)
    naive = []
    for e in EXAMPLES:
        ctx = [1] + tok(e.input_text, add_special_tokens=False)["input_ids"]
        scores = []
        for c in e.choices:
            ans = tok(c, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([ctx + ans])
            with torch.no_grad():
                logits = model(ids, torch.ones_like(ids)).logits[0]  # [T, V], text positions
            lp = torch.log_softmax(logits.float(), -1)
            scores.append(sum(lp[len(ctx) - 1 + k, a].item() for k, a in enumerate(ans)))
        naive.append(max(range(2), key=scores.__getitem__))
    assert rank_predictions(model, tok, TASK, EXAMPLES, batch_size=4) == naive


def test_generate_mode_counts_invalid_as_wrong():
    backbone, tok = tiny_llama(), tiny_tokenizer()
    texts = generate_texts(NoPrompt(backbone), tok, EXAMPLES, batch_size=3, max_new_tokens=2)
    # the bare backbone's own greedy continuation of one row, unbatched
    ids = torch.tensor([tok(EXAMPLES[0].input_text, add_special_tokens=False)["input_ids"]])
    direct = backbone.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False, pad_token_id=0, eos_token_id=2)
    new = direct[0, ids.shape[1]:].tolist()
    new = new[: new.index(2)] if 2 in new else new
    assert texts[0] == tok.decode(new, skip_special_tokens=True)
    result = evaluate(NoPrompt(backbone), tok, TASK, EXAMPLES, mode="generate", max_new_tokens=2)
    parsed = [TASK.parse(t) for t in texts]
    assert result["invalid"] == sum(p is None for p in parsed)
    correct = sum(p == e.label for p, e in zip(parsed, EXAMPLES))
    assert result["accuracy"] == pytest.approx(correct / len(EXAMPLES))
    assert result["n"] == len(EXAMPLES)


def test_generate_parses_a_label_word():
    class Echo(NoPrompt):
        """Always generates 'positive' then EOS."""

        def generate(self, input_ids, attention_mask, **kwargs):
            return torch.tensor([[tok.convert_tokens_to_ids("positive"), 2, 0]] * input_ids.shape[0])

    tok = tiny_tokenizer()
    result = evaluate(Echo(tiny_llama()), tok, TASK, EXAMPLES, mode="generate")
    assert result == {"accuracy": 0.5, "invalid": 0, "n": 8}


def test_encoder_decoder_both_modes():
    tok = tiny_tokenizer(eos_suffix=True)
    model = softprompt.attach(tiny_t5(), "prompt", length=3)
    for mode in ("rank", "generate"):
        result = evaluate(model, tok, TASK, EXAMPLES, mode=mode, max_new_tokens=2)
        assert 0.0 <= result["accuracy"] <= 1.0 and result["n"] == 8
    zero = evaluate(NoPrompt(model.backbone), tok, TASK, EXAMPLES, mode="rank")
    assert zero["invalid"] == 0


def test_bad_mode_and_empty_examples():
    tok = tiny_tokenizer()
    with pytest.raises(ValueError, match="eval mode"):
        evaluate(NoPrompt(tiny_llama()), tok, TASK, EXAMPLES, mode="beam")
    with pytest.raises(ValueError, match="no examples"):
        evaluate(NoPrompt(tiny_llama()), tok, TASK, [], mode="rank")
