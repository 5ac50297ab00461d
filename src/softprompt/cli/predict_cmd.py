"""`softprompt predict`: run a saved prompt on a file of inputs and write the predictions.

    softprompt predict runs/sst2/prompt --model smollm2 --input reviews.jsonl --task sst2 --output preds.jsonl

Each input row (of a .jsonl, .json, .csv or .tsv file, optionally .gz) is turned into text by
the task's template (``--task``, a name or a task file) or by ``--template`` (``str.format``
over the row's fields; with ``--task`` it replaces the task's), then the prompted model generates greedily (or, with ``--mode rank``, picks the
best of the task's label words). One JSON line per input row is written atomically:
``{"index", "input", "generation", "prediction"}`` plus the row's ``id``/``idx`` if it has one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import add_task_argument, add_task_options, positive_int, task_argument, task_options

ID_FIELDS = ("id", "idx")
PREDICT_OPTIONS = ("template", "label_words")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="write a prompt's predictions for a JSONL/CSV file of inputs",
        description="Run a saved prompt on the rows of a .jsonl, .json, .csv or .tsv file and write one JSON line of "
                    "predictions per row.")
    parser.add_argument("prompt_dir", metavar="PROMPT_DIR", help="a prompt directory (model.save / softprompt train's OUTPUT/prompt)")
    parser.add_argument("--model", help="the backbone the prompt was trained on (hub name, directory, .gguf; default: the embedded model)")
    parser.add_argument("--input", required=True, metavar="FILE", help="a .jsonl, .json, .csv or .tsv file of input rows (optionally .gz)")
    add_task_argument(parser, "; its template formats the rows, its label words parse the outputs (or give --template)")
    parser.add_argument("--mode", choices=["generate", "rank"], default="generate",
                        help="generate text (default) or pick the best label word (classification tasks)")
    parser.add_argument("--output", required=True, metavar="FILE", help="where to write the predictions (.jsonl)")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--max-length", type=positive_int, default=256, help="input tokens kept (cut from the left)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=16)
    add_task_options(parser, PREDICT_OPTIONS)  # without --task, --template alone: free generation
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
    """Each row formatted by the task's template, with the characters that give way when it is
    too long (``Example.cut``); missing fields: one-line error naming the row."""
    from softprompt.tasks.build import format_with_cut
    from softprompt.tasks.preprocess import TRANSFORMS

    texts = []
    for number, row in enumerate(rows, 1):
        where = f"{source} row {number}"
        if task.preprocess:
            try:
                row = TRANSFORMS[task.preprocess](row)
            except KeyError as err:
                raise ValueError(f"{where}: missing field '{err.args[0]}'") from None
        texts.append(format_with_cut(task, row, where))
    return texts


def _task(args) -> Any:
    from softprompt.tasks import Task, resolve_task

    options = task_options(args, list(PREDICT_OPTIONS))
    if args.task:
        return resolve_task(task_argument(args.task), **options)
    if args.template is None:
        raise ValueError("give --task (a name or task file) or --template")
    if args.label_words:
        raise ValueError("--label-words needs --task")
    # A bare template: free generation, no label words; the prediction is the text.
    return Task(name="template", kind="generation", template=options["template"], metrics=("em",))


def run(args) -> int:
    import torch

    import softprompt
    from softprompt.backbones import load_backbone
    from softprompt.evaluate import generate_texts, rank_predictions
    from softprompt.io import write_jsonl_atomically
    from softprompt.tasks import Example

    task = _task(args)
    if args.mode == "rank" and not (task.kind == "classification" and task.label_words):
        raise ValueError("--mode rank needs a classification --task (its label words are the choices)")
    rows = read_rows(args.input)
    formatted = input_texts(rows, task, args.input)
    texts = [t for t, _ in formatted]
    examples = [Example(input_text=t, target_text="", label=None, choices=None, cut=cut) for t, cut in formatted]

    backbone, tokenizer = load_backbone(args.model)
    model = softprompt.load(backbone, args.prompt_dir).eval()
    with torch.no_grad():
        if args.mode == "rank":
            generations = [None] * len(examples)
            predictions = rank_predictions(model, tokenizer, task, examples, args.batch_size, args.max_length)
        else:
            generations = generate_texts(model, tokenizer, examples, args.batch_size, args.max_length, args.max_new_tokens)
            predictions = [task.parse(g) if task.kind != "generation" else g.strip() for g in generations]

    records = []
    for i, (row, text, generation, prediction) in enumerate(zip(rows, texts, generations, predictions)):
        record = {"index": i, "input": text, "generation": generation, "prediction": _readable(task, prediction)}
        record.update({k: row[k] for k in ID_FIELDS if k in row})
        records.append(record)
    write_jsonl_atomically(args.output, records)
    invalid = sum(r["prediction"] is None for r in records)
    note = f" ({invalid} generations matched no label)" if invalid else ""
    print(f"wrote {len(records)} predictions to {args.output}{note}")
    return 0


def _readable(task: Any, prediction: Any) -> Any:
    """Class index -> the class name when the task has names (what a user wants to read)."""
    names = getattr(task, "label_names", None)
    if task.kind == "classification" and isinstance(prediction, int) and names and 0 <= prediction < len(names):
        return names[prediction]
    return prediction
