"""The accuracy benchmark scores PEFT by rank through softprompt's own evaluation code: given
softprompt's prompt, ``PeftScorer`` gives softprompt's scores, over single-token label words
(one row per example) and over multi-token choices (a row per choice, COPA's), with PEFT's full
logits and with the logits at the scored positions only. A tiny random Llama, no download."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("peft")

from benchmarks.accuracy_peft import PeftScorer, init_text  # noqa: E402


@pytest.fixture(scope="module")
def pair():
    """``(softprompt model, PeftModel)`` on one tiny backbone, holding the same prompt."""
    from transformers import LlamaConfig, LlamaForCausalLM

    import softprompt
    from benchmarks.common import attach_peft

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    backbone = LlamaForCausalLM(config).eval()
    sp = softprompt.attach(backbone, method="prompt", length=4, seed=0).eval()
    peft = attach_peft(backbone, 4, "CAUSAL_LM").eval()
    with torch.no_grad():
        peft.prompt_encoder["default"].embedding.weight.copy_(sp.prompt_embeddings())
    return sp, peft


def rows(texts_and_targets):
    """Right-padded ``input_ids, attention_mask, labels`` (labels on the target tokens only)."""
    width = max(len(t) + len(c) for t, c in texts_and_targets)
    ids = torch.zeros(len(texts_and_targets), width, dtype=torch.long)
    mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
    for r, (text, target) in enumerate(texts_and_targets):
        k = len(text) + len(target)
        ids[r, :k] = torch.tensor(text + target)
        mask[r, :k] = 1
        labels[r, len(text):k] = torch.tensor(target)
    return ids, mask, labels


@pytest.mark.parametrize("full_logits", [True, False])
def test_multi_token_choices_score_as_softprompt_scores_them(pair, full_logits):
    sp, peft = pair
    # three examples, two choices each of 1-3 tokens, rows of different lengths
    ids, mask, labels = rows([([1, 5, 6, 7], [9, 10]), ([1, 5, 6, 7], [11]),
                              ([1, 8, 8], [12, 13, 14]), ([1, 8, 8], [15, 16]),
                              ([1, 20, 21, 22, 23], [30]), ([1, 20, 21, 22, 23], [31, 32])])
    choice_rows = torch.tensor([[0, 1], [2, 3], [4, 5]])
    with torch.no_grad():
        want = sp.choice_scores(ids, mask, labels, choice_rows=choice_rows)
        got = PeftScorer(peft, 4, full_logits=full_logits).choice_scores(ids, mask, labels, choice_rows=choice_rows)
    assert got.shape == (3, 2)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("full_logits", [True, False])
def test_single_token_label_words_score_as_softprompt_scores_them(pair, full_logits):
    sp, peft = pair
    ids, mask, labels = rows([([1, 5, 6, 7], [40]), ([1, 8], [40]), ([1, 20, 21, 22, 23], [40])])
    tokens = torch.tensor([[40, 41, 42], [40, 41, -1], [40, 41, 42]])  # the second example: two choices
    with torch.no_grad():
        want = sp.choice_scores(ids, mask, labels, choice_tokens=tokens)
        got = PeftScorer(peft, 4, full_logits=full_logits).choice_scores(ids, mask, labels, choice_tokens=tokens)
    assert got[1, 2] == float("-inf")
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_peft_init_text_names_the_label_words_or_the_options():
    from softprompt.tasks import get_task

    assert init_text(get_task("sst2", style="instruction")) == "Answer with negative or positive."
    assert init_text(get_task("copa", style="instruction")) == "Answer with the more plausible option."


def _gemma3_text():
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, head_dim=8, max_position_embeddings=64, sliding_window=4,
                              pad_token_id=0, bos_token_id=1, eos_token_id=2, final_logit_softcapping=30.0)
    return Gemma3ForCausalLM(config)


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        pad_token_id=0, bos_token_id=1, eos_token_id=2))


@pytest.mark.parametrize("build", [_llama, _gemma3_text], ids=["llama", "gemma3_text"])
def test_peft_trains_on_the_loss_and_gradient_of_its_own_forward(build):
    # the benchmark's PEFT training asks for the logits at the labeled positions only; its loss
    # and prompt gradient are those of PeftModel's own forward with labels (full logits), on
    # right-padded rows of different lengths with one- and two-token targets (Gemma's softcap runs)
    from benchmarks.accuracy_peft import labeled_loss
    from benchmarks.common import attach_peft

    torch.manual_seed(0)
    peft = attach_peft(build().float(), 5, "CAUSAL_LM")
    peft.train()  # no dropout in these configs: the two forwards see the same function
    ids, mask, labels = rows([([1, 5, 6, 7, 8, 9], [9, 2]), ([1, 8, 8], [12, 2]), ([1, 20, 21, 22, 23, 24, 25], [30])])
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    weight = peft.prompt_encoder["default"].embedding.weight

    want = peft(**batch).loss
    (want_grad,) = torch.autograd.grad(want, weight)
    got = labeled_loss(peft, batch, 5)
    (got_grad,) = torch.autograd.grad(got, weight)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_grad, want_grad, atol=1e-6, rtol=1e-5)
    assert want_grad.abs().sum() > 0

    with pytest.raises(ValueError, match="first token"):  # what the full forward would score and this one could not
        labeled_loss(peft, {**batch, "labels": torch.where(torch.arange(ids.shape[1]) == 0, ids, labels)}, 5)
