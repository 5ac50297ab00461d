"""A training checkpoint: what it holds, and finding and restoring a run's newest complete one.

    checkpoint/
      prompt.safetensors      the prompt's trainable tensors
      optimizer.safetensors   the optimizer's state tensors and the RNG states (torch, CUDA, numpy)
      state.json              the training loop's state, the run's identity, the optimizer's
                              scalars and param groups, the RNG scalars (Python's state)

No pickle: tensors go to safetensors, everything else to JSON, and the RNG states of torch,
numpy and Python are stored so a resumed run replays the same floats. ``pack`` turns the live
state into those three files' contents; the run directory writes them, as one atomic swap
(``RunDir.save_checkpoint``). Each checkpoint names its run (``run``: a hash of the config fields
that define it), and ``find`` takes only its own run's complete checkpoints: ``checkpoint/``, or
the one a swap had moved aside when a kill landed between its two renames (``.checkpoint.old-PID``).
"""

from __future__ import annotations

import hashlib
import json
import random
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import numpy as np
import torch
from safetensors import SafetensorError

from .backbones import backbone_name
from .io import PromptFileError, read_json
from .prompt_files import SaveError, check_finite, copy_into_prompt, read_safetensors, save_error, trainable_tensors
from .prompts import PromptMethod

FOLDER = "checkpoint"
PROMPT_FILE = "prompt.safetensors"
OPTIMIZER_FILE = "optimizer.safetensors"
STATE_FILE = "state.json"


class CheckpointError(ValueError):
    """No checkpoint of this run can be resumed from; the message names the file and why."""


class Checkpoint(NamedTuple):
    step: int
    folder: Path
    state: dict[str, Any]  # state.json as saved
    prompt: dict[str, torch.Tensor]
    tensors: dict[str, torch.Tensor]  # optimizer.safetensors


def pack(prompt: PromptMethod, optimizer: torch.optim.Optimizer, state: dict[str, Any]
         ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, Any]]:
    """The contents of ``prompt.safetensors``, ``optimizer.safetensors`` and ``state.json``
    (``state`` with the optimizer's and the RNGs' non-tensor parts added)."""
    optim_tensors, optim_meta = _optimizer_state(optimizer)
    rng_tensors, rng_scalars = _rng_state()
    return trainable_tensors(prompt), {**optim_tensors, **rng_tensors}, {**state, "optimizer": optim_meta, "rng": rng_scalars}


def restore(found: Checkpoint, prompt: PromptMethod, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Put ``found``'s prompt, optimizer and RNG states back; returns the loop's state as saved."""
    record = dict(found.state)
    copy_into_prompt(prompt, found.prompt, found.folder / PROMPT_FILE)
    _load_optimizer_state(optimizer, found.tensors, record.pop("optimizer"))
    _set_rng_state(found.tensors, record.pop("rng"))
    record.pop("run", None)
    return record


def find(run_dir: Path, identity: str | None, strict: bool = False) -> list[Checkpoint]:
    """The complete checkpoints of the run ``identity`` in ``run_dir``, newest first. Another
    run's is never taken; a broken one (a truncated file) is skipped. With ``strict``, a foreign
    ``checkpoint/``, or only broken ones, raise ``CheckpointError``."""
    main = run_dir / FOLDER
    candidates = ([main] if main.is_dir() else []) + sorted(run_dir.glob(f".{FOLDER}.old-*"))
    found, broken = [], []
    for folder in candidates:
        try:
            record = read_json(folder / STATE_FILE)
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                raise PromptFileError(f"{folder / STATE_FILE}: not a checkpoint state")
            if record.get("run") != identity:
                if folder == main and strict:
                    raise CheckpointError(
                        f"{folder / STATE_FILE}: the checkpoint belongs to another run (run {record.get('run')}, "
                        f"this one is {identity}); pass --overwrite to start over"
                    )
                continue  # another run's leftover: never resumed from
            prompt = read_safetensors(folder / PROMPT_FILE)
            for name, tensor in prompt.items():
                check_finite(name, tensor, folder / PROMPT_FILE)
            tensors = read_safetensors(folder / OPTIMIZER_FILE)
        except (PromptFileError, FileNotFoundError) as err:
            broken.append(str(err))
            continue
        found.append(Checkpoint(record["step"], folder, record, prompt, tensors))
    found.sort(key=lambda item: -item.step)
    if strict and not found and broken:
        raise CheckpointError(f"{broken[0]}; no complete checkpoint to resume from (remove {main} to start the run over)")
    return found


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["rng/numpy"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    version, internal, gauss = random.getstate()
    scalars = {"python": [version, list(internal), gauss], "numpy": [kind, int(pos), int(has_gauss), float(cached)]}
    return tensors, scalars


def _set_rng_state(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = sorted(k for k in tensors if k.startswith("rng/cuda/"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    kind, pos, has_gauss, cached = scalars["numpy"]
    np.random.set_state((kind, tensors["rng/numpy"].numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = scalars["python"]
    random.setstate((version, tuple(internal), gauss))


def _optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten ``optimizer.state_dict()``: tensors -> ``optim/<param>/<key>``, the rest -> JSON."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"optim/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}/{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    slots: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, index, key = name.split("/", 2)
            slots.setdefault(int(index), {})[key] = value
    for name, value in meta["scalars"].items():
        index, key = name.split("/", 1)
        slots.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": slots, "param_groups": meta["param_groups"]})


# ---------------------------------------------------------------------------------------
# Saving that fails, and the backbone a run trains


@contextmanager
def save_errors(run_dir: Path, what: str) -> Iterator[None]:
    """A run's save (``what``: its folder) that fails for want of space or a file size limit
    is one line: the atomic swap left the previous one intact, so the run can be resumed."""
    try:
        yield
    except (OSError, SafetensorError) as err:
        kept = f"the previous {what} is intact; free space and resume with softprompt train --resume {run_dir}"
        if isinstance(err, SaveError):
            raise SaveError(f"{str(err).split('; ')[0]}; {kept}") from None
        raise save_error(err, run_dir / what, kept) from None


FINGERPRINT_ROWS = 16  # input-embedding rows hashed: evenly spaced over the vocabulary, first and last included


def backbone_fingerprint(backbone: torch.nn.Module) -> dict[str, Any]:
    """What identifies a backbone's weights, cheaply and the same on any device: its name, and
    a SHA-256 over every parameter's shape and ``FINGERPRINT_ROWS`` fixed rows of the input
    embedding table rounded to bfloat16 (so a float32 and a bf16 load of one model agree; two
    models of one architecture and size do not)."""
    table = backbone.get_input_embeddings().weight.detach()
    rows = torch.linspace(0, table.shape[0] - 1, FINGERPRINT_ROWS).round().long().unique()
    values = table[rows.to(table.device)].to("cpu", torch.bfloat16).view(torch.int16).numpy().tobytes()
    shapes = json.dumps([list(p.shape) for p in backbone.parameters()]).encode()
    return {"name": backbone_name(backbone), "sha256": hashlib.sha256(shapes + values).hexdigest()}


def check_backbone(saved: dict[str, Any] | None, current: dict[str, Any], run_dir: Path) -> None:
    """Refuse to resume a run on another backbone than the one its checkpoint recorded (an
    older checkpoint, which records none, is taken as it is)."""
    if saved and saved.get("sha256") != current["sha256"]:
        raise CheckpointError(
            f"{run_dir}: the run was trained on {saved.get('name') or 'another model'} (weights {str(saved.get('sha256'))[:12]}); "
            f"this backbone is {current['name'] or 'another model'} (weights {current['sha256'][:12]}); resume with the run's --model")
