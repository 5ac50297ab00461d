"""Adding a method touches its file, its registry line and its test, nothing else: a toy
seventh method, registered for the duration of the test only, trains through the CLI, gets its
own command-line option from its config's help metadata, is counted by `params`, and reloads."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import softprompt
from softprompt.cli import main
from softprompt.prompts import REGISTRY, PromptConfig, PromptMethod
from softprompt.prompts.base import option
from conftest import tiny_llama
from helpers import tiny_tokenizer, write_sst2


@dataclass
class ToyConfig(PromptConfig):
    method = "toy"
    gain: float = option(1.0, "a fixed factor on the prompt", "G")

    def num_parameters(self, embed_dim: int) -> int:
        return self.length * embed_dim


class ToyPrompt(PromptMethod):
    def __init__(self, config: ToyConfig, info, generator: torch.Generator):
        super().__init__(config, info)
        self.rows = nn.Parameter(torch.randn(config.length, info.embed_dim, generator=generator) * 0.02)

    def forward(self) -> torch.Tensor:  # [n, d]
        return self.rows * self.config.gain


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(REGISTRY, "toy", (ToyConfig, ToyPrompt))


def test_a_registered_method_trains_through_the_cli(toy, tmp_path, capsys):
    tiny_llama().save_pretrained(tmp_path / "tiny")
    tiny_tokenizer(bos=True).save_pretrained(tmp_path / "tiny")
    data = write_sst2(tmp_path / "data")
    out = tmp_path / "run"
    argv = ["train", "--model", str(tmp_path / "tiny"), "--task", "sst2", "--label-words", "names",
            "--data-dir", str(data), "--method", "toy", "--length", "3", "--gain", "0.5", "--batch-size", "4",
            "--max-steps", "2", "--eval-every", "2", "--lr", "0.1", "--output-dir", str(out)]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["method"] == "toy" and metrics["steps"] == 2
    assert metrics["trainable_parameters"] == 3 * 32
    config = json.loads((out / "config.json").read_text())
    assert (config["method"], config["length"], config["gain"]) == ("toy", 3, 0.5)
    # the saved prompt reloads with its option
    model = softprompt.load(tiny_llama(), out / "prompt")
    assert isinstance(model.prompt, ToyPrompt) and model.prompt.config.gain == 0.5

    capsys.readouterr()
    assert main(["params", "--method", "toy", "--embed-dim", "32", "--length", "3"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "96"


def test_the_method_option_is_generated_with_its_help(toy, capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    assert "--gain G" in help_text and "toy: a fixed factor on the prompt" in help_text


def test_an_option_of_another_method_names_the_methods_options(toy, capsys):
    assert main(["params", "--method", "toy", "--embed-dim", "32", "--rank", "2"]) == 2
    err = capsys.readouterr().err
    assert "toy: unknown option(s) rank" in err and "\n" not in err.strip()
