"""The prompt cache: in inference a decoder's prompt keys and values are computed once and
reused across batches and calls, and a changed prompt (an optimizer step, a load, any edit)
or backbone is never met with stale ones."""

from __future__ import annotations

import pytest
import torch

import softprompt
from softprompt.io import copy_into_prompt, read_tensors
from conftest import batch_for, tiny_llama


def fresh_runs(model) -> None:
    """Run the first use's probe now and reset the counter, so only real prefix runs count."""
    assert model.join.use_shared(model.prompt_embeddings().detach())
    model.join.prefix_runs = 0


def uncached_scores(model, ids, mask, labels):
    """The same call on the same model with nothing kept: the reference a kept prefix must equal."""
    kept = dict(model.join._kept)
    model.join.clear_cache()
    try:
        return model.score(ids, mask, labels)
    finally:
        model.join._kept.update(kept)


def test_kept_across_batches_calls_and_entry_points():
    model = softprompt.attach(tiny_llama(), "ulpt", length=5, rank=2, seed=0).eval()
    fresh_runs(model)
    ids, mask, labels = batch_for(model.backbone, batch=4, length=7, padding="left")
    with torch.no_grad():
        first = model.score(ids, mask, labels)
        assert model.join.prefix_runs == 1
        again = model.score(ids[:2], mask[:2], labels[:2])
        logits = model(ids, mask).logits
        model.generate(ids, mask, max_new_tokens=3, do_sample=False, pad_token_id=0)
        model.choice_scores(ids, mask, labels.masked_fill(torch.arange(7) < 6, -100), choice_tokens=torch.tensor([[5, 6]] * 4))
    assert model.join.prefix_runs == 1  # five calls, four entry points, one prefix run
    assert torch.equal(first[:2], again)
    with torch.no_grad():
        assert torch.equal(first, uncached_scores(model, ids, mask, labels))
        real = mask.bool()  # pads' logits are no one's
        torch.testing.assert_close(logits[real], model(ids, mask, shared=False).logits[real], rtol=1e-5, atol=1e-5)


def test_not_kept_while_training():
    model = softprompt.attach(tiny_llama(), "prompt", length=4, seed=0)
    fresh_runs(model)
    ids, mask, labels = batch_for(model.backbone, batch=3, length=6)
    for _ in range(2):  # with gradients: the prompt may change between calls
        model(ids, mask, labels, return_logits=False).loss.backward()
    assert model.join.prefix_runs == 2 and not model.join._kept
    model.train()  # eval-mode off (dropout): not kept either, even without gradients
    with torch.no_grad():
        model.score(ids, mask, labels), model.score(ids, mask, labels)
    assert model.join.prefix_runs == 4 and not model.join._kept


@pytest.mark.parametrize("method", softprompt.METHODS)
def test_an_optimizer_step_is_never_met_with_a_stale_cache(method):
    model = softprompt.attach(tiny_llama(), method, length=4, seed=0).eval()
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=0.05)
    ids, mask, labels = batch_for(model.backbone, batch=3, length=6, padding="left")
    with torch.no_grad():
        before = model.score(ids, mask, labels)  # kept
    for _ in range(2):
        optimizer.zero_grad()
        model(ids, mask, labels, return_logits=False).loss.backward()
        optimizer.step()
        with torch.no_grad():
            after = model.score(ids, mask, labels)
            assert not torch.allclose(after, before)
            assert torch.equal(after, uncached_scores(model, ids, mask, labels))
            before = after
            assert torch.equal(model.score(ids, mask, labels), after)  # and the new values are kept


def test_a_load_or_any_edit_is_never_met_with_a_stale_cache(tmp_path):
    backbone = tiny_llama()
    model = softprompt.attach(backbone, "dpt", length=4, bottleneck=2, seed=0).eval()
    other = softprompt.attach(backbone, "dpt", length=4, bottleneck=2, seed=7)
    other.save(tmp_path / "other")
    ids, mask, labels = batch_for(backbone, batch=3, length=6)
    with torch.no_grad():
        original = model.score(ids, mask, labels)
        want = other.eval().score(ids, mask, labels)
        # a load into the same module (what resuming and "restore the best prompt" do)
        copy_into_prompt(model.prompt, read_tensors(tmp_path / "other"), tmp_path / "other")
        assert torch.equal(model.score(ids, mask, labels), want)
        model.prompt.load_state_dict({k: v.clone() for k, v in softprompt.attach(backbone, "dpt", length=4, bottleneck=2, seed=0).prompt.state_dict().items()})
        assert torch.equal(model.score(ids, mask, labels), original)
        # an edit that bypasses version counters (.data) is caught too: the values are compared
        model.prompt.a.data.mul_(2.0)
        assert torch.equal(model.score(ids, mask, labels), uncached_scores(model, ids, mask, labels))
        assert not torch.allclose(model.score(ids, mask, labels), original)


def test_a_bank_prompt_replaced_under_its_name_and_a_changed_backbone(tmp_path):
    backbone = tiny_llama()
    first = softprompt.attach(backbone, "prompt", length=3, seed=1)
    second = softprompt.attach(backbone, "ulpt", length=5, rank=2, seed=2)
    second.save(tmp_path / "second")
    bank = softprompt.PromptBank(backbone, {"x": first, "y": second}).eval()
    fresh_runs(bank.model("x"))
    bank.join.prefix_runs = 0
    bank.join.verified = True
    ids, mask, labels = batch_for(backbone, batch=4, length=6, padding="left")
    names = ["x", "y", "y", "x"]
    with torch.no_grad():
        mixed = bank.score(ids, mask, labels, prompt=names)
        assert bank.join.prefix_runs == 2  # each distinct prompt once per batch
        bank.score(ids, mask, labels, prompt=names[::-1])
        assert bank.join.prefix_runs == 2  # and kept for the next
        bank.add("x", tmp_path / "second")  # "x" is now the second prompt: its kept keys are stale
        replaced = bank.score(ids, mask, labels, prompt=names)
        assert bank.join.prefix_runs == 3
        assert torch.allclose(replaced, bank.score(ids, mask, labels, prompt="y"), atol=1e-6)
        assert not torch.allclose(replaced[[0, 3]], mixed[[0, 3]])
        # the frozen backbone changed in place (a reload of its weights): recomputed too
        backbone.model.layers[0].self_attn.k_proj.weight.mul_(1.5)
        changed = bank.score(ids, mask, labels, prompt=names)
        assert bank.join.prefix_runs == 5
        bank.clear_prompt_cache()
        assert torch.equal(changed, bank.score(ids, mask, labels, prompt=names))
