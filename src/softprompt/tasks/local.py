"""Readers for the benchmarks' own distribution files (for users who are not online).

Every reader yields rows with the field names and row order of the hub version, so local files
and `datasets` give the same examples in the same order:

- SuperGLUE ``<Task>/{train,val,test}.jsonl``; MultiRC (passage -> questions -> answers) is
  flattened to one row per answer option and ReCoRD (passage/entities/qas) to one row per query,
  as the hub's builder does (entities and answers as sorted sets).
- GLUE ``<TASK>/{train,dev,test}.tsv`` with their headers (CoLA's train/dev have none),
  MNLI ``dev_matched.tsv``/``dev_mismatched.tsv``; quotes are not special (GLUE TSVs are unquoted).
- MRQA ``.jsonl[.gz]`` (a header line, then one context with its ``qas`` per line).
- A user's own files (``reader="auto"``, `read_file`): ``.jsonl``, ``.json`` (lines, or one
  array of objects), ``.csv`` (quoted fields may hold commas and line breaks), ``.tsv`` (as GLUE
  writes it), each optionally gzipped (``.gz``); UTF-8 with or without a byte-order mark, LF or
  CRLF line ends. No row is skipped but blank lines.

Errors name the file, the line and the field, on one line. ``task`` is a `Task` (tasks/spec.py,
above this module); only its fields are read here.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from softprompt.tasks.rows import LocalFormat, normalize_label

# Folders that may hold a benchmark's task folders, when data_dir is their parent.
BENCHMARK_DIRS = {
    "superglue": ("superglue", "SuperGLUE", "super_glue"),
    "glue": ("glue", "GLUE"),
    "mrqa": ("mrqa", "MRQA"),
}


def find_file(task, split: str, data_dir: str | os.PathLike) -> Path:
    """The file holding `split` (an official split name) of `task` under `data_dir`.

    Looks in ``data_dir/<folder>``, ``data_dir/<benchmark>/<folder>`` and ``data_dir`` itself.
    A user's own split (an absolute path) may be a folder of files (`split_files`).
    """
    fmt = task.local
    if fmt is None:
        raise ValueError(f"task {task.name} has no local file format; load it from the hub")
    names = fmt.files.get(split)
    if names is None and (task.benchmark == "custom" or not fmt.folders):
        option = f" (--{split}-file)" if split in ("train", "validation", "test") else ""
        raise FileNotFoundError(f"task {task.name} has no {split} file{option}")
    if names is not None and all(Path(n).is_absolute() for n in names):  # a user's own files
        for name in names:
            if Path(name).exists():
                return Path(name)
        raise FileNotFoundError(f"{names[0]}: no such {split} file")
    root = Path(data_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"data dir {root} does not exist")
    if names is None:
        # An unlisted split (e.g. FewGLUE's train32) is read from <split><extension>.
        first = next(iter(fmt.files.values()))[0]
        ext = "".join(Path(first).suffixes)
        names = (f"{split}{ext}",)
    bases = [root] + [root / d for d in BENCHMARK_DIRS.get(task.benchmark, ())]
    for base in bases:
        for folder in (*fmt.folders, ""):
            for name in names:
                path = base / folder / name if folder else base / name
                if path.is_file():
                    return path
    folder = fmt.folders[0] if fmt.folders else "."
    raise FileNotFoundError(
        f"no {split} file for task {task.name} under {root} (expected {folder}/{names[0]})")


def read_rows(task, split: str, data_dir: str | os.PathLike) -> list[dict]:
    """Rows of one official split, labels mapped to class indices (None where unlabeled)."""
    path = find_file(task, split, data_dir)
    fmt = task.local
    rows = []
    for file in split_files(path):
        reader = READERS.get(_reader_for(file) if fmt.reader == "auto" else fmt.reader)
        if reader is None:
            raise ValueError(f"task {task.name}: unknown reader {fmt.reader!r}")
        with _broken_file(file):
            rows += _rows(task, file, reader(file, fmt, split), split)
    if not rows:
        raise ValueError(f"{path}: the {split} split is empty (no rows)")
    return rows


def split_files(path: Path) -> list[Path]:
    """A split's files: the file itself, or every file in a folder (shards) in name order.
    A folder's hidden files are ignored; any other file must be a type the readers know."""
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir() if not p.name.startswith("."))
    for file in files:
        if not file.is_file():
            raise ValueError(f"{file}: a split's folder holds files only")
        _reader_for(file)  # raises on an unknown type, naming the file
    if not files:
        raise ValueError(f"{path}: the folder is empty")
    return files


def read_file(path: str | os.PathLike) -> list[tuple[str, dict]]:
    """``(where, row)`` for every row of one .jsonl/.json/.csv/.tsv file (optionally .gz), its
    type from its name; the rows as written (no labels mapped). ``where`` is ``file:line``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    reader = READERS[_reader_for(path)]
    with _broken_file(path):
        return list(reader(path, LocalFormat(folders=(), files={}), "input"))


@contextmanager
def _broken_file(path: Path) -> Iterator[None]:
    """What a damaged file raises deep inside a reader, as one line naming the file."""
    try:
        yield
    except UnicodeDecodeError as err:
        raise ValueError(_not_utf8(path, err)) from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as err:  # a truncated or corrupt .gz
        raise ValueError(f"{path}: a damaged gzip file ({err or 'it ends early'}); `gunzip -t` checks it") from None


def _rows(task, path: Path, records: Iterator[tuple[str, dict]], split: str) -> list[dict]:
    fmt = task.local
    rows = []
    for where, row in records:
        for key in fmt.flatten:
            nested = row.pop(key, None)
            if not isinstance(nested, dict):
                raise ValueError(f"{where}: missing field '{key}'")
            row.update(nested)
        for old, new in fmt.rename.items():
            if old in row:
                row[new] = row.pop(old)
        row["_where"] = where
        normalize_label(task, row, split, where)
        rows.append(row)
    return rows


def _not_utf8(path: Path, err: UnicodeDecodeError) -> str:
    """One line naming the file, the line and the byte that is not UTF-8."""
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        data = f.read()
    for number, line in enumerate(data.split(b"\n"), 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as bad:
            return f"{path}:{number}: not UTF-8 text (byte 0x{line[bad.start]:02x} at column {bad.start + 1}); save the file as UTF-8"
    return f"{path}: not UTF-8 text ({err.reason}); save the file as UTF-8"


# ----------------------------------------------------------------------------- readers
def _reader_for(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() != ".gz"]
    ext = suffixes[-1] if suffixes else ""
    if ext in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if ext == ".csv":
        return "csv"
    if ext in (".tsv", ".txt"):
        return "tsv"
    raise ValueError(f"{path}: unknown file type {ext!r} (expected .jsonl, .csv or .tsv)")


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    # utf-8-sig: a byte-order mark (GLUE's MRPC dev.tsv as distributed starts with one) is dropped
    return open(path, encoding="utf-8-sig", newline="")


def _json_lines(path: Path) -> Iterator[tuple[str, dict]]:
    """JSON Lines; a ``.json`` file that holds one array of objects is read as its items."""
    with _open_text(path) as f:
        if path.name.lower().removesuffix(".gz").endswith(".json"):
            text = f.read()
            if text.lstrip().startswith("["):
                yield from _json_array(path, text)
                return
            lines = iter(text.splitlines(keepends=True))
        else:
            lines = f
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            obj = _decode(line, len(line) - len(line.lstrip()), where, whole=True)[0]
            if not isinstance(obj, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            yield where, obj


def _json_array(path: Path, text: str) -> Iterator[tuple[str, dict]]:
    """The objects of a JSON array, each named by the line it starts on."""
    try:
        count = len(json.loads(text))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}:{err.lineno}: malformed JSON ({err.msg.removesuffix(' at')} at column {err.colno})") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None
    pos, number = text.index("[") + 1, 1 + text.count("\n", 0, text.index("["))
    for _ in range(count):
        while text[pos] in " \t\r\n,":
            number += text[pos] == "\n"
            pos += 1
        where = f"{path}:{number}"
        item, end = _decode(text, pos, where)
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(item).__name__}")
        number += text.count("\n", pos, end)
        pos = end
        yield where, item


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    out: dict = {}
    for key, value in pairs:
        if key in out:  # a dict would keep the last of the two values, silently
            raise _DuplicateKey(key)
        out[key] = value
    return out


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def _decode(text: str, pos: int, where: str, whole: bool = False) -> tuple[Any, int]:
    """The JSON value at ``text[pos:]`` and where it ends (``whole``: nothing may follow it);
    one-line errors naming ``where``."""
    try:
        value, end = _DECODER.raw_decode(text, pos)
    except _DuplicateKey as err:
        raise ValueError(f"{where}: field '{err.args[0]}' appears twice in one object") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{where}: malformed JSON ({err.msg.removesuffix(' at')} at column {err.colno})") from None
    except RecursionError:
        raise ValueError(f"{where}: JSON nested too deeply") from None
    if whole and text[end:].strip():
        raise ValueError(f"{where}: malformed JSON (Extra data at column {end + 1})")
    return value, end


def _get(obj: dict, key: str, where: str, path: str = "") -> Any:
    if key not in obj:
        raise ValueError(f"{where}: missing field '{path}{key}'")
    return obj[key]


def read_jsonl(path: Path, fmt: LocalFormat, split: str) -> Iterator[tuple[str, dict]]:
    yield from _json_lines(path)


def read_multirc(path: Path, fmt: LocalFormat, split: str) -> Iterator[tuple[str, dict]]:
    """One row per answer option: paragraph, question, answer, idx{paragraph,question,answer}."""
    for where, doc in _json_lines(path):
        passage = _get(doc, "passage", where)
        text = _get(passage, "text", where, "passage.")
        for question in _get(passage, "questions", where, "passage."):
            q_text = _get(question, "question", where, "passage.questions[].")
            for answer in _get(question, "answers", where, "passage.questions[]."):
                row = {
                    "paragraph": text,
                    "question": q_text,
                    "answer": _get(answer, "text", where, "passage.questions[].answers[]."),
                    "idx": {"paragraph": _get(doc, "idx", where),
                            "question": _get(question, "idx", where, "passage.questions[]."),
                            "answer": _get(answer, "idx", where, "passage.questions[].answers[].")},
                }
                if "label" in answer:
                    row["label"] = answer["label"]
                yield where, row


def read_record(path: Path, fmt: LocalFormat, split: str) -> Iterator[tuple[str, dict]]:
    """One row per query: passage, query, entities (sorted set), answers (sorted set), idx."""
    for where, doc in _json_lines(path):
        passage = _get(doc, "passage", where)
        text = _get(passage, "text", where, "passage.")
        entities = set()
        for span in _get(passage, "entities", where, "passage."):
            start = _get(span, "start", where, "passage.entities[].")
            end = _get(span, "end", where, "passage.entities[].")
            entities.add(text[start:end + 1])  # ReCoRD's end offsets are inclusive
        for qa in _get(doc, "qas", where):
            answers = sorted({_get(a, "text", where, "qas[].answers[].") for a in qa.get("answers", ())})
            yield where, {
                "passage": text,
                "query": _get(qa, "query", where, "qas[]."),
                "entities": sorted(entities),
                "answers": answers,
                "idx": {"passage": _get(doc, "idx", where), "query": _get(qa, "idx", where, "qas[].")},
            }


def read_mrqa(path: Path, fmt: LocalFormat, split: str) -> Iterator[tuple[str, dict]]:
    """One row per question: context, question, answers, qid (the header line is skipped)."""
    for where, doc in _json_lines(path):
        if "header" in doc:
            continue
        context = _get(doc, "context", where)
        for qa in _get(doc, "qas", where):
            yield where, {"context": context, "question": _get(qa, "question", where, "qas[]."),
                          "answers": list(_get(qa, "answers", where, "qas[].")),
                          "qid": qa.get("qid")}


# csv's default field limit (128 KiB) calls a legitimate long passage "malformed"; the limit
# only guards memory, and a whole file is read into memory anyway.
csv.field_size_limit(2**31 - 1)


def _delimited(path: Path, fmt: LocalFormat, split: str, delimiter: str) -> Iterator[tuple[str, dict]]:
    """TSV as GLUE writes it (no quoting: a quote is an ordinary character) or CSV (quoted
    fields may hold commas and line breaks); CRLF or LF line ends; ``where`` is the line a
    row starts on."""
    columns = fmt.columns.get(split)
    with _open_text(path) as f:
        if delimiter == "\t":
            records = ((n, line.rstrip("\r\n").split("\t")) for n, line in enumerate(f, 1))
        else:
            reader = csv.reader(f, delimiter=delimiter, strict=True)  # an unclosed quote is an error, not a swallowed row
            records = _csv_records(reader, path)
        for number, cells in records:
            if number == 1 and columns is None:
                columns = tuple(c.strip() for c in cells)
                empty = [i + 1 for i, c in enumerate(columns) if not c]
                if empty:
                    raise ValueError(f"{path}:1: header column {empty[0]} has no name")
                twice = [c for i, c in enumerate(columns) if c in columns[:i]]
                if twice:  # a dict would keep one of the two values, silently
                    raise ValueError(f"{path}:1: field '{twice[0]}': named twice in the header")
                continue
            if cells == [""] or not cells:
                continue
            where = f"{path}:{number}"
            if len(cells) != len(columns):
                raise ValueError(f"{where}: expected {len(columns)} fields "
                                 f"({', '.join(columns)}), found {len(cells)}")
            yield where, dict(zip(columns, cells))


def _csv_records(reader, path: Path) -> Iterator[tuple[int, list[str]]]:
    """csv.reader's rows with the line each starts on (a quoted field may span lines)."""
    start = 1
    try:
        for cells in reader:
            yield start, cells
            start = reader.line_num + 1
    except csv.Error as err:
        raise ValueError(f"{path}:{start}: malformed CSV ({err})") from None


def read_tsv(path: Path, fmt: LocalFormat, split: str) -> Iterator[tuple[str, dict]]:
    yield from _delimited(path, fmt, split, "\t")


def read_csv(path: Path, fmt: LocalFormat, split: str) -> Iterator[tuple[str, dict]]:
    yield from _delimited(path, fmt, split, ",")


READERS = {
    "jsonl": read_jsonl,
    "multirc": read_multirc,
    "record": read_record,
    "mrqa": read_mrqa,
    "tsv": read_tsv,
    "csv": read_csv,
}
