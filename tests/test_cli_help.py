"""The command line helps: a mistyped option or task gets "did you mean", errors name their
subcommand, and options are never abbreviated (a typo is an error, not another option)."""

from __future__ import annotations

import pytest

from softprompt.cli import main


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_mistyped_option_gets_did_you_mean(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--lenght", "20"])
    assert exit_.value.code == 2
    assert one_line(capsys) == "softprompt train: error: unrecognized arguments: --lenght 20 (did you mean --length?)"


def test_options_are_never_abbreviated(capsys):
    with pytest.raises(SystemExit):
        main(["params", "--method", "ulpt", "--embed", "768"])
    err = one_line(capsys)
    assert err.startswith("softprompt params: error:") and "--embed" in err


def test_an_unknown_option_far_from_any_gets_no_guess(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--zzzzzz", "1"])
    assert one_line(capsys) == "softprompt train: error: unrecognized arguments: --zzzzzz 1"


def test_a_mistyped_task_gets_did_you_mean(capsys):
    assert main(["train", "--task", "sst3", "--explain"]) == 2
    assert "unknown task 'sst3'; did you mean sst2?" in one_line(capsys)
