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


MAX_ABS_VALUE = 1e15  # larger values would overflow float32 sums of squares (instance norm, scalers)
MAX_TIME_UNITS = 1e9  # a series spanning more time units than this has a step far too small for its data
NETCDF_FILL = 9.969209968386869e36  # NC_FILL_FLOAT / NC_FILL_DOUBLE: NetCDF's default missing-value marker


def fixed_duration(text) -> pd.Timedelta | None:
    """``text`` as a fixed duration (``1h``, ``15min``, ``7D``); None for plain numbers (``1``: one row) and
    calendar units (``1 month``), which are no fixed length of time."""
    if not isinstance(text, str) or not any(c.isalpha() for c in text):
        return None
    try:
        return pd.Timedelta(text)
    except ValueError:
        return None


def _as_time(time, name: str) -> np.ndarray:
    """Timestamps as numbers or naive datetime64 (timezone-aware ones in UTC, strings parsed); NaN / NaT are
    an error naming the position."""
    index = pd.Index(time)
    if isinstance(index, pd.DatetimeIndex) and index.tz is not None:
        index = index.tz_convert("UTC").tz_localize(None)
    elif index.dtype == object or pd.api.types.is_string_dtype(index.dtype):
        if len(index) and all(isinstance(t, int | float | np.number) for t in index):
            index = pd.Index(np.asarray(index, dtype=np.float64))
        else:
            try:
                index = pd.DatetimeIndex(pd.to_datetime(index, utc=True)).tz_localize(None)
            except (ValueError, TypeError) as err:
                raise TimeSeriesError(f"{name}: timestamps must be numbers or dates; cannot parse them ({err})") from err
    if not (pd.api.types.is_numeric_dtype(index.dtype) or pd.api.types.is_datetime64_any_dtype(index.dtype)):
        raise TimeSeriesError(f"{name}: timestamps must be numbers or dates, got dtype {index.dtype}")
    missing = np.flatnonzero(pd.isna(index))
    if missing.size:
        raise TimeSeriesError(f"{name}: missing timestamp (NaN/NaT) at position {int(missing[0])}")
    return index.to_numpy()


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
        if np.iscomplexobj(values):
            raise TimeSeriesError(f"{name}: values are complex ({values.dtype}); pass the real and imaginary parts "
                                  "(or magnitude and phase) as channels of their own")
        if values.shape[0] == 0 or values.shape[1] == 0:
            raise TimeSeriesError(f"{name}: no data ({values.shape[0]} rows x {values.shape[1]} channels)")
        channels = [str(c) for c in channels]
        with np.errstate(over="ignore", invalid="ignore"):
            magnitude = np.nanmax(np.abs(values.astype(np.float64)), axis=0, initial=0.0)
        if np.isinf(magnitude).any():
            raise TimeSeriesError(f"{name}: values contain +/-inf (channel {_first(channels, np.isinf(magnitude))}); "
                                  "use NaN for unobserved entries")
        if (magnitude > MAX_ABS_VALUE).any():
            filled = (np.abs(values.astype(np.float64) - NETCDF_FILL) < 1e31).any(0)
            if filled.any():
                raise TimeSeriesError(f"{name}: channel {_first(channels, filled)} holds {NETCDF_FILL:.6g}, the NetCDF "
                                      "default fill value: a missing-value marker, not a measurement; open the file "
                                      "with its _FillValue applied (xarray's mask_and_scale) or replace it by NaN")
            bad = _first(channels, magnitude > MAX_ABS_VALUE)
            raise TimeSeriesError(f"{name}: channel {bad} has values up to {magnitude.max():.3g}, beyond "
                                  f"{MAX_ABS_VALUE:g}, where float32 arithmetic overflows; rescale it (e.g. change units)")
        values = values.astype(np.float32)
        time = _as_time(time, name)
        if time.shape != (values.shape[0],):
            raise TimeSeriesError(f"time has shape {time.shape}, expected ({values.shape[0]},) to match values")
        if len(channels) != values.shape[1]:
            raise TimeSeriesError(f"{len(channels)} channel names for {values.shape[1]} value columns")
        if len(set(channels)) != len(channels):
            raise TimeSeriesError(f"duplicate channel names: {channels}")
        _check_increasing(time, name)
        is_datetime = np.issubdtype(time.dtype, np.datetime64)
        if not is_datetime and step is not None:
            raise TimeSeriesError(f"{name}: step={step!r} applies to datetime timestamps, but these are numbers "
                                  "(already in time units); drop step, or pass datetime timestamps")
        if is_datetime and step is None:
            raise TimeSeriesError("datetime timestamps need a `step` (time unit), e.g. step='1h'")
        attrs = {"name": name, "static": dict(static or {})}
        if is_datetime:
            try:
                unit = pd.Timedelta(step)
            except (ValueError, TypeError) as err:
                raise TimeSeriesError(f"{name}: step {step!r} is not a duration such as '1h' ({err})") from err
            if pd.isna(unit) or unit <= pd.Timedelta(0):
                raise TimeSeriesError(f"{name}: step must be a positive duration, got {step!r}")
            units = (time[-1] - time[0]) / unit.to_timedelta64()
            if units > MAX_TIME_UNITS:
                raise TimeSeriesError(f"{name}: step {step!r} makes the series {units:.3g} time units long; "
                                      f"use a step near the sampling interval ({pd.Timedelta(np.median(np.diff(time)))})")
            attrs["step"] = str(unit)
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
        if frame.columns.duplicated().any():
            raise TimeSeriesError(f"duplicate channel names: {sorted(set(frame.columns[frame.columns.duplicated()]))}")
        bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if bad:
            raise TimeSeriesError(f"non-numeric columns {bad}; every channel column must hold numbers")
        return cls(frame.to_numpy(), frame.index.to_numpy(), frame.columns, step=step, name=name)

    @classmethod
    def from_dataset(cls, data: xr.Dataset, step: str | None = None) -> TimeSeries:
        """From an ``xr.Dataset`` with one data variable per channel, each over the dim ``time``."""
        bad = [str(k) for k, v in data.data_vars.items() if v.dims != ("time",)]
        if bad:
            raise TimeSeriesError(f"data variables {bad} are not 1-D over 'time'; one variable per channel")
        return cls.from_xarray(data.to_array("channel").transpose("time", "channel"), step=step)

    @classmethod
    def from_long(
        cls,
        frame: pd.DataFrame,
        time: str = "timestamp",
        channel: str = "channel",
        value: str = "value",
        channels: Sequence[str] | None = None,
        step: str | None = None,
        name: str = "series",
    ) -> TimeSeries:
        """From a long DataFrame, one row per observation ``(time, channel, value)``.

        Each channel keeps its own timestamps (rows must be sorted by time within a channel, without
        duplicates); the result is on the union of all timestamps with NaN where a channel was not observed.
        ``channels``, when given, is the set of known channels: rows naming another channel are an error,
        and the output's channels come in that order (a known channel with no row is all-NaN).
        """
        missing = [c for c in (time, channel, value) if c not in frame.columns]
        if missing:
            raise TimeSeriesError(f"long frame lacks column(s) {missing}; it has {list(frame.columns)}")
        if not pd.api.types.is_numeric_dtype(frame[value]):
            raise TimeSeriesError(f"column {value!r} must be numeric, got dtype {frame[value].dtype}")
        names = list(dict.fromkeys(str(c) for c in frame[channel]))
        if channels is not None:
            unknown = sorted(set(names) - {str(c) for c in channels})
            if unknown:
                raise TimeSeriesError(f"unknown channel(s) {unknown}; expected only {list(channels)}")
            names = [str(c) for c in channels]
        keyed = frame.assign(**{channel: frame[channel].astype(str), time: _as_time(frame[time], name)})
        for key, rows in keyed.groupby(channel, sort=False):
            _check_increasing(rows[time].to_numpy(), f"channel {key!r}")
        wide = keyed.pivot(index=time, columns=channel, values=value).sort_index()
        return cls.from_wide(wide.reindex(columns=names), step=step, name=name)

    @classmethod
    def from_channels(
        cls,
        observations: dict[str, tuple[Sequence, Sequence]] | Sequence[tuple[Sequence, Sequence]],
        channels: Sequence[str] | None = None,
        step: str | None = None,
        name: str = "series",
        static: dict[str, float] | None = None,
    ) -> TimeSeries:
        """From per-channel ``(timestamps [T_c], values [T_c])`` pairs, each channel on its own clock: a dict
        ``name -> pair``, or a list of pairs named by ``channels`` (default ``"0", "1", ...``)."""
        if not isinstance(observations, dict):
            names = [str(c) for c in channels] if channels is not None else [str(i) for i in range(len(observations))]
            if len(names) != len(observations):
                raise TimeSeriesError(f"{len(names)} channel names for {len(observations)} channels")
            observations = dict(zip(names, observations, strict=True))
        columns = {}
        for key, (stamps, vals) in observations.items():
            stamps, vals = np.asarray(stamps), np.asarray(vals)
            if stamps.ndim == 1 and stamps.size:
                stamps = _as_time(stamps, f"channel {key!r}")
            if stamps.shape != vals.shape or stamps.ndim != 1:
                raise TimeSeriesError(
                    f"channel {key!r}: timestamps {stamps.shape} and values {vals.shape} must be equal-length 1-D"
                )
            if not np.issubdtype(vals.dtype, np.number):
                raise TimeSeriesError(f"channel {key!r}: values must be numeric, got dtype {vals.dtype}")
            _check_increasing(stamps, f"channel {key!r}")
            columns[str(key)] = pd.Series(vals.astype(np.float64), index=stamps)
        if not columns:
            raise TimeSeriesError("no channels given")
        wide = pd.DataFrame(columns).sort_index()
        return cls(wide.to_numpy(), wide.index.to_numpy(), wide.columns, step=step, name=name, static=static)

    # ---------------------------------------------------------------- views
    @property
    def name(self) -> str:
        return self.data.attrs["name"]

    @property
    def static(self) -> dict[str, float]:
        """Per-series metadata (e.g. a patient's age); NaN = missing."""
        return self.data.attrs["static"]

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

    @property
    def interval(self) -> float:
        """Median spacing of the timestamps in model time units (1.0 for a single row)."""
        times = self.times
        return float(np.median(np.diff(times))) if len(times) > 1 else 1.0

    def time_at(self, model_times: np.ndarray) -> np.ndarray:
        """Model times (`times` units, any shape) as values of this series' own time coordinate."""
        time = self.data["time"].values
        if np.issubdtype(time.dtype, np.datetime64):
            step = pd.Timedelta(self.data.attrs["step"]).to_timedelta64()
            return time[0] + np.round(model_times * step.astype(np.int64)).astype("timedelta64[ns]")
        return model_times

    def __len__(self) -> int:
        return self.data.sizes["time"]

    def __repr__(self) -> str:
        return f"TimeSeries({self.name!r}, time={len(self)}, channels={self.channels})"


def _first(channels: list[str], mask: np.ndarray) -> str:
    return repr(channels[int(np.flatnonzero(mask)[0])])


def as_timeseries(data, step: str | None = None, name: str = "series", **long_format) -> TimeSeries:
    """Any supported input as a `TimeSeries`.

    Accepts a `TimeSeries`; an ``xr.DataArray`` (dims time x channel) or ``xr.Dataset`` (a variable per
    channel); a wide ``pd.DataFrame`` (index = timestamps, a column per channel); a long ``pd.DataFrame``
    with ``timestamp, channel, value`` columns (names overridable via ``long_format``, which also takes
    ``channels``); or per-channel ``(timestamps, values)`` pairs, as a dict by channel name or a list
    (names from ``channels=``).
    """
    def unused(*keys: str) -> None:  # an argument this input form does not read is an error, never ignored
        given = sorted(k for k in keys if k in long_format) + (["step"] if "step" in keys and step else [])
        if given:
            raise TimeSeriesError(f"{', '.join(given)} do(es) not apply to a {type(data).__name__} input; "
                                  "long-format keys (time, channel, value, channels) apply to long DataFrames, "
                                  "channels= also to per-channel (timestamps, values) pairs")

    unknown = sorted(set(long_format) - {"time", "channel", "value", "channels"})
    if unknown:
        raise TimeSeriesError(f"as_timeseries got unknown argument(s) {unknown}")
    if isinstance(data, TimeSeries):
        unused("time", "channel", "value", "channels", "step")
        return data
    if isinstance(data, xr.DataArray | xr.Dataset):
        unused("time", "channel", "value", "channels")
        return (TimeSeries.from_xarray if isinstance(data, xr.DataArray) else TimeSeries.from_dataset)(data, step=step)
    if isinstance(data, pd.DataFrame):
        columns = (long_format.get("time", "timestamp"), long_format.get("channel", "channel"),
                   long_format.get("value", "value"))
        if set(columns) <= set(data.columns):
            return TimeSeries.from_long(data, step=step, name=name, **long_format)
        unused("time", "channel", "value", "channels")
        return TimeSeries.from_wide(data, step=step, name=name)
    if isinstance(data, dict | list | tuple):
        unused("time", "channel", "value")
        return TimeSeries.from_channels(data, long_format.get("channels"), step=step, name=name)
    raise TimeSeriesError(
        f"cannot make a time series from {type(data).__name__}; pass a DataFrame (wide or long), an xarray "
        "DataArray/Dataset, or a dict channel -> (timestamps, values)"
    )
