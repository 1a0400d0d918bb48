"""Sliding windows over a `TimeSeries` split, standardised with a scaler fit on train rows only."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.preprocessing import StandardScaler

from tsjepa.data.batch import Batch
from tsjepa.data.timeseries import TimeSeries


def fit_scaler(series: TimeSeries, rows: tuple[int, int]) -> StandardScaler:
    """Per-channel standardisation fit on ``rows`` (the train split); NaNs are ignored."""
    start, end = rows
    return StandardScaler().fit(series.values[start:end])


def count_windows(rows: tuple[int, int], lookback: int, horizon: int, stride: int = 1) -> int:
    """How many windows (lookback + horizon rows, origins every ``stride`` rows) fit in ``rows``."""
    start, end = rows
    return (end - start - lookback - horizon) // stride + 1


class Windows:
    """Windows of ``lookback`` rows followed by ``horizon`` target rows, origins every ``stride`` rows.

    A window's times are relative to its end (the first forecast time), so they lie in
    ``[-lookback * dt, 0)``, where ``dt`` is the series' median sampling interval.

    Args:
        series: the whole series; ``rows = (start, end)`` restricts windows (lookback and target) to it.
        channel_ids: ``[C]`` vocabulary ids of ``series.channels``.
        scaler: applied to values (fit on train only); None keeps raw values.
        hidden: ``[T, C]`` bool, observations withheld from lookbacks (targets keep them), e.g. to make a
            regular series irregular per channel (`drop_observations`).
        origins: explicit first rows after each lookback (instead of every ``stride`` rows), e.g. windows
            whose last patches tile a test range.
    """

    def __init__(
        self,
        series: TimeSeries,
        rows: tuple[int, int],
        lookback: int,
        horizon: int,
        channel_ids: np.ndarray,
        scaler: StandardScaler | None = None,
        stride: int = 1,
        hidden: np.ndarray | None = None,
        origins: np.ndarray | None = None,
    ) -> None:
        start, end = rows
        values = series.values if scaler is None else scaler.transform(series.values)
        self.values = torch.from_numpy(np.ascontiguousarray(values.T, dtype=np.float32))  # [C, T]
        times = series.times
        self.dt = float(np.median(np.diff(times))) if len(times) > 1 else 1.0
        self.times = torch.from_numpy(times)  # [T] float64: exact before subtraction
        self.hidden = None if hidden is None else torch.from_numpy(np.ascontiguousarray(hidden.T))  # [C, T]
        self.channel_ids = torch.as_tensor(channel_ids, dtype=torch.long)
        self.lookback, self.horizon = lookback, horizon
        count = count_windows(rows, lookback, horizon, stride)
        if count < 1:
            raise ValueError(
                f"rows [{start}, {end}) are too short for lookback {lookback} + horizon {horizon}"
            )
        if origins is None:
            self.origins = start + lookback + stride * torch.arange(count)  # first row after each lookback
        else:
            self.origins = torch.as_tensor(origins, dtype=torch.long)
            if len(self.origins) and (self.origins.min() < start + lookback or self.origins.max() > end - horizon):
                raise ValueError(f"window origins must lie in [{start + lookback}, {end - horizon}] for rows "
                                 f"[{start}, {end}), lookback {lookback}, horizon {horizon}")

    @property
    def span(self) -> float:
        return self.lookback * self.dt

    def __len__(self) -> int:
        return len(self.origins)

    def batch(self, index: torch.Tensor) -> Batch:
        """Windows ``index`` (``[B]`` long) as a `Batch`: values/times/observed ``[B, C, L]``, target ``[B, C, H]``."""
        origin = self.origins[index]
        past = origin[:, None] + torch.arange(-self.lookback, 0)  # [B, L]
        end_time = self.times[origin - 1] + self.dt
        times = (self.times[past] - end_time[:, None]).float()  # [B, L]
        values = self.values[:, past].permute(1, 0, 2)  # [B, C, L]
        observed = ~torch.isnan(values)
        if self.hidden is not None:
            observed &= ~self.hidden[:, past].permute(1, 0, 2)
        n_channels = values.shape[1]
        batch = Batch(
            values=values.nan_to_num(0.0),
            times=times[:, None, :].expand(-1, n_channels, -1).contiguous(),
            observed=observed,
            channel_ids=self.channel_ids[None, :].expand(len(index), -1).contiguous(),
        )
        if self.horizon:
            future = self.values[:, origin[:, None] + torch.arange(self.horizon)].permute(1, 0, 2)
            batch.target_observed = ~torch.isnan(future)
            batch.target = future.nan_to_num(0.0)
        return batch


def drop_observations(series: TimeSeries, fraction: float, seed: int) -> np.ndarray:
    """``[T, C]`` bool: each observation withheld independently with probability ``fraction`` (per channel,
    fixed ``seed``), so every channel keeps its own irregular subset of time stamps."""
    if not 0 <= fraction < 1:
        raise ValueError(f"drop fraction must lie in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    return (rng.random(series.values.shape) < fraction) & series.observed
