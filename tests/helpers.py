"""Helpers the test modules share (tests never import each other): an offline word-level
tokenizer whose special ids match conftest's tiny models (pad 0, bos 1, eos 2), and a tiny SST-2
folder in GLUE's layout."""

from __future__ import annotations

import csv
import io
import json
import os
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


# ---------------------------------------------------------------------------------------
# Sweeps (tests/test_sweep*.py): a tiny model and data, a spec, reading what a sweep wrote

CB_WORDS = "the film movie was great good fun bad awful dull boring plot acting".split()
# 8 trials: 2 methods x 2 tasks x 2 seeds (choosing a learning rate per cell: test_searched_learning_rate
# on real runs, test_table_chooses_on_validation_never_test on made-up ones)
SWEEP_GRID = {"method": ["prompt", "dpt"], "task": ["sst2", "cb"], "seed": [0, 1]}


def write_cb(root: Path) -> Path:
    """A tiny CB folder in SuperGLUE's layout (premise, hypothesis, label)."""
    folder = root / "CB"
    folder.mkdir(parents=True, exist_ok=True)
    labels = ("entailment", "contradiction", "neutral")

    def rows(n: int, offset: int) -> str:
        return "".join(json.dumps({"premise": " ".join(CB_WORDS[(i + offset) % 13: (i + offset) % 13 + 4]),
                                   "hypothesis": " ".join(CB_WORDS[(2 * i) % 13: (2 * i) % 13 + 3]),
                                   "label": labels[i % 3], "idx": i}) + "\n" for i in range(n))

    (folder / "train.jsonl").write_text(rows(18, 0))
    (folder / "val.jsonl").write_text(rows(6, 5))
    return root



def sweep_assets(root: Path, model) -> Path:
    """``root`` with a tiny saved model (``model`` and ``tiny_tokenizer``) and SST-2 and CB data."""
    model.save_pretrained(root / "tiny")
    tiny_tokenizer(bos=True).save_pretrained(root / "tiny")
    write_sst2(root / "data")
    write_cb(root / "data")
    return root


def write_sweep_spec(assets: Path, folder: Path, grid=None, base=None, **extra) -> Path:
    """The tests' spec (as JSON, which YAML reads); ``base``: options replacing the base's."""
    spec = {
        "name": "tiny",
        "base": {"model": str(assets / "tiny"), "data_dir": str(assets / "data"), "style": "text-to-text", "objective": "lm",
                 "length": 3, "batch_size": 4, "max_steps": 8, "eval_every": 8, "checkpoint_every": 4, "log_every": 4,
                 "warmup_steps": 0, "zero_shot": False, "eval_batch_size": 8, "lr": 0.1},
        "per_task": {"sst2": {"label_words": "names"}},
        "per_method": {"dpt": {"bottleneck": 2}},
        "grid": grid or SWEEP_GRID,
        "heartbeat": 1,
        **extra,
    }
    spec["base"].update(base or {})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "spec.yaml"
    path.write_text(json.dumps(spec))  # YAML reads JSON
    return path


def sweep_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}


def read_report_csv(directory: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO((directory / "report" / "table.csv").read_text())))


def sweep_trials(directory: Path, storage: str | None = None) -> list:
    from softprompt.sweep import Sweep

    sweep = Sweep.open(directory, storage)
    (plan, study), = sweep.studies()
    return study.get_trials(deepcopy=False)


def perturbed(model, seed: int):
    """Every trainable tensor moved off its init (DePT's update starts at zero, i.e. a no-op)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def saved_tiny_run_inputs(root: Path) -> Path:
    """``root/tiny``: conftest's tiny Llama and a BOS-adding ``tiny_tokenizer`` saved as a model
    folder (what ``--model`` loads); ``root/data``: the tiny SST-2 folder. Returns ``root``."""
    from conftest import tiny_llama

    tiny_llama().save_pretrained(root / "tiny")
    tiny_tokenizer(bos=True).save_pretrained(root / "tiny")
    write_sst2(root / "data")
    return root


# ---------------------------------------------------------------------------------------
# The real Gemma 3 (tests/test_gemma_*.py): the tokenizer's own batches, the naive
# concatenation built by hand, and the backbone left as the tests found it

# small prompts of every method (ULPT and DPT as their decoder-only recipes start them); DePT's update
# covers 8 positions, fewer than the longest test row has
SMALL_PROMPTS = {"prompt": dict(length=6), "residual": dict(length=5, bottleneck=16), "dpt": dict(length=7, bottleneck=3, init="scaled"),
                 "ulpt": dict(length=8, rank=2, init="scaled"), "dept": dict(length=4, rank=2, max_length=8), "rank_probe": dict(length=5)}


def tokenized(tokenizer, texts):
    """``(ids [B, T], mask [B, T], labels [B, T], rows)``: the tokenizer's own padded batch (Gemma's
    pads on the left and starts each row with its BOS), every real token labeled (the first one is
    predicted by the prompt's last row), and each row's ids without padding."""
    batch = tokenizer(list(texts), return_tensors="pt", padding=True)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    rows = [tokenizer(t)["input_ids"] for t in texts]
    return ids, mask, ids.masked_fill(mask == 0, -100), rows


def naive_row(backbone, ahead, ids, adjust=None):
    """One row as the naive concatenation, built by hand: ``cat([ahead [m, d], text [T, d]])``,
    the text embedded by the backbone's embedding *module* (Gemma's scales the table by √d) and
    passed through ``adjust`` (``[T, d] -> [T, d]``: DePT's update) when given."""
    text = backbone.get_input_embeddings()(torch.as_tensor(list(ids), dtype=torch.long))
    if adjust is not None:
        text = adjust(text)
    return torch.cat([ahead.to(text.dtype), text])


def left_pad(rows):
    """Rows ``[L_b, d]`` left-padded by hand for ``generate``: ``(embeds [B, L, d], mask [B, L])``."""
    L = max(r.shape[0] for r in rows)
    embeds = torch.stack([torch.cat([r.new_zeros(L - r.shape[0], r.shape[1]), r]) for r in rows])
    mask = torch.tensor([[0] * (L - r.shape[0]) + [1] * r.shape[0] for r in rows])
    return embeds, mask


def off_zero(model, seed: int):
    """Every trainable tensor that starts at zero (DePT's ``lora_b``: its text update a no-op, ULPT's
    shift) moved off it, the others left at their init (on a real model, a prompt pushed far off
    its init makes float32 itself ill-conditioned, the naive reference's gradient included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.trainable_parameters():
            if not p.any():
                p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return model


def own_text(module):
    """The prompt method's own change to one unpadded row's text embeddings ``[T, d] -> [T, d]``
    (``adjust_input_embeds``: DePT's update; the identity for every other method)."""
    return lambda text: module.adjust_input_embeds(text[None], torch.ones(1, text.shape[0], dtype=torch.long))[0]
