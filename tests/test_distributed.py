"""Several processes on one run (softprompt.distributed): real `torchrun` launches of two CPU
processes (gloo) in subprocesses against one process on the same global batches, a kill -9 and
resume, FSDP, and the gather that puts a sharded evaluation back together."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from softprompt import distributed
from softprompt.cli import main
from conftest import tiny_llama
from helpers import tiny_tokenizer, write_sst2

GLOO = dist.is_available() and dist.is_gloo_available()
needs_gloo = pytest.mark.skipif(not GLOO, reason="torch.distributed with the gloo backend is not available in this torch build")
LAUNCH_TIMEOUT = 240  # seconds: a launch that hangs (a missed collective) fails instead of blocking the suite
STEPS = 20


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """A saved tiny Llama and SST-2 with 7 dev rows: 4 evaluation batches of 2, 2, 2 and 1 rows,
    so under two processes rank 0 scores 4 rows and rank 1 scores 3."""
    root = tmp_path_factory.mktemp("dist")
    tiny_llama().save_pretrained(root / "tiny")
    tiny_tokenizer(bos=True).save_pretrained(root / "tiny")
    write_sst2(root / "data")
    with open(root / "data" / "SST-2" / "dev.tsv", "a") as dev:
        dev.write("the plot is dull\t0\n")
    return root


def train_args(assets: Path, out: Path, batch_size: int, *extra: str) -> list[str]:
    """One global batch is 4 rows: ``batch_size`` 4 in one process, 2 in each of two."""
    return ["train", "--model", str(assets / "tiny"), "--task", "sst2", "--label-words", "names", "--data-dir", str(assets / "data"),
            "--method", "prompt", "--length", "3", "--objective", "class", "--lr", "0.1", "--max-steps", str(STEPS),
            "--batch-size", str(batch_size), "--eval-every", "10", "--checkpoint-every", "2", "--log-every", "5",
            "--eval-batch-size", "2", "--output-dir", str(out), *extra]


def torchrun(args: list[str], processes: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m", "softprompt", *args]


def launch(args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(torchrun(args), capture_output=True, text=True, timeout=LAUNCH_TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def prompt(out: Path, folder: str = "checkpoint") -> torch.Tensor:
    return load_file(str(out / folder / "prompt.safetensors"))["embedding"]


@pytest.fixture(scope="module")
def one(assets, tmp_path_factory):
    """The one-process run, in this process."""
    out = tmp_path_factory.mktemp("one") / "run"
    assert main(train_args(assets, out, 4)) == 0
    return out


@pytest.fixture(scope="module")
def two(assets, tmp_path_factory):
    """The same run on two processes: ``(output, stdout)``."""
    out = tmp_path_factory.mktemp("two") / "run"
    return out, launch(train_args(assets, out, 2)).stdout


# ---------------------------------------------------------------------------------------
# The gather of a sharded evaluation (no processes needed)


def test_merge_shards_restores_row_order_from_uneven_shards():
    # 7 rows in batches [3, 0], [5, 1], [6, 2], [4] (length order): rank 0 took batches 0 and 2, rank 1 took 1 and 3
    parts = [[(3, "d"), (0, "a"), (6, "g"), (2, "c")], [(5, "f"), (1, "b"), (4, "e")]]
    assert distributed.merge_shards(7, parts) == ["a", "b", "c", "d", "e", "f", "g"]
    assert distributed.merge_shards(3, [[], [(2, 0), (0, 1), (1, None)]]) == [1, None, 0]  # a rank with no batch; None is a value
    with pytest.raises(RuntimeError, match="row 2 was scored by two processes"):
        distributed.merge_shards(3, [[(0, 1), (2, 1)], [(1, 0), (2, 0)]])
    with pytest.raises(RuntimeError, match="row 1 was scored by no process"):
        distributed.merge_shards(3, [[(0, 1)], [(2, 0)]])


def test_one_process_scores_every_batch_and_gathers_nothing():
    backbone = tiny_llama()
    batches = [[3, 0], [5, 1], [6, 2], [4]]
    assert distributed.world() == 1 and distributed.is_main()
    assert distributed.my_batches(batches, backbone) is batches
    values = list("abcdefg")
    assert distributed.gather_rows(values, batches, backbone) is values


def test_fsdp_without_several_processes_is_one_line(assets, tmp_path, capsys):
    assert main(train_args(assets, tmp_path / "run", 4, "--fsdp")) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("softprompt train: error: fsdp shards the backbone across processes: launch with torchrun --nproc_per_node N "
                   "or accelerate launch --num_processes N (docs/distributed.md)")
    assert not (tmp_path / "run" / "config.json").exists()


# ---------------------------------------------------------------------------------------
# Two processes against one


@needs_gloo
def test_two_processes_train_the_one_process_prompt_and_score_every_row_once(one, two):
    out, stdout = two
    assert (prompt(out) - prompt(one)).abs().max() <= 1e-5
    assert (prompt(out, "prompt") - prompt(one, "prompt")).abs().max() <= 1e-5
    a, b = json.loads((one / "metrics.json").read_text()), json.loads((out / "metrics.json").read_text())
    for section in ("zero_shot", "best_validation", "test"):
        assert b[section] == a[section], section  # exactly: each batch is scored whole by one process
    assert b["test"]["n"] == 7 and b["best_validation"]["n"] == 7
    assert (b["steps"], b["best_step"]) == (a["steps"], a["best_step"]) == (STEPS, a["best_step"])
    # one log, written once: the same records as the one-process run, losses averaged over both processes
    mine, theirs = records(out), records(one)
    assert [sorted(r) for r in mine] == [sorted(r) for r in theirs]
    assert [r["step"] for r in mine] == [0, 5, 10, 10, 15, 20, 20, 20]
    for r, s in zip(mine, theirs):
        if "loss" in r:
            assert abs(r["loss"] - s["loss"]) <= 1e-5
        for key in ("zero_shot", "validation", "test"):
            assert r.get(key) == s.get(key)
    # one checkpoint, saying how many processes trained it; one summary printed
    assert not list(out.glob(".checkpoint.old-*")) and not list(out.glob(".*tmp*"))
    assert json.loads((out / "checkpoint" / "state.json").read_text())["processes"] == 2
    lines = stdout.strip().splitlines()
    assert len(lines) == 5, stdout
    assert sum(line.startswith("test:") for line in lines) == 1 and lines[-1] == f"wrote {out}"


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (torchrun starts its workers in their own sessions)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie, not reaped yet
    except OSError:
        return True


@needs_gloo
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finding torchrun's workers reads /proc (Linux)")
def test_kill_9_then_resume_on_two_processes_is_bit_identical_and_one_process_refuses(assets, two, tmp_path, capsys):
    uninterrupted, _ = two
    out = tmp_path / "run"
    with open(tmp_path / "stdout", "w") as sink:
        launcher = subprocess.Popen(torchrun(train_args(assets, out, 2)), stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + LAUNCH_TIMEOUT
        while not (out / "checkpoint" / "state.json").exists() and launcher.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        workers = _children(launcher.pid)
        for pid in workers + [launcher.pid]:  # kill -9: no handler runs, no file is closed cleanly
            os.kill(pid, signal.SIGKILL)
    finally:
        launcher.kill()
        launcher.wait(timeout=30)
    while not all(_gone(pid) for pid in workers):  # dead before anything reads the run
        time.sleep(0.01)
    assert len(workers) == 2
    assert not (out / "metrics.json").exists(), "the run finished before it was killed"
    killed_at = json.loads((out / "checkpoint" / "state.json").read_text())["step"]
    assert killed_at < STEPS

    # one process refuses a two-process checkpoint, one line, the run untouched
    before = {p.name: p.read_bytes() for p in (out / "checkpoint").iterdir()}
    assert main(["train", "--resume", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"softprompt train: error: {out}: the checkpoint was trained by 2 process(es), this launch has 1; "
                   "resume it with 2 (a global batch is batch_size × processes, so another count is another run)")
    assert {p.name: p.read_bytes() for p in (out / "checkpoint").iterdir()} == before

    launch(["train", "--resume", str(out)])
    assert torch.equal(prompt(out), prompt(uninterrupted))
    assert torch.equal(prompt(out, "prompt"), prompt(uninterrupted, "prompt"))
    a, b = (json.loads((d / "metrics.json").read_text()) for d in (uninterrupted, out))
    assert {k: v for k, v in a.items() if k != "wall_seconds"} == {k: v for k, v in b.items() if k != "wall_seconds"}
    assert [{k: v for k, v in r.items() if k != "examples_per_second"} for r in records(out)] == \
           [{k: v for k, v in r.items() if k != "examples_per_second"} for r in records(uninterrupted)]


@needs_gloo
def test_fsdp_on_two_processes_trains_the_unsharded_prompt(assets, one, tmp_path):
    out = tmp_path / "run"
    launch(train_args(assets, out, 2, "--fsdp"))
    assert (prompt(out) - prompt(one)).abs().max() <= 1e-5
    assert set(load_file(str(out / "checkpoint" / "prompt.safetensors"))) == {"embedding"}  # only the prompt
    a, b = json.loads((one / "metrics.json").read_text()), json.loads((out / "metrics.json").read_text())
    assert b["test"] == a["test"] and b["best_validation"] == a["best_validation"]
    assert json.loads((out / "config.json").read_text())["fsdp"] is True
