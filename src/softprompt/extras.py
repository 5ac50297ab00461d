"""The optional packages: which extra of ``pip install 'softprompt[...]'`` brings each, and the one
import every use of an optional package goes through, so a missing one is one line naming the
command to run, never a traceback. The core install (torch, transformers, accelerate and what
task loading needs) runs ``attach``, ``load``, ``train`` and ``eval`` on local files without any.
"""

from __future__ import annotations

import importlib
from types import ModuleType

# The extra (pyproject.toml's [project.optional-dependencies]) that installs each optional package.
EXTRAS = {
    "optuna": "sweep",
    "matplotlib": "plots",
    "gguf": "gguf",
    "peft": "peft",
    "tensorboard": "trackers",
    "mlflow": "trackers",
    "wandb": "trackers",
}


class MissingExtra(ImportError, ValueError):
    """An optional package is not installed. A ValueError too, so the CLI prints its one line
    (``softprompt sweep: error: ...``) as it prints every user error."""


def install_hint(module: str) -> str:
    """``pip install 'softprompt[sweep]'`` for ``optuna``."""
    return f"pip install 'softprompt[{EXTRAS[module.split('.')[0]]}]'"


def require(module: str, what: str = "") -> ModuleType:
    """``import module`` (a dotted name: ``matplotlib.pyplot``), or ``MissingExtra`` of one line:
    "``what`` needs optuna: pip install 'softprompt[sweep]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        top = module.split(".")[0]
        if err.name not in (None, top) and not str(err.name).startswith(top + "."):
            raise  # the package is there but something it imports is broken: that error is the useful one
        raise MissingExtra(f"{what or 'this'} needs {top}, which is not installed: {install_hint(top)}") from None
