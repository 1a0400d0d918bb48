"""Embeddings of a series as a labelled `xarray.Dataset`: ``tsjepa.embed(pretrained, data)``.

The series is tiled from its end backwards by windows of the encoder's span (overlapping when ``stride`` is
shorter); each window gives a token per (channel, patch). The result keeps the input's labels: the window
end timestamps on ``time``, the channel names on ``channel``, each patch's start (relative to the window
end, and absolute) on ``patch``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import xarray as xr

from tsjepa.checkpoint import Pretrained
from tsjepa.data.timeseries import TimeSeries, TimeSeriesError, as_timeseries, fixed_duration
from tsjepa.data.vocab import ChannelVocab
from tsjepa.data.windows import SpanWindows
from tsjepa.encoding import encode_windows


def window_ends(series: TimeSeries, span: float, stride: float | None = None) -> np.ndarray:
    """Row indices ``[N]`` (ascending) of window ends tiling ``series`` backwards from its end every
    ``stride`` time units (default ``span``): the last window ends one sampling interval after the last row;
    a window's end is the first row at or after its nominal end time."""
    stride = float(span if stride is None else stride)
    if stride <= 0:
        raise ValueError(f"stride must be positive, got {stride}")
    times = series.times
    last = times[-1] + series.interval
    nominal = last - stride * np.arange(int(np.ceil((last - times[0]) / stride)))
    ends = np.searchsorted(times, nominal, side="left")
    return np.unique(ends[ends >= 1])


def check_time_unit(pretrained: Pretrained, series: TimeSeries) -> None:
    """Refuse datetime data read in another time unit than the encoder was pretrained in (hourly data with
    ``step='15min'`` would put 4x the time into each patch). Encoders pretrained on several units (the corpus)
    or before units were recorded, and numeric times, are not checked."""
    units = {u for u in (pretrained.config.get("time_units") or {}).values() if u}
    step = series.data.attrs.get("step")
    unit = fixed_duration(next(iter(units))) if len(units) == 1 else None
    if unit is not None and step and pd.Timedelta(step) != unit:
        raise TimeSeriesError(f"{series.name}: read with step {pd.Timedelta(step)}, but the encoder was pretrained "
                              f"with one time unit = {unit}: pass step='{unit}' (its patches span "
                              f"{pretrained.encoder.config.patch_duration:g} units of {unit})")


def embed(pretrained: Pretrained, data, step: str | None = None, stride: float | None = None,
          batch_size: int = 256, add_unknown_channels: bool = False,
          device: torch.device | str = "cpu") -> xr.Dataset:
    """Encode a series with a (frozen) pretrained encoder.

    Args:
        pretrained: from `tsjepa.from_pretrained`.
        data: anything `as_timeseries` takes: an ``xr.DataArray`` (dims time x channel), an ``xr.Dataset``
            (a variable per channel), a wide or long DataFrame, or per-channel ``(timestamps, values)``.
        step: the time unit of datetime timestamps (e.g. ``"1h"``), in which the encoder's span is measured.
        stride: time units between window ends (default: the span, non-overlapping windows).
        add_unknown_channels: give channels the checkpoint does not know the next free (untrained) identity
            embeddings, in order, instead of raising `UnknownChannelError`; ``pretrained`` is left unchanged.

    Returns:
        ``xr.Dataset`` with ``embedding`` ``[time, channel, patch, feature]`` (float32), ``patch_observed``
        ``[time, channel, patch]`` (the patch holds an observation), ``loc`` and ``scale``
        ``[time, channel]`` (the window's instance-normalisation statistics); coordinates ``time`` (window
        end, in the input's time coordinate), ``channel`` (names), ``patch`` (start relative to the window
        end, time units), ``patch_start`` ``[time, patch]`` (absolute) and ``feature``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"embed: batch_size must be a positive integer (windows encoded at once), got {batch_size!r}")
    series = as_timeseries(data, step=step)
    check_time_unit(pretrained, series)
    encoder = pretrained.encoder
    vocab = ChannelVocab.from_dict(pretrained.vocab.to_dict())  # a copy: embedding never changes the model
    ids = vocab.ids(series.channels, add_unknown=add_unknown_channels)
    windows = SpanWindows(series, window_ends(series, encoder.config.span, stride), encoder.config.span, 0,
                          ids)
    out = encode_windows(encoder, windows, torch.arange(len(windows)), batch_size, device, desc="embed")
    offsets = (encoder.tokenizer.patch_starts() * encoder.config.patch_duration).numpy().astype(np.float64)
    end_times = windows.end_times
    coords = {
        "time": series.time_at(end_times),
        "channel": series.channels,
        "patch": offsets,
        "feature": np.arange(encoder.config.d_model),
        "patch_start": (("time", "patch"), series.time_at(end_times[:, None] + offsets[None, :])),
    }
    return xr.Dataset(
        {
            "embedding": (("time", "channel", "patch", "feature"), out.embeddings.numpy()),
            "patch_observed": (("time", "channel", "patch"), out.patch_observed.numpy()),
            "loc": (("time", "channel"), out.loc.numpy()),
            "scale": (("time", "channel"), out.scale.numpy()),
        },
        coords=coords,
        attrs={"name": series.name, "span": encoder.config.span, "patch_duration": encoder.config.patch_duration,
               "pretrain_step": pretrained.step},
    )


def pooled(embeddings: xr.Dataset, dims: tuple[str, ...] = ("time", "channel", "patch")) -> xr.DataArray:
    """Mean of the embeddings of observed patches over ``dims`` (default: one ``[feature]`` vector)."""
    return embeddings["embedding"].where(embeddings["patch_observed"]).mean(dims)
