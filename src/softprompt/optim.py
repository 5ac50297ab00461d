"""The optimizer and the learning-rate schedule: pure pieces of a run, no state of their own.

The learning rate itself is decided once by ``softprompt.settings`` (its docstring has the
sources); ``train.py`` gives each of the method's parameter groups its peak (``group.peak(lr)``)
and sets every group to ``lr_at(step, ..., peak)`` before each optimizer step.
"""

from __future__ import annotations

import math

import torch
from transformers.optimization import Adafactor

from .config import TrainConfig


def lr_at(step: int, total_steps: int, warmup_steps: int, base_lr: float, schedule: str = "linear") -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warmup to ``base_lr`` over
    ``warmup_steps`` steps (the first step already gets ``base_lr / warmup_steps``), then
    ``linear``: decay reaching 0 at ``total_steps``; ``constant``: ``base_lr`` to the end.
    ``linear-hf``: transformers' ``get_linear_schedule_with_warmup`` exactly, whose ``LambdaLR``
    gives step ``s`` the factor ``s / warmup`` (the first step at lr 0), as the DPT, DePT and ULPT
    code trains."""
    if step < warmup_steps:
        return base_lr * (step + (schedule != "linear-hf")) / warmup_steps
    if schedule == "constant":
        return base_lr
    return base_lr * max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def warmup_steps_for(config: TrainConfig, total_steps: int) -> int:
    """``warmup_steps``, or ``warmup_ratio`` of the run's steps, rounded down as
    transformers' ``get_scheduler`` call in DPT's main_ddp.py does."""
    if config.warmup_ratio is not None:
        return int(config.warmup_ratio * total_steps)
    return config.warmup_steps or 0


def steps_per_epoch(config: TrainConfig, num_examples: int, world: int = 1) -> int:
    """Optimizer steps in one pass over ``num_examples`` training rows."""
    return max(1, math.ceil(math.ceil(num_examples / (config.batch_size * world)) / config.grad_accum))


def make_optimizer(c: TrainConfig, groups: list[dict]) -> torch.optim.Optimizer:
    """``groups``: ``{"params", "lr"}`` dicts. AdamW with ``adam_eps`` and decoupled
    ``weight_decay``, or Adafactor as Lester et al. ran it (``T5XAdafactor``)."""
    if c.optimizer == "adafactor":
        return T5XAdafactor(groups, lr=groups[0]["lr"], weight_decay=c.weight_decay)
    return torch.optim.AdamW(groups, eps=c.adam_eps, weight_decay=c.weight_decay)


class T5XAdafactor(Adafactor):
    """transformers' Adafactor with the settings and two behaviours of T5X's, which Lester et al.
    trained with (prompt-tuning's configs/models/t5_1_1_prompt.gin; t5x/adafactor.py):
    decay 0.8 (transformers spells it -0.8), no parameter scaling, no relative step, no first
    moment, update clipping 1.0, and

    * the second moment is factored only when the two largest dimensions are both at least 128
      (T5X's ``min_dim_size_to_factor``; a 2-D prompt falls back to that heuristic), so a
      100-token prompt keeps its full second moment where transformers would factor it;
    * weight decay multiplies the parameter by ``1 - weight_decay``, not ``1 - lr·weight_decay``.
    """

    MIN_DIM_SIZE_TO_FACTOR = 128

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        self.t5x_weight_decay = weight_decay
        super().__init__(params, lr=lr, weight_decay=0.0, decay_rate=-0.8, beta1=None, clip_threshold=1.0,
                         scale_parameter=False, relative_step=False, warmup_init=False)

    @staticmethod
    def _get_options(param_group, param_shape):
        factored = len(param_shape) >= 2 and sorted(param_shape)[-2] >= T5XAdafactor.MIN_DIM_SIZE_TO_FACTOR
        return factored, param_group["beta1"] is not None

    @torch.no_grad()
    def step(self, closure=None):
        if self.t5x_weight_decay:  # the update does not depend on the parameter (no scaling): decay first
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.mul_(1.0 - self.t5x_weight_decay)
        return super().step(closure)


def total_steps_for(config: TrainConfig, num_examples: int, world: int = 1) -> int:
    """Optimizer steps of the run: ``max_steps``, else ``epochs`` (default 1) worth of batches."""
    if config.max_steps is not None:
        return config.max_steps
    micro_per_epoch = math.ceil(num_examples / (config.batch_size * world))
    return max(1, math.ceil((config.epochs or 1.0) * micro_per_epoch / config.grad_accum))
