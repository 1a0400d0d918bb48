"""tsjepa encoders as sktime estimators: `TSJEPAForecaster` (a ``BaseForecaster``) and `TSJEPATransformer`
(a ``BaseTransformer`` turning each series into an embedding vector).

Rows are time steps: one row is one time unit of the encoder, so a checkpoint of span 336 reads the last 336
rows (shorter series are padded as unobserved, NaN is an unobserved value). Columns are channels, named in
the checkpoint's vocabulary by ``channels`` (a column -> name map) or by the column names themselves.
``checkpoint=None`` builds the architecture with random weights (``encoder_config``, seeded by
``random_state``): the no-pretraining baseline, whose channels are all new.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sktime.forecasting.base import BaseForecaster
from sktime.transformations.base import BaseTransformer

from tsjepa.checkpoint import Pretrained, from_pretrained
from tsjepa.data.timeseries import TimeSeries
from tsjepa.data.vocab import ChannelVocab
from tsjepa.data.windows import SpanWindows, fit_scaler
from tsjepa.embedding import embed, pooled
from tsjepa.encoding import encode_windows
from tsjepa.heads import fit_probe, probe_predict
from tsjepa.models import Encoder, EncoderConfig

ALPHAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
TINY_ENCODER = {"span": 16.0, "patch_duration": 4.0, "slots": 4, "d_model": 16, "depth": 1, "heads": 2,
                "channel_capacity": 8}


def load_encoder(checkpoint: str | None, encoder_config: dict | None, random_state: int) -> Pretrained:
    """The checkpoint's encoder, or (``checkpoint=None``) one with random weights and an empty vocabulary."""
    if checkpoint is not None:
        pretrained = from_pretrained(checkpoint)
    else:
        config = EncoderConfig(**(encoder_config or {}))
        with torch.random.fork_rng():
            torch.manual_seed(random_state)
            encoder = Encoder(config)
        pretrained = Pretrained(encoder, ChannelVocab(capacity=config.channel_capacity))
    pretrained.encoder.eval()
    return pretrained


def as_series(frame: pd.DataFrame, channels: dict | None) -> TimeSeries:
    """Rows of ``frame`` ``[T, C]`` as time steps ``0..T-1``, columns renamed by ``channels``. A column with no
    observed value is an error (there is nothing to encode or forecast it from)."""
    names = [str((channels or {}).get(c, c)) for c in frame.columns]
    series = TimeSeries(frame.to_numpy(dtype=np.float32), np.arange(len(frame), dtype=np.float64), names)
    empty = [str(c) for c, seen in zip(frame.columns, series.observed.any(0), strict=True) if not seen]
    if empty:
        raise ValueError(f"column(s) {empty} hold no observed value (all NaN): nothing to encode or forecast them from")
    return series


class TSJEPAForecaster(BaseForecaster):
    """Frozen tsjepa encoder + a ridge head from a channel's tokens to its next ``max(fh)`` values.

    The head is fit in closed form on every window of ``y`` (up to ``max_windows``, evenly spaced), with the
    penalty chosen on the last fifth of them, each (window, channel) weighted by its scale² so the fit
    minimises the squared error in data units; the forecast encodes the last window of ``y``.

    Args:
        checkpoint: a tsjepa checkpoint directory or a shipped encoder's name (e.g. ``"tsjepa-base-corpus"``); None for
            a random-weight encoder.
        channels: column -> checkpoint channel name (default: the column names).
        add_unknown_channels: give columns the checkpoint does not know new identity embeddings instead of
            raising `UnknownChannelError` (always, without a checkpoint) or, for a checkpoint with a shared
            ``<unknown>`` identity (e.g. ``"tsjepa-base-corpus"``), instead of giving them that one.
        encoder_config: `EncoderConfig` fields of the random encoder (``checkpoint=None`` only).
        max_windows: the most training windows the head is fit on.
        random_state: seed of the random encoder.

    Examples
    --------
    >>> from sktime.datasets import load_airline
    >>> from tsjepa.integrations.sktime import TSJEPAForecaster
    >>> y = load_airline()
    >>> forecaster = TSJEPAForecaster(encoder_config={"span": 48.0, "patch_duration": 12.0, "slots": 12})
    >>> y_pred = forecaster.fit(y, fh=[1, 2, 3]).predict()
    >>> len(y_pred)
    3
    """

    _tags = {
        "authors": ["tsjepa"],
        "capability:multivariate": True,
        "capability:exogenous": False,
        "capability:insample": False,
        "capability:missing_values": True,
        "y_inner_mtype": "pd.DataFrame",
        "requires-fh-in-fit": True,
        "capability:random_state": True,
    }

    def __init__(self, checkpoint: str | None = None, channels: dict | None = None, add_unknown_channels: bool = False,
                 encoder_config: dict | None = None, max_windows: int = 4096, random_state: int = 0) -> None:
        self.checkpoint = checkpoint
        self.channels = channels
        self.add_unknown_channels = add_unknown_channels
        self.encoder_config = encoder_config
        self.max_windows = max_windows
        self.random_state = random_state
        super().__init__()

    def _fit(self, y: pd.DataFrame, X=None, fh=None) -> TSJEPAForecaster:
        self.pretrained_ = load_encoder(self.checkpoint, self.encoder_config, self.random_state)
        series = as_series(y, self.channels)
        self.ids_ = self.pretrained_.vocab.ids(series.channels,
                                               add_unknown=self.add_unknown_channels or self.checkpoint is None)
        self.horizon_ = int(max(fh.to_relative(self.cutoff)))
        if len(series) <= self.horizon_:
            raise ValueError(f"y has {len(series)} rows; fitting a {self.horizon_}-step head needs more than "
                             f"{self.horizon_}")
        self.scaler_ = fit_scaler(series, (0, len(series)))
        ends = np.arange(1, len(series) - self.horizon_ + 1)
        ends = np.unique(ends[np.linspace(0, len(ends) - 1, min(len(ends), self.max_windows)).round().astype(int)])
        n_val = len(ends) // 5  # too few windows for a held-out fifth: choose the penalty on the train windows
        splits = {"train": ends[:-n_val], "val": ends[-n_val:]} if n_val else {"train": ends, "val": ends}
        encoded, target, keep = {}, {}, {}
        for split, split_ends in splits.items():
            windows = SpanWindows(series, split_ends, self.pretrained_.encoder.config.span, self.horizon_, self.ids_,
                                  self.scaler_)
            index = torch.arange(len(windows))
            encoded[split] = encode_windows(self.pretrained_.encoder, windows, index, desc=f"encode {split}")
            batch = windows.batch(index)
            target[split] = batch.target
            keep[split] = batch.target_observed.all(-1).flatten()
        if not keep["train"].any():
            raise ValueError(f"no window of y has {self.horizon_} fully observed future rows to fit the head on")
        self.head_ = fit_probe(encoded, target, keep, list(ALPHAS))
        return self

    def _predict(self, fh, X=None) -> pd.DataFrame:
        series = as_series(self._y, self.channels)
        windows = SpanWindows(series, np.array([len(series)]), self.pretrained_.encoder.config.span, 0, self.ids_,
                              self.scaler_)
        out = encode_windows(self.pretrained_.encoder, windows, torch.arange(1), desc="encode")
        pred = probe_predict(self.head_, out)[0].T.numpy()  # [H, C] in standardised units
        pred = self.scaler_.inverse_transform(pred)
        steps = np.asarray(fh.to_relative(self.cutoff), dtype=int) - 1
        return pd.DataFrame(pred[steps], index=fh.to_absolute_index(self.cutoff), columns=self._y.columns)

    @classmethod
    def get_test_params(cls, parameter_set: str = "default") -> list[dict]:
        """Random-weight tiny encoders (the conformance suite needs no checkpoint file)."""
        return [{"encoder_config": TINY_ENCODER},
                {"encoder_config": {**TINY_ENCODER, "instance_norm": False}, "max_windows": 8, "random_state": 1}]


class TSJEPATransformer(BaseTransformer):
    """Each series -> one embedding vector ``[d_model]``: the mean token embedding of its observed patches,
    over windows of the encoder's span tiling the series from its end (`tsjepa.embed`) and its channels.

    Args: as `TSJEPAForecaster`; ``stride`` is the step between windows (default: the span).

    Examples
    --------
    >>> from sktime.datasets import load_unit_test
    >>> from tsjepa.integrations.sktime import TSJEPATransformer
    >>> X, _ = load_unit_test(return_type="pd-multiindex")
    >>> features = TSJEPATransformer(encoder_config={"span": 24.0, "patch_duration": 4.0, "slots": 4,
    ...                                              "d_model": 32}).fit_transform(X)
    >>> features.shape[1]
    32
    """

    _tags = {
        "authors": ["tsjepa"],
        "scitype:transform-input": "Series",
        "scitype:transform-output": "Primitives",
        "scitype:instancewise": True,
        "capability:multivariate": True,
        "capability:missing_values": True,
        "X_inner_mtype": "pd.DataFrame",
        "y_inner_mtype": "None",
        "fit_is_empty": False,
        "capability:random_state": True,
    }

    def __init__(self, checkpoint: str | None = None, channels: dict | None = None, add_unknown_channels: bool = False,
                 encoder_config: dict | None = None, stride: float | None = None, random_state: int = 0) -> None:
        self.checkpoint = checkpoint
        self.channels = channels
        self.add_unknown_channels = add_unknown_channels
        self.encoder_config = encoder_config
        self.stride = stride
        self.random_state = random_state
        super().__init__()

    def _fit(self, X: pd.DataFrame, y=None) -> TSJEPATransformer:
        self.pretrained_ = load_encoder(self.checkpoint, self.encoder_config, self.random_state)
        return self

    def _transform(self, X: pd.DataFrame, y=None) -> pd.DataFrame:
        embeddings = embed(self.pretrained_, as_series(X, self.channels), stride=self.stride,
                           add_unknown_channels=self.add_unknown_channels or self.checkpoint is None)
        vector = pooled(embeddings).to_numpy()
        return pd.DataFrame(vector[None], columns=[f"tsjepa_{i}" for i in range(len(vector))])

    @classmethod
    def get_test_params(cls, parameter_set: str = "default") -> list[dict]:
        """Random-weight tiny encoders (the conformance suite needs no checkpoint file)."""
        return [{"encoder_config": TINY_ENCODER}, {"encoder_config": TINY_ENCODER, "stride": 8.0, "random_state": 1}]
