"""``softprompt.serving``: a saved prompt's input embeddings, built for engines that take them,
give softprompt's own greedy tokens through transformers' ``generate`` (tiny models; the vLLM
runs are in tests/test_serving_vllm.py)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import softprompt
from softprompt.backbones import backbone_record
from softprompt.io import PromptFileError
from softprompt.serving import (
    backbone_mismatch, embedder, generate_inputs, left_padded, prompt_input, read_prompt, token_ids,
)
from conftest import tiny_llama
from helpers import tiny_tokenizer

TEXTS = ["the film was great", "a very dull plot and bad acting", "fun", "not good but the acting is really good"]
GREEDY = dict(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=2)


def tiny_gemma(seed: int = 0):
    """Gemma scales its embedding table by √d inside the embedding module."""
    from transformers import GemmaConfig, GemmaForCausalLM

    torch.manual_seed(seed)
    config = GemmaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, head_dim=8, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return GemmaForCausalLM(config).eval()


def perturbed(backbone, method: str, sink: str, seed: int = 3):
    model = softprompt.attach(backbone, method, length=5, seed=seed, sink=sink).eval()
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.mul_(3.0).add_(0.5)  # away from the init, so the prompt matters
    return model


def softprompt_tokens(model, tokenizer, texts):
    """softprompt's own greedy tokens, the rows as its evaluation lays them out (left padded)."""
    rows = token_ids(tokenizer, texts)
    T = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (T - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (T - len(r)) + [1] * len(r) for r in rows])
    return model.generate(ids, mask, **GREEDY)


@pytest.mark.parametrize("sink", ["none", "bos"])
@pytest.mark.parametrize("method", [m for m in softprompt.METHODS if m != "dept"])
def test_generate_inputs_give_softprompt_s_greedy_tokens(method, sink, tmp_path):
    backbone, tokenizer = tiny_llama(), tiny_tokenizer(bos=True)  # Llama style: the tokenizer adds BOS
    model = perturbed(backbone, method, sink)
    model.save(tmp_path / "p")
    prompt = read_prompt(tmp_path / "p")
    assert prompt.sink_token_ids == ([] if sink == "none" else [1])
    assert torch.equal(prompt.embeds, model.prompt_embeddings().detach())
    ours = softprompt_tokens(model, tokenizer, TEXTS)
    embeds, mask = generate_inputs(prompt, backbone, tokenizer, TEXTS)
    assert embeds.shape == (4, prompt.length + max(len(r) for r in token_ids(tokenizer, TEXTS)), 32)
    theirs = backbone.generate(inputs_embeds=embeds, attention_mask=mask, **GREEDY)
    assert torch.equal(ours, theirs)
    bare_embeds, bare_mask = generate_inputs(None, backbone, tokenizer, TEXTS)  # the prompt matters
    assert not torch.equal(backbone.generate(inputs_embeds=bare_embeds, attention_mask=bare_mask, **GREEDY), theirs)


def test_each_row_alone_is_its_unpadded_batch_row(tmp_path):
    """What vLLM takes (one request, unpadded) is the batch row without its pads."""
    backbone, tokenizer = tiny_llama(), tiny_tokenizer(bos=True)
    perturbed(backbone, "ulpt", "bos").save(tmp_path / "p")
    prompt = read_prompt(tmp_path / "p")
    embeds, mask = generate_inputs(prompt, backbone, tokenizer, TEXTS)
    embed = embedder(backbone)
    for row, ids in enumerate(token_ids(tokenizer, TEXTS)):
        assert ids[0] == 1  # the tokenizer's BOS, read after the prompt as training reads it
        alone = prompt_input(prompt, embed, ids)
        assert torch.equal(alone, embeds[row][mask[row].bool()])
        assert torch.equal(alone[:1], embed(torch.tensor([1])))  # the sink token first
        assert torch.equal(alone[1:6], prompt.embeds)


def test_an_exported_file_serves_as_the_folder_does(tmp_path):
    backbone = tiny_llama()
    perturbed(backbone, "dpt", "bos").save(tmp_path / "p")
    softprompt.export_embeds(tmp_path / "p", tmp_path / "p.safetensors")
    a, b = read_prompt(tmp_path / "p"), read_prompt(tmp_path / "p.safetensors")
    assert torch.equal(a.embeds, b.embeds) and a.sink_token_ids == b.sink_token_ids and a.metadata == b.metadata
    assert a.metadata["method"] == "dpt" and a.length == 6


@pytest.mark.parametrize("sink", ["none", "bos"])
def test_gemma_s_scaled_embeddings_are_used_once(sink, tmp_path):
    """Gemma's embedding module multiplies the table by √d: the text (and sink) rows are the
    module's output, as softprompt's join feeds them, so greedy tokens agree."""
    backbone, tokenizer = tiny_gemma(), tiny_tokenizer(bos=True)
    model = perturbed(backbone, "prompt", sink)
    model.save(tmp_path / "p")
    prompt = read_prompt(tmp_path / "p")
    ids = token_ids(tokenizer, TEXTS[:1])[0]
    text = prompt_input(None, embedder(backbone), ids)
    table = backbone.get_input_embeddings().weight[torch.tensor(ids)]
    assert torch.allclose(text, table * 32 ** 0.5) and not torch.allclose(text, table)
    embeds, mask = generate_inputs(prompt, backbone, tokenizer, TEXTS)
    assert torch.equal(softprompt_tokens(model, tokenizer, TEXTS), backbone.generate(inputs_embeds=embeds, attention_mask=mask, **GREEDY))


def test_left_padded_puts_pads_first_and_masks_them():
    rows = [torch.ones(2, 3), torch.full((4, 3), 2.0)]
    embeds, mask = left_padded(rows)
    assert mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert embeds[0, :2].eq(0).all() and embeds[0, 2:].eq(1).all() and embeds[1].eq(2).all()


def test_dept_is_refused_with_one_line(tmp_path):
    softprompt.attach(tiny_llama(), "dept", length=4, rank=2).save(tmp_path / "p")
    with pytest.raises(PromptFileError, match="also changes the input token embeddings") as err:
        read_prompt(tmp_path / "p")
    assert "\n" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="no prompt folder"):
        read_prompt(tmp_path / "missing")


def test_backbone_mismatch_names_the_difference(tmp_path):
    backbone = tiny_llama()
    backbone.name_or_path = "org/tiny-llama"
    softprompt.attach(backbone, "prompt", length=4).save(tmp_path / "p")
    prompt = read_prompt(tmp_path / "p")
    record = backbone_record(backbone)
    assert backbone_mismatch(prompt, record) is None
    assert backbone_mismatch(prompt, {**record, "name": "/models/tiny-llama/"}) is None  # a local copy
    assert "trained on org/tiny-llama, the model is other" in backbone_mismatch(prompt, {**record, "name": "other"})
    assert "embed_dim 32, the model has 64" in backbone_mismatch(prompt, {**record, "embed_dim": 64})
    assert "vocab_size 128, the model has 99" in backbone_mismatch(prompt, {**record, "vocab_size": 99})
    assert "decoder-only models" in backbone_mismatch(prompt, {**record, "kind": "encoder-decoder"})


def test_token_ids_read_the_input_as_training_does():
    bos, plain = tiny_tokenizer(bos=True), tiny_tokenizer(bos=False)
    assert token_ids(bos, ["great fun"]) == [[1] + plain("great fun")["input_ids"]]
    assert token_ids(plain, ["great fun", "dull"]) == [plain("great fun")["input_ids"], plain("dull")["input_ids"]]
    eos = tiny_tokenizer(eos_suffix=True)  # a T5-style suffix is not part of a decoder's input
    assert token_ids(eos, ["dull"]) == [plain("dull")["input_ids"]]


def test_importing_serving_skips_the_training_stack():
    code = ("import sys, softprompt.serving; "
            "print(sorted(m for m in ('datasets', 'optuna', 'peft', 'softprompt.model', 'softprompt.train') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=os.environ)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
