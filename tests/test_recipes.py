"""Settings left unset are resolved for the backbone's kind: the papers' T5 setting on
encoder-decoder models exactly, the measured decoder-only recipe otherwise; what the user set
is never changed. Checkpoints chosen on held-out training rows; progress lines off a terminal."""

from __future__ import annotations

import json

import pytest

from softprompt.config import KIND_DEFAULTS, TrainConfig
from softprompt.settings import resolved
from softprompt.progress import Progress
from softprompt.prompts import REGISTRY, recipe_for
from softprompt.train import load_data, train
from conftest import tiny_llama
from helpers import tiny_tokenizer, write_sst2


def test_encoder_decoder_resolves_to_the_papers_setting():
    c = resolved(TrainConfig(method="dpt", length=100), "encoder-decoder")
    assert (c.lr, c.warmup_steps, c.objective, c.style, c.separator) == (0.3, 0, "lm", "text-to-text", " ")
    assert c.method_options == {"length": 100}  # the papers' init stays: no method option added


def test_decoder_only_uses_the_recipe_but_never_overrides_the_user(monkeypatch):
    c = resolved(TrainConfig(method="ulpt", length=20), "decoder-only")
    expected = {**KIND_DEFAULTS["decoder-only"], **recipe_for("ulpt", "decoder-only")}
    assert (c.lr, c.warmup_steps, c.objective, c.style) == tuple(expected[k] for k in ("lr", "warmup_steps", "objective", "style"))
    mine = resolved(TrainConfig(method="ulpt", length=20, lr=0.123, objective="lm", warmup_steps=0, style="text-to-text"), "decoder-only")
    assert (mine.lr, mine.objective, mine.warmup_steps, mine.style) == (0.123, "lm", 0, "text-to-text")
    # a method option the recipe names applies only where the user gave none
    config_cls = REGISTRY["dpt"][0]
    monkeypatch.setattr(config_cls, "recipes", {"decoder-only": {"init": "normal", "lr": 0.5}}, raising=False)
    assert resolved(TrainConfig(method="dpt"), "decoder-only").method_options["init"] == "normal"
    assert resolved(TrainConfig(method="dpt", init="uniform"), "decoder-only").method_options["init"] == "uniform"
    assert resolved(TrainConfig(method="dpt"), "decoder-only").lr == 0.5


def test_class_objective_only_for_classification_and_chat_drops_the_separator():
    assert resolved(TrainConfig(method="prompt"), "decoder-only", classification=False).objective == "lm"
    assert resolved(TrainConfig(method="prompt", objective="class"), "decoder-only", classification=False).objective == "class"
    assert resolved(TrainConfig(method="prompt", chat_template=True), "decoder-only").separator == ""
    with pytest.raises(ValueError, match="objective must be one of"):
        TrainConfig(objective="mse")


def test_a_run_writes_its_resolved_config_and_resumes_from_the_unresolved_one(tmp_path):
    data = str(write_sst2(tmp_path / "data"))
    config = TrainConfig(task="sst2", label_words="names", method="prompt", length=2, data_dir=data, max_steps=2,
                         batch_size=4, eval_every=2, zero_shot=False, output_dir=str(tmp_path / "run"))
    assert config.lr is None
    metrics = train(config, tiny_llama(), tiny_tokenizer(bos=True))
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["lr"] == KIND_DEFAULTS["decoder-only"]["lr"] and saved["objective"] == "class"
    again = train(TrainConfig.from_dict({**config.to_dict(), "resume": True}), tiny_llama(), tiny_tokenizer(bos=True))
    assert again == metrics  # finished already: the same metrics, nothing refused


def test_holdout_rows_choose_the_checkpoint_and_the_official_validation_is_reported(tmp_path):
    data = str(write_sst2(tmp_path / "data", n_train=40))
    from softprompt.tasks import get_task

    task = get_task("sst2", label_words="names")
    config = TrainConfig(task="sst2", data_dir=data, holdout=10, split_seed=3)
    train_rows, validation, test, split = load_data(config, task)
    assert (len(train_rows), len(validation), split) == (30, 10, "validation")
    assert test == task.load("validation", data_dir=data)
    assert load_data(config, task)[1] == validation  # the same rows every time (split_seed)
    with pytest.raises(ValueError, match="holdout 40 leaves no training rows"):
        load_data(TrainConfig(task="sst2", data_dir=data, holdout=40), task)


def test_progress_prints_plain_lines_off_a_terminal(capsys):
    bar = Progress(3, "ulpt sst2", every=0.0)
    bar.update(1, loss="0.5")
    bar.update(2)
    bar.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ulpt sst2: 1/3, loss 0.5 (") and lines[1].startswith("ulpt sst2: 3/3, loss 0.5 (")
    quiet = Progress(3, "x", every=3600.0)
    quiet.update(3)
    assert capsys.readouterr().out == ""


def _train_three_steps(model, method: str, tmp_path):
    """Three steps at lr 0.1 on a tiny SST-2; the prompt's tensors before, and as saved after."""
    from safetensors.torch import load_file

    before = {k: v.clone() for k, v in model.prompt.state_dict().items()}
    data = str(write_sst2(tmp_path / "data"))
    config = TrainConfig(task="sst2", label_words="names", method=method, data_dir=data, max_steps=3, batch_size=4,
                         eval_every=3, lr=0.1, zero_shot=False, output_dir=str(tmp_path / "run"))
    train(config, model, tiny_tokenizer(bos=True))
    return before, load_file(str(tmp_path / "run" / "checkpoint" / "prompt.safetensors"))


def test_dept_trains_its_embedding_update_at_its_own_learning_rate(tmp_path):
    """Methods declare their parameter groups; the loop knows none by name. DePT's update
    follows the run's schedule scaled to lr_update (here so small that it cannot move)."""
    import softprompt

    model = softprompt.attach(tiny_llama(), "dept", length=2, rank=2, max_length=16, lr_update=1e-12, seed=0)
    groups = model.prompt.param_groups()
    assert [(g.name, g.lr) for g in groups] == [("prompt", None), ("update", 1e-12)]
    assert sum(p.numel() for g in groups for p in g.params) == model.num_trainable()
    before, saved = _train_three_steps(model, "dept", tmp_path)
    assert (saved["embedding"] - before["embedding"]).abs().max() > 1e-3
    assert (saved["lora_b"] - before["lora_b"]).abs().max() < 1e-9


def test_ulpt_trains_its_scale_and_shift_at_their_own_learning_rate(tmp_path):
    """ULPT's lr_align puts s and beta in their own group, scaled like DePT's update; without it
    the three tensors stay one group, so an optimizer state saved before lr_align existed loads."""
    import softprompt

    one = softprompt.attach(tiny_llama(), "ulpt", length=2, rank=2, seed=0)
    assert [(g.name, g.lr, len(g.params)) for g in one.prompt.param_groups()] == [("prompt", None, 3)]
    model = softprompt.attach(tiny_llama(), "ulpt", length=2, rank=2, lr_align=1e-12, seed=0)
    groups = model.prompt.param_groups()
    assert [(g.name, g.lr) for g in groups] == [("prompt", None), ("align", 1e-12)]
    assert sum(p.numel() for g in groups for p in g.params) == model.num_trainable()
    scaled = softprompt.attach(tiny_llama(), "ulpt", length=2, rank=2, init="scaled", lr_align=1e-12, seed=0)
    assert [(g.name, g.lr) for g in scaled.prompt.param_groups()] == [("prompt", None), ("align", 1e-12)]  # lr_align wins
    before, saved = _train_three_steps(model, "ulpt", tmp_path)
    assert (saved["z"] - before["z"]).abs().max() > 1e-3
    assert max((saved[k] - before[k]).abs().max() for k in ("scale", "shift")) < 1e-9


def test_decoder_only_recipes_are_the_measured_ones():
    """The per-method decoder-only recipes, as chosen from the measurements in
    benchmarks/README.md (SmolLM2-135M, SST-2, held-out rows); encoder-decoder keeps the papers'
    settings (no recipe). A change here must come with a new measurement."""
    from softprompt.prompts import methods

    assert {m: recipe_for(m, "decoder-only") for m in methods()} == {
        "prompt": {"init": "text"}, "residual": {"lr": 1e-2}, "dpt": {"init": "scaled"},
        "ulpt": {"lr": 0.1, "init": "scaled", "sink": "bos"}, "dept": {"lr_update": 1e-3}, "rank_probe": {},
    }
    assert all(recipe_for(m, "encoder-decoder") == {} for m in methods())
    assert resolved(TrainConfig(method="residual", length=20), "decoder-only").lr == 1e-2


def test_base_model_recipes_are_the_measured_ones():
    """The per-method recipes for base models, from the Gemma 3 270M measurements in
    docs/decoder-only.md (the lr search; rank_probe's and dpt's text starts from the 150-step
    accuracy runs).
    A change here must come with a new measurement."""
    from softprompt.prompts import methods

    assert {m: recipe_for(m, "base") for m in methods()} == {
        "prompt": {"lr": 0.03}, "residual": {"lr": 0.1}, "dpt": {"lr": 0.03, "init": "text"}, "ulpt": {"lr": 0.3}, "dept": {"lr": 0.1},
        "rank_probe": {"lr": 0.03, "init": "text"},
    }
    # rank_probe on a base model starts from the task's text, as vanilla's decoder-only recipe
    config = resolved(TrainConfig(method="rank_probe", length=4), "decoder-only", base=True, label_words=("bad", "good"))
    assert config.method_options["init"] == "text" and config.sources["init"] == "method recipe rank_probe/decoder-only base"
    assert config.method_options["init_text"] == "Answer with bad or good."
    assert resolved(TrainConfig(method="rank_probe", length=4), "decoder-only").method_options.get("init", "vocab") == "vocab"


def test_a_text_start_without_label_words_falls_back_to_the_method_s_own_init(monkeypatch):
    """A recipe's init="text" on a task without label words (generation) has no text to start
    from: each method falls back to an init it has (DPT has no vocab init)."""
    from softprompt.prompts import make_config, method_fields

    fallbacks = {}
    for method, (config_cls, _) in REGISTRY.items():
        if "init_text" not in method_fields(method):
            continue
        monkeypatch.setattr(config_cls, "recipes", {"base": {"init": "text"}})
        config = resolved(TrainConfig(method=method, length=4), "decoder-only", base=True, label_words=None)
        options = config.method_options
        make_config(method, **options)  # a valid config
        fallbacks[method] = options["init"]
        assert config.sources["init"].endswith(f"({options['init']}: the task has no label words)")
    assert fallbacks == {"prompt": "vocab", "residual": "vocab", "dpt": "scaled", "dept": "vocab", "rank_probe": "vocab"}


def test_a_recipe_s_sink_needs_a_bos_token(monkeypatch, tmp_path):
    from softprompt.backbones import backbone_facts

    config_cls = REGISTRY["prompt"][0]
    monkeypatch.setattr(config_cls, "recipes", {"decoder-only": {"sink": "bos"}}, raising=False)
    assert resolved(TrainConfig(method="prompt"), "decoder-only").method_options["sink"] == "bos"
    assert "sink" not in resolved(TrainConfig(method="prompt"), "decoder-only", bos=False).method_options
    # what the user set stands (attach then names the problem)
    assert resolved(TrainConfig(method="prompt", sink="bos"), "decoder-only", bos=False).method_options["sink"] == "bos"
    # read from the model's config before loading it
    with_bos, without = tiny_llama(), tiny_llama()
    without.config.bos_token_id = None
    with_bos.config.save_pretrained(tmp_path / "a")
    without.config.save_pretrained(tmp_path / "b")
    # (no tokenizer files there: not known to be a base model)
    assert backbone_facts(tmp_path / "a") == ("decoder-only", True, False)
    assert backbone_facts(tmp_path / "b") == ("decoder-only", False, False)
    # a run on a backbone that names no BOS trains with the prompt first instead of failing
    without.generation_config.bos_token_id = None
    data = str(write_sst2(tmp_path / "data"))
    config = TrainConfig(task="sst2", label_words="names", method="prompt", length=2, data_dir=data, max_steps=1,
                         batch_size=4, eval_every=1, zero_shot=False, output_dir=str(tmp_path / "run"))
    train(config, without, tiny_tokenizer(bos=True))
    saved = json.loads((tmp_path / "run" / "prompt" / "prompt_config.json").read_text())
    assert saved["config"]["sink"] == "none"
    train(config.replace(output_dir=str(tmp_path / "run2")), tiny_llama(), tiny_tokenizer(bos=True))
    saved = json.loads((tmp_path / "run2" / "prompt" / "prompt_config.json").read_text())
    assert saved["config"]["sink"] == "bos"
