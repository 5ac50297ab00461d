"""Helpers the test modules share (tests never import each other): an offline word-level
tokenizer whose special ids match conftest's tiny models (pad 0, bos 1, eos 2), and a tiny SST-2
folder in GLUE's layout."""

from __future__ import annotations

from pathlib import Path

import torch

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


POSITIVE = ["great fun", "really good film", "the movie is fun", "good acting", "a great plot", "very good"]
NEGATIVE = ["a very dull plot", "the acting was awful", "boring and bad", "not good", "dull", "really bad film"]


def write_sst2(root: Path, n_train: int = 24) -> Path:
    """A tiny SST-2 folder in GLUE's layout (``SST-2/train.tsv``, ``SST-2/dev.tsv``)."""
    folder = root / "SST-2"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(POSITIVE[i % 6], 1) if i % 2 else (NEGATIVE[i % 6], 0) for i in range(n_train)]
    (folder / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{l}\n" for s, l in rows))
    dev = [(s, 1) for s in POSITIVE[:3]] + [(s, 0) for s in NEGATIVE[:3]]
    (folder / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{l}\n" for s, l in dev))
    return root


def with_prompt(model, prompt, token_rows):
    """The README recipe: left-padded rows ``[pads, prompt, text]``, the prompt ``[s + n, d]``
    (sink tokens' embeddings included) right before each row's first token. ``token_rows``: each
    row's token ids (a list of lists). Built by ``softprompt.serving``, the library's recipe."""
    from softprompt.serving import embedder, left_padded, prompt_input

    embed = embedder(model)
    return left_padded([torch.cat([prompt.float(), prompt_input(None, embed, ids)]) for ids in token_rows])
