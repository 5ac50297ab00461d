"""benchmarks/serve.py: the report's arithmetic on made-up requests, worked by hand."""

from __future__ import annotations

import pytest

from benchmarks import serve


def test_summary_rates_percentiles_and_equality():
    tokens = [[1, 2, 3], [4, 5], [6], [7, 8, 9, 10]]
    expected = [[1, 2, 3], [4, 0], [6], [7, 8, 9, 10]]
    out = serve.summary("x", tokens, [1.0, 2.0, 3.0, 4.0], 2.0, expected)
    assert out["requests_per_s"] == 2.0 and out["output_tokens"] == 10 and out["output_tokens_per_s"] == 5.0
    assert out["p50_s"] == 2.5 and out["p95_s"] == 4.0  # the median of 4; the 4th of 4 (round(3.8))
    assert out["equal_to_offline_greedy"] == 3


def test_tokens_stop_at_the_first_eos():
    assert serve.until_eos([5, 2, 7, 2], eos=2) == [5, 2]
    assert serve.until_eos([5, 6], eos=2) == [5, 6]
    assert serve.sentences(2)[0].startswith("Review: ") and serve.sentences(2)[0].endswith("\nSentiment:")


def test_without_vllm_it_says_what_to_set(monkeypatch):
    monkeypatch.delenv("SOFTPROMPT_VLLM_PYTHON", raising=False)
    with pytest.raises(SystemExit, match="set SOFTPROMPT_VLLM_PYTHON"):
        serve.main(["--requests", "3"])
