"""Collections of short irregular records (e.g. one ICU stay each), and the batches made from them.

A record is one window: every observation keeps its own time stamp (no binning), each channel is observed on
its own clock, and per-record static descriptors and a label travel beside it. `RecordWindows` has the same
interface as `Windows` (``span``, ``len``, ``batch(index)``), so pretraining and the encoders treat long
regular series and collections of irregular records alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from tsjepa.data.batch import Batch
from tsjepa.data.timeseries import TimeSeries


@dataclass
class RecordSet:
    """``N`` records over the same channels.

    Attributes:
        times: per record ``[T_r]`` float64 strictly increasing observation times (dataset time units).
        values: per record ``[T_r, C]`` float32, NaN where a channel was not observed at that time.
        channels: the ``C`` channel names.
        static: ``[N, S]`` float32 static descriptors (NaN = missing), named by ``static_names``.
        labels: ``[N]`` int64 outcome per record.
        ids: ``[N]`` int64 record ids.
    """

    name: str
    times: list[np.ndarray]
    values: list[np.ndarray]
    channels: list[str]
    static: np.ndarray
    static_names: list[str]
    labels: np.ndarray
    ids: np.ndarray

    def __len__(self) -> int:
        return len(self.times)

    def subset(self, index: np.ndarray) -> RecordSet:
        index = np.asarray(index)
        return RecordSet(self.name, [self.times[i] for i in index], [self.values[i] for i in index],
                         self.channels, self.static[index], self.static_names, self.labels[index], self.ids[index])

    def record(self, i: int) -> TimeSeries:
        """Record ``i`` as a `TimeSeries` (its static descriptors in ``attrs["static"]``)."""
        static = {k: float(v) for k, v in zip(self.static_names, self.static[i], strict=True)}
        return TimeSeries(self.values[i], self.times[i], self.channels, name=f"{self.name}/{self.ids[i]}",
                          static=static)

    def folds(self, n_folds: int = 5, seed: int = 0) -> list[np.ndarray]:
        """Test indices of ``n_folds`` stratified folds (by label), shuffled with ``seed``."""
        splitter = StratifiedKFold(n_folds, shuffle=True, random_state=seed)
        return [test for _, test in splitter.split(np.zeros(len(self)), self.labels)]

    def split(self, fold: int, n_folds: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(train, test) indices: test = stratified fold ``fold`` of ``n_folds``, train = the rest."""
        if not 0 <= fold < n_folds:
            raise ValueError(f"fold must lie in [0, {n_folds}), got {fold}")
        test = np.sort(self.folds(n_folds, seed)[fold])
        return np.setdiff1d(np.arange(len(self)), test), test

    def observations(self) -> np.ndarray:
        """``[sum T_r, C]`` every record's rows stacked (NaN where unobserved)."""
        return np.concatenate(self.values)


class ClippedScaler:
    """Per-channel clipping to the ``[q, 1 - q]`` quantiles of the fit data, then standardisation.

    Clinical channels hold rare gross outliers (unit slips, sensor faults); clipping keeps one of them from
    dominating a channel's scale. Statistics ignore NaN.
    """

    def __init__(self, quantile: float = 0.005) -> None:
        self.quantile = quantile

    def fit(self, values: np.ndarray) -> ClippedScaler:
        """values ``[N, C]`` with NaN."""
        self.low, self.high = np.nanquantile(values, [self.quantile, 1 - self.quantile], axis=0)
        clipped = np.clip(values, self.low, self.high)
        self.mean = np.nanmean(clipped, axis=0)
        self.std = np.nanstd(clipped, axis=0)
        self.std[~(self.std > 0)] = 1.0
        return self

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((np.clip(values, self.low, self.high) - self.mean) / self.std).astype(np.float32)


class RecordWindows:
    """Each record as one window of duration ``span`` ending at ``span`` (record times in ``[0, span]``).

    Record times ``t`` become window times ``t - span`` in ``[-span, 0)``; an observation at exactly ``span``
    is placed just inside the window end. Observations after ``span`` are an error.

    Args:
        records: the records.
        channel_ids: ``[C]`` vocabulary ids of ``records.channels``.
        scaler: fit on training records only.
    """

    END_MARGIN = 1e-4  # time units; how far inside the window end an observation at t = span is placed

    def __init__(self, records: RecordSet, channel_ids: np.ndarray, scaler: ClippedScaler, span: float) -> None:
        late = [int(records.ids[i]) for i, t in enumerate(records.times) if len(t) and t[-1] > span]
        if late:
            raise ValueError(f"records {late[:5]} have observations after the window end {span}")
        self.records, self.span = records, float(span)
        self.values = [torch.from_numpy(scaler.transform(v).T.copy()) for v in records.values]  # [C, T_r]
        self.times = [torch.from_numpy(np.minimum(t - span, -self.END_MARGIN)).float() for t in records.times]
        self.channel_ids = torch.as_tensor(channel_ids, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.values)

    def batch(self, index: torch.Tensor) -> Batch:
        """Records ``index`` ``[B]`` padded to the longest: values/times/observed ``[B, C, T_max]``."""
        picked = [int(i) for i in index]
        return Batch.padded([self.values[i] for i in picked], [self.times[i] for i in picked], self.channel_ids,
                            -self.END_MARGIN)
