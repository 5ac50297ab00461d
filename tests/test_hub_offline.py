"""The `datasets` path for real, offline: datasets in the hub's on-disk layout (Parquet or JSON
Lines files plus a README.md card with ``configs`` and the label's ClassLabel), and folders
``save_to_disk`` wrote, loaded through `datasets` by softprompt's hub reader, give the rows and
examples of the local-file reader, for built-in tasks and for a task file."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from conftest import DATA_DIR
from softprompt.tasks import HubSource, get_task, read_task_file, resolve_task
from softprompt.tasks import hub as hub_module
from softprompt.tasks import local as local_module

datasets = pytest.importorskip("datasets")
FIXTURES = Path(__file__).parent / "fixtures"
SST2_DEV = DATA_DIR / "glue" / "SST-2" / "dev.tsv"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """datasets writes its Arrow cache here, not in the user's ~/.cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _card(config: str, splits: dict[str, str], features: list[dict]) -> str:
    """A dataset card (README.md) as the hub's data-only repositories have it."""
    import yaml

    meta = {"dataset_info": [{"config_name": config, "features": features}],
            "configs": [{"config_name": config,
                         "data_files": [{"split": s, "path": p} for s, p in splits.items()]}]}
    return "---\n" + yaml.safe_dump(meta, sort_keys=False) + "---\n# a test dataset\n"


def _hub_layout(root: Path, config: str, rows: dict[str, list[dict]], fields: list[str],
                label_names: list[str] | None, fmt: str = "parquet") -> Path:
    """``root/README.md`` + ``root/<config>/<split>-00000-of-00001.<fmt>``: the rows' ``fields``,
    the label a ClassLabel over ``label_names`` (a plain column when None)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / config).mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, split_rows in rows.items():
        records = [{f: r[f] for f in fields} for r in split_rows]
        name = f"{config}/{split}-00000-of-00001.{fmt}"
        if fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(records), root / name)
        else:
            (root / name).write_text("".join(json.dumps(r) + "\n" for r in records))
        paths[split] = name
    features = []
    for f in fields:
        if f == "label" and label_names is not None:
            features.append({"name": f, "dtype": {"class_label": {"names": {str(i): n for i, n in enumerate(label_names)}}}})
        else:
            value = rows[next(iter(rows))][0][f]
            features.append({"name": f, "dtype": "int64" if isinstance(value, int) else "string"})
    (root / "README.md").write_text(_card(config, paths, features))
    return root


def _plain(rows: list[dict], fields: list[str]) -> list[dict]:
    return [{f: r[f] for f in fields} for r in rows]


def _local_rows(task, split, data_dir):
    rows = local_module.read_rows(task, task.paper_splits.get(split, split), data_dir)
    for i, row in enumerate(rows):
        row["idx"] = i
    return rows


# ----------------------------------------------------------------------------- built-in tasks
@pytest.mark.parametrize("fmt", ["parquet", "jsonl"])
def test_mnli_from_a_hub_layout_folder_equals_the_tsv_files(tmp_path, fmt):
    task = get_task("mnli")
    fields = ["premise", "hypothesis", "label", "idx"]
    local = {"validation_matched": _local_rows(task, "validation", FIXTURES / "glue"),
             "train": _local_rows(task, "train", FIXTURES / "glue")}
    folder = _hub_layout(tmp_path / "glue", "mnli", local, fields, list(task.label_names), fmt)
    on_hub = dataclasses.replace(task, hub=HubSource(str(folder), "mnli"))
    assert datasets.load_dataset(str(folder), "mnli", split="validation_matched").features["label"].names == \
        ["entailment", "neutral", "contradiction"]
    for split in ("train", "validation"):
        assert _plain(hub_module.read_rows(on_hub, on_hub.paper_splits.get(split, split)), fields) == \
            _plain(_local_rows(task, split, FIXTURES / "glue"), fields)
        assert on_hub.load(split) == task.load(split, data_dir=FIXTURES / "glue")
    assert [e.label for e in on_hub.load("validation")] == [1, 0]


@pytest.mark.skipif(not SST2_DEV.is_file(), reason=f"real SST-2 dev.tsv not found in {DATA_DIR}")
def test_real_sst2_dev_through_datasets_equals_the_tsv(tmp_path):
    task = get_task("sst2", style="instruction")
    rows = _local_rows(task, "validation", DATA_DIR)
    folder = _hub_layout(tmp_path / "sst2-hub", "sst2", {"validation": rows}, ["sentence", "label", "idx"],
                         ["negative", "positive"])
    on_hub = dataclasses.replace(task, hub=HubSource(str(folder), "sst2"))
    examples = on_hub.load("validation")
    assert len(examples) == 872 and examples == task.load("validation", data_dir=DATA_DIR)
    assert examples[0].input_text == "Review: it 's a charming and often affecting journey . \nSentiment:"


def test_load_from_disk_folders(tmp_path):
    task = get_task("mnli")
    rows = _plain(_local_rows(task, "validation", FIXTURES / "glue"), ["premise", "hypothesis", "label", "idx"])
    features = datasets.Features({"premise": datasets.Value("string"), "hypothesis": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=list(task.label_names)), "idx": datasets.Value("int64")})
    datasets.DatasetDict({"validation_matched": datasets.Dataset.from_list(rows, features=features)}).save_to_disk(tmp_path / "dict")
    datasets.Dataset.from_list(rows, features=features).save_to_disk(tmp_path / "one")
    expected = task.load("validation", data_dir=FIXTURES / "glue")
    assert dataclasses.replace(task, hub=HubSource(str(tmp_path / "dict"))).load("validation") == expected
    # one saved Dataset is the train split
    one = dataclasses.replace(task, hub=HubSource(str(tmp_path / "one")))
    assert [e.input_text for e in one.load("train")] == [e.input_text for e in expected]
    with pytest.raises(ValueError, match=r"one saved dataset, read as the train split; no 'validation_matched' split"):
        one.load("validation")
    with pytest.raises(ValueError, match=r"dict: no split 'test_matched' \(it has validation_matched\)"):
        dataclasses.replace(task, hub=HubSource(str(tmp_path / "dict"))).load("test")


def test_class_label_names_must_be_the_tasks(tmp_path):
    task = get_task("mnli")  # entailment, neutral, contradiction
    rows = {"validation_matched": _local_rows(task, "validation", FIXTURES / "glue")}
    folder = _hub_layout(tmp_path / "h", "mnli", rows, ["premise", "hypothesis", "label", "idx"],
                         ["entailment", "contradiction", "neutral"])
    with pytest.raises(ValueError, match=r"field 'label': the dataset's classes \['entailment', 'contradiction', 'neutral'\] "
                                         r"are not the task's \['entailment', 'neutral', 'contradiction'\]"):
        dataclasses.replace(task, hub=HubSource(str(folder), "mnli")).load("validation")


# ----------------------------------------------------------------------------- a task file
def test_task_file_over_a_hub_layout_folder_equals_the_same_csv(tmp_path):
    # stars 1 and 5 in a plain integer column are label values, not class indices
    rows = [{"text": "Great, really", "stars": 5}, {"text": "awful", "stars": 1}, {"text": "fine", "stars": 5}]
    (tmp_path / "train.csv").write_text("text,stars\n" + "".join(f'"{r["text"]}",{r["stars"]}\n' for r in rows))
    _hub_layout(tmp_path / "reviews-hub", "default", {"train": rows}, ["text", "stars"], None)
    common = "template: \"Review: {text}\\nSentiment:\"\nlabel_field: stars\nlabels: [1, 5]\nlabel_words: [negative, positive]\n"
    (tmp_path / "files.yaml").write_text("data: {train: train.csv}\n" + common)
    (tmp_path / "hub.yaml").write_text("hub: {path: ./reviews-hub, config: default}\n" + common)
    from_files, from_hub = read_task_file(tmp_path / "files.yaml"), resolve_task(str(tmp_path / "hub.yaml"))
    assert from_hub.hub.path == str((tmp_path / "reviews-hub").resolve())
    assert _plain(hub_module.read_rows(from_hub, "train"), ["text", "stars"]) == \
        _plain(local_module.read_rows(from_files, "train", "."), ["text", "stars"]) == \
        [{"text": "Great, really", "stars": 1}, {"text": "awful", "stars": 0}, {"text": "fine", "stars": 1}]
    assert from_hub.load("train") == from_files.load("train")
    assert [e.target_text for e in from_hub.load("train")] == ["positive", "negative", "positive"]
    with pytest.raises(ValueError, match=r"reviews-hub \(default\): Unknown split \"validation\""):
        from_hub.load("validation")
    with pytest.raises(ValueError, match=r"reviews-hub \(nope\): BuilderConfig 'nope' not found. Available: \['default'\]$"):
        dataclasses.replace(from_hub, hub=HubSource(from_hub.hub.path, "nope")).load("train")
