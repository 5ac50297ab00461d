"""The options that say how a backbone's weights load, and how each may be spelled: what
``TrainConfig`` validates and the command lines offer. Nothing here imports torch, transformers or
accelerate, so parsing a command line stays fast; ``softprompt.backbones.placement`` decides what
each means on this machine (docs/large-models.md)."""

from __future__ import annotations

import re
from typing import Any

# load_backbone's keywords and TrainConfig's fields, in this order
OPTIONS = ("dtype", "device_map", "max_memory", "quantize")
DTYPES = ("auto", "float32", "bfloat16", "float16")
QUANTIZE = ("4bit", "8bit")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's strategies
# A size accelerate's convert_file_size_to_int reads: bytes, or a number with KB..TB / KiB..TiB.
_SIZE = re.compile(r"\d+|\d+(\.\d+)?\s*[kmgt]i?b", re.IGNORECASE)


def check_spelling(dtype: Any, device_map: Any, max_memory: Any, quantize: Any) -> None:
    """Raise ``ValueError`` naming the option for a value no machine could use (no file or
    device is looked at: a record written on another machine stays readable)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    if quantize is not None and quantize not in QUANTIZE:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE)}; got {quantize!r}")
    if device_map is not None and (not isinstance(device_map, str) or not (
            device_map in DEVICE_MAPS or device_map.lower().endswith(".json"))):
        raise ValueError(f"device_map must be one of {', '.join(DEVICE_MAPS)} or a .json file; got {device_map!r}")
    if max_memory is not None:
        if not isinstance(max_memory, str):
            raise ValueError(f"max_memory must be text like 0=20GiB,cpu=64GiB; got {max_memory!r}")
        parse_max_memory(max_memory)


def parse_max_memory(text: str) -> dict[int | str, str]:
    """``"0=20GiB,cpu=64GiB"`` -> ``{0: "20GiB", "cpu": "64GiB"}``, accelerate's ``max_memory``
    (GPUs by index); accelerate converts the sizes."""
    caps: dict[int | str, str] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        device, sep, size = (s.strip() for s in part.partition("="))
        if not sep or not device or not _SIZE.fullmatch(size):
            raise ValueError(f"max_memory: {part!r} is not DEVICE=SIZE (e.g. 0=20GiB or cpu=64GiB)")
        caps[int(device) if device.isdigit() else device] = size
    if not caps:
        raise ValueError("max_memory is empty; give DEVICE=SIZE pairs, e.g. 0=20GiB,cpu=64GiB")
    return caps
