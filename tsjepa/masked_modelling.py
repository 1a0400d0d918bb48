"""Masked patch reconstruction, the peer of JEPA that PatchTST's self-supervised mode and MOMENT use.

    loss = mean over masked observed slots of (head(encoder(x with masked patches -> mask token)) - x)^2

A random ``mask_ratio`` of each (window, channel)'s observed patches (PatchTST: 0.4) is replaced by one learned
mask token at the encoder's input; the masked patches keep their time and channel embeddings and are attended
to, as in PatchTST. The values are instance-normalised with the visible patches' statistics only (what the
encoder itself sees), and a linear head reads each masked patch's slot values back from its output token. No
predictor, no projector, no SIGReg: the pure reconstruction peer (the JEPA ``recon`` preset is JEPA with a
reconstruction auxiliary).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tsjepa.data.batch import Batch
from tsjepa.models import Encoder
from tsjepa.objective import Objective, ObjectiveConfig, weighted_terms


def random_patch_mask(patch_observed: Tensor, ratio: float, generator: torch.Generator | None = None) -> Tensor:
    """``[B, C, P]`` bool: ``round(ratio * n)`` of each (window, channel)'s ``n`` observed patches, drawn at
    random (independently per channel, as PatchTST), at least one kept visible where ``n >= 2``."""
    scores = torch.rand(patch_observed.shape, generator=generator).to(patch_observed.device)
    scores = scores.masked_fill(~patch_observed, 2.0)  # unobserved patches sort last: never masked
    count = patch_observed.sum(-1, keepdim=True)
    take = torch.minimum((ratio * count).round(), count - 1).clamp(min=0)
    rank = scores.argsort(-1).argsort(-1)
    return (rank < take) & patch_observed


class MaskedReconstruction(Objective):
    def __init__(self, encoder: Encoder, config: ObjectiveConfig, seed: int = 0) -> None:
        super().__init__(encoder, config, seed)
        dim = encoder.config.d_model
        self.mask_token = MaskToken(dim)
        self.head = nn.Linear(dim, encoder.config.slots)

    def training_modules(self) -> dict[str, nn.Module]:
        return {"reconstruction": self.head, "mask_token": self.mask_token}

    def forward(self, batch: Batch, step: int, generator: torch.Generator, with_embeddings: bool = True
                ) -> dict[str, Tensor]:
        """``loss`` = ``reconstruction`` (its share 1), and with ``with_embeddings`` the detached full-view
        ``embeddings`` ``[N, D]`` (one more encoder pass, without gradient)."""
        observed = self.observed_patches(batch)
        masked = random_patch_mask(observed, self.config.mask_ratio, generator)
        if not masked.any():
            raise ValueError("no patch could be masked: windows have too few observed patches")
        out = self.encoder(batch, masked=masked, mask_token=self.mask_token.token)
        slots = self.patch_values(batch, visible=~masked)  # [B, C, P, 2, S]
        weight = slots[..., 1, :] * masked[..., None]
        err = (self.head(out.embeddings) - slots[..., 0, :]) ** 2
        recon = ((err * weight).sum() / weight.sum().clamp(min=1)).float()
        terms = weighted_terms({"reconstruction": (1.0, recon)})
        return terms | ({"embeddings": self.full_view_tokens(batch)} if with_embeddings else {})


class MaskToken(nn.Module):
    """A learned mask token ``[D]`` (a module of its own, so a training checkpoint keeps it)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.token = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.token, std=0.02)
