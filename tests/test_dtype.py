"""Half-precision and quantized backbones: a bf16 backbone trains a float32 prompt (float32
optimizer state, float32 saved prompt) to the float32 run's loss within bf16's rounding; the
prompt is computed in float32 on every path, under autocast too; config.json records the dtype
so ``--resume`` and ``eval`` rebuild the same backbone; bad options are one line naming the
option with nothing written."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

import softprompt
from softprompt.backbones import backbone_dtype, load_backbone
from softprompt.cli import main
from softprompt.config import TrainConfig
from softprompt.settings import resolved
from softprompt.train import train
from conftest import batch_for, tiny_llama, tiny_t5
from helpers import tiny_tokenizer, write_sst2


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("dtype")
    tiny_llama().save_pretrained(root / "llama")
    tiny_tokenizer(bos=True).save_pretrained(root / "llama")
    tiny_t5().save_pretrained(root / "t5")
    tiny_tokenizer(eos_suffix=True).save_pretrained(root / "t5")
    write_sst2(root / "data")
    return root


def run_config(root, out, **over) -> TrainConfig:
    base = dict(model=str(root / "llama"), task="sst2", label_words="names", data_dir=str(root / "data"), method="ulpt",
                length=4, rank=2, max_steps=10, batch_size=4, lr=0.1, warmup_steps=0, eval_every=10, checkpoint_every=10,
                log_every=1, zero_shot=False, output_dir=str(out))
    return TrainConfig(**{**base, **over})


def losses(out) -> list[float]:
    return [r["loss"] for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()) if "loss" in r]


def test_bf16_backbone_trains_a_float32_prompt(saved, tmp_path):
    metrics = {}
    for dtype in ("float32", "bfloat16"):
        metrics[dtype] = train(run_config(saved, tmp_path / dtype, dtype=dtype))
    assert json.loads((tmp_path / "bfloat16" / "config.json").read_text())["dtype"] == "bfloat16"
    # the saved prompt and the checkpoint's prompt and optimizer moments are float32
    for file in ("prompt/prompt.safetensors", "checkpoint/prompt.safetensors", "checkpoint/optimizer.safetensors"):
        tensors = load_file(str(tmp_path / "bfloat16" / file))
        floats = {k: t.dtype for k, t in tensors.items() if t.is_floating_point()}
        assert floats and set(floats.values()) == {torch.float32}, (file, floats)
    # ten steps: the same losses within bf16's rounding of the backbone (8 bits of mantissa)
    want, got = losses(tmp_path / "float32"), losses(tmp_path / "bfloat16")
    assert len(want) == len(got) == 10 and got != want
    assert got == pytest.approx(want, rel=2e-2)
    assert metrics["bfloat16"]["steps"] == 10


def test_bf16_parameters_and_the_cast_at_the_join(saved):
    """The backbone's weights are bf16, the prompt's parameters, their gradient and AdamW's
    moments float32; the join reads the float32 prompt cast once to bf16."""
    backbone, _ = load_backbone(saved / "llama", "bfloat16")
    assert {p.dtype for p in backbone.parameters()} == {torch.bfloat16}
    model = softprompt.attach(backbone, "ulpt", length=4, rank=2, seed=0).train()
    assert {p.dtype for p in model.trainable_parameters()} == {torch.float32}
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=0.1)
    ids, mask, labels = batch_for(backbone, padding="left")
    prompt = model.prompt_embeddings().detach()
    seen = []
    hook = backbone.model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["inputs_embeds"]), with_kwargs=True)
    loss = model(input_ids=ids, attention_mask=mask, labels=labels, return_logits=False).loss
    hook.remove()
    loss.backward()
    optimizer.step()
    assert {p.grad.dtype for p in model.trainable_parameters()} == {torch.float32}
    moments = [t for state in optimizer.state.values() for t in state.values() if t.is_floating_point() and t.dim()]
    assert moments and {t.dtype for t in moments} == {torch.float32}
    # the packed sequence (the last call; the first use also probes the shared path) starts with
    # the prompt: exactly the float32 prompt rounded to bf16
    packed = seen[-1]
    assert prompt.dtype == torch.float32 and packed.dtype == torch.bfloat16
    assert packed.shape[:2] == (1, prompt.shape[0] + ids.numel())
    assert torch.equal(packed[0, : prompt.shape[0]], prompt.to(torch.bfloat16))


def test_the_prompt_is_float32_under_autocast_on_every_path():
    """Under bf16 autocast the reparameterization runs in float32 in the forward pass as in
    ``prompt_embeddings()``: the gradient a forward step gives equals the one computed from
    ``prompt_embeddings()`` by hand."""
    backbone = tiny_llama()
    model = softprompt.attach(backbone, "dpt", length=4, bottleneck=2, seed=0)
    seen = []
    hook = model.prompt.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    ids, mask, labels = batch_for(backbone)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(input_ids=ids, attention_mask=mask, labels=labels, return_logits=False).loss.backward()
        with model.frozen_prompt():
            model.score(ids, mask, labels)
        model.prompt_embeddings()
    hook.remove()
    assert seen == [torch.float32] * 3


def test_auto_is_float32_on_a_cpu_and_recorded_concrete(saved):
    if torch.cuda.is_available():
        pytest.skip("auto is the checkpoint's own dtype on a GPU")
    assert backbone_dtype(saved / "llama", "auto") == "float32"
    config = resolved(run_config(saved, saved / "unused", dtype="auto"), "decoder-only", classification=True)
    assert config.dtype == "float32"
    assert config.sources["dtype"] == "python argument (auto: float32, on a CPU)"
    assert {p.dtype for p in load_backbone(saved / "llama", "auto")[0].parameters()} == {torch.float32}


def test_auto_is_the_checkpoints_own_dtype_on_a_gpu(monkeypatch):
    from transformers import LlamaConfig

    from softprompt.backbones.placement import torch_dtype

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert torch_dtype("auto", LlamaConfig(dtype="bfloat16")) == torch.bfloat16
    assert torch_dtype("auto", LlamaConfig(dtype="float16")) == torch.float16
    assert torch_dtype("auto", LlamaConfig()) == torch.float32  # the checkpoint names none
    assert torch_dtype("auto", None) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert torch_dtype("auto", LlamaConfig(dtype="bfloat16")) == torch.float32


def cli_args(root, out, *extra):
    return ["train", "--model", str(root / "llama"), "--task", "sst2", "--label-words", "names", "--data-dir",
            str(root / "data"), "--method", "prompt", "--length", "3", "--batch-size", "4", "--max-steps", "2",
            "--eval-every", "1", "--lr", "0.1", "--output-dir", str(out), *extra]


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def snapshot(folder) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def test_bad_options_are_one_line_with_nothing_written(saved, tmp_path, capsys):
    out = tmp_path / "run"
    bad = [
        (cli_args(saved, out, "--dtype", "float8"), "dtype must be one of auto, float32, bfloat16, float16; got 'float8'"),
        (cli_args(saved, out, "--quantize", "2bit"), "quantize must be one of 4bit, 8bit"),
    ]
    if not torch.cuda.is_available():
        bad.append((cli_args(saved, out, "--quantize", "4bit"), "--quantize 4bit: bitsandbytes needs a CUDA GPU and this machine has none"))
    t5 = cli_args(saved, out, "--quantize", "8bit")
    t5[t5.index("--model") + 1] = str(saved / "t5")
    bad.append((t5, "--quantize 8bit: softprompt quantizes decoder-only backbones only"))
    for argv, message in bad:
        assert main(argv) == 2
        assert message in one_line_error(capsys)
        assert not out.exists()
    prompt = tmp_path / "p"
    softprompt.attach(tiny_llama(), "prompt", length=2).save(prompt)
    for command in (["eval", str(prompt), "--task", "sst2"], ["predict", str(prompt), "--input", str(prompt / "x.jsonl"),
                    "--output", str(tmp_path / "o.jsonl")], ["export", str(prompt), str(tmp_path / "e")]):
        assert main([*command, "--dtype", "float8"]) == 2
        assert "dtype must be one of" in one_line_error(capsys)
    assert main(["export", str(prompt), str(tmp_path / "e"), "--dtype", "bfloat16"]) == 2
    assert "--dtype is only used with --from peft" in one_line_error(capsys)
    assert not (tmp_path / "e").exists() and not (tmp_path / "o.jsonl").exists()


def test_resume_and_eval_rebuild_the_runs_dtype(saved, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(cli_args(saved, out, "--dtype", "bfloat16", "--max-steps", "1")) == 0
    capsys.readouterr()
    os.remove(out / "metrics.json")  # as if killed after its checkpoint: resumable
    before = snapshot(out)
    assert main(["train", "--resume", str(out), "--dtype", "float32"]) == 2
    assert "cannot resume with dtype='float32'; the run used 'bfloat16'" in one_line_error(capsys)
    assert snapshot(out) == before
    assert main(["train", "--resume", str(out)]) == 0
    capsys.readouterr()
    metrics = json.loads((out / "metrics.json").read_text())

    # eval rebuilds the run's bf16 backbone: the run's own test accuracy; a float32 backbone may differ only by rounding
    assert main(["eval", str(out / "prompt")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["accuracy"] == metrics["test"]["accuracy"]


def _why_no_bitsandbytes() -> str | None:
    if not torch.cuda.is_available():
        return "bitsandbytes needs a CUDA GPU (the message is checked in test_bad_options_are_one_line_with_nothing_written)"
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return "bitsandbytes is not installed (pip install 'softprompt[quantize]')"
    return None


@pytest.mark.skipif(_why_no_bitsandbytes() is not None, reason=str(_why_no_bitsandbytes()))
@pytest.mark.parametrize("bits", ["4bit", "8bit"])
def test_quantized_backbone_trains_a_float32_prompt(saved, bits):
    backbone, _ = load_backbone(saved / "llama", quantize=bits)
    model = softprompt.attach(backbone, "ulpt", length=4, rank=2, seed=0).train()
    assert model.device.type == "cuda" and {p.dtype for p in model.trainable_parameters()} == {torch.float32}
    ids, mask, labels = (t.to(model.device) for t in batch_for(backbone, padding="left"))
    loss = model(input_ids=ids, attention_mask=mask, labels=labels, return_logits=False).loss
    loss.backward()
    assert torch.isfinite(loss) and all(bool(torch.isfinite(p.grad).all()) for p in model.trainable_parameters())
