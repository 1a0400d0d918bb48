"""Patches over time spans: observations -> one token per (channel, patch), with no resampling.

A patch is a fixed *duration*. The window ``[-num_patches * patch_duration, 0)`` is cut into patches, each
into ``slots`` equal sub-intervals. Every observation lands in one slot and contributes its value, an
observed flag and its offset within the slot; several observations in one slot are averaged. A linear map of
the ``3 * slots`` features gives the token. On regular data with one observation per slot this is exactly the
usual linear patch embedding (plus the mask features); on irregular data nothing is interpolated, and a
patch with no observation is reported as unobserved rather than as zeros.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange
from torch import Tensor, nn


def instance_norm(
    values: Tensor, observed: Tensor, visible: Tensor | None = None, eps: float = 1e-5
) -> tuple[Tensor, Tensor, Tensor]:
    """Standardise each (window, channel) with statistics of its ``visible`` observed entries.

    Args: values, observed, visible ``[B, C, T]`` (visible defaults to observed; a JEPA context view passes
    its context observations so masked values cannot leak through the statistics). Returns normalised values
    ``[B, C, T]`` (0 where unobserved), loc and scale ``[B, C]``.
    """
    w = (observed if visible is None else observed & visible).to(values.dtype)
    count = w.sum(-1).clamp(min=1)
    x = torch.where(observed, values, torch.zeros_like(values))
    loc = (x * w).sum(-1) / count
    var = ((x - loc[..., None]) ** 2 * w).sum(-1) / count
    scale = torch.sqrt(var + eps)
    return (x - loc[..., None]) / scale[..., None] * observed.to(values.dtype), loc, scale


class TimeEncoding(nn.Module):
    """Continuous-time encoding: sinusoids of a time (in patch durations) at geometric frequencies -> D."""

    def __init__(self, d_model: int, num_frequencies: int = 16, max_period: float = 1e3) -> None:
        super().__init__()
        freqs = torch.exp(-math.log(max_period) * torch.arange(num_frequencies) / num_frequencies)
        self.register_buffer("freqs", 2 * math.pi * freqs, persistent=False)
        self.proj = nn.Linear(2 * num_frequencies, d_model)

    def forward(self, t: Tensor) -> Tensor:
        """t ``[...]`` -> ``[..., D]``."""
        angle = t[..., None] * self.freqs
        return self.proj(torch.cat([angle.sin(), angle.cos()], dim=-1))


class PatchTokenizer(nn.Module):
    """(values, times, observed) ``[B, C, T]`` -> tokens ``[B, C, P, D]`` and patch_observed ``[B, C, P]``."""

    def __init__(self, span: float, patch_duration: float, slots: int, d_model: int) -> None:
        super().__init__()
        self.patch_duration, self.slots = float(patch_duration), int(slots)
        self.num_patches = math.ceil(span / patch_duration - 1e-9)
        self.proj = nn.Linear(3 * slots, d_model)

    def patch_starts(self, device=None) -> Tensor:
        """``[P]`` start time of each patch relative to the window end, in patch durations."""
        return torch.arange(-self.num_patches, 0, device=device, dtype=torch.float32)

    def slot_position(self, times: Tensor) -> tuple[Tensor, Tensor]:
        """times ``[B, C, T]`` -> slot index (long) and in-slot offset in [0, 1], both ``[B, C, T]``."""
        pos = (times.float() / self.patch_duration + self.num_patches) * self.slots  # in slots, [0, P*S)
        slot = pos.floor().clamp(0, self.num_patches * self.slots - 1)
        return slot.long(), (pos - slot).clamp(0, 1)

    def patch_index(self, times: Tensor) -> Tensor:
        """times ``[B, C, T]`` -> index ``[B, C, T]`` of the patch each observation falls in."""
        return self.slot_position(times)[0] // self.slots

    def slot_features(self, values: Tensor, times: Tensor, observed: Tensor) -> Tensor:
        """(values, times, observed) ``[B, C, T]`` -> ``[B, C, P, 3, S]``: per slot the mean observed value,
        the observed flag and the mean in-slot offset (0 where the slot holds no observation)."""
        b, c, _ = values.shape
        n_slots = self.num_patches * self.slots
        slot, offset = self.slot_position(times)
        w = observed.to(values.dtype)
        feats = torch.stack([torch.where(observed, values, torch.zeros_like(values)), w, offset * w], dim=2)
        index = slot[:, :, None, :].expand(-1, -1, 3, -1)
        sums = values.new_zeros(b, c, 3, n_slots).scatter_add_(-1, index, feats)  # [B, C, 3, P*S]
        count = sums[:, :, 1:2]
        sums = torch.cat([sums[:, :, :1] / count.clamp(min=1), (count > 0).to(values.dtype),
                          sums[:, :, 2:] / count.clamp(min=1)], dim=2)
        return rearrange(sums, "b c f (p s) -> b c p f s", s=self.slots)

    def forward(self, values: Tensor, times: Tensor, observed: Tensor) -> tuple[Tensor, Tensor]:
        slots = self.slot_features(values, times, observed)
        patch_observed = slots[:, :, :, 1].amax(-1) > 0
        return self.proj(rearrange(slots, "b c p f s -> b c p (f s)")), patch_observed
