"""`softprompt train --help` in groups: each TrainConfig field's option under the group its
metadata names (config.GROUPS, in that order), the method's own options after them, and every
line, the description's included, wrapped to the terminal's width. And the demo without data
offline: one line naming --data-dir and $SOFTPROMPT_DATA_DIR within 2 s, no hub retry loop."""

from __future__ import annotations

import re
import time

import pytest

from softprompt.cli import build_parser, main
from softprompt.config import GROUPS, TrainConfig, cli_fields

WIDTH = 100


def help_text(monkeypatch, capsys, command: str) -> str:
    """``softprompt COMMAND --help`` as printed on a terminal ``WIDTH`` columns wide."""
    monkeypatch.setenv("COLUMNS", str(WIDTH))
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    return capsys.readouterr().out


def sections(text: str) -> dict[str, list[str]]:
    """Each help section's title -> the options it lists (``--name``)."""
    found: dict[str, list[str]] = {}
    title = None
    for line in text.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            title = line[:-1]
            found[title] = []
        elif title is not None and (match := re.match(r"  (--[\w-]+)", line)):
            found[title].append(match.group(1))
    return found


def test_train_help_groups_every_option(monkeypatch, capsys):
    text = help_text(monkeypatch, capsys, "train")
    found = sections(text)
    method_options = [t for t in found if t.startswith("method options")]
    assert list(found) == ["options", *GROUPS, *method_options] and len(method_options) == 1
    for f in cli_fields():
        flag = "--" + f.name.replace("_", "-")
        assert flag in found[f.metadata["group"]], (flag, f.metadata["group"])
    assert found["output and logging"] == ["--output-dir", "--log-every", "--report-to"]
    assert {"--length", "--rank", "--bottleneck"} <= set(found[method_options[0]])
    assert all(f.metadata["group"] in GROUPS for f in TrainConfig.__dataclass_fields__.values())


def test_train_help_is_wrapped(monkeypatch, capsys):
    text = help_text(monkeypatch, capsys, "train")
    assert max(len(line) for line in text.splitlines()) <= WIDTH
    description = text.split("\n\n")[1]
    assert len(description.splitlines()) > 1 and description.startswith("Train a soft prompt on a frozen model.")
    assert " ".join(description.split()) == " ".join(build_parser()._subparsers._group_actions[0].choices["train"].description.split())


def test_an_indented_description_line_is_kept(monkeypatch, capsys):
    """sweep --help's spec format: each line as written, comments aligned, never re-wrapped."""
    text = help_text(monkeypatch, capsys, "sweep")
    assert "    config: base.yaml                # optional: a `softprompt train --config` file (relative to this one)\n" in text


@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "no route to the endpoint"])
def test_the_demo_offline_without_data_is_one_line_within_2s(offline, monkeypatch, capsys, tmp_path):
    from huggingface_hub import constants

    monkeypatch.delenv("SOFTPROMPT_DATA_DIR", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline == "HF_HUB_OFFLINE")
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    started = time.monotonic()
    assert main(["demo", "--output-dir", str(tmp_path / "out")]) == 2
    assert time.monotonic() - started < 2.0
    reason = "HF_HUB_OFFLINE is set" if offline == "HF_HUB_OFFLINE" else "127.0.0.1 cannot be reached"
    assert capsys.readouterr().err == (
        f"softprompt demo: error: SST-2 comes from the Hugging Face hub without --data-dir, and {reason}: pass --data-dir DIR "
        "(or set SOFTPROMPT_DATA_DIR) with DIR/SST-2/{train,dev}.tsv from GLUE\n")
    assert not (tmp_path / "out").exists()
