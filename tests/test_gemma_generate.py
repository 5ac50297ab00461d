"""Generation on the real Gemma 3 270M (base, float32): softprompt's greedy tokens are transformers'
own ``generate`` on the naive concatenation, built here by hand (``[pads, sink tokens, prompt,
text]`` embeddings, the text embedded by the backbone's embedding module, √d included, and left
padded as Gemma's tokenizer pads): for a bank mixing every method row by row, and for a prompt
exported with ``export_embeds`` (``softprompt export --to embeds``) and read back by the serving
recipe, with ``sink`` none and bos. Slow; skipped when the model is not installed."""

from __future__ import annotations

import json

import pytest
import torch

import softprompt
from helpers import SMALL_PROMPTS, left_pad, naive_row, off_zero, own_text, tokenized

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("gemma3_as_found")]

GREEDY = dict(max_new_tokens=8, do_sample=False, pad_token_id=0)
TEXTS = ["The capital of France is", "Once upon a time, there was a", "1, 2, 3, 4,", "The movie was",
         "Q: What is the opposite of hot?\nA:", "My favourite colour is"]


def test_a_bank_of_every_method_generates_the_naive_concatenation_s_tokens(gemma3):
    """Six rows of different lengths, each read after another method's prompt (lengths 4 to 8:
    spare columns for the shorter ones; DePT's update on its row only): the tokens of
    ``backbone.generate`` on the rows built by hand."""
    backbone, tok = gemma3
    models = {m: off_zero(softprompt.attach(backbone, m, tokenizer=tok, seed=i, **SMALL_PROMPTS[m]), seed=10 + i)
              for i, m in enumerate(softprompt.METHODS)}
    bank = softprompt.PromptBank(backbone, models).eval()
    names = ["dept", "ulpt", "prompt", "rank_probe", "residual", "dpt"]
    ids, mask, _, rows = tokenized(tok, TEXTS)
    with torch.no_grad():
        ours = bank.generate(ids, mask, prompt=names, **GREEDY)
        assert bank.join.prefix_runs == 0  # under a sliding window each row runs whole, [spare, pads, prompt, text]
        joined = [naive_row(backbone, models[n].prompt_embeddings(), r, own_text(models[n].prompt)) for n, r in zip(names, rows)]
        embeds, full_mask = left_pad(joined)
        theirs = backbone.generate(inputs_embeds=embeds, attention_mask=full_mask, **GREEDY)
    print("\n  bank:", [tok.decode(t) for t in ours])
    assert ours.shape == (6, 8) and len({tuple(t) for t in ours.tolist()}) > 1
    assert torch.equal(ours, theirs)


@pytest.mark.parametrize("sink", ["none", "bos"])
def test_exported_embeds_generate_softprompt_s_tokens(gemma3, sink, tmp_path):
    """``export_embeds`` writes the prompt and the tokens read before it (``[]``, or Gemma's
    ``<bos>`` for ``sink="bos"``); the serving recipe's rows (``serving.generate_inputs``: sink
    tokens, prompt, then the text as training tokenizes it, its own BOS included) are the rows
    built by hand, and transformers' ``generate`` on them gives ``SoftPromptModel.generate``'s
    tokens."""
    from softprompt.io import read_embeds
    from softprompt.serving import generate_inputs, read_prompt, token_ids

    backbone, tok = gemma3
    model = softprompt.attach(backbone, "ulpt", tokenizer=tok, seed=5, length=8, rank=2, init="scaled", sink=sink).eval()
    model.save(tmp_path / "p")
    softprompt.export_embeds(tmp_path / "p", tmp_path / "p.safetensors")
    prompt, meta = read_embeds(tmp_path / "p.safetensors")
    sink_ids = json.loads(meta["sink_token_ids"])
    assert sink_ids == ([] if sink == "none" else [tok.bos_token_id])
    assert torch.equal(prompt, model.prompt_embeddings().detach())
    texts = TEXTS[:3]
    ids, mask, _, rows = tokenized(tok, texts)
    assert token_ids(tok, texts) == rows  # the text keeps the tokenizer's BOS, after the prompt
    with torch.no_grad():
        ours = model.generate(ids, mask, **GREEDY)
        ahead = torch.cat([backbone.get_input_embeddings()(torch.tensor(sink_ids, dtype=torch.long)), prompt])
        embeds, full_mask = left_pad([naive_row(backbone, ahead, r) for r in rows])
        served, served_mask = generate_inputs(read_prompt(tmp_path / "p.safetensors"), backbone, tok, texts)
        assert torch.equal(served, embeds) and torch.equal(served_mask, full_mask)
        theirs = backbone.generate(inputs_embeds=embeds, attention_mask=full_mask, **GREEDY)
    print(f"\n  sink={sink}:", [tok.decode(t) for t in ours])
    assert ours.shape == (3, 8)
    assert torch.equal(ours, theirs)
