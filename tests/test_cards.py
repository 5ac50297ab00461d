"""Model cards: every prompt folder and PEFT export carries a README.md whose YAML front matter
is the Hub's (read back by ``huggingface_hub``) and names the prompt's facts; ``--overwrite``
replaces softprompt's own card, never a user's."""

from __future__ import annotations

import json

import pytest

import softprompt
from conftest import tiny_llama
from softprompt.io import PromptFileError, check_replaceable

huggingface_hub = pytest.importorskip("huggingface_hub")

USAGE = {"task": "sst2", "style": "instruction", "template": "Review: {sentence}\nSentiment:", "label_words": ["negative", "positive"]}


def saved(tmp_path, **options):
    model = softprompt.attach(tiny_llama(), "ulpt", length=4, rank=2, seed=0, **options)
    model.backbone.name_or_path = "HuggingFaceTB/SmolLM2-135M-Instruct"
    model.usage = dict(USAGE)
    model.save(tmp_path / "run" / "prompt")
    return model, tmp_path / "run" / "prompt"


def test_prompt_folder_card(tmp_path):
    model, folder = saved(tmp_path)
    card = huggingface_hub.ModelCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert (data["library_name"], data["pipeline_tag"], data["tags"]) == ("softprompt", "text-generation", ["softprompt", "prompt-tuning", "ulpt"])
    assert data["softprompt"] == {"method": "ulpt", "sink": "none", "length": 4, "trainable_parameters": model.num_trainable(),
                                  "backbone": "HuggingFaceTB/SmolLM2-135M-Instruct", **USAGE}
    assert 'softprompt.load(backbone, "THIS_REPO_OR_DIR")' in card.text
    assert "Review: {sentence}\\nSentiment:" in card.text
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "prompt.safetensors", "prompt_config.json"]


def test_peft_export_card_has_the_runs_metrics(tmp_path):
    model, folder = saved(tmp_path)
    (folder.parent / "metrics.json").write_text(json.dumps({"accuracy": 0.75, "best_step": 8, "curve": [1, 2]}))
    softprompt.export_peft(folder, tmp_path / "peft")
    data = huggingface_hub.ModelCard.load(tmp_path / "peft" / "README.md").data.to_dict()
    assert data["library_name"] == "peft" and data["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert data["softprompt"]["metrics"] == {"accuracy": 0.75, "best_step": 8}
    assert data["softprompt"]["trainable_parameters"] == model.num_trainable()


def test_local_backbone_path_is_no_base_model(tmp_path):
    model = softprompt.attach(tiny_llama(), "prompt", length=2)
    model.backbone.name_or_path = str(tmp_path / "models" / "tiny")
    model.save(tmp_path / "p")
    data = huggingface_hub.ModelCard.load(tmp_path / "p" / "README.md").data.to_dict()
    assert "base_model" not in data and data["softprompt"]["backbone"] == str(tmp_path / "models" / "tiny")


def test_overwrite_replaces_its_own_card_never_a_users(tmp_path):
    _, folder = saved(tmp_path)
    check_replaceable(folder, "prompt")  # softprompt's files, its card included
    (folder / "README.md").unlink()
    check_replaceable(folder, "prompt")  # an older folder, without a card
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# my notes\n")
    with pytest.raises(PromptFileError, match="is not a softprompt prompt directory"):
        check_replaceable(folder, "prompt")
