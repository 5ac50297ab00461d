"""YAML as softprompt reads and writes it (configs, sweep specs, task files, ``--method-option``).

YAML 1.2's numbers: ``1e-3`` is a float, as users mean it. PyYAML follows YAML 1.1, where a
float needs a dot (``1.0e-3``) and ``1e-3`` stays a string. `dump_yaml` quotes every string
that `load_yaml` would read back as a number, so what it writes reads back equal.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

FLOAT = re.compile(r"^[-+]?(?:(?:\d[\d_]*)?\.?\d[\d_]*[eE][-+]?\d+|\d[\d_]*\.[\d_]*(?:[eE][-+]?\d+)?|\.\d[\d_]*(?:[eE][-+]?\d+)?|\.(?:inf|Inf|INF)|[-+]\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


class _Loader(yaml.SafeLoader):
    pass


class _Dumper(yaml.SafeDumper):
    pass


for _cls in (_Loader, _Dumper):
    _cls.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT, list("-+0123456789."))


def _str(dumper: yaml.SafeDumper, text: str):
    # a template with newlines reads best as a block; plain scalars otherwise
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text and text == text.rstrip(" ") and not text.endswith("\n") and "\t" not in text else None)


def _list(dumper: yaml.SafeDumper, items: list):
    # short lists of plain values on one line: labels: ['0', '1']
    flat = all(isinstance(v, (str, int, float, bool)) and not (isinstance(v, str) and "\n" in v) for v in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flat)


_Dumper.add_representer(str, _str)
_Dumper.add_representer(list, _list)


def load_yaml(text: str) -> Any:
    """YAML (a superset of JSON) with YAML 1.2's numbers."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


def dump_yaml(data: Any) -> str:
    """Block-style YAML, keys in the order given, that `load_yaml` reads back equal."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
