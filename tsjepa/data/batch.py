"""The one batch format every model stage consumes.

Times are per observation and per channel (continuous, in the dataset's time units) and relative to the
window end: a window of duration ``span`` covers ``[-span, 0)``, and a forecast starts at 0. So regular,
irregular and partially observed windows look the same to the model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torch import Tensor


class BatchError(ValueError):
    """Raised for a batch that violates the format (shapes, NaN policy, time order, span)."""


@dataclass
class Batch:
    """A batch of windows.

    Attributes:
        values: ``[B, C, T]`` float; entries where ``observed`` is False are ignored (any value, even NaN).
        times: ``[B, C, T]`` float, observation times relative to the window end, in ``[-span, 0)``,
            strictly increasing along T over the observed entries of each channel.
        observed: ``[B, C, T]`` bool.
        channel_ids: ``[B, C]`` long, ids from the model's channel vocabulary.
        target: ``[B, C, H]`` float future values (forecasting), or None.
        target_observed: ``[B, C, H]`` bool, or None.
    """

    values: Tensor
    times: Tensor
    observed: Tensor
    channel_ids: Tensor
    target: Tensor | None = None
    target_observed: Tensor | None = None

    def to(self, device: torch.device | str) -> Batch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{k: v.to(device) if v is not None else None for k, v in moved.items()})

    def select_channels(self, index: Tensor) -> Batch:
        """Keep channels ``index`` (``[C']`` long), in that order."""
        picked = {
            f.name: getattr(self, f.name).index_select(1, index) if getattr(self, f.name) is not None else None
            for f in fields(self)
        }
        return replace(self, **picked)

    @classmethod
    def padded(cls, values: list[Tensor], times: list[Tensor], channel_ids: Tensor, pad_time: float) -> Batch:
        """Windows of different lengths as one batch: ``values[i]`` ``[C, t_i]`` (NaN = unobserved) and
        ``times[i]`` ``[t_i]`` (shared by the channels) -> ``[B, C, max t_i]``, the padding unobserved at
        ``pad_time``; ``channel_ids`` ``[C]``."""
        length = max(max(len(t) for t in times), 1)
        shape = (len(values), len(channel_ids), length)
        padded_values, padded_times = torch.full(shape, float("nan")), torch.full(shape, pad_time)
        for row, (v, t) in enumerate(zip(values, times, strict=True)):
            padded_values[row, :, : len(t)] = v
            padded_times[row, :, : len(t)] = t
        return cls(values=padded_values.nan_to_num(0.0), times=padded_times, observed=~torch.isnan(padded_values),
                   channel_ids=channel_ids[None].expand(len(values), -1).contiguous())

    def validate(self, span: float) -> None:
        """Raise `BatchError` naming the first problem found."""
        if self.values.ndim != 3:
            raise BatchError(f"values must be [B, C, T], got shape {tuple(self.values.shape)}")
        for name in ("times", "observed"):
            if getattr(self, name).shape != self.values.shape:
                raise BatchError(
                    f"{name} has shape {tuple(getattr(self, name).shape)}, expected {tuple(self.values.shape)}"
                )
        if self.observed.dtype != torch.bool:
            raise BatchError(f"observed must be bool, got {self.observed.dtype}")
        if self.channel_ids.shape != self.values.shape[:2]:
            raise BatchError(
                f"channel_ids has shape {tuple(self.channel_ids.shape)}, expected {tuple(self.values.shape[:2])}"
            )
        obs = self.observed
        if not torch.isfinite(self.values[obs]).all():
            raise BatchError("observed values contain NaN/inf; mark missing entries with observed=False")
        if not torch.isfinite(self.times[obs]).all():
            raise BatchError("observed entries have non-finite timestamps")
        empty = ~obs.flatten(1).any(1)
        if empty.any():
            raise BatchError(
                f"window(s) {empty.nonzero().flatten().tolist()[:5]} have no observed value (all-NaN window)"
            )
        t = self.times.masked_fill(~obs, float("-inf"))
        before = torch.cummax(t, dim=-1).values.roll(1, dims=-1)
        before[..., 0] = float("-inf")
        if (obs & (self.times <= before)).any():
            b, c, i = (obs & (self.times <= before)).nonzero()[0].tolist()
            raise BatchError(f"unsorted or duplicate timestamps in window {b}, channel {c} at position {i}")
        t_obs = self.times[obs]
        if (t_obs < -span).any() or (t_obs >= 0).any():
            raise BatchError(
                f"observation times must lie in [-span, 0) = [{-span}, 0) relative to the window end; "
                f"got range [{t_obs.min().item()}, {t_obs.max().item()}]"
            )
