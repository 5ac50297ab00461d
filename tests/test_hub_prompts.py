"""Prompts by Hub id (``user/repo``), offline, from a populated local Hub cache: the layout
``huggingface_hub`` keeps (``models--user--repo/snapshots/<sha>/...`` and ``refs/main``), read
by ``softprompt.load``, ``import_peft`` and the CLI through ``snapshot_download``."""

from __future__ import annotations

import shutil

import pytest
import torch

import softprompt
from conftest import batch_for, tiny_llama
from helpers import tiny_tokenizer

huggingface_hub = pytest.importorskip("huggingface_hub")
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hub cache under a private HF_HOME, offline (as the tests run)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-home" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def publish(cache, repo: str, folder) -> None:
    """``folder``'s files as the cached snapshot of model repository ``repo``."""
    root = cache / ("models--" + repo.replace("/", "--"))
    shutil.copytree(folder, root / "snapshots" / SHA)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(SHA)


def test_load_by_hub_id(hub_cache, tmp_path):
    model = softprompt.attach(tiny_llama(), "dpt", length=3, bottleneck=2, seed=1, sink="bos").eval()
    model.save(tmp_path / "p")
    publish(hub_cache, "user/sst2-prompt", tmp_path / "p")
    loaded = softprompt.load(tiny_llama(), "user/sst2-prompt").eval()
    assert loaded.config.sink == "bos" and torch.equal(loaded.prompt_embeddings(), model.prompt_embeddings())
    ids, mask, _ = batch_for(model.backbone)
    with torch.no_grad():
        assert torch.equal(loaded(ids, mask).logits, model(ids, mask).logits)


def test_import_peft_by_hub_id(hub_cache, tmp_path):
    model = softprompt.attach(tiny_llama(), "prompt", length=3, seed=2)
    model.save(tmp_path / "p")
    softprompt.export_peft(tmp_path / "p", tmp_path / "peft")
    publish(hub_cache, "user/peft-prompt", tmp_path / "peft")
    assert torch.equal(softprompt.import_peft(tiny_llama(), "user/peft-prompt").prompt_embeddings(), model.prompt_embeddings())


def test_missing_hub_id_is_one_line(hub_cache):
    with pytest.raises(FileNotFoundError, match=r"^user/nothing: no such prompt directory, and no Hub repository of that name in the local Hub cache"):
        softprompt.load(tiny_llama(), "user/nothing")


def test_cli_export_and_eval_by_hub_id(hub_cache, tmp_path, capsys):
    from softprompt.cli import main

    model = softprompt.attach(tiny_llama(), "prompt", length=3, seed=2)
    model.save(tmp_path / "p")
    publish(hub_cache, "user/p", tmp_path / "p")
    assert main(["export", "user/p", "--to", "embeds", str(tmp_path / "p.safetensors")]) == 0
    prompt, _ = softprompt.io.read_embeds(tmp_path / "p.safetensors")
    assert torch.equal(prompt, model.prompt_embeddings().detach())
    assert main(["export", "user/p", "--to", "peft", str(tmp_path / "adapter")]) == 0
    assert torch.equal(softprompt.io.read_peft_prompt(tmp_path / "adapter"), model.prompt_embeddings().detach())


def test_cli_predict_by_hub_id(hub_cache, tmp_path):
    import json

    from softprompt.cli import main

    model = softprompt.attach(tiny_llama(), "prompt", length=3, seed=2)
    model.save(tmp_path / "p")
    publish(hub_cache, "user/p", tmp_path / "p")
    model.backbone.save_pretrained(tmp_path / "tiny")
    tiny_tokenizer().save_pretrained(tmp_path / "tiny")
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "a great film"}) + "\n")
    args = ["--model", str(tmp_path / "tiny"), "--template", "{text}", "--input", str(tmp_path / "in.jsonl"), "--max-new-tokens", "3"]
    assert main(["predict", "user/p", *args, "--output", str(tmp_path / "hub.jsonl")]) == 0
    assert main(["predict", str(tmp_path / "p"), *args, "--output", str(tmp_path / "local.jsonl")]) == 0
    hub = [json.loads(line) for line in (tmp_path / "hub.jsonl").read_text().splitlines()]
    local = [json.loads(line) for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    assert [r["prediction"] for r in hub] == [r["prediction"] for r in local]
