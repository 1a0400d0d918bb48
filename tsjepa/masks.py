"""Target masks for JEPA: contiguous spans of patches in time, over all channels or a random subset."""

from __future__ import annotations

import torch
from torch import Tensor


def sample_span_mask(
    patch_observed: Tensor,
    ratio: float = 0.4,
    spans: int = 2,
    channel_subset_prob: float = 0.5,
    generator: torch.Generator | None = None,
    tail_prob: float = 0.0,
) -> Tensor:
    """Target mask ``[B, C, P]`` bool.

    Each window gets ``spans`` contiguous blocks of ``round(ratio * P / spans)`` patches (they may overlap),
    or, with probability ``tail_prob``, one block of ``round(ratio * P)`` patches at the end of the window, so
    the predictor extrapolates (the context sees only the past, as a forecaster does).
    With probability ``channel_subset_prob`` the blocks cover a random non-empty proper subset of the channels
    (so the predictor must infer a channel from the others at the same time), otherwise all channels.
    Only observed patches are targets; a window left with no context token gets no target.

    Args:
        patch_observed: ``[B, C, P]`` bool.
        generator: CPU generator, so masks are reproducible from a seed whatever the device.
    """
    if not 0 < ratio < 1:
        raise ValueError(f"mask ratio must lie in (0, 1), got {ratio}")
    b, c, p = patch_observed.shape
    length = max(1, round(ratio * p / spans))
    starts = torch.randint(0, p - length + 1, (b, spans), generator=generator)
    offsets = torch.arange(p)
    in_time = ((offsets >= starts[..., None]) & (offsets < starts[..., None] + length)).any(1)  # [B, P]
    subset = torch.rand(b, generator=generator) < channel_subset_prob
    pick = torch.rand(b, c, generator=generator) < 0.5
    if c > 1:  # a proper, non-empty subset: force one channel in and another out
        order = torch.rand(b, c, generator=generator).argsort(1)
        pick.scatter_(1, order[:, :1], True)
        pick.scatter_(1, order[:, 1:2], False)
    channels = torch.where(subset[:, None], pick, torch.ones_like(pick))  # [B, C]
    tail = torch.rand(b, generator=generator) < tail_prob  # drawn last: other draws do not depend on it
    in_time = torch.where(tail[:, None], offsets >= p - max(1, round(ratio * p)), in_time)
    target = in_time[:, None, :] & channels[:, :, None]
    target = target.to(patch_observed.device) & patch_observed
    has_context = (patch_observed & ~target).flatten(1).any(1)
    return target & has_context[:, None, None]


def sample_crops(patch_observed: Tensor, views: int, global_views: int, global_keep: float, local_keep: float,
                 generator: torch.Generator | None = None) -> Tensor:
    """Visible-patch masks of ``views`` time crops per window, ``[V, B, C, P]`` bool.

    A crop is one contiguous block of patches over all channels: the first ``global_views`` keep
    ``round(global_keep * P)`` patches, the others ``round(local_keep * P)``. Only observed patches are visible.

    Args:
        patch_observed: ``[B, C, P]`` bool.
        generator: CPU generator, so crops are reproducible from a seed whatever the device.
    """
    if not 0 < global_views <= views:
        raise ValueError(f"need 0 < global_views <= views, got global_views={global_views}, views={views}")
    for name, keep in (("global_keep", global_keep), ("local_keep", local_keep)):
        if not 0 < keep <= 1:
            raise ValueError(f"{name} must lie in (0, 1], got {keep}")
    b, _, p = patch_observed.shape
    offsets = torch.arange(p)
    crops = []
    for view in range(views):
        length = max(1, round((global_keep if view < global_views else local_keep) * p))
        start = torch.randint(0, p - length + 1, (b, 1), generator=generator)
        crops.append((offsets >= start) & (offsets < start + length))  # [B, P]
    crops = torch.stack(crops).to(patch_observed.device)  # [V, B, P]
    return crops[:, :, None, :] & patch_observed
