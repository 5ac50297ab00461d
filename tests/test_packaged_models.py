"""The models loaded by name from a PyPI package (backbones/packaged.py): the names, the one-line
errors when a package is missing or broken, the Gemma 3 file assembled once (atomically, its
SHA-256 checked by the package), and whether each is a base model, known before loading."""

from __future__ import annotations

import json
import sys
import types

import pytest

from softprompt.backbones import backbone_facts, is_base_model
from softprompt.backbones import load as loading
from softprompt.backbones import packaged
from softprompt.backbones.load import ModelLoadError, load_backbone


def test_names_map_to_one_entry_each():
    assert packaged.packaged(None) is packaged.SMOLLM2
    for name in ("default", "smollm2", "SmolLM2", "SmolLM2-135M-Instruct"):
        assert packaged.packaged(name) is packaged.SMOLLM2
    for name in ("gemma-3-270m", "Gemma3", "gemma3-270m"):
        assert packaged.packaged(name) is packaged.GEMMA3
    for name in ("./gemma3", "gemma-3-270m.gguf", "google/gemma-3-270m", "gpt2"):
        assert packaged.packaged(name) is None
    aliases = [a for p in packaged.PACKAGED for a in p.aliases]
    assert len(aliases) == len(set(aliases))  # no name means two models


def test_a_missing_gemma_package_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path))
    monkeypatch.setattr(packaged, "_gemma3_installed", lambda: False)
    assert not loading.model_available("gemma-3-270m")
    with pytest.raises(ModelLoadError) as err:
        load_backbone("gemma-3-270m")
    assert str(err.value) == (f"the model gemma-3-270m is not installed: {packaged.GEMMA3_INSTALL}")
    assert not any(tmp_path.iterdir())  # nothing written


def fake_gemma_package(monkeypatch, assemble):
    module = types.SimpleNamespace(MODEL_NAME="gemma-3-270m-q4_k_m.gguf", assemble=assemble)
    monkeypatch.setitem(sys.modules, packaged.GEMMA3_MODULE, module)
    monkeypatch.setattr(packaged, "_gemma3_installed", lambda: True)


def test_the_gguf_is_assembled_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path))
    calls = []

    def assemble(path, overwrite=False):
        calls.append(path)
        with open(path, "wb") as handle:
            handle.write(b"GGUF" + bytes(range(256)))
        return path

    fake_gemma_package(monkeypatch, assemble)
    first = packaged.GEMMA3.require()
    assert first == tmp_path / "gguf" / "gemma-3-270m-q4_k_m.gguf" and first.read_bytes()[:4] == b"GGUF"
    assert packaged.GEMMA3.require() == first and len(calls) == 1  # the second time, the file is there
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary file left
    assert packaged.GEMMA3.cache_dir() == tmp_path / "models" / f"gemma-3-270m-{packaged.gguf_fingerprint(first)}"


@pytest.mark.parametrize("failure", [ValueError("Assembled file sha256 did not match expected value"),
                                     FileNotFoundError("Missing chunk files: part02")])
def test_a_broken_assembly_leaves_no_file_and_says_reinstall(monkeypatch, tmp_path, failure):
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path))

    def assemble(path, overwrite=False):
        with open(path, "wb") as handle:
            handle.write(b"GGUF half")  # a partial file, then the failure
        raise failure

    fake_gemma_package(monkeypatch, assemble)
    with pytest.raises(ModelLoadError) as err:
        load_backbone("gemma3")
    message = str(err.value)
    assert "\n" not in message and str(failure) in message and packaged.GEMMA3_INSTALL in message
    assert list((tmp_path / "gguf").iterdir()) == []  # nothing a later load could take for the model


def test_base_model_is_known_before_loading(tmp_path):
    from conftest import tiny_llama, tiny_t5
    from helpers import tiny_tokenizer

    assert backbone_facts("gemma-3-270m").base and not backbone_facts("smollm2").base
    tiny_llama().config.save_pretrained(tmp_path / "base")
    tiny_tokenizer().save_pretrained(tmp_path / "base")
    assert backbone_facts(tmp_path / "base") == ("decoder-only", True, True)
    chat = tiny_tokenizer()
    chat.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    tiny_llama().config.save_pretrained(tmp_path / "chat")
    chat.save_pretrained(tmp_path / "chat")
    assert backbone_facts(tmp_path / "chat").base is False
    # no tokenizer files: not known to be a base model; an encoder-decoder never is
    tiny_llama().config.save_pretrained(tmp_path / "bare")
    assert backbone_facts(tmp_path / "bare").base is False
    tiny_t5().config.save_pretrained(tmp_path / "t5")
    tiny_tokenizer().save_pretrained(tmp_path / "t5")
    assert backbone_facts(tmp_path / "t5")[::2] == ("encoder-decoder", False)
    # the rule after loading is the same one
    assert is_base_model("decoder-only", None) and is_base_model("decoder-only", "")
    assert not is_base_model("decoder-only", chat.chat_template) and not is_base_model("encoder-decoder", None)
    config = json.loads((tmp_path / "chat" / "tokenizer_config.json").read_text())
    assert config.get("chat_template") or (tmp_path / "chat" / "chat_template.jinja").is_file()


@pytest.mark.slow
def test_gemma_loads_by_name_and_continues_as_measured(gemma3):
    """The issue's measurements of the real file: architecture, sizes, window, BOS, greedy text."""
    import torch

    model, tokenizer = gemma3
    config = model.config
    assert type(model).__name__ == "Gemma3ForCausalLM" and config._name_or_path == "gemma-3-270m"
    assert (config.num_hidden_layers, config.hidden_size, config.vocab_size, config.sliding_window) == (18, 640, 262144, 512)
    assert sum(p.numel() for p in model.parameters()) == 268_098_176
    ids = tokenizer("The capital of France is", return_tensors="pt")
    assert ids["input_ids"][0, 0] == tokenizer.bos_token_id == 2
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert tokenizer.decode(out[0, ids["input_ids"].shape[1]:]) == " the capital of the country of France."
    assert backbone_facts("gemma-3-270m").base and is_base_model("decoder-only", tokenizer.chat_template)
