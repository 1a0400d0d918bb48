"""Linear heads on frozen encoder outputs: closed-form ridge regression with the penalty chosen on a
validation set, and the forecasting probe (a channel's tokens -> its future values) that the evaluation
harnesses and the adapters share."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from tsjepa.models import EncoderOutput

CHUNK = 16384  # rows per float64 block: memory stays O(CHUNK * F) beside the features themselves
PREFIX_CACHE = 8  # prefix moments a `RidgeRows` keeps (each F x F float64)


def block(x: Tensor, rows: Tensor) -> Tensor:
    """``x[rows]`` for sorted distinct row indices ``rows`` ``[n]``: a view (no copy) where they are contiguous."""
    if len(rows) and int(rows[-1] - rows[0]) + 1 == len(rows):
        return x[int(rows[0]):int(rows[-1]) + 1]
    return x[rows]


@dataclass
class Ridge:
    weight: Tensor  # [F, H]
    bias: Tensor  # [H]
    alpha: float

    def __call__(self, x: Tensor) -> Tensor:
        """x ``[N, F]`` -> ``[N, H]`` (float64, computed in blocks of rows)."""
        return torch.cat([block.to(self.weight.dtype) @ self.weight + self.bias for block in x.split(CHUNK)])


@dataclass
class Moments:
    """Weighted sums over a set of rows ``x`` with weights ``w``, float64: ``total`` = sum w, ``first`` = sum w x
    ``[F]``, ``second`` = sum w x x^T ``[F, F]``."""

    total: Tensor
    first: Tensor
    second: Tensor

    @classmethod
    def zeros(cls, dim: int) -> Moments:
        """The moments of no row, for ``dim`` features."""
        return cls(torch.zeros((), dtype=torch.float64), torch.zeros(dim, dtype=torch.float64),
                   torch.zeros(dim, dim, dtype=torch.float64))

    @classmethod
    def of(cls, x: Tensor, w: Tensor) -> Moments:
        """Moments of rows ``x`` ``[N, F]`` weighted by ``w`` ``[N]`` (in blocks of rows: no float64 copy of x)."""
        out = cls.zeros(x.shape[1])
        for xb, wb in zip(x.split(CHUNK), w.double().split(CHUNK), strict=True):
            xb = xb.double()
            out.total += wb.sum()
            out.first += wb @ xb
            out.second += (xb * wb[:, None]).T @ xb
        return out

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.total + other.total, self.first + other.first, self.second + other.second)

    def __sub__(self, other: Moments) -> Moments:
        return Moments(self.total - other.total, self.first - other.first, self.second - other.second)


class RidgeRows:
    """Feature rows ``x`` ``[N, F]`` with row weights ``[N]`` (uniform when None) that ridge heads are fit on,
    any subset of rows at a time (`moments`, `cross`).

    The second moments of row prefixes ``[0, n)`` are kept (the latest `PREFIX_CACHE`), each new one built from
    the nearest kept prefix by adding or removing the rows between. Fits on nested or overlapping row ranges
    (a forecast's horizons: the longer horizons' windows are the first of the shorter ones'; its label fractions:
    the most recent windows of each) then form each row's outer product about once instead of once per fit."""

    def __init__(self, x: Tensor, weight: Tensor | None = None) -> None:
        self.x = x
        self.weight = torch.ones(len(x), dtype=torch.float64) if weight is None else weight.double()
        if self.weight.shape != (len(x),):
            raise ValueError(f"weight must have shape [{len(x)}], got {list(self.weight.shape)}")
        self.prefixes = {0: Moments.zeros(x.shape[1])}

    def __len__(self) -> int:
        return len(self.x)

    def rows(self, lo: int, hi: int) -> Moments:
        return Moments.of(self.x[lo:hi], self.weight[lo:hi])

    def prefix(self, n: int) -> Moments:
        """Moments of rows ``[0, n)``."""
        if n not in self.prefixes:
            near = min(self.prefixes, key=lambda k: abs(k - n))
            self.prefixes[n] = (self.prefixes[near] + self.rows(near, n) if near < n
                                else self.prefixes[near] - self.rows(n, near))
            while len(self.prefixes) > PREFIX_CACHE + 1:  # the zero prefix stays
                del self.prefixes[next(k for k in self.prefixes if k)]
        return self.prefixes[n]

    def moments(self, select: Tensor) -> Moments:
        """Moments of the rows where ``select`` (``[N]`` bool)."""
        index = select.nonzero().flatten()
        if not len(index):
            raise ValueError("no row is selected to fit a ridge head on")
        lo, hi = int(index[0]), int(index[-1]) + 1
        if 2 * len(index) < hi - lo:  # sparse: sum the selected rows directly
            return Moments.of(self.x[index], self.weight[index])
        out = self.prefix(hi) - self.prefix(lo)
        gaps = lo + (~select[lo:hi]).nonzero().flatten()
        return out - Moments.of(self.x[gaps], self.weight[gaps]) if len(gaps) else out

    def cross(self, select: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """For targets ``y`` ``[n, H]`` of the ``n`` rows where ``select``, in order: sum w x y^T ``[F, H]``, sum w y
        ``[H]`` and sum w |y|^2, float64."""
        index = select.nonzero().flatten()
        if len(index) != len(y):
            raise ValueError(f"{len(y)} targets for {len(index)} selected rows")
        w, y = self.weight[index], y.double()
        xy = sum((block(self.x, rows).double() * wb[:, None]).T @ yb
                 for rows, wb, yb in zip(index.split(CHUNK), w.split(CHUNK), y.split(CHUNK), strict=True))
        return xy, w @ y, w @ (y**2).sum(-1)


def fit_ridge_rows(train: RidgeRows, select: Tensor, y: Tensor, val: RidgeRows, select_val: Tensor, y_val: Tensor,
                   alphas: list[float]) -> Ridge:
    """Least squares from the ``select`` rows of ``train`` to ``y`` ``[n, H]`` with an intercept and penalty
    ``alpha * trace(G)/F * |W|^2`` (``G`` the weighted centred Gram matrix, weights summing to 1: scale-free),
    for each alpha; keeps the one with the lowest weighted validation MSE on the ``select_val`` rows of ``val``
    against ``y_val``. The validation error comes from the rows' moments (exact, no prediction per alpha)."""
    m, (xy, y_sum, _) = train.moments(select), train.cross(select, y)
    x_mean, y_mean = m.first / m.total, y_sum / m.total
    gram = m.second / m.total - torch.outer(x_mean, x_mean)
    cross = xy / m.total - torch.outer(x_mean, y_mean)
    scale = gram.diagonal().mean()
    mv, (xy_val, y_val_sum, yy_val) = val.moments(select_val), val.cross(select_val, y_val)
    best = None
    for alpha in alphas:
        factor = torch.linalg.cholesky(gram + alpha * scale * torch.eye(len(gram), dtype=gram.dtype))
        coef = torch.cholesky_solve(cross, factor)
        bias = y_mean - x_mean @ coef
        # sum_i w_i |x_i W + b - y_i|^2, expanded over the validation rows' moments
        sse = ((mv.second @ coef) * coef).sum() + 2 * bias @ (coef.T @ mv.first) + mv.total * bias @ bias \
            - 2 * (coef * xy_val).sum() - 2 * bias @ y_val_sum + yy_val
        err = (sse / (mv.total * y_val.shape[1])).item()
        if best is None or err < best[0]:
            best = (err, Ridge(coef, bias, alpha))
    return best[1]


def fit_ridge(x: Tensor, y: Tensor, x_val: Tensor, y_val: Tensor, alphas: list[float],
              weight: Tensor | None = None, weight_val: Tensor | None = None) -> Ridge:
    """`fit_ridge_rows` on all rows: ``x`` ``[N, F]`` -> ``y`` ``[N, H]``, penalty chosen on ``x_val`` ``[N_val, F]``,
    ``y_val``; rows may carry weights (``[N]``, ``[N_val]``; uniform when None) in the fit and the validation
    error."""
    everything = torch.ones(len(x), dtype=torch.bool)
    return fit_ridge_rows(RidgeRows(x, weight), everything, y, RidgeRows(x_val, weight_val),
                          torch.ones(len(x_val), dtype=torch.bool), y_val, alphas)


def probe_features(out: EncoderOutput) -> torch.Tensor:
    """``[N, C, P, D]`` embeddings -> ``[N * C, P * D]`` rows, one per (window, channel)."""
    return rearrange(out.embeddings, "n c p d -> (n c) (p d)")


def normalise(target: torch.Tensor, out: EncoderOutput) -> torch.Tensor:
    """``[N, C, H]`` -> ``[N * C, H]`` in each window's instance-normalised units."""
    return rearrange((target - out.loc[..., None]) / out.scale[..., None], "n c h -> (n c) h")


def fit_head(x: dict[str, Tensor], y: dict[str, torch.Tensor], keep: dict[str, torch.Tensor],
             alphas: list[float], weight: dict[str, torch.Tensor] | None = None) -> Ridge:
    """Ridge ``[N, F] -> [N, H]`` fit on the ``keep`` rows of split "train", penalty chosen on "val";
    ``weight[s]`` ``[N]`` weighs each row's squared error (uniform when None)."""
    rows = {s: RidgeRows(x[s], None if weight is None else weight[s]) for s in ("train", "val")}
    return fit_ridge_rows(rows["train"], keep["train"], y["train"][keep["train"]], rows["val"], keep["val"],
                          y["val"][keep["val"]], alphas)


def probe_rows(encoded: dict[str, EncoderOutput]) -> dict[str, RidgeRows]:
    """Per split, the probe's rows (`probe_features`: one per (window, channel)) weighted by the window's scale²
    (see `fit_probe`); one set serves the fits on any of its leading windows (a forecast's horizons)."""
    return {s: RidgeRows(probe_features(o), rearrange(o.scale, "n c -> (n c)") ** 2) for s, o in encoded.items()}


def fit_probe(encoded: dict[str, EncoderOutput], target: dict[str, torch.Tensor], keep: dict[str, torch.Tensor],
              alphas: list[float], rows: dict[str, RidgeRows] | None = None) -> Ridge:
    """Ridge head from a channel's tokens to its instance-normalised future, per split ``encoded[s]``
    (``[N, C, P, D]``) and ``target[s]`` ``[N, C, H]``; fit on the ``keep[s]`` (``[N * C]``) rows of "train",
    penalty chosen on "val". Each (window, channel) row is weighted by its scale², so the objective is the
    squared error in data units, the metric the head is scored on: near-constant windows (scale ~ 0, e.g. rain
    or night-time radiation in weather) would otherwise have huge normalised targets and dominate the fit.
    ``rows``: `probe_rows` of windows whose first ``N`` are ``encoded[s]`` (their moments are shared across
    fits); by default those of ``encoded``."""
    rows = probe_rows(encoded) if rows is None else rows
    y = {s: normalise(target[s], encoded[s])[keep[s]] for s in ("train", "val")}
    select = {s: torch.cat([keep[s], keep[s].new_zeros(len(rows[s]) - len(keep[s]))]) for s in ("train", "val")}
    return fit_ridge_rows(rows["train"], select["train"], y["train"], rows["val"], select["val"], y["val"], alphas)


def smoother_probe(probe: Ridge, encoded: dict[str, EncoderOutput], target: dict[str, torch.Tensor],
                   keep: dict[str, torch.Tensor], scale: float, rows: dict[str, RidgeRows] | None = None) -> Ridge:
    """``probe`` (a `fit_probe` solution) when ``scale`` is 1, else the probe refit on the same rows with ``scale``
    times its val-chosen penalty: the smoother start fine-tuning can train through."""
    return probe if scale == 1 else fit_probe(encoded, target, keep, [probe.alpha * scale], rows)


def probe_predict(head: Ridge, out: EncoderOutput) -> torch.Tensor:
    """Forecasts ``[N, C, H]`` in data units (the window's loc/scale added back)."""
    pred = rearrange(head(probe_features(out)).float(), "(n c) h -> n c h", n=out.embeddings.shape[0])
    return pred * out.scale[..., None] + out.loc[..., None]


def fit_stride(n_windows: int, n_channels: int, max_rows: int) -> int:
    """Stride over windows that keeps at most ``max_rows`` (window, channel) rows for fitting ridge heads."""
    return max(1, math.ceil(n_windows * n_channels / max_rows))
