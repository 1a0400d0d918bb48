"""Reference forecasters computed on exactly the windows the encoder is scored on.

All take lookback windows ``x`` ``[N, L]`` (one row per window and channel, standardised values).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def moving_average(x: Tensor, kernel: int = 25) -> Tensor:
    """DLinear's trend: a centred moving average with the ends replicated, ``[N, L] -> [N, L]``."""
    left, right = (kernel - 1) // 2, kernel // 2
    padded = F.pad(x[:, None, :], (left, right), mode="replicate")
    return F.avg_pool1d(padded, kernel, stride=1)[:, 0, :]


def decomposition_features(x: Tensor, kernel: int = 25) -> Tensor:
    """DLinear-style inputs ``[N, 2L]``: trend and remainder, so a linear map weighs each separately."""
    trend = moving_average(x, kernel)
    return torch.cat([trend, x - trend], dim=-1)


def seasonal_naive(x: Tensor, horizon: int, period: int) -> Tensor:
    """Repeat the last ``period`` values: ``[N, L] -> [N, horizon]``.

    The same forecasts as sktime's ``NaiveForecaster(strategy="last", sp=period)`` fit on each window
    (checked in the tests), computed for all windows at once.
    """
    if period > x.shape[1]:
        raise ValueError(f"seasonal period {period} is longer than the lookback {x.shape[1]}")
    season = x[:, x.shape[1] - period :]
    return season[:, torch.arange(horizon) % period]


def fill_gaps(x: Tensor, observed: Tensor, method: str = "linear") -> Tensor:
    """Fill unobserved entries of each row from that row's own observations (no other window's values):
    ``linear`` interpolates between the neighbouring observations, ``ffill`` carries the last one forward;
    before the first observation both use the first. ``[N, L]`` -> ``[N, L]``; rows need one observation.
    """
    if method not in ("linear", "ffill"):
        raise ValueError(f"fill method must be 'linear' or 'ffill', got {method!r}")
    if not observed.any(1).all():
        raise ValueError("every row needs at least one observed value to fill from")
    n, length = x.shape
    pos = torch.arange(length).expand(n, -1)
    prev = torch.where(observed, pos, -1).cummax(1).values  # last observed index at or before
    nxt = torch.where(observed, pos, length).flip(1).cummin(1).values.flip(1)  # first at or after
    first = nxt[:, :1].expand(-1, length)
    prev = torch.where(prev < 0, first, prev)
    nxt = torch.where(nxt >= length, prev, nxt)
    x_prev, x_next = x.gather(1, prev), x.gather(1, nxt)
    if method == "ffill":
        return torch.where(prev <= pos, x_prev, x_next)
    gap = (nxt - prev).clamp(min=1).to(x.dtype)
    w = ((pos - prev).to(x.dtype) / gap).clamp(0, 1)
    return x_prev + w * (x_next - x_prev)
