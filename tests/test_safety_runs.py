"""A run directory is one process's at a time and a resumed run never takes another run's work
(issue 14): two real processes on one directory, SIGKILL at every write and rename of a
checkpoint, leftovers of interrupted writes, broken files, and permissions that follow the umask."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from softprompt.cli import main
from softprompt.config import TrainConfig
from softprompt.rundir import CheckpointError, RunDir, RunLockedError, run_identity
from softprompt.train import train
from conftest import tiny_llama
from helpers import tiny_tokenizer, write_sst2

TESTS = str(Path(__file__).parent)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def config(tmp_path: Path, name: str = "run", **over) -> TrainConfig:
    base = dict(task="sst2", label_words="names", method="prompt", length=3, data_dir=str(write_sst2(tmp_path / "data")),
                max_steps=4, batch_size=4, lr=0.1, eval_every=2, checkpoint_every=2, eval_batch_size=8, log_every=1,
                zero_shot=False, output_dir=str(tmp_path / name))
    base.update(over)
    return TrainConfig(**base)


def tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def records(run: Path) -> list[dict]:
    """log.jsonl without the measured speed (a replayed step runs at another speed)."""
    lines = (run / "log.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "examples_per_second"} for line in lines]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".old-" in p.name or ".tmp-" in p.name or p.name == ".lock")


# ---------------------------------------------------------------------------------------
# One process per run directory


def test_a_second_open_is_refused_naming_the_holder_and_release_frees_it(tmp_path):
    c = config(tmp_path, overwrite=True)
    first = RunDir.open(c)
    with pytest.raises(RunLockedError, match=rf"in use by another softprompt run \(pid {os.getpid()}\)"):
        RunDir.open(c)
    with pytest.raises(RunLockedError):
        RunDir.open(c.replace(overwrite=False, resume=False))
    first.release()
    RunDir.open(c).release()  # free again
    assert not (tmp_path / "run").exists()  # created for the lock, nothing written: removed


SLOW = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from softprompt.cli import main
    from softprompt.rundir import RunDir

    save = RunDir.save_checkpoint

    def held(self, *args, **kwargs):  # after its first checkpoint the run waits (holding the directory)
        save(self, *args, **kwargs)
        go = Path(sys.argv[1])
        deadline = time.time() + 120
        while not go.exists() and time.time() < deadline:
            time.sleep(0.02)

    RunDir.save_checkpoint = held
    sys.exit(main(sys.argv[2:]))
    """
)


def test_two_processes_on_one_directory_one_runs_the_other_is_refused(tmp_path, capsys):
    tiny_llama().save_pretrained(tmp_path / "tiny")
    tiny_tokenizer(bos=True).save_pretrained(tmp_path / "tiny")
    out = tmp_path / "X"
    args = ["train", "--model", str(tmp_path / "tiny"), "--task", "sst2", "--label-words", "names",
            "--data-dir", str(write_sst2(tmp_path / "data")), "--method", "prompt", "--length", "3", "--batch-size", "4",
            "--max-steps", "4", "--eval-every", "2", "--log-every", "1", "--no-zero-shot", "--output-dir", str(out)]
    script = tmp_path / "slow.py"
    script.write_text(SLOW)
    go = tmp_path / "go"
    a = subprocess.Popen([sys.executable, str(script), str(go), *args, "--lr", "0.3", "--overwrite"], env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "checkpoint" / "state.json").is_file() and a.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert a.poll() is None, a.stderr.read()[-2000:]

        # a second real process: --overwrite into the live run is refused with the holder's pid
        b = subprocess.run([sys.executable, "-c", "import sys; from softprompt.cli import main; sys.exit(main(sys.argv[1:]))",
                            *args, "--lr", "0.05", "--overwrite"], env=ENV, capture_output=True, text=True, timeout=120)
        assert b.returncode == 2, b.stderr[-2000:]
        lines = [line for line in b.stderr.splitlines() if "error" in line]
        assert lines == [f"softprompt train: error: {out} is in use by another softprompt run (pid {a.pid}); "
                         "wait for it to end or choose another output directory"], b.stderr[-2000:]
        # and so is --resume from this process
        assert main(["train", "--resume", str(out)]) == 2
        assert f"(pid {a.pid})" in capsys.readouterr().err
        assert json.loads((out / "config.json").read_text())["lr"] == 0.3  # the live run's, untouched

        # SIGTERM: a clean stop, like Ctrl-C, saying how to continue
        a.send_signal(signal.SIGTERM)
        _, err = a.communicate(timeout=60)
        assert a.returncode == 130, err[-2000:]
        assert err.strip().splitlines()[-1] == f"softprompt train: interrupted; continue with: softprompt train --resume {out}"
    finally:
        go.touch()
        if a.poll() is None:
            a.kill()
    assert not (out / ".lock").exists()
    assert main(["train", "--resume", str(out)]) == 0
    steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and json.loads((out / "metrics.json").read_text())["steps"] == 4


# ---------------------------------------------------------------------------------------
# SIGKILL at every write and rename of a checkpoint, with another run's leftover present

KILLER = textwrap.dedent(
    """
    import json, os, pathlib, shutil, signal, sys, traceback
    sys.path.insert(0, {tests!r})
    import torch
    from pathlib import Path
    import softprompt.io as sio
    import softprompt.rundir as rd
    import softprompt.train as st
    from softprompt.config import TrainConfig
    from softprompt.train import train
    from conftest import tiny_llama
    from helpers import tiny_tokenizer
    from helpers import write_sst2

    root = Path(sys.argv[1])
    base = dict(task="sst2", label_words="names", method="ulpt", length=4, rank=2, data_dir=str(write_sst2(root / "data", 16)),
                max_steps=6, batch_size=4, lr=0.2, warmup_steps=1, eval_every=2, checkpoint_every=2, eval_batch_size=8,
                log_every=1, zero_shot=False)
    tok = tiny_tokenizer(bos=True)
    torch.set_num_threads(1)
    st.plot_run = lambda *args, **kwargs: None  # pictures are not compared; they cost most of a run

    # Each write and rename of the second checkpoint is an event; KILL["at"] = n: SIGKILL at event n.
    KILL = dict(at=None, n=0, active=False, saves=0)

    def event():
        if KILL["active"] and KILL["at"] is not None:
            if KILL["n"] == KILL["at"]:
                os.kill(os.getpid(), signal.SIGKILL)
            KILL["n"] += 1

    def wrap(fn, check):
        def wrapped(*args, **kwargs):
            if check(*args):
                event()
            return fn(*args, **kwargs)
        return wrapped

    rd.save_file = wrap(rd.save_file, lambda *a: True)
    pathlib.Path.write_text = wrap(pathlib.Path.write_text, lambda p, *a: p.name == "state.json")
    os.replace = wrap(os.replace, lambda src, dst, *a: "checkpoint" in f"{{src}} {{dst}}")
    sio._remove = wrap(sio._remove, lambda p: p.name.startswith(".checkpoint."))
    save = rd.RunDir.save_checkpoint

    def counted(self, *args, **kwargs):
        KILL["saves"] += 1
        KILL["active"] = KILL["saves"] == 2
        save(self, *args, **kwargs)
        event()  # just after it
        KILL["active"] = False

    rd.RunDir.save_checkpoint = counted

    def child(name, kill_at=None, **over):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                KILL.update(at=kill_at, n=0, saves=0, active=False)
                train(TrainConfig(**{{**base, "output_dir": str(root / name), **over}}), tiny_llama(), tok)
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            return "killed" if os.WTERMSIG(status) == signal.SIGKILL else "signal"
        return "ok" if os.WEXITSTATUS(status) == 0 else "failed"

    def plant(run):  # an earlier run's leftovers: a checkpoint moved aside (further along) and a temporary
        run.mkdir(parents=True, exist_ok=True)
        shutil.copytree(root / "other" / "checkpoint", run / ".checkpoint.old-99999", dirs_exist_ok=True)
        (run / ".checkpoint.tmp-zz").mkdir(exist_ok=True)
        (run / ".checkpoint.tmp-zz" / "prompt.safetensors").write_bytes(b"junk")

    def read(run, part):
        return {{k: v.tolist() for k, v in __import__("safetensors.torch").torch.load_file(str(run / part / "prompt.safetensors")).items()}}

    def summary(run):
        m = json.loads((run / "metrics.json").read_text())
        log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
        return dict(prompt=read(run, "prompt"), checkpoint=read(run, "checkpoint"), best=[m["best_step"], m["best_validation"], m["test"]],
                    log=[[r["step"], r.get("loss"), r.get("validation"), r.get("test")] for r in log])

    # in this process (it also warms up what the forked runs below then share)
    train(TrainConfig(**{{**base, "output_dir": str(root / "straight")}}), tiny_llama(), tok)
    train(TrainConfig(**{{**base, "output_dir": str(root / "other"), "lr": 0.05}}), tiny_llama(), tok)
    reference = summary(root / "straight")
    results = []
    for k in range(30):
        run = root / "killed"
        shutil.rmtree(run, ignore_errors=True)
        plant(run)
        first = child("killed", kill_at=k)
        if first == "ok":
            break  # past the last event
        state = sorted(p.name for p in run.iterdir())
        plant(run)
        second = child("killed", resume=True)
        try:
            ended = summary(run)
        except (OSError, KeyError, ValueError) as err:  # e.g. no checkpoint/ (a finished run taken over)
            ended = dict(error=str(err))
        left = sorted(p.name for p in run.iterdir() if ".old-" in p.name or ".tmp-" in p.name or p.name == ".lock")
        results.append(dict(kill_at=k, first=first, second=second, files=state, same=second == "ok" and ended == reference,
                            leftovers=left))
    print(json.dumps(results))
    """
)


def test_sigkill_at_every_checkpoint_write_and_rename_then_resume_is_bit_identical(tmp_path):
    script = tmp_path / "killer.py"
    script.write_text(KILLER.format(tests=TESTS))
    result = subprocess.run([sys.executable, str(script), str(tmp_path)], env=ENV, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(result.stdout.strip().splitlines()[-1])
    for r in results:
        assert r["first"] == "killed" and r["same"], r
        assert r["leftovers"] == [], r
    # prompt.safetensors, optimizer.safetensors, state.json, checkpoint -> .old, tmp -> checkpoint,
    # removing .old, and just after
    assert len(results) >= 7, results
    assert any("checkpoint" not in r["files"] for r in results)  # a kill landed between the two renames


# ---------------------------------------------------------------------------------------
# Leftovers, a foreign checkpoint, broken files


def test_overwrite_clears_leftovers_of_interrupted_writes(tmp_path):
    backbone, tok = tiny_llama(), tiny_tokenizer()
    train(config(tmp_path, max_steps=2), backbone, tok)
    run = tmp_path / "run"
    shutil.copytree(run / "checkpoint", run / ".checkpoint.old-4242")
    (run / ".prompt.tmp-abc").mkdir()
    (run / ".log.tmp-77.jsonl").write_text("{}")
    (run / "notes.txt").write_text("mine")
    train(config(tmp_path, max_steps=2, lr=0.05, overwrite=True), backbone, tok)
    assert leftovers(run) == []
    assert (run / "notes.txt").read_text() == "mine"


def test_resume_refuses_another_runs_checkpoint(tmp_path):
    backbone, tok = tiny_llama(), tiny_tokenizer()
    train(config(tmp_path, name="other", lr=0.05), backbone, tok)
    train(config(tmp_path, max_steps=2), backbone, tok)
    run = tmp_path / "run"
    (run / "metrics.json").unlink()
    shutil.rmtree(run / "checkpoint")
    shutil.copytree(tmp_path / "other" / "checkpoint", run / "checkpoint")
    with pytest.raises(CheckpointError, match=r"checkpoint/state.json: the checkpoint belongs to another run"):
        train(config(tmp_path, max_steps=2, resume=True), backbone, tok)
    # another run's checkpoint moved aside is never taken: with no checkpoint of its own the run starts over
    shutil.move(run / "checkpoint", run / ".checkpoint.old-99999")
    metrics = train(config(tmp_path, max_steps=2, resume=True), backbone, tok)
    assert metrics["steps"] == 2 and leftovers(run) == []


def _straight_with_step2_copy(tmp_path, backbone, tok):
    """A finished run, plus a copy of its step-2 checkpoint; metrics.json removed (killed at the end)."""
    save = RunDir.save_checkpoint

    def keep(self, model, optimizer, state):
        save(self, model, optimizer, state)
        if state["step"] == 2:
            shutil.copytree(self.path / "checkpoint", tmp_path / "step2")

    RunDir.save_checkpoint = keep
    try:
        train(config(tmp_path), backbone, tok)
    finally:
        RunDir.save_checkpoint = save
    run = tmp_path / "run"
    (run / "metrics.json").unlink()
    return run


@pytest.mark.parametrize("broken", ["prompt.safetensors", "optimizer.safetensors", "state.json"])
def test_truncated_checkpoint_file_falls_back_to_an_older_complete_one_or_names_it(tmp_path, capsys, broken):
    backbone, tok = tiny_llama(), tiny_tokenizer()
    run = _straight_with_step2_copy(tmp_path, backbone, tok)
    final = tensors(run / "prompt" / "prompt.safetensors")
    log = records(run)
    file = run / "checkpoint" / broken
    file.write_bytes(file.read_bytes()[: len(file.read_bytes()) // 2])

    # no other checkpoint: one line naming the broken file
    assert main(["train", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{file}:" in err and "no complete checkpoint" in err, err

    # an older complete checkpoint of the same run (left by a kill mid-swap): resumed from it
    shutil.move(tmp_path / "step2", run / ".checkpoint.old-31337")
    metrics = train(config(tmp_path, resume=True), backbone, tok)
    assert metrics["steps"] == 4
    assert torch.equal(tensors(run / "prompt" / "prompt.safetensors")["embedding"], final["embedding"])
    assert records(run) == log  # the same records, the test record once
    assert leftovers(run) == []


def test_resume_may_add_gradient_checkpointing_a_tracker_and_another_checkpoint_interval(tmp_path):
    """What says where and how often, not what the run computes, may change on resume: the run
    ends where the straight one did (to float rounding: checkpointing runs the naive join)."""
    backbone, tok = tiny_llama(), tiny_tokenizer()
    run = _straight_with_step2_copy(tmp_path, backbone, tok)
    final = tensors(run / "prompt" / "prompt.safetensors")["embedding"]
    straight = {r["step"]: r["loss"] for r in records(run) if "loss" in r}
    shutil.rmtree(run / "checkpoint")
    shutil.move(tmp_path / "step2", run / "checkpoint")  # killed after step 2
    RunDir.open(config(tmp_path, resume=True, report_to="tensorboard")).release()  # not refused
    with pytest.raises(ValueError, match=r"config.json: cannot resume with log_every=2; the run used 1"):
        RunDir.open(config(tmp_path, resume=True, log_every=2))

    metrics = train(config(tmp_path, resume=True, gradient_checkpointing=True, checkpoint_every=1), backbone, tok)
    assert metrics["steps"] == 4
    torch.testing.assert_close(tensors(run / "prompt" / "prompt.safetensors")["embedding"], final)
    resumed = {r["step"]: r["loss"] for r in records(run) if "loss" in r}
    assert resumed.keys() == straight.keys() == {1, 2, 3, 4}
    assert all(abs(resumed[k] - straight[k]) < 1e-5 for k in straight), (resumed, straight)
    # the checkpoint still names the run config.json holds (config.json is not rewritten on resume)
    assert json.loads((run / "checkpoint" / "state.json").read_text())["run"] == run_identity(json.loads((run / "config.json").read_text()))


def test_a_runs_identity_is_the_hash_earlier_versions_gave_its_checkpoints():
    """Fields made resumable later stay in the hash, or an older checkpoint would be "another run's"."""
    saved = {"task": "sst2", "method": "prompt", "lr": 0.1, "seed": 0, "report_to": None, "gradient_checkpointing": False,
             "checkpoint_every": None, "output_dir": "runs/x", "model": "m", "eval_batch_size": 32}
    assert run_identity(saved) == "249fa35ea3d2c9fd"  # what 0357580's run_identity gave
    assert run_identity({**saved, "output_dir": "elsewhere", "eval_batch_size": 8}) == "249fa35ea3d2c9fd"
    assert run_identity({**saved, "lr": 0.05}) != "249fa35ea3d2c9fd"


def test_torn_last_log_line_is_dropped_and_the_test_record_written_once(tmp_path):
    backbone, tok = tiny_llama(), tiny_tokenizer()
    train(config(tmp_path), backbone, tok)
    run = tmp_path / "run"
    (run / "metrics.json").unlink()  # killed between the test record and metrics.json
    log = (run / "log.jsonl").read_text()
    assert train(config(tmp_path, resume=True), backbone, tok)["steps"] == 4
    assert (run / "log.jsonl").read_text() == log
    assert sum("test" in json.loads(line) for line in log.splitlines()) == 1

    (run / "metrics.json").unlink()
    with open(run / "log.jsonl", "a") as handle:  # a disk full mid-line
        handle.write('{"step": 4, "te')
    assert train(config(tmp_path, resume=True), backbone, tok)["steps"] == 4
    assert (run / "log.jsonl").read_text() == log


def test_truncated_config_json_is_named(tmp_path, capsys):
    train(config(tmp_path, max_steps=2), tiny_llama(), tiny_tokenizer())
    saved = tmp_path / "run" / "config.json"
    (tmp_path / "run" / "metrics.json").unlink()
    saved.write_text(saved.read_text()[:60])
    assert main(["train", "--resume", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{saved}: invalid JSON at line" in err, err


def test_output_dir_that_is_a_file_is_refused_before_loading(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    argv = ["train", "--model", str(tmp_path / "no-such-model"), "--task", "sst2", "--data-dir", str(tmp_path / "no-data"),
            "--output-dir", str(tmp_path / "afile")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"softprompt train: error: {tmp_path / 'afile'} exists and is not a directory; choose another output directory"


def test_interrupt_says_how_to_resume(tmp_path, capsys, monkeypatch):
    tiny_llama().save_pretrained(tmp_path / "tiny")
    tiny_tokenizer(bos=True).save_pretrained(tmp_path / "tiny")
    save = RunDir.save_checkpoint

    def interrupted(self, *args, **kwargs):
        save(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(RunDir, "save_checkpoint", interrupted)
    out = tmp_path / "run"
    argv = ["train", "--model", str(tmp_path / "tiny"), "--task", "sst2", "--label-words", "names", "--data-dir",
            str(write_sst2(tmp_path / "data")), "--method", "prompt", "--length", "3", "--batch-size", "4",
            "--max-steps", "4", "--eval-every", "2", "--output-dir", str(out)]
    assert main(argv) == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]  # after the model's loading bar
    assert last == f"softprompt train: interrupted; continue with: softprompt train --resume {out}"
    monkeypatch.setattr(RunDir, "save_checkpoint", save)
    assert main(["train", "--resume", str(out)]) == 0


# ---------------------------------------------------------------------------------------
# Permissions follow the umask


@pytest.mark.parametrize("umask, folder, file", [(0o022, 0o755, 0o644), (0o077, 0o700, 0o600)])
def test_written_folders_and_files_follow_the_umask(tmp_path, umask, folder, file):
    previous = os.umask(umask)
    try:
        train(config(tmp_path, max_steps=2), tiny_llama(), tiny_tokenizer())
        assert main(["export", str(tmp_path / "run" / "prompt"), str(tmp_path / "peft")]) == 0
    finally:
        os.umask(previous)
    for path in (tmp_path / "run" / "prompt", tmp_path / "run" / "checkpoint", tmp_path / "run" / "plots", tmp_path / "peft"):
        assert path.stat().st_mode & 0o777 == folder, path
        for item in path.iterdir():
            assert item.stat().st_mode & 0o777 == file, item
