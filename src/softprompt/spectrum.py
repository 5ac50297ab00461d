"""What a prompt looks like as a matrix: singular values, numerical and stable rank, norms.

Definitions (σ_1 ≥ σ_2 ≥ ... the singular values of P ``[n, d]``):

* numerical rank at relative tolerance ``rtol``: #{i : σ_i > rtol · σ_1};
* stable rank: ‖P‖_F² / σ_1² = Σ σ_i² / σ_1², a continuous, noise-robust lower bound on rank.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

TOLERANCES = (1e-2, 1e-3, 1e-6)


def spectrum(prompt: torch.Tensor, tolerances: Sequence[float] = TOLERANCES) -> dict[str, Any]:
    """Spectral summary of a prompt.

    Args:
        prompt: ``[n, d]``.
        tolerances: relative tolerances for the numerical rank.
    Returns:
        ``singular_values`` (list, descending), ``rank`` ({rtol: count}), ``stable_rank``,
        ``frobenius_norm``, ``row_norm_mean``, ``row_norm_min``, ``row_norm_max``, ``shape``.
    """
    # float64: at rtol 1e-6 float32 round-off (~1e-7 · σ_1) would sit too close to the threshold.
    p = prompt.detach().to(torch.float64).cpu()
    sigma = torch.linalg.svdvals(p)  # [min(n, d)], descending
    top = float(sigma[0]) if sigma.numel() else 0.0
    rows = p.norm(dim=1)  # [n]
    return {
        "shape": list(p.shape),
        "singular_values": sigma.tolist(),
        "rank": {rtol: int((sigma > rtol * top).sum()) if top > 0 else 0 for rtol in tolerances},
        "stable_rank": float((sigma**2).sum() / top**2) if top > 0 else 0.0,
        "frobenius_norm": float(p.norm()),
        "row_norm_mean": float(rows.mean()),
        "row_norm_min": float(rows.min()),
        "row_norm_max": float(rows.max()),
    }
