"""benchmarks/memory_table.py: the estimate's arithmetic, checked against values worked by hand."""

from __future__ import annotations

import pytest

from benchmarks import memory_table as mt

EIGHT_B = mt.MODELS[1]


def test_weights_by_dtype():
    assert mt.weights(EIGHT_B, "float32") == 4 * 8.030e9
    assert mt.weights(EIGHT_B, "bfloat16") == 2 * 8.030e9
    embedding = 2 * 128_256 * 4096  # untied: embedding and head, both kept 16-bit
    assert mt.weights(EIGHT_B, "4bit") == pytest.approx(0.53 * (8.030e9 - embedding) + 2 * embedding)


def test_activations_are_34_d_bytes_a_token_and_layer_in_bf16():
    assert mt.activations(EIGHT_B, "bfloat16", 2148, False) == 34 * 4096 * 2148 * 32
    assert mt.activations(EIGHT_B, "float32", 2148, False) == 2 * 34 * 4096 * 2148 * 32
    # checkpointing: each layer's input, plus one layer's working set
    assert mt.activations(EIGHT_B, "bfloat16", 2148, True) == 2 * 4096 * 2148 * 32 + 34 * 4096 * 2148


def test_verdicts():
    gb = mt.GB
    assert mt.verdict(16 * gb, 10 * gb, 1 * gb, 1, 24) == "with checkpointing"
    assert mt.verdict(141 * gb, 48 * gb, 3.4 * gb, 8, 80) == "fits (FSDP)"
    assert mt.verdict(5 * gb, 5 * gb, 1 * gb, 8, 80) == "fits (data parallel)"
    assert mt.verdict(141 * gb, 48 * gb, 3.4 * gb, 1, 80) == "no"
    assert "| 70B (Llama 3.1 70B) | bfloat16 | 141.1 | 47.9 | 3.4 |" in mt.table(8, 256, 100)
