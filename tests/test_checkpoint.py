"""A checkpoint (softprompt.checkpoint, written by RunDir.save_checkpoint): saved and loaded
back bit for bit: the prompt, the optimizer's state and the RNG states of torch, numpy and
Python; no pickle (safetensors + JSON only); only this run's, and a broken one is named."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from softprompt import checkpoint
from softprompt.io import write_json_atomically
from softprompt.prompts import BackboneInfo, build_method, make_config
from softprompt.rundir import CheckpointError, RunDir


def trained(seed: int):
    """A prompt and an AdamW optimizer two steps in (so the optimizer has state)."""
    prompt = build_method(make_config("prompt", length=3), BackboneInfo(embed_dim=8, vocab_size=16, embeddings=torch.randn(16, 8)), seed=seed)
    optimizer = torch.optim.AdamW(prompt.parameters(), lr=0.1)
    for _ in range(2):
        prompt().pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return prompt, optimizer


def run_dir(path, config=None) -> RunDir:
    write_json_atomically(path / "config.json", config or {"method": "prompt", "lr": 0.1})
    return RunDir(path)


def draws() -> tuple:
    return torch.rand(4).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_save_and_load_round_trip_bit_exact(tmp_path):
    prompt, optimizer = trained(0)
    run = run_dir(tmp_path)
    run.save_checkpoint(SimpleNamespace(prompt=prompt), optimizer, {"step": 2, "best": 0.5})
    after_save = draws()
    folder = tmp_path / "checkpoint"
    assert sorted(p.name for p in folder.iterdir()) == ["optimizer.safetensors", "prompt.safetensors", "state.json"]
    assert json.loads((folder / "state.json").read_text())["run"] == run.identity()

    other, other_optimizer = trained(1)  # different values everywhere
    draws()  # and the RNGs elsewhere
    state = RunDir(tmp_path).load_checkpoint(SimpleNamespace(prompt=other), other_optimizer)
    assert state == {"step": 2, "best": 0.5}
    for (name, a), b in zip(prompt.trainable_named_parameters().items(), other.trainable_named_parameters().values()):
        assert torch.equal(a, b), name
    saved, loaded = optimizer.state_dict(), other_optimizer.state_dict()
    assert json.dumps(saved["param_groups"], sort_keys=True) == json.dumps(loaded["param_groups"], sort_keys=True)  # (betas: a list)
    for index, slots in saved["state"].items():
        for key, value in slots.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(loaded["state"][index][key])), (index, key)
    assert draws() == after_save  # the same floats as right after saving
    for p, o in ((prompt, optimizer), (other, other_optimizer)):  # and the next step is the same step
        p().pow(2).sum().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(prompt.parameters(), other.parameters()))


def test_only_this_runs_complete_checkpoint_is_taken(tmp_path):
    prompt, optimizer = trained(0)
    run_dir(tmp_path / "other", {"method": "prompt", "lr": 0.5}).save_checkpoint(SimpleNamespace(prompt=prompt), optimizer, {"step": 4})
    run = run_dir(tmp_path / "run")
    assert run.load_checkpoint(SimpleNamespace(prompt=prompt), optimizer) is None  # none yet
    (tmp_path / "other" / "checkpoint").rename(tmp_path / "run" / "checkpoint")
    with pytest.raises(CheckpointError, match=r"checkpoint/state.json: the checkpoint belongs to another run"):
        run.load_checkpoint(SimpleNamespace(prompt=prompt), optimizer)
    assert checkpoint.find(run.path, run.identity()) == []  # not strict: never taken, no error
    (tmp_path / "run" / "checkpoint").rename(tmp_path / "run" / ".checkpoint.old-99")  # moved aside by a swap
    assert run.load_checkpoint(SimpleNamespace(prompt=prompt), optimizer) is None  # another run's: never taken
    run.save_checkpoint(SimpleNamespace(prompt=prompt), optimizer, {"step": 2})
    assert [c.step for c in checkpoint.find(run.path, run.identity(), strict=True)] == [2]


def test_a_truncated_checkpoint_is_named(tmp_path):
    prompt, optimizer = trained(0)
    run = run_dir(tmp_path)
    run.save_checkpoint(SimpleNamespace(prompt=prompt), optimizer, {"step": 2})
    file = tmp_path / "checkpoint" / "optimizer.safetensors"
    file.write_bytes(file.read_bytes()[:100])
    with pytest.raises(CheckpointError) as err:
        run.load_checkpoint(SimpleNamespace(prompt=prompt), optimizer)
    assert str(err.value).startswith(f"{file}: corrupted or truncated safetensors file") and "\n" not in str(err.value)
    assert run.latest_checkpoint() is None
