"""A backbone larger than one device: dispatched by accelerate over the CPU and disk offload
(the devices this machine has), it computes what the in-memory model computes, through the
packed training step, the prompt cache and ``train``; a device map naming a device that is not
here is one line naming the option, with nothing written."""

from __future__ import annotations

import json

import pytest
import torch

import softprompt
from softprompt.backbones import PlacementError, input_device, load_backbone
from softprompt.cli import main
from conftest import batch_for, tiny_llama, tiny_t5
from helpers import tiny_tokenizer, write_sst2

# Layer 1 and the output head on disk, the rest in memory: offloaded weights sit on the meta
# device between calls and are read back by accelerate's hooks around each module.
LLAMA_MAP = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.layers.0": "cpu",
             "model.layers.1": "disk", "model.norm": "cpu", "lm_head": "disk"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("dispatch")
    tiny_llama().save_pretrained(root / "llama")
    tiny_tokenizer(bos=True).save_pretrained(root / "llama")
    (root / "map.json").write_text(json.dumps(LLAMA_MAP))
    write_sst2(root / "data")
    return root


def loss_and_gradient(backbone, method: str = "ulpt", **options):
    """The packed training step's loss and the gradient of every prompt parameter."""
    ids, mask, labels = batch_for(backbone, padding="left")
    model = softprompt.attach(backbone, method, seed=0, **options).train()
    torch.manual_seed(0)  # T5's dropout draws the same masks in both models
    loss = model(input_ids=ids, attention_mask=mask, labels=labels, return_logits=False).loss
    loss.backward()
    return model, loss.detach(), [p.grad.clone() for p in model.trainable_parameters()]


def assert_same_step(reference, dispatched, **options):
    _, loss, grads = loss_and_gradient(reference, **options)
    model, got, got_grads = loss_and_gradient(dispatched, **options)
    assert torch.allclose(got, loss, rtol=0, atol=1e-5), (float(got), float(loss))
    for g, r in zip(got_grads, grads):
        assert torch.allclose(g, r, rtol=0, atol=1e-5), float((g - r).abs().max())
    return model


def test_device_map_file_offloads_to_disk_and_gives_the_same_step(saved):
    reference, _ = load_backbone(saved / "llama")
    dispatched, _ = load_backbone(saved / "llama", device_map=str(saved / "map.json"))
    assert dispatched.hf_device_map == LLAMA_MAP
    assert dispatched.model.layers[1].mlp.up_proj.weight.device.type == "meta"  # on disk between calls
    model = assert_same_step(reference, dispatched, length=4, rank=2)
    assert model.device == torch.device("cpu") == input_device(dispatched)
    assert {p.device.type for p in model.trainable_parameters()} == {"cpu"}

    # inference: the prompt cache computes the keys once and reuses them, as in memory
    ids, mask, labels = batch_for(reference, padding="left")
    plain = softprompt.attach(reference, "ulpt", seed=0, length=4, rank=2).eval()
    model.eval()
    with torch.no_grad():
        want = plain.score(ids, mask, labels)
        first = model.score(ids, mask, labels)
        runs = model.join.prefix_runs
        second = model.score(ids, mask, labels)
    assert model.join.prefix_runs == runs  # reused, not recomputed
    assert torch.allclose(first, want, rtol=0, atol=1e-5) and torch.equal(first, second)


def test_accelerate_dispatch_with_disk_offload(tmp_path):
    """A model dispatched with accelerate's own tools, its memory capped so that layers spill to
    disk: same loss and prompt gradient as in memory (the encoder-decoder join too)."""
    from accelerate import dispatch_model, infer_auto_device_map

    for build, options in ((tiny_llama, dict(length=4, rank=2)), (tiny_t5, dict(length=4, rank=2))):
        reference = build()
        dispatched = build()
        size = sum(p.numel() * p.element_size() for p in dispatched.parameters())
        device_map = infer_auto_device_map(dispatched, max_memory={"cpu": size // 2, "disk": 10 * size},
                                           no_split_module_classes=dispatched._no_split_modules)
        assert "disk" in device_map.values() and "cpu" in device_map.values()
        dispatch_model(dispatched, device_map, main_device="cpu", offload_dir=str(tmp_path / build.__name__))
        assert_same_step(reference, dispatched, **options)


def test_train_with_a_device_map(saved, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--model", str(saved / "llama"), "--task", "sst2", "--label-words", "names", "--data-dir",
            str(saved / "data"), "--method", "prompt", "--length", "3", "--batch-size", "4", "--max-steps", "2",
            "--eval-every", "2", "--lr", "0.1", "--zero-shot", "--output-dir", str(out)]
    assert main([*args, "--device-map", str(saved / "map.json")]) == 0
    assert main([*args[:-1], str(tmp_path / "memory")]) == 0
    got = json.loads((out / "metrics.json").read_text())
    want = json.loads((tmp_path / "memory" / "metrics.json").read_text())
    assert got["test"] == want["test"] and got["zero_shot"] == want["zero_shot"]
    losses = [[r["loss"] for r in map(json.loads, (d / "log.jsonl").read_text().splitlines()) if "loss" in r]
              for d in (out, tmp_path / "memory")]
    assert losses[0] == pytest.approx(losses[1], abs=1e-5)
    assert json.loads((out / "config.json").read_text())["device_map"] == str(saved / "map.json")


def test_a_device_that_is_not_here_is_one_line_nothing_written(saved, tmp_path, capsys):
    far = tmp_path / "far.json"
    far.write_text(json.dumps({**LLAMA_MAP, "model.layers.1": "cuda:3"}))
    out = tmp_path / "run"
    args = ["train", "--model", str(saved / "llama"), "--task", "sst2", "--label-words", "names", "--data-dir",
            str(saved / "data"), "--method", "prompt", "--length", "3", "--max-steps", "1", "--output-dir", str(out)]
    assert main([*args, "--device-map", str(far)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--device-map" in err and "'cuda:3'" in err, err
    assert "which this machine does not have (it has cpu, disk" in err
    assert not out.exists()

    for bad, message in (("0=1GiB", "--max-memory names 0"), ("cpu=lots", "max_memory: 'cpu=lots' is not DEVICE=SIZE")):
        assert main([*args, "--device-map", "auto", "--max-memory", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert not out.exists()
    assert main([*args, "--device-map", "everywhere"]) == 2
    assert "device_map must be one of auto, balanced" in capsys.readouterr().err
    with pytest.raises(PlacementError, match="'cuda:3', which this machine does not have"):
        load_backbone(saved / "llama", device_map=str(far))
