"""Anti-collapse diagnostics of embeddings."""

from __future__ import annotations

import torch
from torch import Tensor

from tsjepa.sigreg import sigreg


def effective_rank(z: Tensor) -> float:
    """exp(entropy of the normalised singular values) of centred ``z`` ``[N, D]`` (Roy & Vetterli, 2007).

    D for isotropic embeddings, 1 for embeddings on a line, 0 for a constant.
    """
    z = z.float() - z.float().mean(0)
    s = torch.linalg.svdvals(z)
    if s.sum() <= 0:
        return 0.0
    p = s / s.sum()
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def embedding_report(z: Tensor, num_slices: int = 256, seed: int = 0, step: int = 0) -> dict[str, float]:
    """Effective rank and the per-projection SIGReg statistic distribution of ``z`` ``[N, D]`` (this rank's)."""
    per_slice = sigreg(z.float(), num_slices=num_slices, reduction="none", seed=seed, step=step,
                       sync=False)
    q = torch.quantile(per_slice, torch.tensor([0.5, 0.9, 1.0], device=per_slice.device))
    return {
        "effective_rank": effective_rank(z),
        "sigreg_mean": float(per_slice.mean()),
        "sigreg_median": float(q[0]),
        "sigreg_p90": float(q[1]),
        "sigreg_max": float(q[2]),
        "embedding_std": float(z.float().std(0).mean()),
    }
