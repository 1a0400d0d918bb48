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
