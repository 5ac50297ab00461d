"""Tasks: registry, local readers (real files and official-schema fixtures), hub parity,
split protocols, few-shot sampling, custom tasks and bad input."""

import json
import os
from collections import Counter
from pathlib import Path

import pytest

from softprompt.tasks import Example, custom_task, get_task, list_tasks
from softprompt.tasks import hub as hub_module
from softprompt.tasks import splits

FIXTURES = Path(__file__).parent / "fixtures"
DATA = Path(os.environ.get("SOFTPROMPT_DATA_DIR",
                           Path(__file__).resolve().parents[1].parent / "shared" / "data"))
needs_data = pytest.mark.skipif(not (DATA / "superglue" / "CB" / "val.jsonl").is_file(),
                                reason=f"real benchmark files not found in {DATA} (set SOFTPROMPT_DATA_DIR)")


# ----------------------------------------------------------------------------- registry
def test_every_named_task_is_registered():
    expected = {"boolq", "cb", "copa", "multirc", "record", "rte", "wic", "wsc", "wsc_bool", "cola",
                "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "glue_rte", "winogrande", "yelp2",
                "scitail", "paws", "nq", "hotpotqa", "searchqa", "newsqa"}
    assert set(list_tasks()) == expected
    for name in expected:
        task = get_task(name)
        assert task.name == name and task.metrics and task.kind in ("classification", "regression", "generation")
        assert task.local is not None and task.hub is not None


@pytest.mark.parametrize("alias,name", [("SST-2", "sst2"), ("sst-2", "sst2"), ("CB", "cb"),
                                        ("superglue-rte", "rte"), ("GLUE_RTE", "glue_rte"),
                                        ("STS-B", "stsb"), ("Yelp-2", "yelp2"), ("WSC.fixed", "wsc_bool")])
def test_aliases(alias, name):
    assert get_task(alias).name == name


def test_metrics_per_task():
    expected = {"cb": ("accuracy", "macro_f1"), "multirc": ("f1a", "em"), "record": ("f1", "em"),
                "cola": ("matthews",), "stsb": ("pearson", "spearman"), "mrpc": ("f1", "accuracy"),
                "qqp": ("f1", "accuracy"), "nq": ("f1", "em"), "sst2": ("accuracy",)}
    for name, metrics in expected.items():
        assert get_task(name).metrics == metrics


def test_attempt_partition_is_depts():
    small = {"cola", "glue_rte", "cb", "copa", "multirc", "wic", "wsc", "wsc_bool", "rte", "mrpc",
             "stsb", "boolq", "scitail"}
    large = {"qqp", "qnli", "record", "sst2", "yelp2", "winogrande", "newsqa", "searchqa", "nq", "hotpotqa"}
    for name in list_tasks():
        want = "small" if name in small else "large" if name in large else None
        assert get_task(name).size == want, name
    assert get_task("mnli").size is None and get_task("paws").size is None


def test_label_words_defaults_and_overrides():
    cb = get_task("cb")
    assert cb.label_words == ("0", "1", "2")
    assert get_task("cb", label_words="names").label_words == ("entailment", "contradiction", "neutral")
    assert get_task("cb", label_words=("yes", "no", "maybe")).label_words == ("yes", "no", "maybe")
    assert get_task("cb", label_words="yes,no,maybe").parse("Maybe") == 2
    with pytest.raises(ValueError, match="3 classes"):
        get_task("cb", label_words=("yes", "no"))
    with pytest.raises(ValueError, match="distinct"):
        get_task("sst2", label_words=("a", "a"))
    with pytest.raises(ValueError, match="unknown task"):
        get_task("nope")


def test_parse():
    assert get_task("sst2").parse(" 1 ") == 1
    assert get_task("sst2").parse("positive") is None
    assert get_task("sst2", label_words="names").parse("Positive.") == 1
    assert get_task("stsb").parse("3.4") == 3.4 and get_task("stsb").parse("high") is None
    assert get_task("record").parse(" Zurich ") == "Zurich"


# ----------------------------------------------------------------------------- real files
REAL_COUNTS = {
    # (task, data dir, split): (rows, label distribution by class index)
    ("cb", "superglue", "train"): (250, {0: 115, 1: 119, 2: 16}),
    ("cb", "superglue", "validation"): (56, {0: 23, 1: 28, 2: 5}),
    ("cb", "superglue", "train32"): (32, {0: 19, 1: 10, 2: 3}),
    ("rte", "superglue", "train"): (2490, {0: 1249, 1: 1241}),
    ("rte", "superglue", "validation"): (277, {0: 146, 1: 131}),
    ("boolq", "superglue", "validation"): (3270, {0: 1237, 1: 2033}),
    ("boolq", "superglue", "train32"): (32, {0: 14, 1: 18}),
    ("copa", "superglue", "validation"): (100, {0: 55, 1: 45}),
    ("sst2", "glue", "train"): (6920, {0: 3310, 1: 3610}),
    ("sst2", "glue", "validation"): (872, {0: 428, 1: 444}),
}


@needs_data
@pytest.mark.parametrize("key", sorted(REAL_COUNTS), ids=lambda k: "-".join(k))
def test_real_files_rows_and_labels(key):
    name, bench, split = key
    examples = get_task(name).load(split, data_dir=DATA / bench)
    rows, labels = REAL_COUNTS[key]
    assert len(examples) == rows
    assert dict(Counter(e.label for e in examples)) == labels


@needs_data
def test_real_file_text_as_model_sees_it():
    cb = get_task("cb").load("validation", data_dir=DATA)  # the parent folder works too
    assert cb[0] == Example(
        "premise: Valence the void-brain, Valence the virtuous valet. Why couldn't the figger choose "
        "his own portion of titanic anatomy to shaft? Did he think he was helping? "
        "hypothesis: Valence was helping", "1", 1, ("0", "1", "2"))
    sst = get_task("sst2").load("validation", data_dir=DATA / "glue")
    assert sst[0].input_text == "sentence: it 's a charming and often affecting journey . "
    assert sst[0].target_text == "1"
    copa = get_task("copa").load("validation", data_dir=DATA / "superglue")
    assert copa[0].input_text == ("premise: The man turned on the faucet. question: effect choice1: The toilet filled "
                                  "with water. choice2: Water flowed from the spout.")


@needs_data
def test_attempt_protocol_on_real_files():
    cb = get_task("cb")
    official = cb.load("validation", data_dir=DATA)
    val = cb.load("validation", data_dir=DATA, protocol="attempt")
    test = cb.load("test", data_dir=DATA, protocol="attempt")
    assert (len(val), len(test)) == (28, 28)
    # DePT: torch.randperm(56) seeded with 42; first half validation, second half test
    order = splits.shuffled_indices(56, 42)
    assert order[:8] == [22, 8, 36, 39, 34, 28, 26, 6]
    assert val == [official[i] for i in order[:28]] and test == [official[i] for i in order[28:]]
    assert cb.load("train", data_dir=DATA, protocol="attempt") == cb.load("train", data_dir=DATA)
    rte = get_task("rte")
    assert len(rte.load("validation", data_dir=DATA, protocol="attempt")) == 138
    assert len(rte.load("test", data_dir=DATA, protocol="attempt")) == 139
    # SST-2 is large: 1,000 shuffled training rows become validation, dev becomes test
    sst = get_task("sst2")
    train = sst.load("train", data_dir=DATA, protocol="attempt")
    val = sst.load("validation", data_dir=DATA, protocol="attempt")
    assert (len(train), len(val)) == (5920, 1000)
    assert dict(Counter(e.label for e in val)) == {0: 468, 1: 532}
    assert sst.load("test", data_dir=DATA, protocol="attempt") == sst.load("validation", data_dir=DATA)
    assert cb.load("validation", data_dir=DATA, protocol="attempt", seed=1) != val


@needs_data
def test_few_shot_sampling_is_deterministic_and_balanced():
    cb = get_task("cb")
    train = cb.load("train", data_dir=DATA)
    a = cb.sample(train, shots=8, seed=0)
    assert a == cb.sample(train, shots=8, seed=0) and len(a) == 8
    assert a != cb.sample(train, shots=8, seed=1)
    balanced = cb.sample(train, shots_per_class=4, seed=0)
    assert Counter(e.label for e in balanced) == {0: 4, 1: 4, 2: 4}
    assert cb.sample(train) == train
    with pytest.raises(ValueError, match="per class"):
        cb.sample(train, shots_per_class=17)  # neutral has 16
    with pytest.raises(ValueError, match="not both"):
        cb.sample(train, shots=2, shots_per_class=2)
    with pytest.raises(ValueError, match="300 shots"):
        cb.sample(train, shots=300)


# ----------------------------------------------------------------------------- fixtures
def test_multirc_flattened_with_groups_and_markup_removed():
    task = get_task("multirc")
    examples = task.load("validation", data_dir=FIXTURES)
    assert len(examples) == 7
    assert [e.group for e in examples] == ["0-0"] * 3 + ["0-1"] * 2 + ["1-2"] * 2
    assert examples[0].input_text == ("question: What color is Tom's bike? answer: Red paragraph: "
                                      "Sent 1: Tom has a red bike. Sent 2: He rides it to school. ")
    assert [e.label for e in examples] == [1, 0, 1, 1, 0, 1, 0]
    test = task.load("test", data_dir=FIXTURES)
    assert [e.label for e in test] == [None, None] and test[0].target_text == ""


def test_record_entities_highlights_and_one_copy_per_answer_in_train_only():
    task = get_task("record")
    train = task.load("train", data_dir=FIXTURES)
    val = task.load("validation", data_dir=FIXTURES)
    assert (len(train), len(val)) == (4, 3)
    assert val[0].input_text == (
        "record query: The talks in @placeholder went well. entities: Berlin, Zurich passage: Zurich "
        "hosted the summit with Berlin officials. Berlin sent a delegation. Zurich was pleased.")
    assert val[0].choices == ("Berlin", "Zurich") and val[0].answers == ("Zurich",)
    assert val[2].answers == ("Apple", "Microsoft") and val[2].target_text == "Apple"
    assert [e.target_text for e in train[2:]] == ["Apple", "Microsoft"]
    assert train[2].group == train[3].group == val[2].group


def test_wsc_both_forms():
    t5 = get_task("wsc")
    train = t5.load("train", data_dir=FIXTURES)
    val = t5.load("validation", data_dir=FIXTURES)
    assert len(train) == 2 and all(e.label == 1 for e in train)  # trains on true rows only
    assert len(val) == 3 and [e.label for e in val] == [0, 1, 1]
    assert val[2].input_text == "wsc: The trophy does not fit into the brown suitcase because *it* is too large."
    assert val[2].target_text == "The trophy" and val[2].answers == ("The trophy",)
    cls = get_task("wsc_bool").load("validation", data_dir=FIXTURES)
    assert cls[0].input_text == ("text: * Mark * told Pete many lies about himself, which Pete included "
                                 "in his book. # He # should have been more skeptical.")
    assert [e.target_text for e in cls] == ["0", "1", "1"]


def test_wic_and_glue_fixtures():
    wic = get_task("wic").load("validation", data_dir=FIXTURES)
    assert wic[1].input_text == ("sentence1: We beat the competition. sentence2: Agassi beat Becker "
                                 "in the tennis championship. word: beat")
    cola = get_task("cola").load("validation", data_dir=FIXTURES)  # header-less TSV
    assert [e.label for e in cola] == [1, 0, 1] and cola[1].input_text == "sentence: They drank the pub."
    mrpc = get_task("mrpc").load("validation", data_dir=FIXTURES)
    assert mrpc[1].input_text.endswith('sentence2: His wife said he was "100 percent behind George Bush".')
    stsb = get_task("stsb").load("validation", data_dir=FIXTURES)
    # T5 rounding to 0.2, half to even: 4.75 -> 4.8, 2.5 -> 2.4
    assert [e.target_text for e in stsb] == ["5.0", "4.8", "2.4"] and stsb[2].label == 2.4
    qqp = get_task("qqp").load("validation", data_dir=FIXTURES)
    assert qqp[0].label == 0


def test_mnli_splits_by_protocol():
    mnli = get_task("mnli")
    train = mnli.load("train", data_dir=FIXTURES)
    assert [e.label for e in train] == [0, 2, 1]  # entailment, contradiction, neutral
    assert train[2].input_text == 'premise: She said "hello" twice. hypothesis: She greeted someone.'
    matched = mnli.load("validation", data_dir=FIXTURES)
    assert [e.input_text.split(" hyp")[0] for e in matched] == ["premise: Matched premise one.",
                                                                "premise: Matched premise two."]
    assert mnli.load("validation", data_dir=FIXTURES, protocol="attempt")[0].input_text.startswith(
        "premise: Mismatched")
    assert mnli.load("test", data_dir=FIXTURES, protocol="attempt") == matched


def test_mrqa_pads_punctuation_like_depts_copy():
    examples = get_task("hotpotqa").load("validation", data_dir=FIXTURES)
    assert len(examples) == 2
    assert examples[0].input_text == ("question: What is the capital of France ?  context:  [ PAR ] "
                                      "[ TLE ] Paris [ SEP ] Paris is the capital of France . ")
    assert examples[0].answers == ("Paris", "paris") and examples[1].target_text == "France"


# ----------------------------------------------------------------------------- hub parity
def _hub_rows_from_fixture(task_name):
    """Rows as the hub's builders yield them (flat fields, ClassLabel ints, -1 unlabeled)."""
    if task_name == "multirc":
        rows = []
        for line in (FIXTURES / "superglue/MultiRC/val.jsonl").read_text().splitlines():
            doc = json.loads(line)
            for q in doc["passage"]["questions"]:
                for a in q["answers"]:
                    rows.append({"paragraph": doc["passage"]["text"], "question": q["question"],
                                 "answer": a["text"], "label": a["label"],
                                 "idx": {"paragraph": doc["idx"], "question": q["idx"], "answer": a["idx"]}})
        return rows
    if task_name == "record":
        rows = []
        for line in (FIXTURES / "superglue/ReCoRD/val.jsonl").read_text().splitlines():
            doc = json.loads(line)
            text = doc["passage"]["text"]
            ents = [text[e["start"]:e["end"] + 1] for e in doc["passage"]["entities"]]
            for qa in doc["qas"]:
                rows.append({"passage": text, "query": qa["query"], "entities": ents[::-1],
                             "answers": [a["text"] for a in qa["answers"]][::-1],
                             "idx": {"passage": doc["idx"], "query": qa["idx"]}})
        return rows
    if task_name == "wsc_bool":
        rows = []
        for line in (FIXTURES / "superglue/WSC/val.jsonl").read_text().splitlines():
            doc = json.loads(line)
            rows.append({"text": doc["text"], **doc["target"], "idx": doc["idx"], "label": int(doc["label"])})
        return rows
    raise KeyError(task_name)


@pytest.mark.parametrize("name", ["multirc", "record", "wsc_bool"])
def test_hub_gives_the_same_examples_in_the_same_order(name, monkeypatch):
    task = get_task(name)
    calls = []

    def fake_load(path, config, split):
        calls.append((path, config, split))
        return _hub_rows_from_fixture(name)

    monkeypatch.setattr(hub_module, "load_hub_dataset", fake_load)
    assert task.load("validation") == task.load("validation", data_dir=FIXTURES)
    assert calls == [("aps/super_glue", "wsc.fixed" if name == "wsc_bool" else name, "validation")]


def test_hub_unlabeled_rows_and_string_labels(monkeypatch):
    rows = [{"sentence": "a", "option1": "x", "option2": "y", "answer": "2"},
            {"sentence": "b", "option1": "x", "option2": "y", "answer": ""}]
    monkeypatch.setattr(hub_module, "load_hub_dataset", lambda *a: rows)
    task = get_task("winogrande")
    assert [e.label for e in task.load("test")] == [1, None]
    assert task.load("test")[0].input_text == "sentence: a option0: x option1: y"


# ----------------------------------------------------------------------------- bad input
def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_bad_files_give_one_line_errors_naming_file_line_field(tmp_path):
    good = '{"premise": "p", "hypothesis": "h", "label": "neutral", "idx": 0}\n'
    _write(tmp_path / "CB/train.jsonl", good + '{"premise": "p", "hypothesis": \n')
    with pytest.raises(ValueError, match=r"CB/train.jsonl:2: malformed JSON") as err:
        get_task("cb").load("train", data_dir=tmp_path)
    assert "\n" not in str(err.value)
    _write(tmp_path / "CB/train.jsonl", good + '{"premise": "p", "hypothesis": "h", "label": "maybe"}\n')
    with pytest.raises(ValueError, match=r"train.jsonl:2: field 'label': unknown label 'maybe'"):
        get_task("cb").load("train", data_dir=tmp_path)
    _write(tmp_path / "CB/train.jsonl", good + '{"premise": "p", "label": "neutral"}\n')
    with pytest.raises(ValueError, match=r"train.jsonl:2: template field 'hypothesis'"):
        get_task("cb").load("train", data_dir=tmp_path)
    _write(tmp_path / "CB/train.jsonl", '{"premise": "p", "hypothesis": "h"}\n')
    with pytest.raises(ValueError, match=r"train.jsonl:1: missing field 'label'"):
        get_task("cb").load("train", data_dir=tmp_path)
    _write(tmp_path / "CB/val.jsonl", "\n")
    with pytest.raises(ValueError, match="validation split is empty"):
        get_task("cb").load("validation", data_dir=tmp_path)
    _write(tmp_path / "ok/CB/train.jsonl", good)
    with pytest.raises(ValueError, match=r"ok/CB/train.jsonl:1: template field 'nope'"):
        get_task("cb", template="{nope}").load("train", data_dir=tmp_path / "ok")
    _write(tmp_path / "MultiRC/train.jsonl", '{"idx": 0, "passage": {"text": "t", "questions": [{"idx": 0}]}}\n')
    with pytest.raises(ValueError, match=r"train.jsonl:1: missing field 'passage.questions\[\].question'"):
        get_task("multirc").load("train", data_dir=tmp_path)
    _write(tmp_path / "SST-2/dev.tsv", "sentence\tlabel\nfine\t1\nbroken line\n")
    with pytest.raises(ValueError, match=r"dev.tsv:3: expected 2 fields"):
        get_task("sst2").load("validation", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no test file for task cb"):
        get_task("cb").load("test", data_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown protocol"):
        get_task("cb").load("train", data_dir=tmp_path, protocol="nope")


# ----------------------------------------------------------------------------- custom
def test_custom_classification_generation_regression(tmp_path):
    _write(tmp_path / "train.jsonl", '{"p": "a", "h": "b", "y": "yes"}\n{"p": "c", "h": "d", "y": "no"}\n')
    _write(tmp_path / "dev.jsonl", '{"p": "e", "h": "f", "y": "no"}\n')
    task = custom_task(tmp_path, "{p} question: {h}", label_field="y")
    assert task.label_words == ("no", "yes") and task.metrics == ("accuracy",)
    train = task.load("train")
    assert train[0] == Example("a question: b", "yes", 1, ("no", "yes"))
    assert len(task.load("validation")) == 1
    worded = custom_task(tmp_path, "{p} question: {h}", label_field="y", labels=("yes", "no"),
                         label_words=("true", "false"))
    assert worded.load("train")[0].target_text == "true"

    _write(tmp_path / "qa.csv", 'question,answer\n"What, exactly?",42\n')
    gen = custom_task({"train": tmp_path / "qa.csv"}, "Q: {question}", target_field="answer")
    assert gen.load("train") == [Example("Q: What, exactly?", "42", "42", None, ("42",))]
    assert gen.kind == "generation" and gen.metrics == ("em", "f1")

    _write(tmp_path / "reg.tsv", "text\tscore\nx\t3.7\n")
    reg = custom_task(tmp_path / "reg.tsv", "{text}", label_field="score", regression=True, round_step=0.2)
    assert reg.load("train")[0].target_text == "3.6"  # round(18.5) = 18 -> 3.6
    with pytest.raises(FileNotFoundError, match="no test file"):
        reg.load("test")
    with pytest.raises(ValueError, match="label_field"):
        custom_task(tmp_path / "reg.tsv", "{text}")
    with pytest.raises(ValueError, match="unknown metric"):
        custom_task(tmp_path / "reg.tsv", "{text}", label_field="score", metrics=("bleu",))
