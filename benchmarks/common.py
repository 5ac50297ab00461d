"""Shared helpers for the benchmarks: model loading (``--model``), batches, timing, peak memory.

Nothing here is imported by the test suite; the benchmarks are too slow for it.

Timing: each benchmark builds softprompt and PEFT on the *same* backbone object (same
weights, same threads, same precision), warms both up, then ALTERNATES one timed call of
each per round, so slow drifts of the machine (thermal, other processes) hit both alike.
Reported figures are medians over rounds.

Peak memory: each variant runs in its own fresh subprocess (``python -m benchmarks.<x>
--memory-child ...``) so the allocator state of one cannot hide the other's. The child
loads the model and builds the wrapper and optimizer, then resets the kernel's resident-set
high-water mark (``echo 5 > /proc/self/clear_refs``, Linux), records the resident set,
runs three steps and reads ``VmHWM`` from ``/proc/self/status``. ``peak - baseline`` is
the extra memory training needs on top of the loaded model; ``VmHWM`` is the absolute
process peak. This counts every allocation (PyTorch's CPU allocator, oneDNN
scratch, Python objects), which tracemalloc and the profiler would each miss in part.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# $SOFTPROMPT_BENCH_RESULTS sends a smoke run's files elsewhere, leaving the committed figures alone
RESULTS = Path(os.environ.get("SOFTPROMPT_BENCH_RESULTS") or REPO / "benchmarks" / "results")
DATA = REPO.parent / "shared" / "data"  # ../shared/data beside the checkout


# -- models ------------------------------------------------------------------------------


DEFAULT_MODEL = "smollm2"


def load_model(name: str | None = DEFAULT_MODEL):
    """A decoder-only backbone in float32, eval mode (no dropout), and its tokenizer, through
    softprompt's own loader: ``smollm2`` (or None: SmolLM2-135M-Instruct, the embedded GGUF),
    ``gemma-3-270m``, or anything ``load_backbone`` takes (cached as safetensors after the
    first load)."""
    from softprompt.backbones import load_backbone

    model, tokenizer = load_backbone(name)
    return model.float().eval(), tokenizer


def model_name(spec: str | None) -> str:
    """The name a model is recorded under: a packaged model's own (``SmolLM2-135M-Instruct``,
    ``gemma-3-270m``) whatever alias named it, else the spec as given."""
    from softprompt.backbones.packaged import packaged

    entry = packaged(spec)
    return entry.name if entry is not None else str(spec)


def model_tag(spec: str | None) -> str:
    """What a results file's name carries for the model: nothing for SmolLM2 (the names the
    benchmarks always wrote), else ``_<model name>`` (``step_floor_gemma-3-270m_threads1.json``)."""
    from softprompt.backbones.packaged import DEFAULT
    from softprompt.filenames import safe_filename

    name = model_name(spec)
    return "" if name == DEFAULT.name else "_" + safe_filename(name)


def add_model_option(parser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help="decoder-only backbone: smollm2 (SmolLM2-135M-Instruct, the default), gemma-3-270m, "
                             "or a directory / hub name load_backbone takes; a model other than SmolLM2 names "
                             "the results file")


def resolve_for(config, backbone, tokenizer):
    """``(config, task)`` as ``softprompt.train`` resolves them for ``backbone``: the recipe and
    every layer of defaults for its facts (kind, BOS, base model: template style, label words,
    separator, max length), the task built from them. What PEFT and the zero-shot baseline are
    given, so that they see the rows softprompt's own run sees."""
    from softprompt import settings
    from softprompt.backbones import facts_of

    config = settings.from_python(config)
    kind, bos, base = facts_of(backbone, tokenizer)
    task = config.build_task(settings.style_for(config, kind, base))
    return settings.for_backbone(config, kind, bos=bos, base=base, task=task), task


def t5_base_random(seed: int = 0):
    """T5ForConditionalGeneration with t5-base's sizes, random weights (no hub), float32, eval."""
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(
        vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_decoder_layers=12,
        num_heads=12, relative_attention_num_buckets=32, relative_attention_max_distance=128,
        dropout_rate=0.1, layer_norm_epsilon=1e-6, feed_forward_proj="relu", tie_word_embeddings=True,
        decoder_start_token_id=0, pad_token_id=0, eos_token_id=1,
    )
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(config).float().eval()


def random_batch(batch: int, length: int, vocab: int, seed: int = 0):
    """``(input_ids [B, T], attention_mask [B, T] all ones)`` of random non-special tokens."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(100, vocab - 100, (batch, length), generator=g)
    return ids, torch.ones_like(ids)


def attach_peft(backbone, length: int, task_type: str):
    """PEFT prompt tuning (random init, like softprompt's ``normal``/``vocab``; init does not
    change the cost) on ``backbone``. ``get_peft_model`` does not touch the base weights."""
    from peft import PromptTuningConfig, get_peft_model

    config = PromptTuningConfig(task_type=task_type, num_virtual_tokens=length)
    return get_peft_model(backbone, config)


def add_thread_option(parser) -> None:
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own, 2 on this machine); use 1 when the "
                             "machine is shared: 2 threads on 2 busy cores stall at every OpenMP barrier")


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(threads)


# -- timing ------------------------------------------------------------------------------


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def alternate(fns: dict, rounds: int, warmup: int = 1) -> dict[str, list[float]]:
    """Call every function ``warmup`` times, then ``rounds`` times in turn; seconds per call.

    The order inside a round alternates too, so neither side always runs first.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times = {name: [] for name in names}
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            gc.collect()
            times[name].append(timed(fns[name]))
    return times


def load_average() -> str:
    """The 1/5/15-minute load averages: on a shared 2-core machine, read figures against them."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def median(xs) -> float:
    return statistics.median(xs)


def fmt_times(xs) -> str:
    return f"median {median(xs):.3f} s (min {min(xs):.3f}, max {max(xs):.3f}, n={len(xs)})"


# -- memory ------------------------------------------------------------------------------


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} field")


def reset_peak_rss() -> int:
    """Reset the resident-set high-water mark; return the current resident set in bytes."""
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def peak_rss() -> int:
    """Resident-set high-water mark since the last reset, bytes."""
    return _status_kib("VmHWM") * 1024


def run_memory_child(module: str, args: list[str]) -> dict:
    """Run ``python -m module --memory-child ARGS`` in a fresh process; it prints one JSON line last."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", module, "--memory-child", *args], cwd=REPO, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{module} memory child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:.0f} MiB"


def write_json(path: Path, data) -> None:
    """Atomic write (temp name, then rename), through softprompt's one writer."""
    from softprompt.io import write_json_atomically

    write_json_atomically(path, data)
