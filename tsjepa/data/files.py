"""A user's own file as a dataset: ``data=file data.path=PATH`` on the command line.

CSV (also gzip), Parquet, NetCDF or Zarr; wide (a time column and a column per channel) or long
(``timestamp, channel, value`` rows). The file becomes a `TimeSeries` through `as_timeseries`, so it gets the
same checks and errors as any other input, and a card with the 70/10/20 protocol (overridable), whose
channel namespace is the file's stem unless ``data.namespace`` is given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
from omegaconf import DictConfig, OmegaConf

from tsjepa.data.timeseries import TimeSeries, as_timeseries

TABLE_SUFFIXES = {".csv": pd.read_csv, ".tsv": lambda p: pd.read_csv(p, sep="\t"), ".parquet": pd.read_parquet,
                  ".pq": pd.read_parquet}
ARRAY_SUFFIXES = {".nc": xr.open_dataset, ".nc4": xr.open_dataset, ".netcdf": xr.open_dataset,
                  ".zarr": xr.open_zarr}
FORMATS = ("auto", "wide", "long")

if not OmegaConf.has_resolver("stem"):  # configs/data/file.yaml names the dataset after the file
    OmegaConf.register_new_resolver("stem", lambda path: "file" if path is None else file_stem(Path(str(path))))


class FileError(ValueError):
    """The file cannot be read as a time series (missing, unknown type, wrong columns)."""


def file_stem(path: Path) -> str:
    """``data/load.csv.gz`` -> ``load``."""
    name = path.name
    for suffix in (".gz", *TABLE_SUFFIXES, *ARRAY_SUFFIXES):
        name = name.removesuffix(suffix)
    return name


def _suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def read_file(path: str | Path, format: str = "auto", time_column: str | None = None,
              channel_column: str = "channel", value_column: str = "value", freq: str | None = None,
              name: str | None = None) -> TimeSeries:
    """The time series held by a CSV / Parquet (wide or long) or NetCDF / Zarr file.

    Wide: ``time_column`` (default: the first column) holds the timestamps, every other column is a
    channel. Long: ``time_column`` (default ``timestamp``), ``channel_column`` and ``value_column`` rows.
    ``auto`` reads a table as long when it has those three columns. NetCDF / Zarr: a Dataset with one
    variable per channel over ``time``, or a single DataArray over (``time``, ``channel``).
    """
    path = Path(path).expanduser()
    if format not in FORMATS:
        raise FileError(f"data.format must be one of {FORMATS}, got {format!r}")
    if not path.exists():
        raise FileError(f"{path} does not exist")
    suffix = _suffix(path)
    name = name or file_stem(path)
    if suffix in ARRAY_SUFFIXES:
        try:
            data = ARRAY_SUFFIXES[suffix](path)
        except (OSError, ValueError) as err:
            raise FileError(f"{path} cannot be read as {suffix[1:]}: {err}") from err
        if len(data.data_vars) == 1 and set(next(iter(data.data_vars.values())).dims) == {"time", "channel"}:
            data = next(iter(data.data_vars.values()))
        if "time" not in data.coords:
            raise FileError(f"{path}: no 'time' coordinate (found {list(data.coords)})")
        return observed_channels(as_timeseries(data.assign_attrs(name=name),
                                               step=freq or median_step(data["time"].values)), path)
    if suffix not in TABLE_SUFFIXES:
        raise FileError(f"{path}: unknown file type {suffix or '(none)'}; use one of "
                        f"{sorted(TABLE_SUFFIXES) + sorted(ARRAY_SUFFIXES)} (CSV may be gzipped)")
    try:
        frame = TABLE_SUFFIXES[suffix](path)
    except (OSError, ValueError) as err:
        raise FileError(f"{path} cannot be read as {suffix[1:]}: {err}") from err
    if frame.empty:
        raise FileError(f"{path} holds no rows")
    long_columns = (time_column or "timestamp", channel_column, value_column)
    if format == "long" or (format == "auto" and set(long_columns) <= set(frame.columns)):
        missing = [c for c in long_columns if c not in frame.columns]
        if missing:
            raise FileError(f"{path}: a long file needs columns {list(long_columns)}; missing {missing} "
                            f"(found {list(frame.columns)}); set data.time_column / channel_column / value_column")
        times = _timestamps(frame[long_columns[0]])
        frame = frame.assign(**{long_columns[0]: times})
        return observed_channels(as_timeseries(frame, step=freq or median_step(times), name=name,
                                               time=long_columns[0], channel=channel_column,
                                               value=value_column), path)
    if time_column == ROW_INDEX:  # rows are consecutive steps, one time unit each
        if freq:
            raise FileError(f"{path}: data.time_column=row reads each row as one time unit; drop data.freq")
        frame.index = np.arange(len(frame), dtype=np.float64)
        return observed_channels(as_timeseries(frame, name=name), path)
    if time_column is None:
        first = frame.columns[0]
        looks_like_time = str(first).strip().lower() in TIME_NAMES or not pd.api.types.is_numeric_dtype(frame[first])
        if not looks_like_time:
            raise FileError(f"{path}: no time column: the first column {first!r} holds numbers and is not named "
                            f"like a time ({sorted(TIME_NAMES)}); set data.time_column=<its name> if it is the "
                            "time, or data.time_column=row to read the rows as consecutive steps")
    time_column = time_column or str(frame.columns[0])
    if time_column not in frame.columns:
        raise FileError(f"{path}: no time column {time_column!r} (columns {list(frame.columns)})")
    frame = frame.set_index(time_column)
    frame.index = _timestamps(frame.index)
    return observed_channels(as_timeseries(frame, step=freq or median_step(frame.index), name=name), path)


def observed_channels(series: TimeSeries, path: Path) -> TimeSeries:
    """``series`` read from ``path``, refused when a channel holds no observed value (nothing to learn from or
    forecast: drop the column, or fill it where the file marks missing values with a code)."""
    empty = [c for c, seen in zip(series.channels, ~np.isnan(series.values).all(0), strict=True) if not seen]
    if empty:
        raise FileError(f"{path}: channel(s) {empty} hold no observed value; drop them from the file")
    return series


ROW_INDEX = "row"  # data.time_column=row: no time column, each row one time unit
TIME_NAMES = frozenset({"time", "timestamp", "date", "datetime", "ds", "t", "index"})


def median_step(times) -> str | None:
    """The median positive interval of datetime ``times`` as a step string (``3600s``); None for numeric
    times, which need no step."""
    times = pd.Series(pd.unique(pd.Series(times).dropna()))
    if not pd.api.types.is_datetime64_any_dtype(times):
        return None
    gaps = times.sort_values().diff().dropna()
    gaps = gaps[gaps > pd.Timedelta(0)]
    if gaps.empty:
        raise FileError("cannot infer the sampling step from fewer than two distinct timestamps; set data.freq")
    return f"{gaps.median().total_seconds():g}s"


def _timestamps(values):
    """Timestamps as datetimes when they parse as such, numeric times as they are."""
    if pd.api.types.is_numeric_dtype(values) or pd.api.types.is_datetime64_any_dtype(values):
        return values
    try:
        return pd.to_datetime(values)
    except (ValueError, TypeError) as err:
        raise FileError(f"timestamps cannot be parsed as dates or numbers: {err}") from err


def file_card(data: DictConfig, name: str, file: str = ""):
    """The `DatasetCard` of a user's series ``name`` (a file's stem, or an in-memory series' name): ``name``
    (or ``data.namespace``) as channel namespace, and the protocol from ``data.fractions`` /
    ``data.horizons`` / ``data.season``."""
    from tsjepa.data.sources import DatasetCard

    fractions = [float(f) for f in data.fractions]
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6 or fractions[0] == 0:
        raise FileError(f"data.fractions must be three shares (train, val, test) summing to 1, got {fractions}")
    return DatasetCard(name=name, file=file, url="", sha256="", license="user data",
                       format="file", freq=str(data.freq or ""),
                       protocol={"fractions": fractions, "horizons": [int(h) for h in data.horizons],
                                 "season": int(data.season)},
                       time_column=data.time_column, channel_namespace=str(data.namespace or name))


def load_file(data: DictConfig) -> tuple[TimeSeries, object]:
    """``data=file``: the series of ``data.path`` and its card."""
    if data.get("path") is None:
        raise FileError("data=file needs data.path=PATH (a CSV, Parquet, NetCDF or Zarr file)")
    path = Path(str(data.path)).expanduser()
    card = file_card(data, file_stem(path), str(path))
    series = read_file(path, str(data.format), data.time_column, str(data.channel_column),
                       str(data.value_column), data.freq, card.name)
    return series, card
