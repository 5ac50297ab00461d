"""`softprompt export --to embeds`: the materialized prompt as one safetensors file, and the
README's transformers recipe (the prompt as ``inputs_embeds`` before each row's first token)
generates exactly the tokens softprompt generates."""

from __future__ import annotations

import json

import pytest
import torch

import softprompt
from softprompt.cli import main
from softprompt.io import PromptFileError, read_embeds
from conftest import batch_for, tiny_llama
from helpers import with_prompt


@pytest.mark.parametrize("sink", ["none", "bos"])
@pytest.mark.parametrize("method", [m for m in softprompt.METHODS if m != "dept"])
def test_the_transformers_recipe_generates_softprompt_s_tokens(method, sink, tmp_path):
    backbone = tiny_llama()
    model = softprompt.attach(backbone, method, length=5, seed=3, sink=sink).eval()
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.mul_(3.0)  # away from the init, so the prompt matters
    model.save(tmp_path / "p")
    assert main(["export", str(tmp_path / "p"), str(tmp_path / "p.safetensors"), "--to", "embeds"]) == 0
    prompt, meta = read_embeds(tmp_path / "p.safetensors")
    assert torch.equal(prompt, model.prompt_embeddings().detach())
    ahead = json.loads(meta["sink_token_ids"])  # the README's recipe: those tokens, then the prompt
    assert ahead == ([] if sink == "none" else [backbone.config.bos_token_id])
    with torch.no_grad():
        prompt = torch.cat([backbone.get_input_embeddings()(torch.tensor(ahead, dtype=torch.long)), prompt])
    ids, mask, _ = batch_for(backbone, batch=3, length=6, seed=2, padding="left")
    kw = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    ours = model.generate(ids, mask, **kw)
    embeds, full_mask = with_prompt(backbone, prompt, [row[m.bool()].tolist() for row, m in zip(ids, mask)])
    with torch.no_grad():
        theirs = backbone.generate(inputs_embeds=embeds, attention_mask=full_mask, **kw)
    assert torch.equal(ours, theirs)
    # the prompt matters: without it the tokens differ
    with torch.no_grad():
        bare = backbone.generate(inputs_embeds=embeds[:, len(prompt):], attention_mask=full_mask[:, len(prompt):], **kw)
    assert not torch.equal(bare, theirs)


def test_metadata_and_refusals(tmp_path, capsys):
    backbone = tiny_llama()
    backbone.name_or_path = "tiny/llama"
    softprompt.attach(backbone, "ulpt", length=4, rank=2).save(tmp_path / "p")
    out = tmp_path / "e.safetensors"
    assert main(["export", str(tmp_path / "p"), str(out), "--to", "embeds"]) == 0
    assert "as prompt embeddings [4, 32] for tiny/llama" in capsys.readouterr().out
    prompt, meta = read_embeds(out)
    assert prompt.shape == (4, 32) and prompt.dtype == torch.float32
    assert meta["name"] == "tiny/llama" and meta["embed_dim"] == "32" and meta["kind"] == "decoder-only"
    assert meta["method"] == "ulpt" and meta["length"] == "4" and meta["vocab_size"] == "128"
    assert meta["sink_token_ids"] == "[]"
    assert main(["export", str(tmp_path / "p"), str(out), "--to", "embeds"]) == 2  # exists
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "p"), str(out), "--to", "embeds", "--overwrite"]) == 0
    other = tmp_path / "mine.safetensors"
    other.write_bytes(b"not softprompt's")
    assert main(["export", str(tmp_path / "p"), str(other), "--to", "embeds", "--overwrite"]) == 2
    assert "is not a prompt embeddings file softprompt exported" in capsys.readouterr().err
    assert other.read_bytes() == b"not softprompt's"
    assert main(["export", str(tmp_path / "p"), str(tmp_path / "e.bin"), "--to", "embeds"]) == 2
    assert "name it *.safetensors" in capsys.readouterr().err
    softprompt.attach(backbone, "dept", length=2, rank=2, max_length=8).save(tmp_path / "d")
    with pytest.raises(PromptFileError, match="dept also changes the input token embeddings"):
        softprompt.export_embeds(tmp_path / "d", tmp_path / "d.safetensors")
    assert not (tmp_path / "d.safetensors").exists()
    softprompt.attach(backbone, "prompt", length=2, sink="bos").save(tmp_path / "s")
    assert main(["export", str(tmp_path / "s"), str(tmp_path / "s.safetensors"), "--to", "embeds"]) == 0
    assert "after the embeddings of token ids [1]" in capsys.readouterr().out
    with pytest.raises(PromptFileError, match=r"sink='bos'\); give the backbone it was trained on"):
        softprompt.export_peft(tmp_path / "s", tmp_path / "s_peft")
    assert not (tmp_path / "s_peft").exists()
