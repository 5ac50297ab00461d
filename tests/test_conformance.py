"""One suite, every registered method, both backbone kinds (tiny T5 and tiny Llama)."""

from __future__ import annotations

import pytest
import torch

import softprompt
from conftest import BUILDERS, batch_for

KINDS = ["llama", "t5"]


def snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", softprompt.METHODS)
def test_method_on_backbone(method, kind, tmp_path):
    backbone = BUILDERS[kind]()
    model = softprompt.attach(backbone, method=method, length=4, seed=1)
    d = backbone.get_input_embeddings().weight.shape[1]

    # the count is the formula
    assert model.num_trainable() == model.config.num_parameters(d)
    assert model.prompt_embeddings().shape == (4, d)

    before_backbone = snapshot(backbone)
    before_prompt = snapshot(model.prompt)
    ids, mask, labels = batch_for(backbone)

    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    out = model(input_ids=ids, attention_mask=mask, labels=labels, return_logits=False)
    assert torch.isfinite(out.loss)
    out.loss.backward()

    # only prompt parameters receive gradients
    for name, p in backbone.named_parameters():
        assert not p.requires_grad and p.grad is None, name
    grads = {n: p.grad for n, p in model.prompt.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert any(g.abs().sum() > 0 for g in grads.values())
    opt.step()

    # the prompt changed, the backbone is bit-identical
    after_prompt = snapshot(model.prompt)
    assert any(not torch.equal(before_prompt[k], after_prompt[k]) for k in after_prompt)
    for k, v in snapshot(backbone).items():
        assert torch.equal(before_backbone[k], v), k

    # save -> load reproduces the outputs exactly
    model.eval()
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask, labels=labels).logits
    model.save(tmp_path / "p")
    # the prompt tensors, their record and the model card (issue 32: every saved prompt folder has one)
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["README.md", "prompt.safetensors", "prompt_config.json"]
    loaded = softprompt.load(BUILDERS[kind](), tmp_path / "p")
    assert loaded.method == method and loaded.config == model.config
    for k, v in snapshot(model.prompt).items():
        assert torch.equal(snapshot(loaded.prompt)[k], v), k
    with torch.no_grad():
        again = loaded(input_ids=ids, attention_mask=mask, labels=labels).logits
    assert torch.equal(expected, again)


@pytest.mark.parametrize("kind", KINDS)
def test_attach_freezes_backbone(kind):
    backbone = BUILDERS[kind]()
    model = softprompt.attach(backbone, method="dpt", length=3)
    assert all(not p.requires_grad for p in backbone.parameters())
    assert {id(p) for p in model.trainable_parameters()} == {id(p) for p in model.parameters() if p.requires_grad}
