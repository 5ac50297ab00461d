"""The row layout both joins share: where the prompt goes in each row of a batch.

Padding: whatever side the tokenizer pads on, a row is laid out as ``[pads, prompt, text]``
(left padding) or ``[prompt, text, pads]`` (right padding): a pad never sits between the prompt
and the text (a known PEFT bug with left padding), and position ids count only real tokens, so
both layouts give the same numbers.

Many prompts in one batch (``RowPrompts``, what ``PromptBank`` passes): row ``b`` is joined with
its own prompt; rows whose prompt is shorter than the longest get masked spare columns.
"""

from __future__ import annotations

from typing import Hashable, NamedTuple

import torch
import torch.nn.functional as F


def leading_pads(attention_mask: torch.Tensor) -> torch.Tensor:
    """Number of masked positions before each row's first real token, ``[B]``."""
    return (attention_mask.long().cumsum(-1) == 0).sum(-1)


class RowPrompts(NamedTuple):
    """A prompt per row: row ``b`` is joined with ``prompts[which[b]]``.

    Attributes:
        prompts: ``P`` tensors ``[n_p, d]`` (lengths may differ).
        which: ``[B]`` long, each row's prompt.
        slots: a name per prompt under which the decoder keeps its keys and values for reuse
            (``None``: computed for this call only).
    """

    prompts: list[torch.Tensor]
    which: torch.Tensor
    slots: list[Hashable] | None = None

    @property
    def lengths(self) -> torch.Tensor:  # [B] each row's prompt length
        n = torch.tensor([p.shape[0] for p in self.prompts], device=self.which.device)
        return n[self.which]

    @property
    def width(self) -> int:  # N, the longest prompt
        return max(p.shape[0] for p in self.prompts)

    def padded(self, dtype: torch.dtype) -> torch.Tensor:
        """Each row's prompt, zero-padded at the end to ``N`` rows: ``[B, N, d]``."""
        N, B = self.width, self.which.shape[0]
        if len(self.prompts) == 1:
            return self.prompts[0].to(dtype).unsqueeze(0).expand(B, N, -1)
        table = torch.stack([F.pad(p.to(dtype), (0, 0, 0, N - p.shape[0])) for p in self.prompts])  # [P, N, d]
        return table[self.which]


def as_rows(prompt: "torch.Tensor | RowPrompts", batch_size: int, slot: Hashable | None = None) -> RowPrompts:
    """One prompt ``[n, d]`` for every row, or the ``RowPrompts`` given."""
    if isinstance(prompt, RowPrompts):
        return prompt
    which = torch.zeros(batch_size, dtype=torch.long, device=prompt.device)
    return RowPrompts([prompt], which, None if slot is None else [slot])


def prepend(prompt: torch.Tensor, embeds: torch.Tensor, attention_mask: torch.Tensor):
    """Insert the prompt right before each row's first real token.

    Args:
        prompt: ``[n, d]``.
        embeds: ``[B, T, d]`` text embeddings.
        attention_mask: ``[B, T]``.
    Returns:
        ``(combined [B, n+T, d], mask [B, n+T], text_index [B, T])`` where
        ``text_index[b, t]`` is the column of text position ``t`` in ``combined``.
    """
    return prepend_rows(as_rows(prompt, embeds.shape[0]), embeds, attention_mask)


def prepend_rows(rows: RowPrompts, embeds: torch.Tensor, attention_mask: torch.Tensor, spare: str = "start"):
    """Insert each row's own prompt right before its first real token.

    Rows whose prompt is shorter than the longest (``N``) get ``N - n_b`` masked spare columns,
    at the ``start`` of the row (the text still ends where it ends: generation continues it) or
    at the ``end`` (real tokens keep their columns: absolute positions, as BART's encoder uses).

    Args:
        rows: the prompts and which row takes which.
        embeds: ``[B, T, d]`` text embeddings.
        attention_mask: ``[B, T]``.
    Returns:
        ``(combined [B, N+T, d], mask [B, N+T], text_index [B, T])``.
    """
    B, T, d = embeds.shape
    N = rows.width
    n = rows.lengths.unsqueeze(1)  # [B, 1]
    lead = leading_pads(attention_mask).unsqueeze(1)  # [B, 1]
    k = torch.arange(N + T, device=embeds.device).unsqueeze(0)  # [1, N+T]
    shift = (N - n) if spare == "start" else torch.zeros_like(n)  # spare columns before the row
    j = k - shift  # column in the row's own layout [pads, prompt, text, pads] of width n+T
    # Source column in cat([text, prompt]): pads keep their place, then the prompt, then the text.
    source = torch.where(j < lead, j, torch.where(j < lead + n, T + j - lead, j - n))
    is_spare = (j < 0) | (j >= n + T)
    source = source.clamp(0, T + N - 1).masked_fill(is_spare, T)  # spare columns: any value, masked
    pool = torch.cat([embeds, rows.padded(embeds.dtype)], dim=1)  # [B, T+N, d]
    combined = torch.gather(pool, 1, source.unsqueeze(-1).expand(-1, -1, d))
    mask_pool = torch.cat([attention_mask, attention_mask.new_ones(B, N)], dim=1)
    mask = torch.gather(mask_pool, 1, source).masked_fill(is_spare, 0)
    t = torch.arange(T, device=embeds.device).unsqueeze(0)
    text_index = torch.where(t < lead, t, t + n) + shift  # [B, T]
    return combined, mask, text_index


def positions_from_mask(mask: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Position ids that count real tokens only (as ``generate`` computes them), ``[B, T]``."""
    position = mask.long().cumsum(-1) - 1 + offset
    return position.masked_fill(mask == 0, 1)

