"""Rows -> Examples: read a split (local files or hub), apply the protocol, format each row.

``task`` is a `Task` (tasks/spec.py, which imports this module: ``Task.load`` is
`load_examples`); only its fields are read here.
"""

from __future__ import annotations

import string

from softprompt.tasks import hub, local
from softprompt.tasks.preprocess import TRANSFORMS
from softprompt.tasks.rows import Example, template_fields
from softprompt.tasks.splits import select_rows


def load_examples(task, split: str = "train", data_dir=None, protocol: str = "paper",
                  seed: int = 42) -> list[Example]:
    """See `Task.load`."""
    if data_dir is None and task.hub is None and task.local is not None:
        data_dir = ""  # a custom task: its file paths are complete
    if data_dir is None:
        def read(official):
            return hub.read_rows(task, official)
    else:
        def read(official):
            return local.read_rows(task, official, data_dir or ".")

    rows = select_rows(task, split, protocol, seed, read)
    if not rows:
        raise ValueError(f"task {task.name}: the {split} split is empty")
    is_train = split == "train" or split.startswith("train")
    examples = []
    for row in rows:
        examples.extend(row_to_examples(task, row, is_train))
    if not examples:
        raise ValueError(f"task {task.name}: the {split} split has no usable examples")
    return examples


def format_input(task, row: dict, where: str) -> str:
    """Fill the template from the row; a missing field is a one-line error naming it."""
    return format_with_cut(task, row, where)[0]


def format_with_cut(task, row: dict, where: str) -> tuple[str, tuple[int, int]]:
    """The filled template and the characters that may be cut when it is too long: the value
    of ``task.truncate_field`` (the passage), else everything before the template's closing
    text (T5 templates end with a field; instruction ones with a cue such as ``\nAnswer:``,
    which must survive)."""
    for name in template_fields(task.template):
        if name not in row:
            fields = ", ".join(k for k in row if not k.startswith("_"))
            raise ValueError(f"{where}: template field '{name}' not in the row (fields: {fields})")
    text, cut = "", None
    for literal, name, _, _ in string.Formatter().parse(task.template):  # plain fields only (template_fields)
        text += literal
        if name is None:
            continue
        if row[name] is None:  # JSON null: never the text "None"
            raise ValueError(f"{where}: field '{name}' is null; give it a value or drop the row")
        value = format(row[name])
        if cut is None and task.truncate_field is not None and name == task.truncate_field:
            cut = (len(text), len(text) + len(value))
        text += value
    if cut is None:
        parts = list(string.Formatter().parse(task.template))
        closing = parts[-1][0] if parts and parts[-1][1] is None else ""
        cut = (0, len(text) - len(closing))
    return text, cut


def row_to_examples(task, row: dict, is_train: bool) -> list[Example]:
    """One row becomes one Example (ReCoRD's training rows: one per gold answer, and its
    evaluation rows too under ``eval_copies``; T5's WSC training drops the rows whose candidate is not the referent). A task with
    ``choice_fields`` (COPA in the instruction style) is answered with the row's own text."""
    where = row.get("_where", "row")
    if task.preprocess:
        try:
            row = TRANSFORMS[task.preprocess](row)
        except KeyError as err:
            raise ValueError(f"{where}: missing field '{err.args[0]}'") from None
    label = _label(task, row, where)
    if is_train and task.train_filter == "label_true" and label != 1:
        return []
    if not is_train and task.eval_filter == "label_true" and label != 1:
        return []
    input_text, cut = format_with_cut(task, row, where)
    group = str(row[task.group_field]) if task.group_field else None
    choices = None
    if task.choice_fields:  # the row's own texts, one per class (COPA's options)
        choices = tuple(str(_field(row, name, where)) for name in task.choice_fields)
    elif task.choices_field:
        choices = tuple(str(c) for c in _field(row, task.choices_field, where))
    elif task.label_words:
        choices = tuple(task.label_words)

    if task.kind == "classification":
        words = choices if task.choice_fields else task.label_words
        target = words[label] if label is not None else ""
        return [Example(input_text, target, label, choices, (), group, cut)]
    if task.kind == "regression":
        target = format_number(label, task.round_step) if label is not None else ""
        value = None if label is None else float(target) if task.round_gold else float(label)
        return [Example(input_text, target, value, choices, (), group, cut)]

    answers = _field(row, task.answers_field, where)
    answers = (answers,) if isinstance(answers, str) else tuple(str(a) for a in answers)
    if task.label_names is None:
        label = answers[0] if answers else None
    if is_train and task.expand_answers and len(answers) > 1:
        return [Example(input_text, a, a, choices, answers, group, cut) for a in answers]
    if not is_train and task.eval_copies and answers:
        # one row per gold answer, averaged over rows (no group): DPT's data_utils.py:862-869
        # keeps every answer on each copy (eval_utils.py:50-54); DePT's src/tasks.py:819-826
        # scores each copy against its own target (src/postprocessors.py:36-40)
        own = task.eval_copies == "own_answer"
        return [Example(input_text, a, a, choices, (a,) if own else answers, None, cut) for a in answers]
    target = answers[0] if answers else ""
    return [Example(input_text, target, label, choices, answers, group, cut)]


def _field(row: dict, name: str, where: str):
    if name not in row:
        raise ValueError(f"{where}: missing field '{name}'")
    return row[name]


def _label(task, row: dict, where: str):
    """The row's class index / float (already normalized by the source), checked."""
    if task.label_field is None or (task.kind == "generation" and task.label_names is None):
        return None
    if task.label_field not in row:
        raise ValueError(f"{where}: missing field '{task.label_field}'")
    label = row[task.label_field]
    if label is None or task.kind == "regression":
        return label
    n = len(task.label_names or task.label_words or ())
    if not isinstance(label, int) or not 0 <= label < n:
        raise ValueError(f"{where}: field '{task.label_field}': unknown label {label!r}")
    return label


def format_number(value: float, step: float | None) -> str:
    """A regression target as text: rounded to `step` when given (T5's STS-B: 0.2, as
    ``round(x * 5) / 5`` with one decimal; `round` rounds half to even like ``tf.round``)."""
    if step is None:
        return f"{float(value):g}"
    per_unit = round(1 / step)
    decimals = max(0, len(f"{step:g}".partition(".")[2]))
    return f"{round(float(value) * per_unit) / per_unit:.{decimals}f}"
