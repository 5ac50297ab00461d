"""`softprompt predict`: run saved prompts on a file of inputs and write the predictions.

    softprompt predict runs/sst2/prompt --model smollm2 --input reviews.jsonl --task sst2 --output preds.jsonl
    softprompt predict sst2=runs/sst2/prompt rte=runs/rte/prompt --input mixed.jsonl \
        --task sst2=sst2 --task rte=rte --mode rank --output preds.jsonl

Each input row (of a .jsonl, .json, .csv or .tsv file, optionally .gz) is turned into text by
the task's template (``--task``, a name or a task file) or by ``--template`` (``str.format``
over the row's fields; with ``--task`` it replaces the task's), then the prompted model generates greedily (or, with ``--mode rank``, picks the
best of the task's label words). One JSON line per input row is written atomically:
``{"index", "prompt", "input", "generation", "prediction"}`` plus the row's ``id``/``idx`` if it
has one.

Several prompts (``NAME=DIR``; a bare ``DIR`` is named after its folder, or the run's folder
for ``RUN/prompt``) run on one frozen backbone (``softprompt.PromptBank``): each row names its
prompt in its ``prompt`` column (``--prompt-column``), batches mix them, and ``--task NAME=TASK``
gives a prompt its own task (template, label words). With one prompt, every row uses it.

A prompt folder ``softprompt train`` saved records how the prompt was trained to be read
(``usage.py``: task, style, template, label words, chat template, separator, max length); each
prompt's rows are read that way unless an option here says otherwise (one line on stderr says
so), so ``--task`` may be left out. A folder that records nothing is read as before records
existed: the task's own default template.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .common import add_backbone_options, add_task_options, backbone_options, positive_int, prompt_usage, task_argument, task_options

ID_FIELDS = ("id", "idx")
PREDICT_OPTIONS = ("template", "label_words")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="write prompts' predictions for a JSONL/CSV file of inputs",
        description="Run saved prompts on the rows of a .jsonl, .json, .csv or .tsv file and write one JSON line of "
                    "predictions per row. Several prompts run in mixed batches on one frozen model; each "
                    "row names its prompt in a 'prompt' column.")
    parser.add_argument("prompt_dirs", nargs="+", metavar="[NAME=]PROMPT_DIR",
                        help="prompt directories (model.save / softprompt train's OUTPUT/prompt), optionally named")
    parser.add_argument("--prompt-column", default="prompt", metavar="FIELD",
                        help="the input field naming each row's prompt (needed with several prompts; default: prompt)")
    parser.add_argument("--model", metavar="NAME|DIR|GGUF", help="the backbone the prompt was trained on (hub name, directory, .gguf; default: the embedded model)")
    parser.add_argument("--input", required=True, metavar="FILE", help="a .jsonl, .json, .csv or .tsv file of input rows (optionally .gz)")
    parser.add_argument("--task", action="append", metavar="[NAME=]TASK",
                        help="a task name or task file: its template formats the rows, its label words parse the outputs "
                             "(or give --template); NAME=TASK for one prompt's rows (repeat for each)")
    parser.add_argument("--mode", choices=["auto", "generate", "rank"], default="auto",
                        help="rank: pick the best label word (classification tasks); generate: free text; auto "
                             "(default, as eval): rank when every prompt's task has label words")
    parser.add_argument("--output", required=True, metavar="FILE", help="where to write the predictions (.jsonl)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output file (never the input or a run's files)")
    parser.add_argument("--batch-size", type=positive_int, default=16, metavar="B", help="rows per batch (default: %(default)s)")
    parser.add_argument("--max-length", type=positive_int, default=None, metavar="T",
                        help="input tokens kept (default: what the prompt was trained with, else 256)")
    parser.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=None,
                        help="wrap each input in the tokenizer's chat template (default: as the prompt was trained)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=16, metavar="N", help="tokens generated per row (default: %(default)s)")
    add_task_options(parser, PREDICT_OPTIONS)  # without --task, --template alone: free generation
    add_backbone_options(parser)
    parser.set_defaults(func=run)


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a .jsonl, .json, .csv or .tsv file (optionally .gz), read as the tasks' files are
    (tasks/local.py: the same quirks handled, the same one-line errors)."""
    from softprompt.tasks.local import read_file

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such input file")
    rows = [row for _, row in read_file(path)]
    if not rows:
        raise ValueError(f"{path}: no rows")
    return rows


def input_texts(rows: list[dict[str, Any]], task: Any, source: str) -> list[tuple[str, tuple[int, int]]]:
    """Each row formatted by the task's template (``task``: one for all rows, or a list, one per
    row), with the characters that give way when it is too long (``Example.cut``); missing
    fields: one-line error naming the row."""
    from softprompt.tasks.build import format_with_cut
    from softprompt.tasks.preprocess import TRANSFORMS

    texts = []
    tasks = task if isinstance(task, list) else [task] * len(rows)
    for number, (row, task) in enumerate(zip(rows, tasks), 1):
        where = f"{source} row {number}"
        if task.preprocess:
            try:
                row = TRANSFORMS[task.preprocess](row)
            except KeyError as err:
                raise ValueError(f"{where}: missing field '{err.args[0]}'") from None
        texts.append(format_with_cut(task, row, where))
    return texts


def prompt_dirs(values: list[str]) -> dict[str, str]:
    """``[NAME=]DIR`` arguments -> {name: dir}; a bare DIR is named after its folder (the run's
    folder for ``RUN/prompt``)."""
    named: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep:
            path = value
            folder = Path(value.rstrip("/\\"))
            name = folder.parent.name if folder.name == "prompt" and folder.parent.name else folder.name
        if not name or not path:
            raise ValueError(f"{value!r}: give a prompt directory as DIR or NAME=DIR")
        if name in named:
            raise ValueError(f"two prompts are named {name!r}; name them: NAME=DIR")
        named[name] = path
    return named


def row_prompts(rows: list[dict[str, Any]], names: list[str], column: str, source: str) -> list[str]:
    """Each row's prompt name: its ``column`` field, or the one prompt when there is only one."""
    if len(names) == 1:
        return names * len(rows)
    chosen = []
    for number, row in enumerate(rows, 1):
        if column not in row:
            raise ValueError(f"{source} row {number}: missing field '{column}' (which prompt: {', '.join(names)})")
        name = str(row[column])
        if name not in names:
            raise ValueError(f"{source} row {number}: {column} {name!r} is none of the prompts given ({', '.join(names)})")
        chosen.append(name)
    return chosen


def task_for_template(path: str, style: str | None, protocol: str | None) -> Any:
    """A task file read for its template and labels only: predict reads its rows from --input,
    so a file that names no data (``data``, ``local`` or ``hub``) gets a source never read."""
    from softprompt.tasks.taskfile import read_task_document, task_from_dict

    document = read_task_document(path)
    if isinstance(document, dict) and not {"data", "local", "hub"} & {str(k).replace("-", "_") for k in document}:
        document = {**document, "local": {"files": {"test": ["(predict reads --input)"]}}}
    return task_from_dict(document, where=str(path), base=Path(path).parent, default_name=Path(path).name.split(".")[0],
                          style=style, protocol=protocol)


def _tasks(args, names: list[str], usages: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Each prompt's task: ``--task NAME=TASK``, else the bare ``--task TASK``, else the task the
    prompt was trained on, else ``--template`` alone; the template and label words its record
    holds unless given here (``usage.choose`` says when an option wins over them)."""
    from softprompt.tasks import Task, resolve_task
    from softprompt.tasks.taskfile import is_task_file
    from softprompt.usage import choose

    options = task_options(args, list(PREDICT_OPTIONS))
    default, own = None, {}
    for value in args.task or []:
        name, sep, task_name = value.partition("=")
        if not sep or (name not in names and ("/" in name or "." in name)):  # a bare task (a file path may hold '=')
            if default is not None:
                raise ValueError(f"--task given twice without a prompt name ({default} and {value}); use NAME=TASK")
            default = value
        elif name not in names:
            raise ValueError(f"--task {value}: no prompt named {name!r} ({', '.join(names)})")
        else:
            own[name] = task_name
    missing = [name for name in names if name not in own and default is None and not usages[name].get("task")]
    if args.task and missing:
        raise ValueError(f"no --task for prompt(s) {', '.join(missing)}: give --task TASK or --task NAME=TASK")
    tasks = {}
    for name in names:
        usage, whose = usages[name], name if len(names) > 1 else ""
        given = task_argument(own.get(name, default))
        task_name = choose("--task", given, usage.get("task"), "predict", whose)
        if task_name is None:
            if options.get("template") is None:
                raise ValueError("give --task (a name or task file) or --template")
            if args.label_words:
                raise ValueError("--label-words needs --task")
            # A bare template: free generation, no label words; the prediction is the text.
            tasks[name] = Task(name="template", kind="generation", template=options["template"], metrics=("em",))
            continue
        same = task_name == usage.get("task")  # the recorded template and words are that task's
        template = choose("--template", options.get("template"), usage.get("template") if same else None, "predict", whose)
        recorded_words = ",".join(usage["label_words"]) if same and usage.get("label_words") else None
        words = choose("--label-words", options.get("label_words"), recorded_words, "predict", whose)
        words = usage["label_words"] if same and words == recorded_words and words is not None else words
        style, protocol = usage.get("style"), usage.get("protocol")
        task = task_for_template(task_name, style, protocol) if is_task_file(task_name) else resolve_task(task_name, style=style, protocol=protocol)
        tasks[name] = task.with_overrides(label_words=words, template=template)
    return tasks


def reading(usage: dict[str, Any], args) -> tuple[bool, str, int, str]:
    """How a prompt's rows are tokenized: ``(chat_template, separator, max_length,
    truncation_side)``, the options given here winning over what it was trained with."""
    from softprompt.usage import choose

    chat = bool(choose("--chat-template", args.chat_template, usage.get("chat_template"), "predict"))
    separator = usage.get("separator") if "separator" in usage and chat == usage.get("chat_template", False) else ("" if chat else " ")
    max_length = choose("--max-length", args.max_length, usage.get("max_length"), "predict") or 256
    return chat, separator, max_length, usage.get("truncation_side", "right")


def run(args) -> int:
    import torch

    import softprompt
    from softprompt.backbones import load_backbone
    from softprompt.batching import apply_chat_template
    from softprompt.evaluate import generate_texts, rank_choices
    from softprompt.io import write_jsonl_atomically
    from softprompt.tasks import Example

    from softprompt.io import read_record

    from .outputs import output_file

    placement = backbone_options(args)  # a bad --dtype before anything is read
    dirs = prompt_dirs(args.prompt_dirs)
    output_file(args.output, "--output", args.overwrite, inputs=[args.input, *dirs.values()])
    names = list(dirs)
    # what each prompt records it was trained with (a folder that records nothing: the style
    # train picks on the backbone, a base model's where it is one)
    usages = {name: prompt_usage(read_record(path), args.model) for name, path in dirs.items()}
    tasks = _tasks(args, names, usages)
    settings = {name: reading(usages[name], args) for name in names}
    if args.mode == "auto":  # eval's rule (evaluate.default_mode), for every prompt's task at once
        args.mode = "rank" if all(t.kind == "classification" and t.label_words for t in tasks.values()) else "generate"
    if args.mode == "rank":
        for name, task in tasks.items():
            if not (task.kind == "classification" and task.label_words):
                raise ValueError(f"--mode rank needs a classification --task (its label words are the choices); prompt {name} has {task.name}")
    rows = read_rows(args.input)
    chosen = row_prompts(rows, names, args.prompt_column, args.input)
    formatted = input_texts(rows, [tasks[name] for name in chosen], args.input)
    texts = [t for t, _ in formatted]
    # each row brings its own task's label words, so one batch can rank rows of different tasks
    examples = [Example(input_text=t, target_text="", label=None, cut=cut,
                        choices=tuple(tasks[name].label_words) if args.mode == "rank" else None)
                for (t, cut), name in zip(formatted, chosen)]

    backbone, tokenizer = load_backbone(args.model, **placement)
    bank = softprompt.PromptBank(backbone, dirs).eval()
    # rows whose prompts are read alike run in one mixed batch stream
    groups: dict[tuple, list[int]] = {}
    for i, name in enumerate(chosen):
        groups.setdefault(settings[name], []).append(i)
    generations, predictions = [None] * len(examples), [None] * len(examples)
    with torch.no_grad():
        for (chat, separator, max_length, side), index in groups.items():
            part = [examples[i] for i in index]
            part = apply_chat_template(part, tokenizer) if chat else part
            names_part = [chosen[i] for i in index]
            if args.mode == "rank":
                best = rank_choices(bank, tokenizer, part, None, args.batch_size, max_length, separator, side, prompts=names_part)
                for i, b in zip(index, best):
                    predictions[i] = int(b)  # classification: the choices are the label words in class order
            else:
                texts_part = generate_texts(bank, tokenizer, part, args.batch_size, max_length, args.max_new_tokens, side, prompts=names_part)
                for i, g in zip(index, texts_part):
                    generations[i] = g
                    predictions[i] = tasks[chosen[i]].parse(g) if tasks[chosen[i]].kind != "generation" else g.strip()

    records = []
    for i, (row, name, text, generation, prediction) in enumerate(zip(rows, chosen, texts, generations, predictions)):
        record = {"index": i, "prompt": name, "input": text, "generation": generation, "prediction": _readable(tasks[name], prediction)}
        record.update({k: row[k] for k in ID_FIELDS if k in row})
        records.append(record)
    write_jsonl_atomically(args.output, records)
    invalid = sum(r["prediction"] is None for r in records)
    note = f" ({invalid} generations matched no label)" if invalid else ""
    mixed = f" from {len(names)} prompts in mixed batches" if len(names) > 1 else ""
    print(f"wrote {len(records)} predictions{mixed} to {args.output}{note}")
    return 0


def _readable(task: Any, prediction: Any) -> Any:
    """Class index -> the class name when the task has names (what a user wants to read)."""
    names = getattr(task, "label_names", None)
    if task.kind == "classification" and isinstance(prediction, int) and names and 0 <= prediction < len(names):
        return names[prediction]
    return prediction
