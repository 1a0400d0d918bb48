"""Encode windows with a frozen encoder, in batches, without gradients."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm import tqdm

from tsjepa.data.batch import Batch
from tsjepa.data.records import RecordWindows
from tsjepa.data.windows import Windows
from tsjepa.models import Encoder, EncoderOutput


@torch.no_grad()
def encode_windows(encoder: Encoder, windows: Windows | RecordWindows, index: torch.Tensor, batch_size: int = 256,
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
