"""The data side of training: a run's splits (``load_data``), the batches its objective trains on
(``training_batches``), the continuous batch stream (``Stream``), and rows given in Python
(``train(config, train_data=[{...}, ...])``), written once into ``OUTPUT/data/`` so such a run
records, resumes and evaluates them as a run on files does (``row_files``, ``write_rows``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping

import torch

from .backbones import DECODER_ONLY
from .batching import collate, encode_choice_set, encode_examples, length_grouped_order, pad_id
from .config import TrainConfig
from .tasks.splits import TARGET_CUT_PROTOCOLS

__all__ = ["DATA_FOLDER", "ROW_SPLITS", "Stream", "load_data", "row_files", "training_batches", "write_rows"]


def load_data(config: TrainConfig, task) -> tuple[list, list, list, str]:
    """``(train, validation, test, test_split)``. Under the paper protocol a task whose test
    split is missing or unlabeled is reported on its validation set (as the DPT paper does).
    With ``holdout``, that many training rows (a ``split_seed`` permutation) become the
    validation set the checkpoint is chosen on, and the official validation split is only
    reported (it is the test set when the test split has no labels); a task with no validation
    split then needs a labeled test split."""
    kw = dict(data_dir=config.data_dir, protocol=config.protocol, seed=config.split_seed)
    train = task.load("train", **kw)
    try:
        validation = task.load("validation", **kw)
    except FileNotFoundError:
        if not config.holdout:
            raise
        validation = None  # the held-out rows choose; the test split is reported
    test_split = "test"
    try:
        test = task.load("test", **kw)
        if not test or all(e.label is None and not e.answers for e in test):
            raise FileNotFoundError("test split unlabeled")
    except FileNotFoundError as missing:
        if validation is None:
            raise FileNotFoundError(f"{missing}: with --holdout and no validation split, give a labeled "
                                    f"test split to report on") from None
        test, test_split = validation, "validation"
    if config.holdout:
        if config.holdout >= len(train):
            raise ValueError(f"holdout {config.holdout} leaves no training rows (task {task.name} has {len(train)})")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.split_seed)).tolist()
        validation = [train[i] for i in order[: config.holdout]]
        train = [train[i] for i in order[config.holdout :]]
    train = task.sample(train, shots=config.shots, shots_per_class=config.shots_per_class, seed=config.seed)
    if not train:
        raise ValueError(f"task {task.name}: the train split is empty")
    if not validation:
        raise ValueError(f"task {task.name}: the validation split is empty")
    if config.max_eval_examples:
        validation = validation[: config.max_eval_examples]
    if config.max_test_examples:
        test = test[: config.max_test_examples]
    return train, validation, test, test_split


def training_batches(c: TrainConfig, examples: list, tokenizer: Any, kind: str, task: Any):
    """What the loop trains on, for the run's objective: ``(lengths, batch)`` with
    ``lengths[i]`` the cost of example ``i`` (for length-grouped batching) and ``batch(index)``
    the model's keyword arguments for those examples.

    ``lm``: the target text's tokens (label word + EOS, or the answer). ``class``: the
    cross-entropy over the scores of the example's choices (label words), which is exactly what
    rank evaluation compares (PET and LM-BFF train this way)."""
    pad = pad_id(tokenizer)
    if c.objective == "class":
        if task.kind != "classification" or any(not isinstance(e.label, int) for e in examples):
            raise ValueError(f"objective class needs a classification task with labeled rows; task {task.name} is {task.kind} (use --objective lm)")
        choices = encode_choice_set(examples, tokenizer, kind, c.max_length, c.separator, task.label_words, truncation_side=c.truncation_side)
        gold = torch.tensor([e.label for e in examples], dtype=torch.long)

        def batch(index: list[int]) -> dict[str, torch.Tensor]:
            return {**choices.batch(index, pad), "choice_labels": gold[index]}

        return choices.lengths(), batch
    encoded = encode_examples(examples, tokenizer, kind, c.max_length, c.separator, truncation_side=c.truncation_side)
    if c.protocol in TARGET_CUT_PROTOCOLS and task.kind == "generation" and kind != DECODER_ONLY:
        # DePT/ULPT: targets cut to the generation length, keeping the EOS (tasks/splits.py)
        n = c.max_new_tokens
        encoded = [dataclasses.replace(e, labels=torch.cat([e.labels[: n - 1], e.labels[-1:]])) if len(e.labels) > n else e
                   for e in encoded]
    return [len(e) for e in encoded], lambda index: collate([encoded[i] for i in index], pad)


class Stream:
    """The training batches: epoch ``e`` walks ``length_grouped_order`` seeded by
    ``(seed, e)``; ``(epoch, index)`` is the whole position (stored in checkpoints)."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.lengths, self.batch_size, self.seed = lengths, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch, self.index = 0, 0
        self._order_epoch, self._order = None, []

    def order(self) -> list[int]:
        if self._order_epoch != self.epoch:
            epoch_seed = self.seed * 1_000_003 + self.epoch
            self._order = length_grouped_order(self.lengths, self.batch_size * self.world, epoch_seed)
            self._order_epoch = self.epoch
        return self._order

    def next(self) -> list[int]:
        """This process's indices of the next micro-batch."""
        global_batch = self.batch_size * self.world
        order = self.order()
        if self.world > 1 and self.index + global_batch > len(order):  # no ragged batch across processes
            self.epoch, self.index = self.epoch + 1, 0
            order = self.order()
        chunk = order[self.index : self.index + global_batch]
        self.index += global_batch
        if self.index >= len(order):
            self.epoch, self.index = self.epoch + 1, 0
        return chunk[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]



DATA_FOLDER = "data"
# train()'s keyword -> the file option it becomes and the split's file in OUTPUT/data/
ROW_SPLITS = {"train_data": ("train_file", "train.jsonl"), "validation_data": ("validation_file", "validation.jsonl"),
              "test_data": ("test_file", "test.jsonl")}


def row_files(run_dir: str | Path, keywords: list[str]) -> dict[str, str]:
    """The file options the rows become: ``{"train_file": "/abs/OUTPUT/data/train.jsonl"}``."""
    folder = Path(run_dir).expanduser().resolve() / DATA_FOLDER
    return {ROW_SPLITS[k][0]: str(folder / ROW_SPLITS[k][1]) for k in keywords}


def write_rows(run_dir: str | Path, rows: Mapping[str, Any], resume: bool = False) -> None:
    """Rows given in Python (a list of dicts, a ``datasets.Dataset``: anything iterable of
    mappings) as JSON Lines in ``OUTPUT/data/``, one atomic folder write. Resuming, the rows
    given must be the ones the run holds (one line if not); none need be given."""
    from .io import write_dir_atomically

    folder = Path(run_dir) / DATA_FOLDER
    texts = {ROW_SPLITS[k][1]: _jsonl(v, k) for k, v in rows.items()}
    if resume:
        for name, text in texts.items():
            if not (folder / name).is_file() or (folder / name).read_text(encoding="utf-8") != text:
                raise ValueError(f"train: the rows given are not the run's {folder / name}; resume with the same rows, or none")
        return

    def write(tmp: Path) -> None:
        for name, text in texts.items():
            (tmp / name).write_text(text, encoding="utf-8")

    write_dir_atomically(folder, write)


def _jsonl(rows: Any, keyword: str) -> str:
    if isinstance(rows, (str, bytes, Mapping)) or not hasattr(rows, "__iter__"):
        raise ValueError(f"train: {keyword} must be a list of dicts or a datasets.Dataset, got {type(rows).__name__}")
    lines = []
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"train: {keyword}[{i}] is a {type(row).__name__}; give mappings of field: value")
        lines.append(json.dumps(dict(row), ensure_ascii=False) + "\n")
    if not lines:
        raise ValueError(f"train: {keyword} is empty")
    return "".join(lines)
