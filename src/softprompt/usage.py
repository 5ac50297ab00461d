"""How a prompt was trained to be read: the one record of it (``usage`` in ``prompt_config.json``).

A soft prompt is tuned for one way of writing the input: the task's template (and its style),
the label words it scores, the chat template, the separator before the target, the length rows
were cut to. Read with another template it still runs, only worse (a decoder prompt trained on
the instruction template scored 0.46 fed ``sentence: ...`` against 0.495), so every prompt
folder ``softprompt train`` saves carries what it was trained with, and ``predict`` and
``eval`` read inputs that way unless an option given on their command line says otherwise
(``choose`` prints one line then). The sink is not here: it is the method config's
(``config.sink``), which already travels with the prompt. Older folders have no record; they
load as before (``None``) and the commands fall back to the style the backbone's kind picks.

Torch-free and knowing neither ``TrainConfig`` nor ``Task`` by import: ``usage_record`` reads
their fields.
"""

from __future__ import annotations

import sys
from typing import Any

# field -> the JSON types it may hold (None: may be absent/null)
FIELDS: dict[str, tuple[type, ...]] = {
    "task": (str,),
    "protocol": (str,),
    "style": (str,),
    "template": (str,),
    "label_words": (list,),
    "chat_template": (bool,),
    "separator": (str,),
    "max_length": (int,),
    "truncation_side": (str,),
}


def usage_record(config: Any, task: Any) -> dict[str, Any]:
    """What a run's prompt was trained with: ``config`` a resolved ``TrainConfig``, ``task`` its
    ``Task`` (the template and label words as the run used them, overrides applied)."""
    return {
        "task": config.task,
        "protocol": config.protocol,
        "style": config.style,
        "template": task.template,
        "label_words": list(task.label_words) if task.label_words else None,
        "chat_template": bool(config.chat_template),
        "separator": config.separator,
        "max_length": config.max_length,
        "truncation_side": config.truncation_side,
    }


def check_usage(value: Any, where: str) -> dict[str, Any] | None:
    """``value`` (a prompt record's ``usage``) checked field by field, its empty fields dropped;
    ``ValueError`` naming ``where`` and the field. None (an older folder) stays None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"{where}: field 'usage' must be a JSON object, got {value!r}")
    for key, item in value.items():
        kinds = FIELDS.get(key)
        if kinds is None:
            raise ValueError(f"{where}: unknown field 'usage.{key}' (known: {', '.join(FIELDS)})")
        bad = item is not None and (not isinstance(item, kinds) or (isinstance(item, bool) and bool not in kinds))
        if key == "label_words" and isinstance(item, list) and not all(isinstance(w, str) for w in item):
            bad = True
        if key == "max_length" and isinstance(item, int) and not isinstance(item, bool) and item < 2:
            bad = True
        if bad:
            raise ValueError(f"{where}: field 'usage.{key}' has the wrong type or value: {item!r}")
    return {key: item for key, item in value.items() if item is not None}


def choose(option: str, given: Any, recorded: Any, command: str, what: str = "") -> Any:
    """The value a command uses for ``option``: the one given on its command line, else the
    recorded one. When both are there and differ, one line on stderr says the option wins
    over what the prompt was trained with (``what``: the prompt's name, for several)."""
    if given is None:
        return recorded
    if recorded is not None and given != recorded:
        whose = f" of prompt {what}" if what else ""
        print(f"softprompt {command}: {option} {given!r} overrides {recorded!r}, which the prompt{whose} was trained with",
              file=sys.stderr)
    return given
