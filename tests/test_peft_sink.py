"""A ``sink="bos"`` prompt as a PEFT adapter: ``n + 1`` virtual tokens, row 0 the frozen BOS
embedding. Through ``peft.PeftModel.from_pretrained`` it gives softprompt's logits; importing it
gives the sink=bos prompt back."""

from __future__ import annotations

import pytest
import torch

import softprompt
from conftest import batch_for, tiny_gpt2, tiny_llama
from helpers import tiny_tokenizer
from softprompt.io import PromptFileError

peft = pytest.importorskip("peft")


def sink_prompt(tmp_path, builder=tiny_llama, method="ulpt"):
    options = {"ulpt": {"rank": 2}, "dpt": {"bottleneck": 2}, "prompt": {}}[method]
    model = softprompt.attach(builder(), method, length=4, seed=3, sink="bos", **options).eval()
    model.save(tmp_path / "p")
    return model


def peft_logits(builder, adapter, ids, mask):
    peft_model = peft.PeftModel.from_pretrained(builder(), str(adapter)).eval()
    with torch.no_grad():
        return peft_model(input_ids=ids, attention_mask=mask).logits


@pytest.mark.parametrize("builder,method", [(tiny_llama, "ulpt"), (tiny_llama, "dpt"), (tiny_gpt2, "prompt")])
@pytest.mark.parametrize("tokenizer_bos", [False, True])
def test_sink_bos_export_gives_softprompts_logits(tmp_path, builder, method, tokenizer_bos):
    """Rows without and with the tokenizer's own BOS first (Llama's): softprompt reads that BOS
    after the prompt, and so does PEFT (its virtual tokens come before all input ids)."""
    model = sink_prompt(tmp_path, builder, method)
    softprompt.export_peft(tmp_path / "p", tmp_path / "peft", model.backbone)
    ids, mask, _ = batch_for(model.backbone, padding="right")
    if tokenizer_bos:
        ids[:, 0] = model.backbone.config.bos_token_id
    with torch.no_grad():
        ours = model(ids, mask).logits  # [B, T, V]
    theirs = peft_logits(builder, tmp_path / "peft", ids, mask)[:, 5:]  # past BOS + 4 prompt rows
    keep = mask.bool()
    assert torch.allclose(ours[keep], theirs[keep], atol=1e-5)
    table = peft.PeftModel.from_pretrained(builder(), str(tmp_path / "peft")).prompt_encoder["default"].embedding.weight
    bos = model.backbone.get_input_embeddings().weight[model.backbone.config.bos_token_id]
    assert torch.equal(table[0], bos) and torch.equal(table[1:], model.prompt_embeddings().detach())


def test_import_gives_the_sink_bos_prompt_back(tmp_path):
    model = sink_prompt(tmp_path)
    softprompt.export_peft(tmp_path / "p", tmp_path / "peft", model.backbone)
    imported = softprompt.import_peft(tiny_llama(), tmp_path / "peft")
    assert (imported.method, imported.config.sink, imported.config.length) == ("prompt", "bos", 4)
    assert torch.equal(imported.prompt_embeddings(), model.prompt_embeddings().detach())
    ids, mask, _ = batch_for(model.backbone)
    with torch.no_grad():
        assert torch.allclose(imported.eval()(ids, mask).logits, model(ids, mask).logits, atol=1e-6)


def test_import_of_an_adapter_whose_bos_row_changed_keeps_every_row(tmp_path):
    """Trained further in PEFT (row 0 trainable there): all n + 1 rows, sink none, same outputs."""
    from safetensors.torch import load_file, save_file

    model = sink_prompt(tmp_path)
    softprompt.export_peft(tmp_path / "p", tmp_path / "peft", model.backbone)
    weights = tmp_path / "peft" / "adapter_model.safetensors"
    table = load_file(str(weights))["prompt_embeddings"]
    table[0] += 0.5
    save_file({"prompt_embeddings": table}, str(weights), metadata={"format": "pt", "softprompt_sink": "bos"})
    imported = softprompt.import_peft(tiny_llama(), tmp_path / "peft").eval()
    assert (imported.config.sink, imported.config.length) == ("none", 5)
    assert torch.equal(imported.prompt_embeddings(), table)
    ids, mask, _ = batch_for(model.backbone, padding="right")
    with torch.no_grad():
        ours = imported(ids, mask).logits
    assert torch.allclose(ours[mask.bool()], peft_logits(tiny_llama, tmp_path / "peft", ids, mask)[:, 5:][mask.bool()], atol=1e-5)


def test_sink_bos_export_needs_the_right_backbone(tmp_path):
    sink_prompt(tmp_path)
    with pytest.raises(PromptFileError, match=r"sink='bos'\); give the backbone it was trained on \(--model\)"):
        softprompt.export_peft(tmp_path / "p", tmp_path / "peft")
    other = tiny_gpt2()
    other.config.bos_token_id = 3
    with pytest.raises(PromptFileError, match="trained on a backbone with bos_token_id 1; this one has 3"):
        softprompt.export_peft(tmp_path / "p", tmp_path / "peft", other)
    assert not (tmp_path / "peft").exists()


def test_cli_exports_a_sink_bos_prompt_with_model(tmp_path, capsys):
    from softprompt.cli import main

    model = sink_prompt(tmp_path)
    model.backbone.save_pretrained(tmp_path / "tiny")
    tiny_tokenizer().save_pretrained(tmp_path / "tiny")
    assert main(["export", str(tmp_path / "p"), "--to", "peft", str(tmp_path / "peft"), "--model", str(tmp_path / "tiny")]) == 0
    assert sorted(p.name for p in (tmp_path / "peft").iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert "sink: bos" in (tmp_path / "peft" / "README.md").read_text()
    assert softprompt.import_peft(tiny_llama(), tmp_path / "peft").config.sink == "bos"
