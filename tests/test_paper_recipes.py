"""Issue 10: reproducing the papers as published. ULPT's projection drawn from the run's seed,
the authors' optimizers (AdamW eps/decay, Lester et al.'s Adafactor, constant schedule, warmup
ratio), each paper's task details chosen by the protocol, and `--recipe` presets whose resolved
config equals a table written from the paper and its code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import softprompt
from softprompt.cli import main
from softprompt.config import TrainConfig
from softprompt.settings import from_python
from softprompt.prompts.ulpt import make_projection
from softprompt.tasks import get_task
from softprompt.train import lr_at, train
from conftest import tiny_llama, tiny_t5
from helpers import tiny_tokenizer, write_sst2

FIXTURES = Path(__file__).parent / "fixtures"


# ---------------------------------------------------------------------------------------
# 10.3 ULPT's projection seed


def test_ulpt_projection_follows_the_run_seed_and_is_stored(tmp_path):
    d = tiny_llama().config.hidden_size
    a = softprompt.attach(tiny_llama(), "ulpt", length=3, rank=2, seed=5)
    b = softprompt.attach(tiny_llama(), "ulpt", length=3, rank=2, seed=6)
    assert torch.equal(a.prompt.projection, make_projection(2, d, "xavier", 5))  # the authors: set_seed, then build
    assert not torch.equal(a.prompt.projection, b.prompt.projection)
    fixed = softprompt.attach(tiny_llama(), "ulpt", length=3, rank=2, seed=6, projection_seed=5)
    assert torch.equal(fixed.prompt.projection, a.prompt.projection)  # the explicit option still wins
    a.save(tmp_path / "p")
    record = json.loads((tmp_path / "p" / "prompt_config.json").read_text())
    assert record["config"]["projection_seed"] == 5 and record["metadata"]["projection_seed"] == 5
    again = softprompt.load(tiny_llama(), tmp_path / "p")  # rebuilt from the stored seed, checksum checked
    assert torch.equal(again.prompt.projection, a.prompt.projection) and torch.equal(again.prompt_embeddings(), a.prompt_embeddings())


# ---------------------------------------------------------------------------------------
# 10.6 optimizers and schedules


def test_optimizers_as_the_authors_built_them():
    from softprompt.train import make_optimizer

    params = [torch.nn.Parameter(torch.zeros(3))]
    adamw = make_optimizer(TrainConfig(adam_eps=1e-6, weight_decay=0.0), [{"params": params, "lr": 0.3}])
    assert isinstance(adamw, torch.optim.AdamW)
    assert (adamw.defaults["eps"], adamw.defaults["weight_decay"]) == (1e-6, 0.0)  # transformers.AdamW's, as DePT/ULPT
    from transformers.optimization import Adafactor

    ada = make_optimizer(TrainConfig(optimizer="adafactor"), [{"params": params, "lr": 0.3}])
    assert isinstance(ada, Adafactor)
    d = ada.defaults
    assert (d["lr"], d["decay_rate"], d["beta1"], d["clip_threshold"], ada.t5x_weight_decay) == (0.3, -0.8, None, 1.0, 1e-5)
    assert not d["scale_parameter"] and not d["relative_step"]  # Lester et al.: parameter scaling off
    # T5X factors the second moment only when both dimensions reach 128: a 100-token prompt is not
    assert not ada._get_options(d, (100, 768))[0] and ada._get_options(d, (128, 768))[0]
    # T5X's decay is (1 - wd) * p, not (1 - lr * wd) * p: a zero gradient leaves only the decay
    p = torch.nn.Parameter(torch.ones(4, 3))
    p.grad = torch.zeros_like(p)
    make_optimizer(TrainConfig(optimizer="adafactor", weight_decay=0.1), [{"params": [p], "lr": 0.3}]).step()
    assert torch.allclose(p.detach(), torch.full((4, 3), 0.9))
    defaults = TrainConfig()  # unchanged for existing runs: torch's AdamW, decay 1e-5
    assert (defaults.optimizer, defaults.adam_eps, defaults.weight_decay) == ("adamw", 1e-8, 1e-5)


def test_constant_schedule_warmup_ratio_and_bad_values():
    from softprompt.train import steps_per_epoch, warmup_steps_for

    assert [lr_at(s, 10, 2, 0.3, "constant") for s in (0, 1, 2, 9)] == pytest.approx([0.15, 0.3, 0.3, 0.3])
    assert warmup_steps_for(TrainConfig(warmup_ratio=0.1), 1599) == 159  # int(), as DPT's get_scheduler call
    assert steps_per_epoch(TrainConfig(batch_size=16), 250) == 16
    for bad, message in ((dict(optimizer="sgd"), "optimizer must be one of adamw, adafactor"),
                         (dict(adam_eps=0), "adam_eps must be a positive"),
                         (dict(warmup_ratio=1.5), "warmup_ratio must be a number in"),
                         (dict(warmup_ratio=0.1, warmup_steps=3), "give warmup_steps or warmup_ratio, not both"),
                         (dict(max_grad_norm=-1), "max_grad_norm must be a non-negative"),
                         (dict(eval_unit="days"), "eval_unit must be one of"),
                         (dict(recipe="nope"), "recipe must be one of dpt-paper")):
        with pytest.raises(ValueError, match=message):
            TrainConfig(**bad)


def test_adafactor_run_with_constant_lr_no_clipping_and_eval_per_epoch(tmp_path):
    data = str(write_sst2(tmp_path / "data", n_train=8))
    config = TrainConfig(task="sst2", label_words="names", method="prompt", length=2, data_dir=data, epochs=2,
                         batch_size=4, optimizer="adafactor", lr=0.3, lr_schedule="constant", warmup_steps=0,
                         max_grad_norm=0.0, eval_every=1, eval_unit="epochs", zero_shot=False, log_every=1,
                         output_dir=str(tmp_path / "run"))
    metrics = train(config, tiny_llama(), tiny_tokenizer(bos=True))
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in log if "lr" in r] == [0.3] * 4
    assert [r["step"] for r in log if "validation" in r] == [2, 4]  # 2 steps per epoch
    assert metrics["steps"] == 4


# ---------------------------------------------------------------------------------------
# 10.5 each paper's task details, chosen by the protocol


def test_protocol_details_copa_metrics_and_yelp_cap():
    assert "question:" in get_task("copa").template and "question:" in get_task("copa", protocol="attempt").template
    for protocol in ("dpt", "dept", "ulpt"):
        assert get_task("copa", protocol=protocol).template == "premise: {premise} choice1: {choice1} choice2: {choice2}"
        assert get_task("mrpc", protocol=protocol).metrics[0] == "accuracy"  # chooses the checkpoint
        assert get_task("qqp", protocol=protocol).metrics[0] == "accuracy"
        assert get_task("yelp2", protocol=protocol).max_train_rows == 100_000
    assert get_task("mrpc").metrics[0] == "f1" and get_task("yelp2").max_train_rows is None
    assert get_task("cb", protocol="dept").metrics[0] == "macro_f1" == get_task("cb", protocol="ulpt").metrics[0]
    assert get_task("cb", protocol="dpt").metrics[0] == "accuracy"
    with pytest.raises(ValueError, match="unknown protocol 'x'"):
        get_task("cb", protocol="x")
    import dataclasses

    with pytest.raises(ValueError, match="max_train_rows must be a positive integer"):
        dataclasses.replace(get_task("yelp2"), max_train_rows=0)


def test_yelp_cap_takes_the_first_rows_of_the_seeded_shuffle(tmp_path):
    import dataclasses

    from softprompt.tasks.splits import shuffled_indices

    folder = tmp_path / "yelp_review_polarity_csv"
    folder.mkdir()
    rows = [f'"{1 + i % 2}","review number {i}"\n' for i in range(10)]
    (folder / "train.csv").write_text("".join(rows))
    (folder / "test.csv").write_text("".join(rows[:4]))
    capped = dataclasses.replace(get_task("yelp2", protocol="dpt"), max_train_rows=3)
    texts = [e.input_text for e in capped.load("train", data_dir=str(tmp_path), protocol="dpt")]
    assert texts == [f"sentence: review number {i}" for i in shuffled_indices(10, 42)[:3]]
    assert len(capped.load("validation", data_dir=str(tmp_path), protocol="dpt")) == 4  # only training rows are capped


def test_dpt_wsc_keeps_label_1_validation_rows_with_star_marked_pronoun():
    data = str(FIXTURES / "superglue")
    dpt = get_task("wsc", protocol="dpt")
    val = dpt.load("validation", data_dir=data, protocol="dpt")
    assert [e.label for e in val] == [1, 1]  # the fixture's false row is dropped, as DPT filters label == 1
    assert val[0].input_text == "Mark told Pete many lies about himself, which Pete included in his book. * He * should have been more truthful."
    assert val[0].target_text == "Mark"
    t5 = get_task("wsc").load("validation", data_dir=data)
    assert len(t5) == 3 and t5[0].input_text.startswith("wsc: ") and "*He*" in t5[0].input_text


def test_selection_metric_chooses_the_checkpoint_and_bad_names_fail(tmp_path):
    data = str(write_sst2(tmp_path / "data", n_train=8))
    base = dict(task="sst2", label_words="names", method="prompt", length=2, data_dir=data, max_steps=1, batch_size=4,
                zero_shot=False, lr=0.1)
    with pytest.raises(ValueError, match="selection_metric 'f1' is not a metric of task sst2"):
        train(TrainConfig(**base, selection_metric="f1", output_dir=str(tmp_path / "a")), tiny_llama(), tiny_tokenizer(bos=True))
    metrics = train(TrainConfig(**base, selection_metric="accuracy", output_dir=str(tmp_path / "b")), tiny_llama(), tiny_tokenizer(bos=True))
    assert metrics["selection_metric"] == "accuracy"


# ---------------------------------------------------------------------------------------
# Recipes


# The DPT paper's setting, written from the paper (§4.2: T5, 100 epochs, lr 0.3, AdamW, prompt
# length 100, bottleneck 10) and the authors' code (XYaoooo/DPT: README -ts 16; options.py
# weight decay 1e-5, max grad norm 1, linear schedule with warmup 0.1 of the steps, source length
# 256, target length 128, seed 42; main_ddp.py torch AdamW (eps 1e-8), generation on the
# validation set after each epoch; modeling_t5.py U(-0.5, 0.5) init).
DPT_PAPER_CB = {
    "recipe": "dpt-paper", "task": "cb", "method": "dpt", "length": 100, "bottleneck": 10, "init": "uniform",
    "protocol": "dpt", "split_seed": 42, "style": "text-to-text", "objective": "lm", "separator": " ",
    "optimizer": "adamw", "adam_eps": 1e-8, "weight_decay": 1e-5, "max_grad_norm": 1.0,
    "lr": 0.3, "lr_schedule": "linear-hf", "warmup_ratio": 0.1, "warmup_steps": None,  # get_scheduler("linear"): issue 34 item 13
    "epochs": 100, "max_steps": None, "batch_size": 16, "grad_accum": 1,
    "max_length": 256, "truncation_side": "right", "max_new_tokens": 128,
    "eval_mode": "generate", "eval_every": 1, "eval_unit": "epochs", "selection_metric": None, "seed": 42,
}


@pytest.fixture()
def t5_dir(tmp_path):
    tiny_t5().save_pretrained(tmp_path / "t5")
    tiny_tokenizer(eos_suffix=True).save_pretrained(tmp_path / "t5")
    return tmp_path / "t5"


def _resolve_only(monkeypatch):
    """Stop a run right after it wrote its resolved config.json (the training is not the point)."""
    import softprompt.train as loop

    def stop(c, run, *rest):
        metrics = {"zero_shot": None, "best_validation": None, "test": None, "trainable_parameters": 0, "wall_seconds": 0.0}
        run.write_metrics(metrics)  # a finished run keeps its config.json
        return metrics

    monkeypatch.setattr(loop, "_train_one", stop)


def test_dpt_paper_recipe_resolves_to_the_papers_setting(t5_dir, tmp_path, monkeypatch):
    _resolve_only(monkeypatch)
    data = tmp_path / "data" / "CB"
    data.mkdir(parents=True)
    row = json.dumps({"premise": "the film was fun", "hypothesis": "it was good", "label": "entailment", "idx": 0})
    (data / "train.jsonl").write_text(row + "\n")
    (data / "val.jsonl").write_text(row + "\n")
    out = tmp_path / "run"
    argv = ["train", "--recipe", "dpt-paper", "--model", str(t5_dir), "--task", "cb", "--data-dir", str(tmp_path / "data"),
            "--output-dir", str(out)]
    assert main(argv) == 0
    saved = json.loads((out / "config.json").read_text())
    assert {k: saved[k] for k in DPT_PAPER_CB} == DPT_PAPER_CB
    assert get_task("cb", protocol=saved["protocol"]).metrics[0] == "accuracy"  # DPT's checkpoint metric for CB

    # command-line options override the recipe; a step count replaces its epochs
    assert main(argv[:-1] + [str(tmp_path / "run2"), "--lr", "0.1", "--max-steps", "5", "--bottleneck", "4",
                              "--warmup-steps", "2", "--eval-every", "3"]) == 0
    over = json.loads((tmp_path / "run2" / "config.json").read_text())
    assert (over["lr"], over["max_steps"], over["epochs"], over["bottleneck"], over["length"]) == (0.1, 5, None, 4, 100)
    assert (over["warmup_steps"], over["warmup_ratio"], over["eval_every"], over["eval_unit"]) == (2, None, 3, "steps")


def test_every_recipe_is_a_valid_config_with_sources(capsys):
    from softprompt.recipes import RECIPES

    assert list(RECIPES) == ["dpt-paper", "ulpt-paper", "dept-paper", "residual-paper", "lester-paper"]
    for name, recipe in RECIPES.items():
        c = from_python(TrainConfig(recipe=name, task="rte"))
        assert c.method == recipe.method and c.lr == recipe.settings["lr"] and recipe.sources
        assert TrainConfig.from_dict(c.to_dict()).to_dict() == c.to_dict()  # config.json reads back the same
    dept = from_python(TrainConfig(recipe="dept-paper", task="multirc"))  # the authors' logged per-task values
    assert (dept.max_length, dept.method_options["max_length"], dept.method_options["lr_update"]) == (348, 348, 5e-3)
    assert (dept.adam_eps, dept.weight_decay) == (1e-6, 0.0)
    ulpt = from_python(TrainConfig(recipe="ulpt-paper"))
    assert (ulpt.lr, ulpt.batch_size, ulpt.max_steps, ulpt.method_options["rank"]) == (0.6, 16, 30_000, 2)
    lester = from_python(TrainConfig(recipe="lester-paper"))
    assert (lester.optimizer, lester.lr_schedule, lester.max_grad_norm) == ("adafactor", "constant", 0.0)
    other = from_python(TrainConfig(recipe="dpt-paper", method="prompt"))  # another method: none of DPT's method options
    assert other.method_options == {} and other.lr == 0.3

    assert main(["recipes"]) == 0
    printed = capsys.readouterr().out
    assert all(name in printed for name in RECIPES) and "main_ddp.py" in printed and "checkpoints/<task>/output.log" in printed
    assert main(["recipes", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("softprompt recipes: error: unknown recipe 'nope'") and "\n" not in err
    with pytest.raises(SystemExit) as stop:
        main(["recipes", "--help"])
    assert stop.value.code == 0
