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


def labelled_scaler(observations: np.ndarray) -> StandardScaler:
    """Per-channel standardisation of a collection's train observations ``[N, C]`` (NaNs ignored)."""
    return StandardScaler().fit(observations)


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
        self.dt = series.interval
        self.times = torch.from_numpy(series.times)  # [T] float64: exact before subtraction
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


class SpanWindows:
    """Windows of duration ``span`` (time units) ending at given rows: window ``i`` holds the observations
    with times in ``[e_i - span, e_i)``, where ``e_i`` is the time of row ``ends[i]`` (or one sampling
    interval after the last row when ``ends[i] == len(series)``), so a window near the start holds fewer
    rows and is padded as unobserved, and irregular series need no resampling. ``horizon`` target rows
    follow each window end. Same interface as `Windows` (``span``, ``len``, ``batch``).

    Args:
        series: the series; its timestamps in model time units (`TimeSeries.times`).
        ends: ``[N]`` row index of each window end, in ``[1, len(series) - horizon]``.
        span: window duration in time units (the encoder's ``span``).
        horizon: target rows after each window end (0: none).
        channel_ids: ``[C]`` vocabulary ids of ``series.channels``.
        scaler: applied to values; None keeps raw values.
    """

    def __init__(self, series: TimeSeries, ends: np.ndarray, span: float, horizon: int, channel_ids: np.ndarray,
                 scaler: StandardScaler | None = None) -> None:
        ends = np.asarray(ends, dtype=np.int64)
        if len(ends) and (ends.min() < 1 or ends.max() > len(series) - horizon):
            raise ValueError(f"window ends must lie in [1, {len(series) - horizon}] for a series of "
                             f"{len(series)} rows and horizon {horizon}; got {ends.min()}..{ends.max()}")
        values = series.values if scaler is None else scaler.transform(series.values)
        self.values = torch.from_numpy(np.ascontiguousarray(values.T, dtype=np.float32))  # [C, T]
        times = series.times
        self.end_times, self.starts = span_bounds(series, ends, span)  # [N] float64, [N] first row inside
        self.times, self.ends = times, ends
        self.span, self.horizon = float(span), horizon
        self.channel_ids = torch.as_tensor(channel_ids, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.ends)

    def batch(self, index: torch.Tensor) -> Batch:
        """Windows ``index`` ``[B]`` padded to the longest: values/times/observed ``[B, C, T_max]``, target
        ``[B, C, H]``."""
        picked = [int(i) for i in index]
        rows = {i: slice(self.starts[i], self.ends[i]) for i in picked}
        times = [torch.from_numpy(self.times[rows[i]] - self.end_times[i]).float() for i in picked]
        batch = Batch.padded([self.values[:, rows[i]] for i in picked], times, self.channel_ids, -self.span)
        if self.horizon:
            future = torch.stack([self.values[:, self.ends[i]:self.ends[i] + self.horizon] for i in picked])
            batch.target_observed = ~torch.isnan(future)
            batch.target = future.nan_to_num(0.0)
        return batch


def observed_ends(series: TimeSeries, span: float, min_observed: int) -> np.ndarray:
    """Row indices ``e`` (windows ``[t_e - span, t_e)``) whose window holds at least ``min_observed`` rows
    with an observation, for pretraining on every row of a series."""
    rows = np.arange(1, len(series) + 1)
    _, starts = span_bounds(series, rows, span)
    seen = np.concatenate([[0], np.cumsum(series.observed.any(1))])
    return rows[seen[rows] - seen[starts] >= min_observed]


def span_bounds(series: TimeSeries, ends: np.ndarray, span: float) -> tuple[np.ndarray, np.ndarray]:
    """For windows of duration ``span`` ending at rows ``ends`` ``[N]``: their end times (the time of row
    ``e``, or one sampling interval after the last row when ``e == len(series)``) and their first rows."""
    times = series.times
    end_times = np.append(times, times[-1] + series.interval)[ends]
    return end_times, np.searchsorted(times, end_times - span, side="left")


def drop_observations(series: TimeSeries, fraction: float, seed: int) -> np.ndarray:
    """``[T, C]`` bool: each observation withheld independently with probability ``fraction`` (per channel,
    fixed ``seed``), so every channel keeps its own irregular subset of time stamps."""
    if not 0 <= fraction < 1:
        raise ValueError(f"drop fraction must lie in [0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    return (rng.random(series.values.shape) < fraction) & series.observed


class TiledSeries:
    """A collection of regularly sampled series of any lengths (row ``t`` at time ``t``), each tiled from its
    last row backwards by windows of ``span`` rows: series ``i`` of ``T_i`` rows gives ``ceil(T_i / span)``
    windows, the earliest padded as unobserved, so a short series is one window observed only in its last
    patches and no series is cut or resampled. Windows without an observation are left out. Same interface as
    `Windows` (``span``, ``len``, ``batch``); ``owner`` ``[N]`` names each window's series.

    Args:
        values: per series ``[T_i, C]`` float (NaN = unobserved), the same ``C`` channels.
        span: window duration in rows (time units).
        channel_ids: ``[C]`` vocabulary ids of the channels.
        scaler: applied to values (fit on train series only); None keeps raw values.
    """

    def __init__(self, values: list[np.ndarray], span: float, channel_ids: np.ndarray,
                 scaler: StandardScaler | None = None) -> None:
        if span < 1:
            raise ValueError(f"span must hold at least one row, got {span}")
        self.span = float(span)
        width = int(np.floor(self.span + 1e-9))  # rows t with t - end >= -span
        self.values = [torch.from_numpy(np.ascontiguousarray((v if scaler is None else scaler.transform(v)).T,
                                                             dtype=np.float32)) for v in values]  # [C, T_i]
        owner, ends = [], []
        for i, series in enumerate(values):
            seen = np.concatenate([[0], np.cumsum(~np.isnan(series).all(1))])
            for end in range(len(series), 0, -width):
                if seen[end] > seen[max(end - width, 0)]:
                    owner.append(i), ends.append(end)
        self.owner, self.ends = np.array(owner, dtype=np.int64), np.array(ends, dtype=np.int64)
        self.width = width
        self.channel_ids = torch.as_tensor(channel_ids, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.owner)

    def batch(self, index: torch.Tensor) -> Batch:
        """Windows ``index`` ``[B]`` padded to the longest: values/times/observed ``[B, C, T_max]``."""
        picked = [int(i) for i in index]
        parts, times = [], []
        for i in picked:
            end = int(self.ends[i])
            start = max(end - self.width, 0)
            parts.append(self.values[self.owner[i]][:, start:end])
            times.append(torch.arange(start - end, 0, dtype=torch.float32))
        return Batch.padded(parts, times, self.channel_ids, -self.span)
