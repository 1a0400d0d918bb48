"""Labelled collections of series (the UCR and UEA classification archives): one class label per series.

Each series is regularly sampled, one time unit per row, and keeps its own length; channels of one series may
end at different rows (the shorter ones are NaN, unobserved, past their end). Read from the archive's ``.ts``
files with sktime's loader, under the archive's official train/test split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd


class LabelledDataError(ValueError):
    """A labelled collection that cannot be used: an empty series, a test label the train split lacks."""


@dataclass
class LabelledSplit:
    """``N`` series with one label each.

    Attributes:
        values: per series ``[T_i, C]`` float32 (row ``t`` is time ``t``), NaN where unobserved.
        labels: ``[N]`` int64 index into the collection's ``classes``.
    """

    values: list[np.ndarray]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.values)

    @property
    def lengths(self) -> np.ndarray:
        """``[N]`` rows per series."""
        return np.array([len(v) for v in self.values])

    def observations(self) -> np.ndarray:
        """``[sum T_i, C]`` every series' rows stacked (NaN where unobserved)."""
        return np.concatenate(self.values)


@dataclass
class LabelledSet:
    """A classification archive dataset: its channels, its class names and the official train/test split."""

    name: str
    channels: list[str]
    classes: list[str]
    train: LabelledSplit
    test: LabelledSplit

    def __len__(self) -> int:
        return len(self.train) + len(self.test)


def _series_arrays(frame: pd.DataFrame, name: str, split: str) -> list[np.ndarray]:
    """sktime's nested frame (a row per series, a cell per channel) -> per series ``[T_i, C]`` float32."""
    arrays = []
    for i, row in enumerate(frame.itertuples(index=False)):
        cells = [np.asarray(cell, dtype=np.float32) for cell in row]
        length = max(len(c) for c in cells)
        values = np.full((length, len(cells)), np.nan, dtype=np.float32)
        for channel, cell in enumerate(cells):
            values[: len(cell), channel] = cell
        if not np.isfinite(values).any():
            raise LabelledDataError(f"{name}: {split} series {i} has no observed value")
        values[~np.isfinite(values)] = np.nan
        arrays.append(values)
    return arrays


def read_ts_archive(folder: Path, archive_name: str, name: str) -> LabelledSet:
    """Read ``<folder>/<archive_name>_TRAIN.ts`` and ``_TEST.ts`` (the archive's split) with sktime's loader.

    Classes are the train split's labels, sorted; a test label outside them is an error, as is a series with
    no observed value."""
    from sktime.datasets import load_from_tsfile

    splits = {}
    for split in ("TRAIN", "TEST"):
        frame, labels = load_from_tsfile(str(folder / f"{archive_name}_{split}.ts"), return_data_type="nested_univ")
        splits[split] = (_series_arrays(frame, name, split.lower()), np.asarray(labels).astype(str))
    classes = sorted({str(c) for c in splits["TRAIN"][1]}, key=lambda c: (len(c), c))  # "2" before "10"
    unknown = sorted({str(c) for c in splits["TEST"][1]} - set(classes))
    if unknown:
        raise LabelledDataError(f"{name}: test labels {unknown} are not among the train split's classes {classes}")
    index = {c: i for i, c in enumerate(classes)}
    parts = {split: LabelledSplit(values, np.array([index[c] for c in labels], dtype=np.int64))
             for split, (values, labels) in splits.items()}
    channels = [f"dim_{c}" for c in range(parts["TRAIN"].values[0].shape[1])]
    widths = {v.shape[1] for part in parts.values() for v in part.values}
    if len(widths) > 1:
        raise LabelledDataError(f"{name}: series have different channel counts {sorted(widths)}")
    return LabelledSet(name, channels, classes, parts["TRAIN"], parts["TEST"])


def sktime_archive_dir() -> Path:
    """The folder of the UCR/UEA datasets shipped inside sktime's wheel (one sub-folder per dataset)."""
    import sktime.datasets

    return Path(sktime.datasets.__file__).parent / "data"


def sktime_shipped() -> list[str]:
    """Names of the archive datasets sktime ships (a ``<name>_TRAIN.ts`` in its data folder)."""
    return sorted(p.parent.name for p in sktime_archive_dir().glob("*/*_TRAIN.ts"))
