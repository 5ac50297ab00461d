"""Every named task, as data.

Templates, class order and metric order follow the code of DePT and ULPT (DePT's src/tasks.py,
itself from ATTEMPT, itself from T5), so digits ``"0"``, ``"1"``, ... are the default label
words; ``get_task(name, label_words="names")`` uses the class names instead (``entailment``,
...), or pass your own words. The first metric of each task is the one that selects the best
checkpoint. Two deliberate departures from DePT's code, both fixes of plain bugs:
WinoGrande shows ``option1`` and ``option2`` (DePT shows option1 twice), and STS-B targets are
rounded to 0.2 as in T5 (DePT's ``round_stsb_target`` rounds to 0.1).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from softprompt.tasks.spec import HubSource, LocalFormat, Task
from softprompt.tasks.splits import attempt_size

SUPERGLUE_FILES = {"train": ("train.jsonl",), "validation": ("val.jsonl",), "test": ("test.jsonl",)}
GLUE_FILES = {"train": ("train.tsv",), "validation": ("dev.tsv",), "test": ("test.tsv",)}
BINARY = ("0", "1")


def _digits(n: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(n))


def _superglue(name, folder, template, label_names, raw_labels, *, reader="jsonl", config=None,
               metrics=("accuracy",), description="", **extra) -> Task:
    return Task(
        name=name, kind=extra.pop("kind", "classification"), template=template, metrics=metrics,
        benchmark="superglue", description=description, label_names=label_names,
        raw_labels=raw_labels,
        label_words=extra.pop("label_words", _digits(len(label_names)) if label_names else None),
        size=attempt_size(name),
        local=LocalFormat(folders=(folder,), files=SUPERGLUE_FILES, reader=reader,
                          flatten=extra.pop("flatten", ())),
        hub=HubSource("aps/super_glue", config or name), **extra)


def _glue(name, folder, config, template, label_names, raw_labels, *, rename=None, columns=None,
          metrics=("accuracy",), description="", files=GLUE_FILES, **extra) -> Task:
    kind = extra.pop("kind", "classification")
    return Task(
        name=name, kind=kind, template=template, metrics=metrics, benchmark="glue",
        description=description, label_names=label_names, raw_labels=raw_labels,
        label_words=extra.pop("label_words", _digits(len(label_names)) if label_names else None),
        size=attempt_size(name),
        local=LocalFormat(folders=(folder,), files=files, reader="tsv", rename=rename or {},
                          columns=columns or {}),
        hub=HubSource("nyu-mll/glue", config), **extra)


def _mrqa(name, folder, hub_path, official, description) -> Task:
    files = {
        "train": ("train.jsonl.gz", "train.jsonl", f"train/{official}.jsonl.gz", f"train/{official}.jsonl"),
        "validation": ("dev.jsonl.gz", "dev.jsonl", f"dev/{official}.jsonl.gz", f"dev/{official}.jsonl"),
    }
    return Task(
        name=name, kind="generation", template="question: {question} context: {context}",
        metrics=("f1", "em"), benchmark="mrqa", description=description, label_field=None,
        answers_field="answers", preprocess="mrqa", size=attempt_size(name), truncate_field="context",
        paper_splits={"test": "validation"},
        local=LocalFormat(folders=(folder, official), files=files, reader="mrqa"),
        hub=HubSource(hub_path))


NLI2 = ("entailment", "not_entailment")
STSB_CHOICES = tuple(f"{i / 5:.1f}" for i in range(26))

_TASKS: tuple[Task, ...] = (
    # ------------------------------------------------------------------ SuperGLUE
    # truncate_field: a too-long input loses the end of its passage, never the question (the
    # T5 templates put the question first; instruction templates put the passage first).
    _superglue("boolq", "BoolQ", "question: {question} passage: {passage}",
               ("False", "True"), (False, True), truncate_field="passage",
               description="yes/no questions on a passage"),
    _superglue("cb", "CB", "premise: {premise} hypothesis: {hypothesis}",
               ("entailment", "contradiction", "neutral"), ("entailment", "contradiction", "neutral"),
               metrics=("accuracy", "macro_f1"), description="CommitmentBank: 3-way entailment"),
    # DePT's template leaves out whether the cause or the effect is asked for, which makes the
    # task ambiguous; T5's keeps it, and so do we (template= restores DePT's).
    _superglue("copa", "COPA", "premise: {premise} question: {question} choice1: {choice1} choice2: {choice2}",
               ("choice1", "choice2"), (0, 1),
               description="choice of plausible alternatives (cause or effect)"),
    _superglue("multirc", "MultiRC", "question: {question} answer: {answer} paragraph: {paragraph}",
               ("False", "True"), (0, 1), reader="multirc", metrics=("f1a", "em"),
               preprocess="multirc", group_field="group_id", truncate_field="paragraph",
               description="multi-answer reading comprehension, one example per answer option"),
    _superglue("record", "ReCoRD", "record query: {query} entities: {entities_text} passage: {passage}",
               None, None, reader="record", kind="generation", metrics=("f1", "em"),
               label_field=None, answers_field="answers", choices_field="entities",
               group_field="group_id", preprocess="record", expand_answers=True, truncate_field="passage",
               description="cloze-style entity prediction; trains on one copy per gold answer"),
    _superglue("rte", "RTE", "premise: {premise} hypothesis: {hypothesis}", NLI2, NLI2,
               description="SuperGLUE's recognizing textual entailment"),
    _superglue("wic", "WiC", "sentence1: {sentence1} sentence2: {sentence2} word: {word}",
               ("False", "True"), (False, True), description="word in context"),
    _superglue("wsc", "WSC", "wsc: {wsc_text}", ("False", "True"), (False, True),
               config="wsc.fixed", kind="generation", label_words=None, answers_field="span1_text",
               preprocess="wsc_simple", train_filter="label_true", scoring="wsc_referent",
               flatten=("target",),
               description="T5's WSC: generate the referent of *pronoun*; trains on true rows"),
    _superglue("wsc_bool", "WSC", "text: {marked_text}", ("False", "True"), (False, True),
               config="wsc.fixed", preprocess="wsc_marked", flatten=("target",),
               description="WSC as classification with marked spans (DePT, ULPT)"),
    # ------------------------------------------------------------------ GLUE
    _glue("cola", "CoLA", "cola", "sentence: {sentence}", ("unacceptable", "acceptable"), BINARY,
          columns={"train": ("source", "label", "original_label", "sentence"),
                   "validation": ("source", "label", "original_label", "sentence")},
          metrics=("matthews",), description="grammatical acceptability"),
    _glue("sst2", "SST-2", "sst2", "sentence: {sentence}", ("negative", "positive"), BINARY,
          aliases=("sst-2", "sst"), description="binary sentiment of movie-review sentences"),
    _glue("mrpc", "MRPC", "mrpc", "sentence1: {sentence1} sentence2: {sentence2}",
          ("not_equivalent", "equivalent"), BINARY,
          rename={"Quality": "label", "#1 String": "sentence1", "#2 String": "sentence2"},
          metrics=("f1", "accuracy"), description="paraphrase detection (news)"),
    _glue("qqp", "QQP", "qqp", "question1: {question1} question2: {question2}",
          ("not_duplicate", "duplicate"), BINARY, rename={"is_duplicate": "label"},
          metrics=("f1", "accuracy"), description="duplicate Quora questions"),
    _glue("stsb", "STS-B", "stsb", "sentence1: {sentence1} sentence2: {sentence2}", None, None,
          kind="regression", rename={"score": "label"}, metrics=("pearson", "spearman"),
          label_words=STSB_CHOICES, round_step=0.2, aliases=("sts-b", "sts"),
          description="semantic similarity 0-5; targets rounded to 0.2 as text (T5)"),
    _glue("mnli", "MNLI", "mnli", "premise: {premise} hypothesis: {hypothesis}",
          ("entailment", "neutral", "contradiction"), ("entailment", "neutral", "contradiction"),
          rename={"sentence1": "premise", "sentence2": "hypothesis", "gold_label": "label"},
          files={"train": ("train.tsv",), "validation_matched": ("dev_matched.tsv",),
                 "validation_mismatched": ("dev_mismatched.tsv",),
                 "test_matched": ("test_matched.tsv",), "test_mismatched": ("test_mismatched.tsv",)},
          paper_splits={"validation": "validation_matched", "test": "test_matched"},
          attempt_splits={"validation": "validation_mismatched", "test": "validation_matched"},
          aliases=("multinli",), description="multi-genre NLI; attempt: mismatched=val, matched=test"),
    _glue("qnli", "QNLI", "qnli", "question: {question} sentence: {sentence}", NLI2, NLI2,
          description="question-answering NLI"),
    _glue("glue_rte", "RTE", "rte", "sentence1: {sentence1} sentence2: {sentence2}", NLI2, NLI2,
          aliases=("glue-rte",), description="GLUE's RTE (same data as SuperGLUE's rte, other fields)"),
    # ------------------------------------------------------------------ ULPT's others
    Task(name="winogrande", kind="classification",
         template="sentence: {sentence} option0: {option1} option1: {option2}",
         metrics=("accuracy",), benchmark="other", label_field="answer",
         label_names=("option1", "option2"), raw_labels=("1", "2"), label_words=BINARY,
         size=attempt_size("winogrande"),
         local=LocalFormat(folders=("winogrande", "WinoGrande", "winogrande_1.1"),
                           files={"train": ("train_xl.jsonl", "train.jsonl"),
                                  "validation": ("dev.jsonl",), "test": ("test.jsonl",)}),
         hub=HubSource("allenai/winogrande", "winogrande_xl"),
         description="WinoGrande (XL train): fill the blank with option1 or option2"),
    Task(name="yelp2", kind="classification", template="sentence: {text}", metrics=("accuracy",),
         benchmark="other", label_names=("negative", "positive"), raw_labels=("1", "2"),
         label_words=BINARY, size=attempt_size("yelp2"), attempt_test_split="test",
         paper_splits={"validation": "test"},
         local=LocalFormat(folders=("yelp_review_polarity_csv", "yelp2", "Yelp"),
                           files={"train": ("train.csv",), "test": ("test.csv",)}, reader="csv",
                           columns={"train": ("label", "text"), "test": ("label", "text"),
                                    "validation": ("label", "text")}),
         hub=HubSource("fancyzhx/yelp_polarity"), aliases=("yelp", "yelp-2", "yelp_polarity"),
         description="Yelp review polarity (no validation split: paper protocol reports on test)"),
    Task(name="scitail", kind="classification",
         template="premise: {sentence1} hypothesis: {sentence2}", metrics=("accuracy",),
         benchmark="other", label_field="gold_label", label_names=("entailment", "neutral"),
         raw_labels=("entailment", "neutral"), label_words=BINARY, size=attempt_size("scitail"),
         local=LocalFormat(folders=("SciTailV1.1/snli_format", "snli_format", "scitail", "SciTail"),
                           files={"train": ("scitail_1.0_train.txt",),
                                  "validation": ("scitail_1.0_dev.txt",),
                                  "test": ("scitail_1.0_test.txt",)}),
         hub=HubSource("allenai/scitail", "snli_format"), description="science entailment"),
    Task(name="paws", kind="classification", template="sentence1: {sentence1} sentence2: {sentence2}",
         metrics=("accuracy",), benchmark="other", label_names=("not_paraphrase", "paraphrase"),
         raw_labels=BINARY, label_words=BINARY, size=attempt_size("paws"),
         local=LocalFormat(folders=("PAWS", "paws", "final"), files=GLUE_FILES, reader="tsv"),
         hub=HubSource("google-research-datasets/paws", "labeled_final"),
         description="PAWS-Wiki labeled final: adversarial paraphrases"),
    # ------------------------------------------------------------------ MRQA
    _mrqa("nq", "NaturalQuestions", "lucadiliello/naturalquestionsshortqa", "NaturalQuestionsShort",
          "MRQA Natural Questions (short answers)"),
    _mrqa("hotpotqa", "HotpotQA", "lucadiliello/hotpotqa", "HotpotQA", "MRQA HotpotQA"),
    _mrqa("searchqa", "SearchQA", "lucadiliello/searchqa", "SearchQA", "MRQA SearchQA"),
    _mrqa("newsqa", "NewsQA", "lucadiliello/newsqa", "NewsQA", "MRQA NewsQA"),
)

TASKS: dict[str, Task] = {task.name: task for task in _TASKS}
_ALIASES: dict[str, str] = {}
for _task in _TASKS:
    for _alias in (_task.name, *_task.aliases):
        for _form in (_alias, _alias.replace("-", "_"), _alias.replace("_", "-"),
                      _alias.replace("-", "").replace("_", "")):
            _ALIASES.setdefault(_form.lower(), _task.name)
_ALIASES.update({"superglue_rte": "rte", "superglue-rte": "rte", "natural_questions": "nq",
                 "naturalquestions": "nq", "wsc.fixed": "wsc_bool"})


# Each paper's own task details, chosen by the protocol (tasks/splits.py): {task: {protocol:
# changes to the Task}}. "paper" and "attempt" keep the T5 details above. A protocol's first
# metric is the one that chooses the checkpoint, as each codebase's TASK_TO_METRICS[task][0].
_NO_QUESTION_COPA = "premise: {premise} choice1: {choice1} choice2: {choice2}"
PROTOCOL_DETAILS: dict[str, dict[str, dict]] = {
    # DPT (data_utils.py), DePT and ULPT (src/tasks.py, SuperGLUECOPA) leave out whether the
    # cause or the effect is asked for; T5 (and so "paper") keeps the question.
    "copa": {p: {"template": _NO_QUESTION_COPA} for p in ("dpt", "dept", "ulpt")},
    # DPT (data_utils.py, SuperGLUEWSCFixed.get and .preprocessor): true rows only in train AND
    # validation (so it reports accuracy on the label-1 rows), the pronoun marked `* he *`, no
    # prefix, target the referent; scored by referent match (main_ddp.py task_evaluation_wsc).
    "wsc": {"dpt": {"template": "{pronoun_marked}", "preprocess": "wsc_dpt", "eval_filter": "label_true"}},
    # MRPC and QQP choose by accuracy in DPT (utils.py), DePT and ULPT (src/metrics.py
    # TASK_TO_METRICS: ["accuracy", "f1"]); T5 and our default report F1 first.
    "mrpc": {p: {"metrics": ("accuracy", "f1")} for p in ("dpt", "dept", "ulpt")},
    "qqp": {p: {"metrics": ("accuracy", "f1")} for p in ("dpt", "dept", "ulpt")},
    # CB chooses by macro F1 in DePT and ULPT (TASK_TO_METRICS "superglue-cb": ["f1_multiclass",
    # "accuracy"]); DPT's utils.py lists accuracy first, as our default does.
    "cb": {p: {"metrics": ("macro_f1", "accuracy")} for p in ("dept", "ulpt")},
    # Yelp trains on 100,000 rows: DePT and ULPT train.py (`train_dataset.select(range(100000))`
    # after the ATTEMPT shuffle), DPT main_ddp.py (n_obs=100000 of the seeded shuffle).
    "yelp2": {p: {"max_train_rows": 100_000} for p in ("dpt", "dept", "ulpt")},
    # MRQA chooses by exact match in DePT and ULPT (TASK_TO_METRICS: ["em", "f1"]); DPT by F1.
    **{t: {p: {"metrics": ("em", "f1")} for p in ("dept", "ulpt")} for t in ("nq", "hotpotqa", "searchqa", "newsqa")},
}


def list_tasks() -> list[str]:
    """Names of every registered task, grouped by benchmark."""
    return list(TASKS)


# Instruction style for decoder-only models: a natural prompt ending in a cue, answered with real
# words (one token each in common BPE vocabularies), in each task's class order. The targets
# follow the cue after one space. Long passages come first and the question last, so that an
# input cut from the left keeps the question. Every registered task has an entry (a test checks);
# words None: generation tasks (the answer text), and COPA / WinoGrande, answered with the right
# option's own text (INSTRUCTION_FIELDS). Other fields of the instruction style's task are in
# INSTRUCTION_FIELDS.
INSTRUCTION: dict[str, tuple[str, tuple[str, ...] | None]] = {
    "sst2": ("Review: {sentence}\nSentiment:", ("negative", "positive")),
    "cola": ("Sentence: {sentence}\nIs this sentence grammatical? Answer:", ("no", "yes")),
    "mrpc": ("Sentence 1: {sentence1}\nSentence 2: {sentence2}\nDo both sentences mean the same thing? Answer:", ("no", "yes")),
    "qqp": ("Question 1: {question1}\nQuestion 2: {question2}\nDo both questions ask the same thing? Answer:", ("no", "yes")),
    # entailment, neutral, contradiction
    "mnli": ("{premise}\nQuestion: {hypothesis} True, False or Neither?\nAnswer:", ("yes", "maybe", "no")),
    "qnli": ("Question: {question}\nSentence: {sentence}\nDoes the sentence answer the question? Answer:", ("yes", "no")),
    "glue_rte": ("{sentence1}\nQuestion: {sentence2} True or False?\nAnswer:", ("yes", "no")),
    "rte": ("{premise}\nQuestion: {hypothesis} True or False?\nAnswer:", ("yes", "no")),
    # entailment, contradiction, neutral
    "cb": ("{premise}\nQuestion: {hypothesis} True, False or Neither?\nAnswer:", ("yes", "no", "maybe")),
    "boolq": ("{passage}\nQuestion: {question}?\nAnswer:", ("no", "yes")),
    "wic": ("Sentence 1: {sentence1}\nSentence 2: {sentence2}\nIs the word '{word}' used with the same meaning in both sentences? Answer:", ("no", "yes")),
    # the right option's text (choice_fields); {question} is "cause" or "effect"
    "copa": ("{premise} What was the {question}?\nOptions:\n- {choice1}\n- {choice2}\nAnswer:", None),
    # one example per candidate answer
    "multirc": ("{paragraph}\nQuestion: {question}\nCandidate answer: {answer}\nIs the candidate answer correct? Answer:", ("no", "yes")),
    # an entity of the passage: rank mode scores each of the row's entities, or generate it
    "record": ("{passage}\nQuery: {query}\nWhat does @placeholder stand for in the query? Options: {entities_text}\nAnswer:", None),
    # the referent's text, scored by referent matching as T5's WSC
    "wsc": ('{text}\nQuestion: In the passage above, who or what does the pronoun "{span2_text}" refer to?\nAnswer:', None),
    "wsc_bool": ('{text}\nQuestion: In the passage above, does the pronoun "{span2_text}" refer to "{span1_text}"?\nAnswer:', ("no", "yes")),
    # similarity rounded to a whole number (INSTRUCTION_FIELDS), scored against the exact value
    "stsb": ("Sentence 1: {sentence1}\nSentence 2: {sentence2}\nHow similar are the two sentences, from 0 (unrelated) to 5 (same meaning)? Answer:",
             ("0", "1", "2", "3", "4", "5")),
    # the right option's text (choice_fields)
    "winogrande": ("{sentence}\nQuestion: What does the _ refer to, {option1} or {option2}?\nAnswer:", None),
    "yelp2": ("Review: {text}\nSentiment:", ("negative", "positive")),
    # entailment, neutral
    "scitail": ("{sentence1}\nQuestion: {sentence2} True or False?\nAnswer:", ("yes", "no")),
    "paws": ("Sentence 1: {sentence1}\nSentence 2: {sentence2}\nDo both sentences mean the same thing? Answer:", ("no", "yes")),
    **{name: ("{context}\nQuestion: {question}\nAnswer:", None) for name in ("nq", "hotpotqa", "searchqa", "newsqa")},
}

# Other Task fields of the instruction style (see tasks/spec.py). COPA and WinoGrande: each
# example's choices are its two options' texts, the target the right one. STS-B: the target is
# the score rounded to a whole number (six candidates, "0" ... "5", each a digit), and the
# metrics compare predictions with the exact score, not the rounded one.
INSTRUCTION_FIELDS: dict[str, dict] = {
    "copa": {"choice_fields": ("choice1", "choice2")},
    "winogrande": {"choice_fields": ("option1", "option2")},
    "stsb": {"round_step": 1.0, "round_gold": False},
}


def _instruction(task: Task, label_words, template) -> Task:
    """``task`` in the instruction style; the user's ``label_words`` / ``template`` win (the
    user's label words also replace per-row choices)."""
    import dataclasses

    styled_template, words = INSTRUCTION.get(task.name, (None, None))
    fields = dict(INSTRUCTION_FIELDS.get(task.name, {}))
    if task.kind != "classification":  # a regression's candidate numbers: no user override
        if words is not None:
            fields["label_words"] = words
        words = None
    elif words is None and task.label_names:
        words = "names"
    if label_words is not None:
        fields.pop("choice_fields", None)
    task = task.with_overrides(label_words=label_words if label_words is not None else words,
                               template=template if template is not None else styled_template)
    return dataclasses.replace(task, **fields) if fields else task


def get_task(name: str, label_words: str | Sequence[str] | None = None,
             template: str | None = None, style: str | None = None, protocol: str | None = None) -> Task:
    """A registered task by name or alias (case-insensitive: ``SST-2``, ``sst-2``, ``sst2``).

    label_words: other words per class (a sequence, a comma-separated string, ``"names"`` or
        ``"digits"``); template: another input template over the same fields.
    style: ``"text-to-text"`` (default: the papers' T5 templates) or ``"instruction"`` (for
        decoder-only models); an explicit ``template`` or ``label_words`` wins over the style's.
    protocol: a paper's protocol (``dpt``, ``dept``, ``ulpt``) applies that paper's task
        details (``PROTOCOL_DETAILS``) before the style and the explicit overrides.
    """
    key = str(name).strip().lower()
    canonical = _ALIASES.get(key) or _ALIASES.get(key.replace("-", "").replace("_", ""))
    if canonical is None:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    if style not in (None, "text-to-text", "instruction"):
        raise ValueError(f"style must be text-to-text or instruction, got {style!r}")
    from softprompt.tasks.splits import PROTOCOLS

    if protocol is not None and protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (expected one of {', '.join(PROTOCOLS)})")
    task = TASKS[canonical]
    details = PROTOCOL_DETAILS.get(canonical, {}).get(protocol or "paper")
    if details:
        task = dataclasses.replace(task, **details)
    if style == "instruction":
        return _instruction(task, label_words, template)
    return task.with_overrides(label_words=label_words, template=template)
