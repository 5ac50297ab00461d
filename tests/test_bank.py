"""PromptBank: many prompts on one frozen backbone. Every row of a mixed batch gives what that
row gives alone (its padding removed) with its own prompt: logits, scores, generation, for every
method, both backbone kinds, prompts of different lengths, left and right padding."""

from __future__ import annotations

import pytest
import torch

import softprompt
from conftest import batch_for, tiny_gpt2, tiny_llama, tiny_t5
from helpers import perturbed

BACKBONES = {"llama": tiny_llama, "gpt2": tiny_gpt2, "t5": tiny_t5}
TOL = 1e-5


def make_bank(backbone, method: str):
    """Three prompts: ``method`` at two lengths and a vanilla prompt of a third length."""
    prompts = {
        "a": perturbed(softprompt.attach(backbone, method, length=3, seed=1), 1),
        "b": perturbed(softprompt.attach(backbone, method, length=6, seed=2), 2),
        "c": perturbed(softprompt.attach(backbone, "prompt", length=4, seed=3), 3),
    }
    return softprompt.PromptBank(backbone, prompts).eval()


NAMES = ["b", "a", "c", "a", "b", "b"]


def alone(bank, name, ids, mask, row):
    """Row ``row`` without its padding, batch 1, on its own prompt's SoftPromptModel."""
    keep = mask[row].bool()
    return bank.model(name).eval(), ids[row][keep][None], torch.ones(1, int(keep.sum()), dtype=mask.dtype)


@pytest.mark.parametrize("padding", ["right", "left"])
@pytest.mark.parametrize("arch", sorted(BACKBONES))
@pytest.mark.parametrize("method", softprompt.METHODS)
def test_each_row_of_a_mixed_batch_equals_the_row_alone(method, arch, padding):
    backbone = BACKBONES[arch]()
    bank = make_bank(backbone, method)
    ids, mask, labels = batch_for(backbone, batch=len(NAMES), length=7, seed=4, padding=padding)
    decoder = not backbone.config.is_encoder_decoder
    paths = [{"shared": True}, {"shared": False}] if decoder else [{}]
    with torch.no_grad():
        for path in paths:
            logits = bank(ids, mask, labels=None if decoder else labels, prompt=NAMES, **path).logits
            scores = bank.score(ids, mask, labels, prompt=NAMES, **path)
            for row, name in enumerate(NAMES):
                model, ids1, mask1 = alone(bank, name, ids, mask, row)
                if decoder:
                    labels1 = ids1
                    got = logits[row][mask[row].bool()]  # the row's real positions
                else:
                    labels1 = labels[row][None]
                    got = logits[row]
                want = model(ids1, mask1, labels=None if decoder else labels1).logits[0]
                assert got.shape == want.shape
                assert (got - want).abs().max().item() <= TOL, (path, row, name)
                want_score = model.score(ids1, mask1, labels1)[0]
                assert abs(scores[row].item() - want_score.item()) <= TOL * max(1.0, abs(want_score.item()))


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_every_method_in_one_batch(arch):
    backbone = BACKBONES[arch]()
    prompts = {m: perturbed(softprompt.attach(backbone, m, length=2 + i, seed=i), i) for i, m in enumerate(softprompt.METHODS)}
    bank = softprompt.PromptBank(backbone, prompts).eval()
    names = list(softprompt.METHODS) + list(softprompt.METHODS)[::-1]
    ids, mask, labels = batch_for(backbone, batch=len(names), length=6, seed=5, padding="left")
    with torch.no_grad():
        scores = bank.score(ids, mask, labels, prompt=names)
        for row, name in enumerate(names):
            model, ids1, mask1 = alone(bank, name, ids, mask, row)
            labels1 = ids1 if not backbone.config.is_encoder_decoder else labels[row][None]
            assert abs(scores[row].item() - model.score(ids1, mask1, labels1)[0].item()) <= TOL * 10


@pytest.mark.parametrize("arch", sorted(BACKBONES))
def test_mixed_generation_equals_each_row_alone(arch):
    backbone = BACKBONES[arch]()
    bank = make_bank(backbone, "dept")
    ids, mask, _ = batch_for(backbone, batch=len(NAMES), length=6, seed=6, padding="left")
    kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=0)
    new = bank.generate(ids, mask, prompt=NAMES, **kw)
    for row, name in enumerate(NAMES):
        model, ids1, mask1 = alone(bank, name, ids, mask, row)
        want = model.generate(ids1, mask1, **kw)[0]
        assert torch.equal(new[row][: len(want)], want)


def test_directories_names_and_errors(tmp_path):
    backbone = tiny_llama()
    sst = perturbed(softprompt.attach(backbone, "ulpt", length=5, rank=2, seed=0), 0)
    rte = perturbed(softprompt.attach(backbone, "dpt", length=3, bottleneck=2, seed=1), 1)
    sst.save(tmp_path / "sst2"), rte.save(tmp_path / "rte")
    bank = softprompt.PromptBank(backbone, {"sst2": tmp_path / "sst2", "rte": str(tmp_path / "rte")}).eval()
    assert bank.names == ["sst2", "rte"] and "rte" in bank and len(bank) == 2
    assert bank.records["sst2"]["method"] == "ulpt"
    ids, mask, labels = batch_for(backbone, batch=3, length=5)
    with torch.no_grad():
        mixed = bank.score(ids, mask, labels, prompt=["rte", "sst2", "rte"])
        assert torch.allclose(mixed[1], sst.eval().score(ids[1:2], mask[1:2], labels[1:2])[0], atol=TOL)
        one = bank.score(ids, mask, labels, prompt="sst2")  # one name for every row
        assert torch.allclose(one, sst.score(ids, mask, labels), atol=TOL)
    with pytest.raises(KeyError, match="no prompt named 'mnli'.*sst2, rte"):
        bank.score(ids, mask, labels, prompt=["mnli", "sst2", "rte"])
    with pytest.raises(ValueError, match="2 names for 3 rows"):
        bank.score(ids, mask, labels, prompt=["sst2", "rte"])
    with pytest.raises(ValueError, match="give prompt="):
        bank.score(ids, mask, labels)
    with pytest.raises(TypeError, match="PromptBank"):
        sst.score(ids, mask, labels, prompt="sst2")
    t5_prompt = softprompt.attach(tiny_t5(), "prompt", length=2)
    t5_prompt.save(tmp_path / "t5")
    with pytest.raises(ValueError, match="encoder-decoder model; this backbone is decoder-only"):
        bank.add("t5", tmp_path / "t5")
