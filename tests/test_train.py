"""Training: schedule values, only the prompt changes, outputs, refusing another run's
directory, NaN handling, multi-seed summary, and a real SIGKILL + resume that must end
bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import softprompt
from softprompt.config import TrainConfig
from softprompt.rundir import RunExistsError
from softprompt.train import TrainingDiverged, lr_at, total_steps_for, train
from conftest import tiny_llama, tiny_t5
from helpers import tiny_tokenizer, write_sst2





def config(tmp_path: Path, **over) -> TrainConfig:
    # warmup, objective and template style pinned: these tests are about the loop, not the decoder-only recipe
    base = dict(task="sst2", label_words="names", method="prompt", length=3, data_dir=str(write_sst2(tmp_path / "data")),
                max_steps=6, batch_size=4, lr=0.1, warmup_steps=0, objective="lm", style="text-to-text", eval_every=3, eval_batch_size=8, log_every=1,
                output_dir=str(tmp_path / "run"))
    base.update(over)
    return TrainConfig(**base)


# ---------------------------------------------------------------------------------------


def test_schedule_values_exact():
    values = [lr_at(s, total_steps=10, warmup_steps=4, base_lr=0.4) for s in range(11)]
    assert values == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 1 / 3 * 0.4 * 2.5, 0.4 * 4 / 6, 0.2, 0.4 * 2 / 6, 0.4 / 6, 0.0])
    assert [lr_at(s, 4, 0, 1.0) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]


def test_total_steps():
    c = TrainConfig(max_steps=None, epochs=2, batch_size=4, grad_accum=2)
    assert total_steps_for(c, 30) == 8  # ceil(30/4)=8 micro-batches per epoch, x2 epochs, /2 accumulation
    assert total_steps_for(TrainConfig(max_steps=7, epochs=3), 1000) == 7


def test_config_validation_and_round_trip(tmp_path):
    c = TrainConfig(method="ulpt", length=20, rank=2, seeds=[1, 2])
    assert TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    for bad, match in [(dict(lr=0), "lr"), (dict(method="lora"), "method"), (dict(eval_mode="beam"), "eval_mode"),
                       (dict(method="ulpt", bottleneck=4), "bottleneck"), (dict(shots=2, shots_per_class=1), "shots"),
                       (dict(batch_size=0), "batch_size"), (dict(seeds=[1, 1]), "seeds")]:
        with pytest.raises(ValueError, match=match):
            TrainConfig(**bad)
    with pytest.raises(ValueError, match="unknown option.*learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    path = tmp_path / "c.yaml"
    path.write_text("method: dpt\nlength: 10\nbottleneck: 2\nmax-steps: 5\n")
    assert TrainConfig.from_file(path).max_steps == 5
    path.write_text("method: [dpt\n")
    with pytest.raises(ValueError, match=r"c.yaml:\d+: invalid YAML"):
        TrainConfig.from_file(path)


def test_run_outputs_and_only_the_prompt_changes(tmp_path):
    backbone, tok = tiny_llama(), tiny_tokenizer()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    model = softprompt.attach(backbone, "rank_probe", length=3, seed=0)
    prompt_before = {k: v.clone() for k, v in model.prompt.state_dict().items()}
    metrics = train(config(tmp_path, method="rank_probe", length=3, max_steps=4, eval_every=2), model, tok)
    for k, v in backbone.state_dict().items():
        assert torch.equal(v, before[k]), k
    changed = [k for k, v in model.prompt.state_dict().items() if not torch.equal(v, prompt_before[k])]
    assert sorted(changed) == ["sigma", "u", "v"]

    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} >= {"config.json", "log.jsonl", "metrics.json", "prompt", "checkpoint", "plots"}
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    for section in ("zero_shot", "best_validation", "test"):
        assert 0.0 <= metrics[section]["accuracy"] <= 1.0 and metrics[section]["n"] == 6
    assert metrics["trainable_parameters"] == 3 * 3 + 3 + 3 * 32 and metrics["wall_seconds"] > 0
    assert metrics["test_split"] == "validation" and metrics["steps"] == 4
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert all({"lr", "examples_per_second", "positive_sigma"} <= set(r) for r in steps)
    assert steps[0]["lr"] == pytest.approx(0.1) and steps[-1]["lr"] == pytest.approx(0.025)
    assert [r["step"] for r in log if "validation" in r] == [2, 4]
    assert {p.name for p in (out / "plots").iterdir()} == {"loss.png", "validation.png", "positive_sigma.png"}
    assert TrainConfig.from_dict(json.loads((out / "config.json").read_text())).method == "rank_probe"
    # the saved best prompt reloads and reproduces the test accuracy
    best = softprompt.load(backbone, out / "prompt")
    from softprompt.evaluate import evaluate
    from softprompt.tasks import get_task

    task = get_task("sst2", label_words="names")
    examples = task.load("validation", data_dir=str(tmp_path / "data"))
    assert evaluate(best, tok, task, examples)["accuracy"] == metrics["test"]["accuracy"]


@pytest.mark.parametrize("mode", ["rank", "generate"])
def test_encoder_decoder_trains_and_evaluates(tmp_path, mode):
    backbone, tok = tiny_t5(), tiny_tokenizer(eos_suffix=True)
    metrics = train(config(tmp_path, method="residual", length=2, bottleneck=4, max_steps=2, eval_every=2,
                           eval_mode=mode, max_new_tokens=2, zero_shot=(mode == "rank")), backbone, tok)
    assert metrics["eval_mode"] == mode and metrics["test"]["n"] == 6
    assert metrics["trainable_parameters"] == softprompt.make_config("residual", length=2, bottleneck=4).num_parameters(32)


def test_refuses_a_directory_holding_another_run(tmp_path):
    backbone, tok = tiny_llama(), tiny_tokenizer()
    train(config(tmp_path, max_steps=1, eval_every=1), backbone, tok)
    stamp = (tmp_path / "run" / "metrics.json").read_text()
    with pytest.raises(RunExistsError, match="holds another run.*--overwrite.*--resume"):
        train(config(tmp_path, max_steps=2), backbone, tok)
    assert (tmp_path / "run" / "metrics.json").read_text() == stamp  # untouched
    (tmp_path / "run" / "notes.txt").write_text("mine")
    metrics = train(config(tmp_path, max_steps=2, eval_every=1, overwrite=True), backbone, tok)
    assert metrics["steps"] == 2 and (tmp_path / "run" / "notes.txt").read_text() == "mine"


def test_nan_loss_stops_and_keeps_the_last_good_prompt(tmp_path):
    backbone, tok = tiny_llama(), tiny_tokenizer()
    model = softprompt.attach(backbone, "prompt", length=3, seed=0)
    calls = {"n": 0}
    snapshots = []

    def poison(module, args, output):
        # forward calls: zero-shot uses NoPrompt (no call here); steps 1 and 2 are fine, step 3 is NaN
        if module.training:
            calls["n"] += 1
            snapshots.append(module.embedding.detach().clone())
            if calls["n"] == 3:
                return output * float("nan")
        return output

    model.prompt.register_forward_hook(poison)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 3.*prompt"):
        train(config(tmp_path, max_steps=10, eval_every=100), model, tok)
    out = tmp_path / "run"
    saved = load_file(str(out / "prompt" / "prompt.safetensors"))["embedding"]
    assert torch.equal(saved, snapshots[2])  # the parameters after step 2, before the NaN
    assert not torch.isnan(saved).any()
    assert not (out / "metrics.json").exists()
    assert "error" in (out / "log.jsonl").read_text().splitlines()[-1]


def test_seeds_summary(tmp_path):
    backbone, tok = tiny_llama(), tiny_tokenizer()
    summary = train(config(tmp_path, max_steps=2, eval_every=2, seeds=[1, 2], zero_shot=False), backbone, tok)
    out = tmp_path / "run"
    runs = [json.loads((out / f"seed-{s}" / "metrics.json").read_text()) for s in (1, 2)]
    values = [r["test"]["accuracy"] for r in runs]
    assert summary["test"]["accuracy"]["values"] == values
    assert summary["test"]["accuracy"]["mean"] == pytest.approx(sum(values) / 2)
    assert summary["test"]["accuracy"]["std"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    assert json.loads((out / "summary.json").read_text())["seeds"] == [1, 2]
    a = load_file(str(out / "seed-1" / "prompt" / "prompt.safetensors"))["embedding"]
    b = load_file(str(out / "seed-2" / "prompt" / "prompt.safetensors"))["embedding"]
    assert not torch.equal(a, b)


# ---------------------------------------------------------------------------------------
# SIGKILL + resume, in real subprocesses

SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from softprompt.config import TrainConfig
    from softprompt.rundir import RunDir
    from softprompt.train import train

    config = TrainConfig.from_file(sys.argv[1])
    if len(sys.argv) > 2:  # resume
        config = TrainConfig.from_dict({{**config.to_dict(), "resume": True}})
        delay = 0.0
    else:
        delay = float({delay!r})
    model = AutoModelForCausalLM.from_pretrained({model!r})
    tok = AutoTokenizer.from_pretrained({model!r})
    save = RunDir.save_checkpoint

    def slow_save(*args, **kwargs):  # slow the run down after each checkpoint so the kill lands mid-run
        save(*args, **kwargs)
        time.sleep(delay)

    RunDir.save_checkpoint = slow_save
    train(config, model, tok)
    """
)


def run_script(tmp_path, cfg_file, resume=False, delay=0.0, wait=True):
    script = tmp_path / "run_train.py"
    script.write_text(SCRIPT.format(tests=str(Path(__file__).parent), model=str(tmp_path / "tiny"), delay=delay))
    cmd = [sys.executable, str(script), str(cfg_file)] + (["resume"] if resume else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    if wait:
        result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return result
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    tiny_llama().save_pretrained(tmp_path / "tiny")
    tiny_tokenizer(bos=True).save_pretrained(tmp_path / "tiny")
    data = str(write_sst2(tmp_path / "data", n_train=40))
    common = dict(task="sst2", label_words="names", method="ulpt", length=4, rank=2, data_dir=data, max_steps=12,
                  batch_size=3, grad_accum=2, lr=0.2, warmup_steps=2, eval_every=4, checkpoint_every=2,
                  eval_batch_size=8, zero_shot=False)
    files = {}
    for name in ("straight", "killed"):
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(json.dumps({**common, "output_dir": str(tmp_path / name)}))

    run_script(tmp_path, files["straight"])

    proc = run_script(tmp_path, files["killed"], delay=1.0, wait=False)
    state = tmp_path / "killed" / "checkpoint" / "state.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and json.loads(state.read_text())["step"] >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = json.loads(state.read_text())
    assert 4 <= killed_at["step"] < 12 and killed_at["index"] > 0  # mid-run, mid-epoch
    assert not (tmp_path / "killed" / "metrics.json").exists()

    run_script(tmp_path, files["killed"], resume=True)
    for part in ("prompt", "checkpoint"):
        a = load_file(str(tmp_path / "straight" / part / "prompt.safetensors"))
        b = load_file(str(tmp_path / "killed" / part / "prompt.safetensors"))
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (part, k)
    ma = json.loads((tmp_path / "straight" / "metrics.json").read_text())
    mb = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert (ma["best_step"], ma["best_validation"], ma["test"]) == (mb["best_step"], mb["best_validation"], mb["test"])
    la = [json.loads(x) for x in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert [(r["step"], r["loss"]) for r in la if "loss" in r] == [(r["step"], r["loss"]) for r in lb if "loss" in r]


def test_runs_with_different_precision_in_one_process(tmp_path):
    """accelerate keeps one process-wide state; a second ``train()`` asking for another precision
    (a notebook, a benchmark worker, a sweep worker) used to fail with 'AcceleratorState has
    already been initialized'. Each run gets its own precision, and the second run in fp32
    computes exactly what a first run in fp32 does."""
    tok = tiny_tokenizer()
    first = train(config(tmp_path, max_steps=2, eval_every=2, output_dir=str(tmp_path / "a")), tiny_llama(), tok)
    train(config(tmp_path, max_steps=2, eval_every=2, mixed_precision="bf16", output_dir=str(tmp_path / "b")), tiny_llama(), tok)
    third = train(config(tmp_path, max_steps=2, eval_every=2, output_dir=str(tmp_path / "c")), tiny_llama(), tok)
    assert json.loads((tmp_path / "b" / "config.json").read_text())["mixed_precision"] == "bf16"
    assert first["test"] == third["test"] and first["best_validation"] == third["best_validation"]
    a = load_file(str(tmp_path / "a" / "prompt" / "prompt.safetensors"))
    c = load_file(str(tmp_path / "c" / "prompt" / "prompt.safetensors"))
    assert a.keys() == c.keys() and all(torch.equal(a[k], c[k]) for k in a)
