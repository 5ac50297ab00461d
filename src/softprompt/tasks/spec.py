"""What a task is: data (fields, template, label words, metric names), never code paths.

A `Task` says where its rows come from (`LocalFormat` for the benchmark's own files, `HubSource`
for `datasets`; tasks/rows.py), how a row becomes model text (`template`, an optional named
`preprocess` step), what the target is (label words, a regression value, or answer strings) and
how it is scored (`metrics`). Loading, splitting and scoring live in the modules below this one
(build, splits, softprompt.metrics); the methods here only delegate, so a reader sees the whole
contract in this file. Tasks are built from task files (tasks/taskfile.py) or `custom_task`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from softprompt import metrics
from softprompt.tasks.build import load_examples
from softprompt.tasks.rows import Example, HubSource, LocalFormat, template_fields
from softprompt.tasks.splits import few_shot

# Example, HubSource, LocalFormat and template_fields are part of this module's interface.
__all__ = ["KINDS", "SPLITS", "Example", "HubSource", "LocalFormat", "Task", "template_fields"]

KINDS = ("classification", "regression", "generation")
SPLITS = ("train", "validation", "test")
EVAL_COPIES = (None, "all_answers", "own_answer")


@dataclass(frozen=True)
class Task:
    """A task as data. Build one with `get_task`, `read_task_file` or `custom_task`; see the
    module docstring."""

    name: str
    kind: str
    template: str
    metrics: tuple[str, ...]
    benchmark: str = "custom"
    description: str = ""
    label_field: str | None = "label"
    label_names: tuple[str, ...] | None = None  # class names, in class-index order
    raw_labels: tuple[Any, ...] | None = None  # label values as written in local files, same order
    label_words: tuple[str, ...] | None = None  # target text per class
    answers_field: str | None = None  # generation: field holding the gold answer(s)
    choices_field: str | None = None  # field holding rank-mode candidates (ReCoRD entities)
    # classification answered with the row's own text: the field holding each class's text, in
    # class order (COPA: choice1, choice2); each example's choices and target are those texts
    # and the prediction is the class index. label_words then only name the classes.
    choice_fields: tuple[str, ...] = ()
    group_field: str | None = None  # field holding the grouping id (after preprocess)
    preprocess: str | None = None  # name of a row transform in tasks/preprocess.py
    truncate_field: str | None = None  # the field that gives way when an input is too long (the passage)
    train_filter: str | None = None  # "label_true": train only on true rows (T5's WSC)
    eval_filter: str | None = None  # "label_true": validate and test on true rows only (DPT's WSC)
    max_train_rows: int | None = None  # cap on training rows, after the protocol's split (Yelp: 100k)
    expand_answers: bool = False  # train on one copy per gold answer (ReCoRD)
    scoring: str | None = None  # "wsc_referent": generation scored by referent matching
    # ReCoRD's evaluation rows, as each paper's code builds them: None, one per query scored
    # against its best gold answer (SuperGLUE's definition); "all_answers", one copy per gold
    # answer scored against all of them (DPT); "own_answer", one copy per answer scored
    # against that answer only (DePT, ULPT)
    eval_copies: str | None = None
    # scored as the papers' code scores: a prediction is a label word only when the text is
    # exactly that word (no case folding, no trailing "."), and under Matthews correlation an
    # invalid prediction is a class of its own. Set by the protocol the task is read under
    # (splits.STRICT_PROTOCOLS), not by its file: not part of equality or of the written file.
    strict: bool = field(default=False, compare=False)
    round_step: float | None = None  # regression: target text rounded to this step (STS-B: 0.2)
    round_gold: bool = True  # regression: score against the rounded target (T5), else the row's value
    size: str | None = None  # "small" | "large" | None: the attempt protocol's partition
    paper_splits: Mapping[str, str] = field(default_factory=dict)  # split -> official, paper
    attempt_splits: Mapping[str, str] = field(default_factory=dict)  # same, attempt protocol
    attempt_test_split: str = "validation"  # official split a large task reports on (attempt)
    local: LocalFormat | None = None
    hub: HubSource | None = None
    aliases: tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"task {self.name}: kind must be one of {KINDS}, got {self.kind!r}")
        if not self.metrics:
            raise ValueError(f"task {self.name}: needs at least one metric")
        if self.kind == "classification":
            if not self.label_words:
                raise ValueError(f"task {self.name}: a classification task needs label words")
            if self.label_names and len(self.label_names) != len(self.label_words):
                raise ValueError(
                    f"task {self.name}: {len(self.label_words)} label words for "
                    f"{len(self.label_names)} classes")
        if self.label_words is not None:
            words = tuple(self.label_words)
            if any(not isinstance(w, str) or not w.strip() for w in words):
                raise ValueError(f"task {self.name}: label words must be non-empty strings")
            if len(set(words)) != len(words):
                raise ValueError(f"task {self.name}: label words must be distinct, got {words}")
        if self.eval_copies not in EVAL_COPIES:
            raise ValueError(f"task {self.name}: eval_copies must be one of {', '.join(map(str, EVAL_COPIES))}, got {self.eval_copies!r}")
        for name in ("train_filter", "eval_filter"):
            if getattr(self, name) not in (None, "label_true"):
                raise ValueError(f"task {self.name}: {name} must be None or 'label_true', got {getattr(self, name)!r}")
        cap = self.max_train_rows
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ValueError(f"task {self.name}: max_train_rows must be a positive integer, got {cap!r}")
        if self.choice_fields:
            if self.kind != "classification":
                raise ValueError(f"task {self.name}: choice_fields need a classification task")
            if len(self.choice_fields) != len(self.label_words):
                raise ValueError(
                    f"task {self.name}: {len(self.choice_fields)} choice fields for "
                    f"{len(self.label_words)} classes")
        template_fields(self.template)  # raises on a malformed template

    # ----------------------------------------------------------------- derived facts
    @property
    def num_classes(self) -> int | None:
        """Number of classes (classification), else None."""
        return len(self.label_words) if self.kind == "classification" else None

    def with_overrides(self, label_words: str | Sequence[str] | None = None,
                       template: str | None = None) -> "Task":
        """A copy with other label words and/or another template.

        label_words: a sequence (one word per class), ``"names"`` for the class names
            (``entailment``, ...) or ``"digits"`` for ``"0"``, ``"1"``, ...; they replace a
            task's per-row choices (``choice_fields``) too.
        """
        changes: dict[str, Any] = {}
        if template is not None:
            changes["template"] = template
        if label_words is not None:
            if self.kind != "classification" or not self.label_words:
                raise ValueError(f"task {self.name} has no label words to override")
            n = len(self.label_words)
            if label_words == "names":
                if not self.label_names:
                    raise ValueError(f"task {self.name} has no class names")
                words = tuple(self.label_names)
            elif label_words == "digits":
                words = tuple(str(i) for i in range(n))
            elif isinstance(label_words, str):
                words = tuple(w.strip() for w in label_words.split(","))
            else:
                words = tuple(label_words)
            if len(words) != n:
                raise ValueError(
                    f"task {self.name} has {n} classes {self.label_names or ''}, "
                    f"got {len(words)} label words {words}")
            changes["label_words"] = words
            changes["choice_fields"] = ()
        return dataclasses.replace(self, **changes) if changes else self

    # ----------------------------------------------------------------- the contract
    def load(self, split: str = "train", data_dir: str | None = None, protocol: str = "paper",
             seed: int = 42) -> list[Example]:
        """The examples of one split.

        Args:
            split: ``train`` | ``validation`` | ``test`` (or an official file stem like
                ``train32`` for local files, read as is).
            data_dir: folder holding the benchmark's task folders (``CB/``, ``SST-2/``, ...) or
                their parent; None reads from the hub through `datasets`.
            protocol: ``paper`` (official splits), ``attempt`` (DePT/ULPT's re-split), or a
                paper's own (``dpt``, ``dept``, ``ulpt``; see tasks/splits.py). The task's
                details for a paper's protocol come from ``get_task(..., protocol=)``.
            seed: the shuffle seed of the attempt protocol (42 in DePT and ULPT).
        Returns:
            list[Example], in a deterministic order (the same from local files and the hub).
        """
        return load_examples(self, split=split, data_dir=data_dir, protocol=protocol, seed=seed)

    def sample(self, examples: Sequence[Example], shots: int | None = None,
               shots_per_class: int | None = None, seed: int = 0) -> list[Example]:
        """Few-shot subset: `shots` examples drawn without balancing, or `shots_per_class`
        examples of every class; deterministic given `seed`. Neither: all examples."""
        return few_shot(examples, shots=shots, shots_per_class=shots_per_class, seed=seed,
                        num_classes=self.num_classes)

    def parse(self, text: str, example: Example | None = None) -> int | float | str | None:
        """Map generated text to a prediction: class index, float, or answer text.

        example: the example the text answers; needed when the choices are the row's own
        texts (``choice_fields``, e.g. COPA), which are then matched instead of label words.
        None means the text maps to no label (evaluation counts it as invalid and wrong).
        """
        text = text.strip()
        if self.kind == "classification":
            if self.choice_fields:
                words = example.choices if example is not None and example.choices else ()
            else:
                words = self.label_words or ()
            if text in words:
                return words.index(text)
            if self.strict:
                return None
            folded = text.lower().rstrip(".!")
            for i, word in enumerate(words):
                if folded == word.lower().rstrip(".!"):
                    return i
            return None
        if self.kind == "regression":
            try:
                value = float(text)
            except ValueError:
                return None
            return value if value == value else None  # NaN maps to no value
        return text

    def score(self, predictions: Sequence[Any], examples: Sequence[Example]) -> dict[str, float]:
        """Aggregate metrics, named as in `self.metrics`, over parsed predictions.

        predictions: what `parse` returns (or a class index from rank mode); None is wrong.
        """
        return metrics.score(self.metrics, predictions, examples, kind=self.kind,
                             num_classes=self.num_classes, scoring=self.scoring, strict=self.strict)
