"""Where and in what precision a backbone's frozen weights live: the dtype they load in, a
device map over GPUs, CPU and disk (accelerate's big-model dispatch), and 4- or 8-bit
quantization (bitsandbytes). transformers' ``from_pretrained`` does the work; this module decides
its arguments, and refuses what cannot run with one line naming the option, before any weight is
read.

* ``DTYPES``: ``auto`` is the checkpoint's own dtype (``config.dtype``) on a GPU and float32 on
  a CPU, where half-precision matrix products are slow and bf16 rounds more than training needs;
  ``torch_dtype`` is the one place that decides it.
* ``--device-map``: ``auto``, ``balanced`` (and accelerate's ``balanced_low_0``, ``sequential``)
  or a JSON file mapping module names to devices (``0``, ``"cuda:1"``, ``"cpu"``, ``"disk"``).
  ``--max-memory`` caps each device (``0=20GiB,cpu=64GiB``); what does not fit goes to disk, in
  a folder of its own that is removed with the model.
* ``--quantize``: QLoRA's setting, NF4 with double quantization and bf16 compute (``4bit``), or
  LLM.int8 (``8bit``); the prompt stays float32. bitsandbytes needs a CUDA GPU.

The prompt itself is never placed here: it lives where the backbone reads its input embeddings
(``input_device``), in float32, and is cast to the backbone's dtype where it meets the text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..placement_options import DEVICE_MAPS, DTYPES, OPTIONS, QUANTIZE, check_spelling, parse_max_memory
from .facts import ENCODER_DECODER

__all__ = ["DEVICE_MAPS", "DTYPES", "OPTIONS", "PlacementError", "QUANTIZE", "available_devices", "check_spelling",
           "device_map_for", "dtype_name", "input_device", "parse_max_memory", "quantization_config", "torch_dtype"]

# Devices that are always there: disk offload needs only a folder.
ALWAYS = ("cpu", "disk")


class PlacementError(ValueError):
    """A dtype, device map or quantization that cannot be used here; one line naming the option."""


# ---------------------------------------------------------------------------------------
# Decisions


def torch_dtype(name: str | torch.dtype, checkpoint: Any = None) -> torch.dtype:
    """The dtype a backbone's weights load in: ``name`` (a ``DTYPES`` name or a torch dtype);
    ``auto`` is ``checkpoint``'s (a transformers config) own dtype when a GPU is visible, else
    float32 (also when the checkpoint names none)."""
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise PlacementError(f"--dtype must be one of {', '.join(DTYPES)}; got {name!r}")
    if name != "auto":
        return getattr(torch, name)
    own = getattr(checkpoint, "dtype", None) or getattr(checkpoint, "torch_dtype", None)
    if isinstance(own, str):
        own = getattr(torch, own, None)
    return own if torch.cuda.is_available() and isinstance(own, torch.dtype) else torch.float32


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` -> ``"bfloat16"`` (what config.json records)."""
    return str(dtype).removeprefix("torch.")


def available_devices() -> list[str]:
    """The devices a device map may name on this machine: ``cpu``, ``disk``, ``cuda:N``, ``mps``."""
    devices = list(ALWAYS) + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        devices.append("mps")
    return devices


def _device_name(device: Any) -> str:
    """A device map's value as ``available_devices`` names it (``0`` and ``"cuda"`` are cuda:0)."""
    if isinstance(device, int) and not isinstance(device, bool):
        return f"cuda:{device}"
    text = str(device)
    return "cuda:0" if text == "cuda" else f"cuda:{text}" if text.isdigit() else text


def device_map_for(device_map: str | None, max_memory: str | None = None) -> tuple[Any, dict | None]:
    """``(device_map, max_memory)`` as ``from_pretrained`` takes them, read and checked against
    this machine's devices: a JSON file's mapping of module names to devices, a strategy name
    as it is. Raises ``PlacementError`` naming the option and the missing device."""
    caps = parse_max_memory(max_memory) if max_memory else None
    here = available_devices()
    for device in caps or {}:
        if _device_name(device) not in here:
            raise PlacementError(f"--max-memory names {device!r}, which this machine does not have (it has {', '.join(here)})")
    if device_map is None or device_map in DEVICE_MAPS:
        if caps and device_map is None:
            raise PlacementError("--max-memory needs --device-map (auto, balanced or a .json file)")
        return device_map, caps
    path = Path(device_map).expanduser()
    try:
        mapping = json.loads(path.read_text())
    except OSError as err:
        raise PlacementError(f"--device-map {path}: cannot read it ({err.strerror or err})") from None
    except ValueError as err:
        raise PlacementError(f"--device-map {path}: not JSON ({err})") from None
    if not isinstance(mapping, dict) or not mapping or not all(isinstance(k, str) for k in mapping):
        raise PlacementError(f"--device-map {path}: expected a mapping of module name to device, e.g. {{\"model.layers.0\": 0}}")
    for module, device in mapping.items():
        if _device_name(device) not in here:
            raise PlacementError(f"--device-map {path}: {module!r} is put on {device!r}, which this machine does not have "
                                 f"(it has {', '.join(here)})")
    return mapping, caps


def quantization_config(quantize: str | None, kind: str) -> Any:
    """transformers' ``BitsAndBytesConfig`` for ``quantize`` (None: none), or ``PlacementError``
    saying why it cannot run here: an encoder-decoder, no CUDA GPU, no bitsandbytes."""
    if quantize is None:
        return None
    if quantize not in QUANTIZE:
        raise PlacementError(f"--quantize must be one of {', '.join(QUANTIZE)}; got {quantize!r}")
    if kind == ENCODER_DECODER:
        # Not exercised: T5 keeps its feed-forward output in float32 (_keep_in_fp32_modules) and
        # softprompt's encoder-decoder join is tested in float32 and bf16 only.
        raise PlacementError(f"--quantize {quantize}: softprompt quantizes decoder-only backbones only; "
                             "use --dtype bfloat16 for an encoder-decoder")
    if not torch.cuda.is_available():
        raise PlacementError(f"--quantize {quantize}: bitsandbytes needs a CUDA GPU and this machine has none; "
                             "use --dtype bfloat16 instead")
    try:
        import bitsandbytes  # noqa: F401 - transformers imports it when loading; say so before
    except ImportError:
        raise PlacementError(f"--quantize {quantize} needs bitsandbytes: pip install 'softprompt[quantize]'") from None
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def input_device(backbone: nn.Module) -> torch.device:
    """Where ``backbone`` reads its input embeddings, the device its prompt is kept on: the
    embedding's execution device when accelerate dispatched the model (offloaded weights sit on
    the ``meta`` device between calls), else its weight's device."""
    embeddings = backbone.get_input_embeddings()
    hook = getattr(embeddings, "_hf_hook", None)
    for one in getattr(hook, "hooks", None) or [hook]:  # a SequentialHook holds several
        device = getattr(one, "execution_device", None)
        if device is not None:
            return torch.device(f"cuda:{device}" if isinstance(device, int) else device)
    return embeddings.weight.device
