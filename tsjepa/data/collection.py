"""Collections of many short univariate series (the long-format files of the pretraining corpus: M4, M3,
tourism), and the pretraining windows over them.

Each series runs on its own step clock (time unit = one step). For pretraining, the series are laid end to
end on one time axis with a gap wider than a window between them, so a window of duration ``span`` never
holds two series, and a `SpanWindows` over that axis serves every series at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tsjepa.data.timeseries import TimeSeries
from tsjepa.data.windows import SpanWindows

LONG_COLUMNS = ("series_id", "step", "value")


class CollectionError(ValueError):
    """A long-format file that does not hold well-formed series."""


@dataclass(frozen=True)
class SeriesCollection:
    """Univariate series of one source, each ``[T_i]`` float values at steps ``0 .. T_i - 1``, under one channel
    name (so every series of a file shares one channel identity)."""

    name: str
    ids: tuple[str, ...]
    values: tuple[np.ndarray, ...]
    channel: str = "value"

    @property
    def channels(self) -> list[str]:
        return [self.channel]

    def __len__(self) -> int:
        return len(self.values)


def read_long_csv(path: Path, name: str) -> SeriesCollection:
    """``series_id, step, value`` rows (steps ``0 .. n-1`` within each series, in order) -> a collection."""
    frame = pd.read_csv(path, dtype={"series_id": str})
    if tuple(frame.columns) != LONG_COLUMNS:
        raise CollectionError(f"{path}: expected columns {LONG_COLUMNS}, found {tuple(frame.columns)}")
    ids, values = [], []
    for series_id, group in frame.groupby("series_id", sort=False):
        steps = group["step"].to_numpy()
        if not np.array_equal(steps, np.arange(len(steps))):
            raise CollectionError(f"{path}: series {series_id!r} does not run through steps 0..{len(steps) - 1}")
        ids.append(str(series_id))
        values.append(group["value"].to_numpy(dtype=np.float32))
    return SeriesCollection(name, tuple(ids), tuple(values))


def standardised(values: np.ndarray) -> np.ndarray:
    """One series z-scored on its own observed values (a constant series is only centred)."""
    mean, std = np.nanmean(values), np.nanstd(values)
    return (values - mean) / (std if std > 0 else 1.0)


def collection_windows(collection: SeriesCollection, span: float, min_observed: int, channel_id: int
                       ) -> tuple[SpanWindows, int]:
    """Pretraining windows over every series of ``collection``, each standardised on itself: a window of
    ``span`` steps ends after each step from a series' ``min_observed``-th on, so a series shorter than
    ``span`` gives windows padded in front as unobserved. Series with fewer than ``min_observed`` values
    are skipped; returns the windows and how many series were skipped."""
    gap = int(np.ceil(span)) + 1  # one unobserved row closes each series; the next starts a window later
    values, times, ends, skipped, offset, row = [], [], [], 0, 0.0, 0
    for series in collection.values:
        n = len(series)
        if n < min_observed:
            skipped += 1
            continue
        values += [standardised(series), np.full(1, np.nan, dtype=np.float32)]
        times += [offset + np.arange(n, dtype=np.float64), np.array([offset + n])]
        ends.append(row + np.arange(min_observed, n + 1))  # row index of the first step after each window
        offset += n + gap
        row += n + 1
    if not ends:
        raise CollectionError(f"{collection.name}: no series has {min_observed} values or more")
    axis = TimeSeries(np.concatenate(values)[:, None], np.concatenate(times), collection.channels,
                      name=collection.name)
    return SpanWindows(axis, np.concatenate(ends), span, 0, np.array([channel_id])), skipped
