"""Saving and loading: the files, their contents, and a clear one-line error for every bad file."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import softprompt
from softprompt.io import PromptFileError
from conftest import batch_for, tiny_llama, tiny_t5


@pytest.fixture
def saved(tmp_path):
    model = softprompt.attach(tiny_llama(), method="ulpt", length=4, rank=2, projection_seed=7)
    model.save(tmp_path / "p")
    return model, tmp_path / "p"


def test_config_record(saved):
    model, path = saved
    record = json.loads((path / "prompt_config.json").read_text())
    assert record["method"] == "ulpt"
    assert record["config"] == {"length": 4, "rank": 2, "projection": "xavier", "projection_seed": 7,
                                "init": "paper", "embed_std": None, "lr_align": None, "sink": "none"}
    assert record["backbone"]["embed_dim"] == 32 and record["backbone"]["vocab_size"] == 128
    assert record["backbone"]["kind"] == "decoder-only"
    assert record["softprompt_version"] == softprompt.__version__
    assert record["num_trainable"] == 4 * 2 + 2 * 32
    assert record["metadata"]["projection_seed"] == 7 and len(record["metadata"]["projection_sha256"]) == 64


def test_a_record_from_before_a_config_field_existed_loads_with_its_default(saved):
    """ULPT's lr_align, init and embed_std, and every method's sink, came after prompts were saved
    without them; those prompts still load, as the paper's ULPT with the prompt first."""
    model, path = saved
    record = json.loads((path / "prompt_config.json").read_text())
    for key in ("lr_align", "init", "embed_std", "sink"):
        del record["config"][key]
    del record["backbone"]["bos_token_id"]
    (path / "prompt_config.json").write_text(json.dumps(record))
    loaded = softprompt.load(tiny_llama(), path)
    assert (loaded.prompt.config.lr_align, loaded.prompt.config.init, loaded.prompt.config.embed_std) == (None, "paper", None)
    assert loaded.prompt.config.sink == "none"
    torch.testing.assert_close(loaded.prompt(), model.prompt(), rtol=0, atol=0)


def test_only_trainable_tensors_are_stored(saved):
    _, path = saved
    assert sorted(load_file(str(path / "prompt.safetensors"))) == ["scale", "shift", "z"]


def test_no_temporary_files_left_and_overwrite_is_atomic(saved, tmp_path):
    model, path = saved
    model.save(path)  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p"]


def test_wrong_embedding_size(saved):
    _, path = saved
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(LlamaConfig(vocab_size=128, hidden_size=48, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4))
    with pytest.raises(PromptFileError, match="embedding size 32.*has 48"):
        softprompt.load(other, path)


def test_truncated_file(saved):
    _, path = saved
    data = (path / "prompt.safetensors").read_bytes()
    (path / "prompt.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(PromptFileError, match="prompt.safetensors: corrupted or truncated"):
        softprompt.load(tiny_llama(), path)


def test_corrupted_header(saved):
    _, path = saved
    (path / "prompt.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(PromptFileError, match="corrupted or truncated"):
        softprompt.load(tiny_llama(), path)


def test_missing_tensor(saved):
    _, path = saved
    tensors = load_file(str(path / "prompt.safetensors"))
    del tensors["shift"]
    save_file(tensors, str(path / "prompt.safetensors"))
    with pytest.raises(PromptFileError, match="missing tensor.*shift"):
        softprompt.load(tiny_llama(), path)


def test_wrong_shape(saved):
    _, path = saved
    tensors = load_file(str(path / "prompt.safetensors"))
    tensors["z"] = torch.zeros(5, 2)
    save_file(tensors, str(path / "prompt.safetensors"))
    with pytest.raises(PromptFileError, match=r"tensor z has shape \(5, 2\), expected \(4, 2\)"):
        softprompt.load(tiny_llama(), path)


def test_ulpt_checksum_mismatch(saved):
    _, path = saved
    record = json.loads((path / "prompt_config.json").read_text())
    record["metadata"]["projection_sha256"] = "0" * 64
    (path / "prompt_config.json").write_text(json.dumps(record))
    with pytest.raises(PromptFileError, match="checksum"):
        softprompt.load(tiny_llama(), path)


def test_bad_json_names_the_line(saved):
    _, path = saved
    (path / "prompt_config.json").write_text('{\n  "method": "ulpt",\n  oops\n}')
    with pytest.raises(PromptFileError, match="prompt_config.json: invalid JSON at line 3"):
        softprompt.load(tiny_llama(), path)


def test_bad_config_value_names_the_file(saved):
    _, path = saved
    record = json.loads((path / "prompt_config.json").read_text())
    record["config"]["rank"] = -2
    (path / "prompt_config.json").write_text(json.dumps(record))
    with pytest.raises(PromptFileError, match="prompt_config.json: ulpt: rank must be a positive integer"):
        softprompt.load(tiny_llama(), path)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such prompt directory"):
        softprompt.load(tiny_llama(), tmp_path / "nope")


@pytest.mark.parametrize("builder", [tiny_llama, tiny_t5])
def test_peft_export_gives_the_same_logits(builder, tmp_path):
    from peft import PeftModel

    model = softprompt.attach(builder(), method="dpt", length=4, bottleneck=2)
    model.save(tmp_path / "p")
    softprompt.export_peft(tmp_path / "p", tmp_path / "peft")
    assert sorted(p.name for p in (tmp_path / "peft").iterdir()) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    peft_model = PeftModel.from_pretrained(builder(), str(tmp_path / "peft")).eval()
    ids, mask, labels = batch_for(model.backbone, padding="right")
    with torch.no_grad():
        ours = model(ids, mask, labels=labels if model.join.kind == "encoder-decoder" else None).logits
        if model.join.kind == "encoder-decoder":
            theirs = peft_model(input_ids=ids, attention_mask=mask, labels=labels).logits
        else:
            theirs = peft_model(input_ids=ids, attention_mask=mask).logits[:, 4:]
    keep = mask.bool() if model.join.kind == "decoder-only" else torch.ones(theirs.shape[:2], dtype=torch.bool)
    assert torch.allclose(ours[keep], theirs[keep], atol=1e-5)


def test_peft_import_round_trip(tmp_path):
    model = softprompt.attach(tiny_llama(), method="residual", length=3, bottleneck=4)
    model.save(tmp_path / "p")
    softprompt.export_peft(tmp_path / "p", tmp_path / "peft")
    imported = softprompt.import_peft(tiny_llama(), tmp_path / "peft")
    assert imported.method == "prompt"
    assert torch.allclose(imported.prompt_embeddings(), model.prompt_embeddings(), atol=1e-6)


def test_dept_cannot_become_a_peft_prompt(tmp_path):
    model = softprompt.attach(tiny_llama(), method="dept", length=2, rank=2, max_length=8)
    model.save(tmp_path / "p")
    with pytest.raises(PromptFileError, match="changes the input token embeddings"):
        softprompt.export_peft(tmp_path / "p", tmp_path / "peft")
    assert not (tmp_path / "peft").exists()


def test_pickled_peft_adapter_is_refused(tmp_path):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 2}))
    (tmp_path / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    with pytest.raises(PromptFileError, match="pickle"):
        softprompt.import_peft(tiny_llama(), tmp_path)
