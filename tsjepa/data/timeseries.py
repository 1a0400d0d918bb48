"""A validated multichannel time series backed by `xarray` (dims ``time`` x ``channel``).

NaN means "not observed". Timestamps are the union of every channel's observation times, so regular,
irregular (each channel on its own clock) and partially missing data share one container and nothing is
resampled: a channel that was not measured at a time stamp simply holds NaN there.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr


class TimeSeriesError(ValueError):
    """Raised for input that cannot form a valid time series (shape, ordering, dtype)."""


def _check_increasing(time: np.ndarray, what: str) -> None:
    if time.size > 1:
        step = np.diff(time)
        bad = np.flatnonzero(step <= 0 if np.issubdtype(step.dtype, np.number) else step <= np.timedelta64(0))
        if bad.size:
            i = int(bad[0])
            kind = "duplicate" if time[i + 1] == time[i] else "unsorted"
            raise TimeSeriesError(
                f"{what}: {kind} timestamps at positions {i} and {i + 1} ({time[i]!r}, {time[i + 1]!r}); "
                "timestamps must be strictly increasing"
            )


class TimeSeries:
    """Channels observed over time. ``data`` is an ``xr.DataArray`` with dims ``("time", "channel")``.

    Args:
        values: ``[T, C]`` numbers; NaN marks an unobserved entry.
        time: ``[T]`` strictly increasing timestamps (``datetime64`` or float).
        channels: ``C`` unique channel names.
        step: for datetime timestamps, the duration of one time unit (e.g. ``"1h"``); model times are
            expressed in these units. Float timestamps are used as they are.
        name: dataset name, kept in ``attrs``.
        static: optional per-series metadata (e.g. PhysioNet descriptors), kept in ``attrs``.
    """

    def __init__(
        self,
        values: np.ndarray,
        time: Sequence | np.ndarray,
        channels: Sequence[str],
        step: str | pd.Timedelta | None = None,
        name: str = "series",
        static: dict[str, float] | None = None,
    ) -> None:
        values = np.asarray(values)
        if values.ndim != 2:
            raise TimeSeriesError(f"values must be 2-D [time, channel], got shape {values.shape}")
        if not np.issubdtype(values.dtype, np.number):
            raise TimeSeriesError(f"values must be numeric, got dtype {values.dtype}")
        values = values.astype(np.float32)
        if np.isinf(values).any():
            raise TimeSeriesError("values contain +/-inf; use NaN for unobserved entries")
        time = np.asarray(time)
        if time.shape != (values.shape[0],):
            raise TimeSeriesError(f"time has shape {time.shape}, expected ({values.shape[0]},) to match values")
        channels = [str(c) for c in channels]
        if len(channels) != values.shape[1]:
            raise TimeSeriesError(f"{len(channels)} channel names for {values.shape[1]} value columns")
        if len(set(channels)) != len(channels):
            raise TimeSeriesError(f"duplicate channel names: {channels}")
        _check_increasing(time, name)
        is_datetime = np.issubdtype(time.dtype, np.datetime64)
        if is_datetime and step is None:
            raise TimeSeriesError("datetime timestamps need a `step` (time unit), e.g. step='1h'")
        attrs = {"name": name, "static": dict(static or {})}
        if is_datetime:
            attrs["step"] = str(pd.Timedelta(step))
        self.data = xr.DataArray(
            values, dims=("time", "channel"), coords={"time": time, "channel": channels}, attrs=attrs
        )

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_xarray(cls, data: xr.DataArray, step: str | None = None) -> TimeSeries:
        """From a DataArray with dims ``time`` and ``channel`` (any order)."""
        if set(data.dims) != {"time", "channel"}:
            raise TimeSeriesError(f"DataArray dims must be ('time', 'channel'), got {data.dims}")
        data = data.transpose("time", "channel")
        return cls(
            data.values,
            data["time"].values,
            data["channel"].values.tolist(),
            step=step or data.attrs.get("step"),
            name=data.attrs.get("name", data.name or "series"),
            static=data.attrs.get("static"),
        )

    @classmethod
    def from_wide(cls, frame: pd.DataFrame, step: str | None = None, name: str = "series") -> TimeSeries:
        """From a wide DataFrame: index = timestamps, one numeric column per channel."""
        bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if bad:
            raise TimeSeriesError(f"non-numeric columns {bad}; every channel column must hold numbers")
        return cls(frame.to_numpy(), frame.index.to_numpy(), frame.columns, step=step, name=name)

    # ---------------------------------------------------------------- views
    @property
    def name(self) -> str:
        return self.data.attrs["name"]

    @property
    def channels(self) -> list[str]:
        return [str(c) for c in self.data["channel"].values]

    @property
    def values(self) -> np.ndarray:
        """``[T, C]`` float32 with NaN where unobserved."""
        return self.data.values

    @property
    def observed(self) -> np.ndarray:
        """``[T, C]`` bool."""
        return ~np.isnan(self.data.values)

    @property
    def times(self) -> np.ndarray:
        """``[T]`` float64 timestamps in model time units (``step`` for datetime series)."""
        time = self.data["time"].values
        if np.issubdtype(time.dtype, np.datetime64):
            step = pd.Timedelta(self.data.attrs["step"]).to_timedelta64()
            return ((time - time[0]) / step).astype(np.float64)
        return time.astype(np.float64)

    def __len__(self) -> int:
        return self.data.sizes["time"]

    def __repr__(self) -> str:
        return f"TimeSeries({self.name!r}, time={len(self)}, channels={self.channels})"
