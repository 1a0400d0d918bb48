"""Anti-collapse diagnostics of embeddings."""

from __future__ import annotations

import torch
from torch import Tensor

from tsjepa.heads import fit_ridge
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


def slot_share(z: Tensor, slots: Tensor, chunk: int = 1 << 16) -> float:
    """Share of the variance of tokens ``z`` ``[N, D]`` that their slot alone explains: 1 - (sum of squares
    about each slot's mean) / (sum of squares about the overall mean), ``slots`` ``[N]`` integer ids of each
    token's (channel, patch position). Near 1: the tokens are position and channel codes, not content.
    Accumulates per-slot sums in float64 over chunks of ``chunk`` tokens, so memory stays ~``z``'s own
    (a weather test split holds ~4.6M tokens)."""
    ids = torch.unique(slots, return_inverse=True)[1]
    sums = torch.zeros(int(ids.max()) + 1, z.shape[1], dtype=torch.float64, device=z.device)
    squares = torch.zeros((), dtype=torch.float64, device=z.device)
    for start in range(0, len(z), chunk):
        part = z[start:start + chunk].double()
        sums.index_add_(0, ids[start:start + chunk], part)
        squares += (part**2).sum()
    counts = torch.bincount(ids).double()  # every slot id occurs (torch.unique's inverse)
    total = squares - (sums.sum(0) ** 2).sum() / len(z)
    within = squares - ((sums**2).sum(1) / counts).sum()
    return float(1 - within / total) if total > 0 else float("nan")


def position_r2(z: Tensor, slots: Tensor, windows: Tensor, chunk: int = 1 << 16) -> float:
    """How well position alone predicts tokens on held-out windows: the R² on the odd windows' tokens ``z``
    ``[N, D]`` of the best predictor that sees only each token's slot (``slots`` ``[N]``, integer ids of
    (channel, patch position)), fit on the even windows (``windows`` ``[N]``, each token's window index): each
    slot's mean there (R² pooled over every entry, SST about each feature's held-out mean). Tokens of slots the
    even windows never observe are left out. Near 1: the predictor's targets are functions of position, and
    latent prediction can be solved without reading the context. Accumulates in float64 over chunks of
    ``chunk`` tokens, so memory stays ~``z``'s own (a weather test split holds ~4.6M tokens)."""
    held = windows % 2 == 1
    ids = torch.unique(slots, return_inverse=True)[1]
    n = int(ids.max()) + 1
    sums = torch.zeros(n, z.shape[1], dtype=torch.float64, device=z.device)
    counts = torch.zeros(n, dtype=torch.long, device=z.device)
    for start in range(0, len(z), chunk):
        fit = ~held[start:start + chunk]
        sums.index_add_(0, ids[start:start + chunk][fit], z[start:start + chunk][fit].double())
        counts += torch.bincount(ids[start:start + chunk][fit], minlength=n)
    keep = held & (counts[ids] > 0)
    if not keep.any():
        return float("nan")
    means = sums / counts.clamp(min=1)[:, None]
    column = torch.zeros(z.shape[1], dtype=torch.float64, device=z.device)  # sum of the held-out tokens
    sse, squares = 0.0, 0.0
    for start in range(0, len(z), chunk):
        mine = keep[start:start + chunk]
        target = z[start:start + chunk][mine].double()
        sse += float(((means[ids[start:start + chunk][mine]] - target) ** 2).sum())
        column += target.sum(0)
        squares += float((target**2).sum())
    total = squares - float((column**2).sum()) / int(keep.sum())  # SST about each feature's held-out mean
    return 1 - sse / total if total > 0 else float("nan")


def r_squared(pred: Tensor, target: Tensor, observed: Tensor | None = None) -> float:
    """1 - SSE / SST of ``pred`` against ``target`` ``[N, K]`` pooled over every observed entry (SST about each
    column's observed mean)."""
    observed = torch.ones_like(target, dtype=torch.bool) if observed is None else observed
    w = observed.double()
    pred, target = pred.double(), target.double()
    mean = (target * w).sum(0) / w.sum(0).clamp(min=1)
    sse = (((pred - target) ** 2) * w).sum()
    sst = (((target - mean) ** 2) * w).sum()
    return float(1 - sse / sst) if sst > 0 else float("nan")


def patch_recoverability(tokens: Tensor, values: Tensor, observed: Tensor,
                         alphas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)) -> float:
    """How much of each patch's values its token keeps: R² of a ridge map from tokens ``[N, D]`` to their
    patches' instance-normalised slot values ``[N, S]`` (``observed`` ``[N, S]`` bool), fit on the even rows
    (penalty chosen on the odd rows' first half) and scored on the odd rows' second half."""
    fit, held = tokens[0::2], tokens[1::2]
    half = len(held) // 2
    y, y_held = values[0::2], values[1::2]
    ridge = fit_ridge(fit, y, held[:half], y_held[:half], list(alphas))
    return r_squared(ridge(held[half:]), y_held[half:], observed[1::2][half:])


def recoverability(features: dict[str, Tensor], targets: dict[str, Tensor], observed: dict[str, Tensor],
                   alphas: list[float]) -> float:
    """Test R² of a ridge map from ``features[s]`` ``[N_s, F]`` to ``targets[s]`` ``[N_s, K]`` fit on split
    "train" with the penalty chosen on "val", scored on the ``observed[s]`` entries of "test": how much of
    the targets (e.g. the instance-normalised lookback window) the frozen features still hold."""
    ridge = fit_ridge(features["train"], targets["train"], features["val"], targets["val"], alphas)
    return r_squared(ridge(features["test"]), targets["test"], observed["test"])
