"""Split protocols and few-shot sampling.

A protocol names a split rule and, for ``dpt``, ``dept``, ``ulpt`` and ``lester``, one paper's task details
(templates, filters, checkpoint metric, training-row caps: the ``protocols:`` of each task file
in tasks/builtin/, where each is documented):

- ``paper``: the official splits with T5's task details (Lester et al., Residual PT).
- ``dpt``: the official splits with the DPT code's task details (XYaoooo/DPT).
- ``attempt``: the ATTEMPT re-split with T5's task details.
- ``dept``, ``ulpt``: the ATTEMPT re-split with DePT's / ULPT's task details.
- ``lester``: the official splits with T5's own preprocessing as Lester et al. ran it (the
  prompt-tuning repository's ``taskless_*`` tasks: T5's GLUE/SuperGLUE text preprocessor, its
  alphabetically sorted ``key:`` fields without the task name, label names as targets).

``paper``: train on train, report on the official validation set (the DPT paper).

``attempt``: the re-split of ATTEMPT, which DePT and ULPT reuse (DePT's src/tasks.py,
``AbstractTask.get`` with ``split_validation_test``):
- small datasets (a task's ``size: small``: DePT's small_datasets_without_all_splits): train is
  the official train; the official validation set is shuffled with ``torch.randperm`` seeded
  with 42 and halved: first half validation, second half test;
- large datasets (``size: large``: DePT's large_data_without_all_splits): the official train is
  shuffled the same way; its first 1,000 rows are the validation set, the rest (in shuffled
  order) the training set; the official validation set (Yelp: test) is the test set;
- MNLI (in neither list): validation_mismatched is validation, validation_matched is test;
- any other task (no ``size``: PAWS) keeps its official splits.
"""

from __future__ import annotations

from typing import Callable, Sequence

PROTOCOLS = ("paper", "attempt", "dpt", "dept", "ulpt", "lester")
# The split rule of each protocol.
SPLIT_RULE = {"paper": "paper", "attempt": "attempt", "dpt": "paper", "dept": "attempt", "ulpt": "attempt",
              "lester": "paper"}
# The protocols that score as their code does (a task's `strict`): exact label strings (DPT's
# eval_utils.py:36-37 and DePT's src/postprocessors.py:24-25 only strip; T5's
# string_label_to_class_id compares exactly) and an invalid prediction a class of its own under
# Matthews (DPT metrics.py:108-112 string_to_float -> -1; DePT src/metrics.py:118-120 compares
# the strings; T5 string_label_to_class_id's default -1).
STRICT_PROTOCOLS = ("lester", "dpt", "dept", "ulpt")
# The protocols that cut a generation task's training targets to the generation length, EOS
# included (DePT's train.py:520 get_max_target_length -> generation_max_length 20 for a task
# without labels_list, train.py:326 tokenizer(..., max_length, truncation=True); ULPT's is the
# same code); train.py applies it with the run's max_new_tokens.
TARGET_CUT_PROTOCOLS = ("dept", "ulpt")
ATTEMPT_VALIDATION_SIZE = 1000


def shuffled_indices(n: int, seed: int) -> list[int]:
    """DePT's ``shuffled_indices``: ``torch.randperm`` with a generator seeded with `seed`."""
    import torch  # here, not at the top: a heavy import that only the re-splits need

    generator = torch.Generator()
    generator.manual_seed(seed)
    return torch.randperm(n, generator=generator).tolist()


def select_rows(task, split: str, protocol: str, seed: int,
                read: Callable[[str], list]) -> list:
    """The rows of `split` under `protocol`; `read(official_split)` reads one official split.
    ``task``: a `Task` (tasks/spec.py); only its split fields are read.
    A task's ``max_train_rows`` caps the training rows (DePT's and ULPT's Yelp: 100,000)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (expected one of {', '.join(PROTOCOLS)})")
    rows = _select(task, split, SPLIT_RULE[protocol], seed, read)
    cap = getattr(task, "max_train_rows", None)
    if cap is not None and split == "train" and len(rows) > cap:
        if SPLIT_RULE[protocol] == "attempt" and task.size == "large":
            rows = rows[:cap]  # already the seeded shuffle: DePT's select(range(100000))
        else:  # DPT's subsample: the first rows of the seeded shuffle (n_obs)
            rows = [rows[i] for i in shuffled_indices(len(rows), seed)[:cap]]
    return rows


def _select(task, split: str, protocol: str, seed: int, read: Callable[[str], list]) -> list:
    if protocol == "paper":
        return read(task.paper_splits.get(split, split))
    if split not in ("train", "validation", "test"):
        return read(split)
    if task.size == "small" and split != "train":
        rows = read(task.paper_splits.get("validation", "validation"))
        indices = shuffled_indices(len(rows), seed)
        half = len(rows) // 2
        return [rows[i] for i in (indices[:half] if split == "validation" else indices[half:])]
    if task.size == "large":
        if split == "test":
            return read(task.attempt_test_split)
        rows = read("train")
        indices = shuffled_indices(len(rows), seed)
        size = ATTEMPT_VALIDATION_SIZE
        return [rows[i] for i in (indices[:size] if split == "validation" else indices[size:])]
    return read(task.attempt_splits.get(split, split))


def few_shot(examples: Sequence, shots: int | None = None, shots_per_class: int | None = None,
             seed: int = 0, num_classes: int | None = None) -> list:
    """K examples without balancing, or K per class, in the order of a seeded permutation.

    Both draw from ``torch.randperm`` seeded with `seed` (DePT's subsample) so they are
    deterministic across runs and machines.
    """
    if shots is not None and shots_per_class is not None:
        raise ValueError("give shots or shots_per_class, not both")
    examples = list(examples)
    if shots is None and shots_per_class is None:
        return examples
    k = shots if shots is not None else shots_per_class
    if not isinstance(k, int) or k <= 0:
        raise ValueError(f"the number of shots must be a positive integer, got {k!r}")
    order = shuffled_indices(len(examples), seed)
    if shots is not None:
        if shots > len(examples):
            raise ValueError(f"asked for {shots} shots but the split has {len(examples)} examples")
        return [examples[i] for i in order[:shots]]
    if not num_classes:
        raise ValueError("shots_per_class needs a classification task")
    taken = {c: 0 for c in range(num_classes)}
    chosen = []
    for i in order:
        label = examples[i].label
        if label in taken and taken[label] < k:
            taken[label] += 1
            chosen.append(i)
    short = {c: n for c, n in taken.items() if n < k}
    if short:
        raise ValueError(f"asked for {k} examples per class but class(es) "
                         f"{', '.join(f'{c} has {n}' for c, n in short.items())}")
    return [examples[i] for i in chosen]
