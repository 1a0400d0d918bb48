"""Labelled anomaly benchmarks: series with a normal training part, a labelled test part and, where the
benchmark has them, the channels each anomalous segment involves.

Loaders for the official layouts:

- SMD (OmniAnomaly): ``train/<machine>.txt`` and ``test/<machine>.txt`` (comma-separated rows, 38 metrics),
  ``test_label/<machine>.txt`` (0/1 per test row), ``interpretation_label/<machine>.txt``
  (``start-end:c1,c2,...``, start 0-based, end exclusive, channel ids 1-based);
- NAB: ``data/<group>/<file>.csv`` (``timestamp,value``) and ``labels/combined_windows.json``; the first 15%
  of each series is NAB's probationary period, used here as the normal training part;
- UCR anomaly archive: one value per line, ``NNN_UCR_Anomaly_<name>_<trainEnd>_<anomStart>_<anomEnd>.txt``
  (1-based, inclusive), rows before ``trainEnd`` are normal training data, one anomaly in the rest.

Each series keeps train and test rows on one clock (test follows train), so a test window's lookback can
reach back into the training rows, as in the forecasting protocol.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from tsjepa.data.timeseries import TimeSeries

NAB_PROBATION = 0.15  # NAB's probationary share of each series
UCR_NAME = re.compile(r"^(\d+)_UCR_Anomaly_(.+)_(\d+)_(\d+)_(\d+)\.txt$")


@dataclass(frozen=True)
class Segment:
    """An anomalous segment of test rows ``[start, end)`` and the 0-based channels it involves (empty when
    the benchmark does not say)."""

    start: int
    end: int
    channels: tuple[int, ...] = ()


@dataclass
class LabelledSeries:
    """One benchmark series: ``series`` holds train rows ``[0, test_start)`` then test rows; ``labels``
    ``[T - test_start]`` (1 = anomalous) and ``segments`` index test rows."""

    name: str
    series: TimeSeries
    test_start: int
    labels: np.ndarray
    segments: list[Segment] = field(default_factory=list)

    def __post_init__(self) -> None:
        n_test = len(self.series) - self.test_start
        if not 0 < self.test_start < len(self.series):
            raise ValueError(f"{self.name}: test_start {self.test_start} outside the series (length {len(self.series)})")
        if self.labels.shape != (n_test,):
            raise ValueError(f"{self.name}: {self.labels.shape[0]} labels for {n_test} test rows")

    @property
    def channels(self) -> list[str]:
        return self.series.channels


@dataclass
class AnomalySet:
    """The series of one benchmark (e.g. the SMD machines), all over the same channels."""

    name: str
    series: list[LabelledSeries]

    @property
    def channels(self) -> list[str]:
        return self.series[0].channels

    def __len__(self) -> int:
        return len(self.series)


def segments_of(labels: np.ndarray) -> list[Segment]:
    """Maximal runs of 1s in ``labels`` ``[T]`` as segments ``[start, end)``."""
    edges = np.diff(np.concatenate([[0], labels.astype(np.int8), [0]]))
    return [Segment(int(s), int(e)) for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True)]


def _rows(values: np.ndarray, channels: list[str], name: str) -> TimeSeries:
    """A series whose time is its row number (one time unit per row)."""
    return TimeSeries(values, np.arange(len(values), dtype=np.float64), channels, name=name)


def listed(files: Sequence[str], folder: str) -> list[str]:
    """The card's files under ``folder/`` (relative to it), sorted: a loader reads only what the card lists and
    checksums, never another file that happens to be in the folder."""
    prefix = f"{folder}/" if folder else ""
    return sorted(f.removeprefix(prefix) for f in files if f.startswith(prefix))


def load_smd(path: Path, name: str = "smd", files: Sequence[str] = ()) -> AnomalySet:
    """SMD machines: the card's ``test/<machine>.txt`` files, each with its train, label and interpretation files."""
    machines = [Path(f).stem for f in listed(files, "test")]
    channels = None
    out = []
    for machine in machines:
        train = np.loadtxt(path / "train" / f"{machine}.txt", delimiter=",", dtype=np.float32, ndmin=2)
        test = np.loadtxt(path / "test" / f"{machine}.txt", delimiter=",", dtype=np.float32, ndmin=2)
        labels = np.loadtxt(path / "test_label" / f"{machine}.txt", dtype=np.int8)
        channels = channels or [f"m{c + 1}" for c in range(train.shape[1])]  # metric ids as the labels number them
        if train.shape[1] != test.shape[1] or train.shape[1] != len(channels):
            raise ValueError(f"{name}/{machine}: {train.shape[1]} train and {test.shape[1]} test channels")
        segments = []
        for line in (path / "interpretation_label" / f"{machine}.txt").read_text().split():
            span, _, ids = line.partition(":")
            start, end = (int(v) for v in span.split("-"))
            segments.append(Segment(start, end, tuple(sorted(int(c) - 1 for c in ids.split(",")))))
        series = _rows(np.concatenate([train, test]), channels, f"{name}/{machine}")
        out.append(LabelledSeries(machine, series, len(train), labels, segments))
    return AnomalySet(name, out)


def load_nab(path: Path, name: str = "nab", files: Sequence[str] = ()) -> AnomalySet:
    """NAB: the card's ``data/<group>/<series>.csv`` files with their labelled windows."""
    windows = json.loads((path / "labels" / "combined_windows.json").read_text())
    out = []
    for key in listed(files, "data"):
        frame = pd.read_csv(path / "data" / key, parse_dates=["timestamp"])
        stamps = frame["timestamp"].to_numpy()
        labels = np.zeros(len(frame), dtype=np.int8)
        for start, end in windows[key]:
            labels[(stamps >= np.datetime64(pd.Timestamp(start))) & (stamps <= np.datetime64(pd.Timestamp(end)))] = 1
        test_start = int(len(frame) * NAB_PROBATION)
        series = _rows(frame[["value"]].to_numpy(np.float32), ["value"], f"{name}/{key}")
        out.append(LabelledSeries(key.removesuffix(".csv"), series, test_start, labels[test_start:],
                                  segments_of(labels[test_start:])))
    return AnomalySet(name, out)


def load_ucr(path: Path, name: str = "ucr", files: Sequence[str] = ()) -> AnomalySet:
    """UCR anomaly archive: the card's ``NNN_UCR_Anomaly_*.txt`` files."""
    out = []
    for file in (path / f for f in listed(files, "")):
        match = UCR_NAME.match(file.name)
        if match is None:
            raise ValueError(f"{file.name}: not a UCR anomaly file name (NNN_UCR_Anomaly_<name>_<trainEnd>_<start>_<end>.txt)")
        train_end, start, end = (int(v) for v in match.groups()[2:])
        values = np.loadtxt(file, dtype=np.float32, ndmin=1).reshape(-1)
        labels = np.zeros(len(values) - train_end, dtype=np.int8)
        labels[start - 1 - train_end : end - train_end] = 1  # 1-based inclusive -> test rows
        out.append(LabelledSeries(file.stem, _rows(values[:, None], ["value"], f"{name}/{file.stem}"), train_end,
                                  labels, segments_of(labels)))
    return AnomalySet(name, out)
