"""The accuracy benchmark keeps one writer per output file: a second launch onto a file another
run is writing stops with one line instead of re-running that run's jobs and overwriting it."""

from __future__ import annotations

import pytest

from benchmarks import accuracy


def test_a_second_launch_onto_the_same_output_stops(tmp_path):
    output = tmp_path / "results" / "accuracy.json"
    first = accuracy.hold(output)
    try:
        with pytest.raises(SystemExit, match="another benchmark is writing this file"):
            accuracy.main(["--report", "--tasks", "sst2", "--output", str(output)])
        assert not output.exists()  # nothing written by the refused launch
    finally:
        first.close()
    assert accuracy.main(["--report", "--tasks", "sst2", "--output", str(output)]) == 0  # released: it runs
    assert output.is_file()
