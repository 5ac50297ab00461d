"""Batching: exact token layouts for both backbone kinds, truncation, padding, length grouping.

Also home of ``tiny_tokenizer`` (an offline word-level tokenizer whose special ids match the
tiny models in conftest: pad 0, bos 1, eos 2), used by the evaluation and training tests.
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

WORDS = (
    "sentence : a the film movie was is great good fun bad awful dull boring plot acting "
    "and but not very really 0 1 2 positive negative premise hypothesis"
).split()


def tiny_tokenizer(bos: bool = False, eos_suffix: bool = False, pad: bool = True):
    """Word-level tokenizer, built offline. ``bos``: prepends ``<s>`` (Llama style);
    ``eos_suffix``: appends ``</s>`` (T5 style); ``pad=False``: no pad token (GPT-2 style)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + list(dict.fromkeys(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    single = " ".join((["<s>"] if bos else []) + ["$A"] + (["</s>"] if eos_suffix else []))
    tok.post_processor = processors.TemplateProcessing(single=single, special_tokens=[("<s>", 1), ("</s>", 2)])
    kwargs = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    if pad:
        kwargs["pad_token"] = "<pad>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


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


def test_truncation_cuts_input_from_the_left_and_reports_once(caplog):
    tok = tiny_tokenizer(bos=True)
    with caplog.at_level(logging.WARNING, logger="softprompt"):
        enc = encode_examples(EX, tok, "decoder-only", max_length=7)
    row = enc[1]
    # BOS kept, then the last 4 of 7 input tokens, then target + EOS: 1 + 4 + 2 = 7
    assert row.truncated and len(row.input_ids) == 7
    assert row.input_ids.tolist()[:5] == [1] + ids(tok, "very very dull plot")
    assert row.labels.tolist() == [IGNORE_INDEX] * 5 + [tok.convert_tokens_to_ids("0"), 2]
    assert not enc[0].truncated  # 1 + 4 + 2 = 7 fits exactly
    warnings = [r for r in caplog.records if "truncated" in r.getMessage()]
    assert len(warnings) == 1 and "1 of 2" in warnings[0].getMessage()


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
