"""Batching: exact token layouts for both backbone kinds, truncation, padding, length grouping.
"""

from __future__ import annotations

import logging

import pytest
import torch

from softprompt.batching import (
    IGNORE_INDEX,
    collate,
    encode_choices,
    encode_examples,
    length_grouped_order,
    pad_id,
    special_affixes,
)
from softprompt.tasks import Example
from helpers import tiny_tokenizer





def ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


EX = [
    Example("sentence : great fun", "1", 1, ("0", "1")),
    Example("sentence : a very very dull plot", "0", 0, ("0", "1")),
]


def test_special_affixes_found_by_probing():
    assert special_affixes(tiny_tokenizer()) == ([], [])
    assert special_affixes(tiny_tokenizer(bos=True)) == ([1], [])
    assert special_affixes(tiny_tokenizer(eos_suffix=True)) == ([], [2])


def test_decoder_only_layout_exact():
    tok = tiny_tokenizer(bos=True)
    enc = encode_examples(EX, tok, "decoder-only", max_length=64)
    x = ids(tok, "sentence : great fun")
    one = tok.convert_tokens_to_ids("1")
    assert enc[0].input_ids.tolist() == [1] + x + [one, 2]
    assert enc[0].labels.tolist() == [IGNORE_INDEX] * (1 + len(x)) + [one, 2]
    assert not enc[0].truncated and len(enc[0]) == len(x) + 3


def test_encoder_decoder_layout_exact():
    tok = tiny_tokenizer(eos_suffix=True)
    enc = encode_examples(EX, tok, "encoder-decoder", max_length=64)
    assert enc[1].input_ids.tolist() == ids(tok, "sentence : a very very dull plot") + [2]
    assert enc[1].labels.tolist() == [tok.convert_tokens_to_ids("0"), 2]


def test_truncation_cuts_input_from_the_right_and_reports_once(caplog):
    """Issue 10.1: long inputs lose their end, as the four papers' code cuts (HF
    truncation=True); the old code cut the start, losing what templates put first."""
    tok = tiny_tokenizer(bos=True)
    with caplog.at_level(logging.WARNING, logger="softprompt"):
        enc = encode_examples(EX, tok, "decoder-only", max_length=7)
    row = enc[1]
    # BOS kept, then the first 4 of 7 input tokens, then target + EOS: 1 + 4 + 2 = 7
    assert row.truncated and len(row.input_ids) == 7
    assert row.input_ids.tolist()[:5] == [1] + ids(tok, "sentence : a very")
    assert row.labels.tolist() == [IGNORE_INDEX] * 5 + [tok.convert_tokens_to_ids("0"), 2]
    assert not enc[0].truncated  # 1 + 4 + 2 = 7 fits exactly
    warnings = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1 and "1 of 2" in warnings[0].getMessage()
    left = encode_examples(EX, tok, "decoder-only", max_length=7, report=False, truncation_side="left")[1]
    assert left.input_ids.tolist()[:5] == [1] + ids(tok, "very very dull plot")  # the old behaviour, on request


def test_the_passage_gives_way_and_the_question_and_cue_stay():
    """Issue 10.1: a task names the field that gives way (BoolQ's passage); with none, the
    template's closing text (an instruction cue) and the input's EOS are never cut."""
    from softprompt.tasks import get_task
    from softprompt.tasks.build import row_to_examples

    tok = tiny_tokenizer(eos_suffix=True)
    row = {"question": "was the film good", "passage": "the plot was dull and the acting was bad but fun", "label": 1}
    example = row_to_examples(get_task("boolq"), row, is_train=True)[0]  # question: ... passage: ...
    assert example.input_text[example.cut[0] : example.cut[1]] == row["passage"]
    enc = encode_examples([example], tok, "encoder-decoder", max_length=12, report=False)[0]
    text = tok.decode(enc.input_ids.tolist())
    assert enc.truncated and len(enc.input_ids) == 12 and enc.input_ids.tolist()[-1] == 2  # EOS kept
    assert text == "<unk> was the film good <unk> the plot was dull and </s>"  # question whole, passage's start
    # instruction style puts the passage first: it still gives way, the question and cue stay
    instruct = row_to_examples(get_task("boolq", style="instruction"), row, is_train=True)[0]
    tok = tiny_tokenizer(bos=True)
    enc = encode_examples([instruct], tok, "decoder-only", max_length=14, report=False)[0]
    kept = tok.decode(enc.input_ids.tolist()[: enc.labels.tolist().index(next(l for l in enc.labels.tolist() if l != IGNORE_INDEX))])
    assert kept == "<s> the plot was dull and <unk> was the film <unk> <unk>"  # "Question:", "good?", "Answer:" are <unk>
    # a template ending in a cue, no named field: the cue survives a right cut
    sst = row_to_examples(get_task("sst2", style="instruction"), {"sentence": "a very very dull plot and bad acting", "label": 0}, True)[0]
    assert sst.input_text[sst.cut[1] :] == "\nSentiment:"
    cue = tok("\nSentiment:", add_special_tokens=False)["input_ids"]
    enc = encode_examples([sst], tok, "decoder-only", max_length=8, report=False)[0]
    target_at = next(i for i, l in enumerate(enc.labels.tolist()) if l != IGNORE_INDEX)
    assert enc.input_ids.tolist()[target_at - len(cue) : target_at] == cue


def test_truncation_never_crashes_when_target_alone_is_too_long():
    tok = tiny_tokenizer()
    long = [Example("a", " ".join(["good"] * 10), 0)]
    enc = encode_examples(long, tok, "decoder-only", max_length=4, report=False)
    assert len(enc[0].input_ids) == 4 and enc[0].truncated
    enc = encode_examples(long, tok, "encoder-decoder", max_length=4, report=False)
    assert len(enc[0].labels) == 4 and enc[0].truncated


def test_collate_pads_to_longest_with_pad_or_eos():
    tok = tiny_tokenizer(bos=True)
    enc = encode_examples(EX, tok, "decoder-only", max_length=64)
    batch = collate(enc, pad_id(tok))
    T = max(len(e.input_ids) for e in enc)
    assert batch["input_ids"].shape == (2, T)
    assert batch["attention_mask"].sum(1).tolist() == [len(e.input_ids) for e in enc]
    assert batch["input_ids"][0, len(enc[0].input_ids):].eq(0).all()
    assert batch["labels"][0, len(enc[0].input_ids):].eq(IGNORE_INDEX).all()
    left = collate(enc, 0, padding_side="left")
    assert left["attention_mask"][0, : T - len(enc[0].input_ids)].eq(0).all()
    assert left["input_ids"][0, -len(enc[0].input_ids):].tolist() == enc[0].input_ids.tolist()
    assert pad_id(tiny_tokenizer(pad=False)) == 2  # no pad token: EOS


def test_encoder_decoder_collate_pads_labels_separately():
    tok = tiny_tokenizer(eos_suffix=True)
    enc = encode_examples([EX[0], Example("a", "good fun", 0)], tok, "encoder-decoder", max_length=64)
    batch = collate(enc, pad_id(tok))
    assert batch["labels"].shape == (2, 3)
    assert batch["labels"][0].tolist() == [tok.convert_tokens_to_ids("1"), 2, IGNORE_INDEX]


def test_choice_rows_label_only_the_choice():
    tok = tiny_tokenizer(bos=True)
    rows = encode_choices(EX, tok, "decoder-only", 64)
    assert rows.example.tolist() == [0, 0, 1, 1] and rows.choice.tolist() == [0, 1, 0, 1]
    for r, e, c in zip(rows.rows, rows.example.tolist(), rows.choice.tolist()):
        assert r.labels[r.labels != IGNORE_INDEX].tolist() == [tok.convert_tokens_to_ids(EX[e].choices[c])]
    with pytest.raises(ValueError, match="no choices"):
        encode_choices([Example("a", "b", None)], tok, "decoder-only", 64)


def test_length_grouped_order_is_a_deterministic_grouped_permutation():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 200, (1000,), generator=g).tolist()
    order = length_grouped_order(lengths, 8, seed=3, chunk_batches=5)
    assert sorted(order) == list(range(1000))
    assert order == length_grouped_order(lengths, 8, seed=3, chunk_batches=5)
    assert order != length_grouped_order(lengths, 8, seed=4, chunk_batches=5)
    # padding waste is far below a random order's
    def waste(o):
        return sum(max(lengths[i] for i in o[s:s + 8]) * len(o[s:s + 8]) - sum(lengths[i] for i in o[s:s + 8]) for s in range(0, 1000, 8))
    random_order = torch.randperm(1000, generator=g).tolist()
    assert waste(order) < 0.3 * waste(random_order)
    odd = length_grouped_order([5] * 10, 4, seed=0)
    assert sorted(odd) == list(range(10)) and len(odd) == 10
