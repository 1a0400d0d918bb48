"""Encode windows with a frozen encoder, in batches, without gradients, and pool their tokens."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from einops import rearrange
from tqdm import tqdm

from tsjepa.data.batch import Batch
from tsjepa.data.records import RecordWindows
from tsjepa.data.windows import TiledSeries, Windows
from tsjepa.models import Encoder, EncoderOutput


@torch.no_grad()
def encode_windows(encoder: Encoder, windows: Windows | RecordWindows | TiledSeries, index: torch.Tensor, batch_size: int = 256,
                   device: torch.device | str = "cpu", desc: str = "encode",
                   transform: Callable[[Batch], Batch] | None = None,
                   layers: tuple[int, ...] | None = None) -> EncoderOutput:
    """Encoder outputs of windows ``index`` ``[N]``, concatenated on the CPU (embeddings ``[N, C, P, D]``, or
    ``[N, C, P, len(layers) * D]`` for several ``layers``, see `Encoder.forward`).
    ``transform`` edits each batch before encoding (e.g. permuting or dropping channels)."""
    encoder.eval()
    filled: list[torch.Tensor] = []  # the outputs, allocated once the first batch gives their shapes
    chunks = tqdm(index.split(batch_size), desc=desc, leave=False, dynamic_ncols=True)
    for start, chunk in zip(range(0, len(index), batch_size), chunks, strict=True):
        batch = windows.batch(chunk) if transform is None else transform(windows.batch(chunk))
        batch.validate(windows.span)
        out = encoder(batch.to(device), layers=layers)
        parts = (out.embeddings, out.patch_observed, out.loc, out.scale)
        if not filled:  # written in place: memory holds the outputs once, not a list of batches and their copy
            filled = [t.new_empty((len(index), *t.shape[1:]), device="cpu") for t in parts]
        for target, part in zip(filled, parts, strict=True):
            target[start:start + len(chunk)] = part
    if not filled:
        raise ValueError("encode_windows needs at least one window index")
    return EncoderOutput(*filled)


POOLS = ("mean", "max", "last")


def channel_pool(embeddings: torch.Tensor, patch_observed: torch.Tensor, pool: Sequence[str] = ("mean",),
                 owner: torch.Tensor | None = None, n_owners: int | None = None) -> torch.Tensor:
    """``[W, C, P, D]`` -> ``[N, C * (len(pool) * D + 1)]``: per channel the ``pool`` statistics of its
    observed tokens (``mean``, elementwise ``max``, the ``last`` observed token) and a flag saying whether it
    was observed at all (a never-observed channel pools to zeros). One row per window, or with ``owner``
    ``[W]`` (long, ``0 .. n_owners-1``) one row per owner over the tokens of all its windows (``mean`` and ``max``
    only: windows carry no order to say which token is last)."""
    unknown = set(pool) - set(POOLS)
    if unknown or not pool:
        raise ValueError(f"pool must be a non-empty list of {POOLS}, got {list(pool)}")
    if owner is not None and "last" in pool:
        raise ValueError("pool 'last' needs one window per row; pool the windows of a series with mean / max")
    w = patch_observed[..., None].to(embeddings.dtype)
    total, count = (embeddings * w).sum(2), w.sum(2)  # [W, C, D], [W, C, 1]
    peak = embeddings.masked_fill(~patch_observed[..., None], float("-inf")).amax(2)  # [W, C, D]
    if owner is not None:
        n = n_owners if n_owners is not None else int(owner.max()) + 1
        total = total.new_zeros((n, *total.shape[1:])).index_add(0, owner, total)
        count = count.new_zeros((n, *count.shape[1:])).index_add(0, owner, count)
        peak = peak.new_full((n, *peak.shape[1:]), float("-inf")).scatter_reduce(
            0, owner[:, None, None].expand_as(peak), peak, "amax")
    seen = count > 0
    stats = {
        "mean": lambda: total / count.clamp(min=1),
        "max": lambda: peak.where(seen, 0.0),
        "last": lambda: embeddings[torch.arange(len(embeddings))[:, None], torch.arange(embeddings.shape[1]),
                                   last_observed(patch_observed)] * seen,
    }
    return rearrange(torch.cat([*(stats[p]() for p in pool), seen.to(embeddings.dtype)], -1), "n c f -> n (c f)")


def last_observed(patch_observed: torch.Tensor) -> torch.Tensor:
    """``[N, C, P]`` -> ``[N, C]``: index of each channel's last observed patch (0 when none is)."""
    positions = torch.arange(patch_observed.shape[-1], device=patch_observed.device)
    return torch.where(patch_observed, positions, 0).amax(-1)


def series_embeddings(encoder: Encoder, tiles: TiledSeries, pool: Sequence[str] = ("mean", "max"),
                      batch_size: int = 256, device: torch.device | str = "cpu") -> torch.Tensor:
    """One embedding per series of a tiled collection: ``[N, C * (len(pool) * D + 1)]``, per channel the
    ``pool`` statistics of the observed tokens of all its windows and an observed flag (`channel_pool`)."""
    out = encode_windows(encoder, tiles, torch.arange(len(tiles)), batch_size, device, desc="embed series")
    return channel_pool(out.embeddings, out.patch_observed, pool, torch.from_numpy(tiles.owner), len(tiles.values))
