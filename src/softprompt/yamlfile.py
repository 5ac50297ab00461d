"""YAML as softprompt reads and writes it (configs, sweep specs, task files, ``--method-option``).

YAML 1.2's scalars, as users mean them. PyYAML follows YAML 1.1, where
* a float needs a dot (``1.0e-3``) and ``1e-3`` stays a string: here it is a float;
* ``yes``/``no``/``on``/``off`` are booleans (``label_words: [yes, no, maybe]`` became
  ``[True, False, 'maybe']``): here only ``true``/``false`` are, the rest is text;
* ``010`` is octal 8 and ``1:30`` is sexagesimal 90: here they are 10 and the text ``1:30``.
`dump_yaml` quotes every string that `load_yaml` would read back as another type, so what it
writes reads back equal.

What a file cannot do here: repeat a key in one mapping (``lr: 0.1`` then ``lr: 100`` kept the
last silently), expand aliases past ``MAX_NODES`` values (a "billion laughs" file is a few lines
that expand to billions of values the moment anything walks them), or nest past Python's
recursion limit. Each is a ``yaml.MarkedYAMLError`` naming the line, so every reader's existing
"FILE:LINE: invalid YAML (...)" message reports it.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

FLOAT = re.compile(r"^[-+]?(?:(?:\d[\d_]*)?\.?\d[\d_]*[eE][-+]?\d+|\d[\d_]*\.[\d_]*(?:[eE][-+]?\d+)?|\.\d[\d_]*(?:[eE][-+]?\d+)?|\.(?:inf|Inf|INF)|[-+]\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$")


# Values a document may expand to through its aliases; a real config, spec or task file has
# hundreds. Shared objects are built once by PyYAML, so the count is what a reader walking the
# result (validation, an error message's repr) would visit.
MAX_NODES = 100_000

INT = re.compile(r"^(?:[-+]?\d[\d_]*|0o[0-7]+|0x[0-9a-fA-F]+)$")
BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


class YAMLInputError(yaml.MarkedYAMLError):
    """A document this module refuses (see the module docstring)."""


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node.start_mark)
                except TypeError:  # an unhashable key: PyYAML's own error follows
                    continue
                if first is not key_node.start_mark:
                    raise YAMLInputError(None, None, f"duplicate key {key!r} (first on line {first.line + 1})", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node):
        text = self.construct_scalar(node).replace("_", "")
        if text.startswith("0o"):
            return int(text[2:], 8)
        return int(text, 16) if text.startswith("0x") else int(text)

    def construct_yaml_bool(self, node):
        return self.construct_scalar(node).lower() == "true"

    def get_single_data(self):
        node = self.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return self.construct_document(node)


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a node graph that expands past ``MAX_NODES`` values, or refers to itself."""
    sizes: dict[int, int] = {}
    open_: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in open_:
            raise YAMLInputError(None, None, "an alias refers to the value that contains it", node.start_mark)
        open_.add(key)
        total = 1
        if isinstance(node, yaml.SequenceNode):
            children = node.value
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        else:
            children = []
        for child in children:
            total += size(child)
            if total > MAX_NODES:
                raise YAMLInputError(None, None, f"aliases expand to more than {MAX_NODES:,} values (an alias bomb?)", node.start_mark)
        open_.discard(key)
        sizes[key] = total
        return total

    size(root)


# YAML 1.2's core schema for booleans and integers (PyYAML's resolvers are 1.1's): drop 1.1's
# and add 1.2's, on a copy of the table so PyYAML's own SafeLoader is untouched.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", BOOL, list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:int", INT, list("-+0123456789"))
_Loader.add_constructor("tag:yaml.org,2002:bool", _Loader.construct_yaml_bool)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


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
    """YAML (a superset of JSON) with YAML 1.2's scalars; the refusals of the module docstring."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except RecursionError:
        raise YAMLInputError(None, None, "nested too deeply", None) from None


def dump_yaml(data: Any) -> str:
    """Block-style YAML, keys in the order given, that `load_yaml` reads back equal."""
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
