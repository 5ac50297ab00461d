"""Several processes on one run: ``torchrun --nproc_per_node N -m softprompt train ...`` or
``accelerate launch [--multi_gpu] -m softprompt train ...`` (docs/distributed.md).

The one place that knows which process this is (``rank``, ``is_main``): only the main process
prints, draws progress and writes the run's files; the others wait at ``barrier`` where they
would otherwise read what it is writing.

Data parallel without DDP: every process holds the whole frozen backbone and the same prompt,
takes its share of each global batch (``train.Stream``), and after the backward pass the
prompt's few gradients (and the loss, for the log) are averaged with one all-reduce
(``average_gradients``). DDP would do the same average but broadcasts every frozen weight
when it wraps the model, and refuses a backbone FSDP has sharded (DTensor parameters); one
explicit all-reduce serves both cases.

FSDP (``--fsdp``): ``shard_backbone`` shards the frozen decoder layers across the processes
(FSDP2 ``fully_shard``); the embedding, the head and the prompt stay whole on every process, so
the prompt trains exactly as under data parallel. Every forward of a sharded layer is a
collective, so under FSDP each process runs every evaluation batch in step with the others
(``eval_is_split``); under data parallel each takes a share of the batches and the results are
gathered (``my_batches``, ``gather_rows``).
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
import torch.distributed as dist

__all__ = ["accelerator", "average_gradients", "barrier", "check_processes", "check_several_processes", "eval_is_split", "gather_rows", "is_main", "merge_shards", "my_batches", "rank",
           "shard_backbone", "start", "world"]


def start() -> None:
    """Join the process group when launched as several processes (``WORLD_SIZE`` > 1); accelerate's
    ``PartialState`` picks the backend (gloo on CPU, NCCL on GPUs) and keeps the group for the
    ``Accelerator`` made later."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _joined():
        from accelerate import PartialState

        PartialState()


def accelerator(mixed_precision: str):
    """An ``Accelerator`` with this run's precision, also when an earlier run in the process used
    another: accelerate keeps one process-wide state and refuses a second precision, which broke
    the second ``train()`` of a notebook, a benchmark or a sweep worker. Only the precision part is
    reset; the process group (``PartialState``) of a distributed launch stays."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    if AcceleratorState._shared_state.get("_mixed_precision", mixed_precision) != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())


def check_several_processes(option: str) -> None:
    """Refuse ``option`` (one line) unless several processes were launched."""
    if world() == 1:
        raise ValueError(f"{option} shards the backbone across processes: launch with torchrun --nproc_per_node N "
                         f"or accelerate launch --num_processes N (docs/distributed.md)")


def check_processes(saved: int, where: Any) -> None:
    """Refuse (one line) to resume a checkpoint ``saved`` processes trained under another number:
    its stream position counts global batches of ``batch_size × processes`` rows, grouped by
    length at that size, so another count would continue another run."""
    if saved != world():
        raise ValueError(f"{where}: the checkpoint was trained by {saved} process(es), this launch has {world()}; "
                         f"resume it with {saved} (a global batch is batch_size × processes, so another count is another run)")


def _joined() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's index: the process group's rank, or the launcher's ``RANK`` before ``start``."""
    return dist.get_rank() if _joined() else int(os.environ.get("RANK", "0"))


def world() -> int:
    """How many processes run the run (1 without a distributed launch)."""
    return dist.get_world_size() if _joined() else int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Whether this process prints and writes (rank 0)."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (nothing to wait for in one process)."""
    if _joined() and world() > 1:
        dist.barrier()


def average_gradients(params: Sequence[torch.Tensor], loss: float) -> float:
    """Average the gradients of ``params`` and the scalar ``loss`` over the processes, in place,
    with one all-reduce; returns the average loss. In one process nothing is touched (so a
    one-process run computes exactly what it did before).

    Every process must have gradients for the same parameters (the method's parameters used in
    every forward pass); the buffer is ``[sum of their sizes + 1]`` in the gradients' dtype."""
    if world() == 1:
        return loss
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads] + [torch.tensor([loss], dtype=grads[0].dtype, device=grads[0].device)])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()
    return float(flat[-1])


# ---------------------------------------------------------------------------------------
# Evaluation: split the batches, gather the rows


def eval_is_split(backbone: torch.nn.Module) -> bool:
    """Whether evaluation splits its batches across processes: under data parallel; not in one
    process, nor when FSDP shards ``backbone`` (each forward is then a collective every process
    takes part in, so they all run every batch, in step). Every process decides the same."""
    if world() == 1:
        return False
    from torch.distributed.fsdp import FSDPModule

    return not any(isinstance(m, FSDPModule) for m in backbone.modules())


def my_batches(batches: list[list[int]], backbone: torch.nn.Module) -> list[list[int]]:
    """This process's batches of an evaluation (every ``world``-th, from its rank), or all of
    them when evaluation is not split. A batch is scored whole by one process, so each row gets
    exactly the floats a one-process run gives it."""
    return batches[rank() :: world()] if eval_is_split(backbone) else batches


def gather_rows(values: list[Any], mine: list[list[int]], backbone: torch.nn.Module) -> list[Any]:
    """``values`` (one per row of the evaluation; this process filled the rows of its batches
    ``mine``) with every process's rows filled in, on every process. Picklable values only."""
    if not eval_is_split(backbone):
        return values
    rows = [i for batch in mine for i in batch]
    parts: list[Any] = [None] * world()
    dist.all_gather_object(parts, [(i, values[i]) for i in rows])
    return merge_shards(len(values), parts)


def merge_shards(n: int, parts: list[list[tuple[int, Any]]]) -> list[Any]:
    """Rows ``0..n-1`` from each process's ``(row, value)`` pairs, in row order; each row must
    come from exactly one process (the shards may be uneven)."""
    out: list[Any] = [None] * n
    seen = [False] * n
    for part in parts:
        for i, value in part:
            if seen[i]:
                raise RuntimeError(f"evaluation row {i} was scored by two processes")
            out[i], seen[i] = value, True
    if not all(seen):
        raise RuntimeError(f"evaluation row {seen.index(False)} was scored by no process")
    return out


# ---------------------------------------------------------------------------------------
# FSDP


def shard_backbone(model: torch.nn.Module, backbone: torch.nn.Module, device: torch.device) -> int:
    """Shard ``backbone``'s blocks (the classes transformers names in ``_no_split_modules``: the
    decoder layers) across the processes with FSDP2 ``fully_shard`` on ``device``'s kind, and put
    the rest of ``model`` (the embedding, the head, the prompt: whole on every process) on
    ``device``; returns how many blocks. The prompt joins the input embeddings outside any
    block's forward, so the root module is not sharded (its embedding call would mix tensors and
    DTensors). ``fully_shard`` moves one block at a time to ``device``, so the whole backbone is
    never on it."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    check_several_processes("fsdp")
    names = set(getattr(backbone, "_no_split_modules", None) or [])
    blocks = [m for m in backbone.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(f"fsdp: {type(backbone).__name__} names no blocks to shard (_no_split_modules)")
    mesh = init_device_mesh(torch.device(device).type, (world(),))
    for block in blocks:
        # Each block is its own FSDP root (nothing above it is sharded), and a root keeps its
        # layer gathered after forward unless told otherwise: that would gather the whole backbone.
        fully_shard(block, mesh=mesh, reshard_after_forward=True)
    with torch.no_grad():  # the rest, in place (Module.to would try to move the shards too)
        for p in model.parameters():
            if not isinstance(p, DTensor):
                p.data = p.data.to(device)
        for module in model.modules():
            for name, buffer in module.named_buffers(recurse=False):
                module._buffers[name] = buffer.to(device)
    return len(blocks)
