"""Contrastive learning with augmentations, the TS2Vec recipe (Yue et al., AAAI 2022) on this encoder: the
heuristic SSL peer of JEPA + SIGReg.

Per batch, two overlapping random crops of the patch grid (TS2Vec's crop: an overlap of at least
``min_crop`` patches, each view extending it to a random side); each view is encoded seeing only its own
patches, with a random ``mask_ratio`` of them replaced by zeros at the encoder's input (TS2Vec's timestamp
masking). On the overlap, the hierarchical contrastive loss: at each scale, an instance-wise term (a token
against the other view's token of the same (window, channel) at the same patch, among every instance's) and a
temporal term (against the other view's tokens of the same instance at other patches), then max-pooling over
time by 2 until one patch is left (there, the instance term alone). Each (window, channel) is one instance,
since tokens are per channel. No predictor, no SIGReg. An instance enters the loss only if it is observed
over the whole overlap; crop pairs that leave fewer than 2 such instances are drawn again (short series aligned
to the window's end, as in the UEA archives, observe only its last patches).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from tsjepa.data.batch import Batch
from tsjepa.masked_modelling import random_patch_mask
from tsjepa.objective import Objective, weighted_terms

ALPHA = 0.5  # TS2Vec's weight of the instance term (1 - ALPHA: temporal)
CROP_DRAWS = 64  # crop pairs drawn per step before a batch is refused (short, end-aligned series need redraws)


def overlapping_crops(num_patches: int, min_overlap: int, generator: torch.Generator | None = None
                      ) -> tuple[Tensor, Tensor, slice]:
    """Two crops of a ``num_patches`` grid as visible masks ``[P]`` bool, and their overlap as a slice: the
    overlap has a random length in [min_overlap, P]; the first view extends it to a random start, the
    second to a random end (TS2Vec's ``crop_eleft`` / ``crop_eright``)."""
    p = num_patches
    if not 2 <= min_overlap <= p:
        raise ValueError(f"min_crop must lie in [2, {p}] (the patches per window), got {min_overlap}")

    def draw(low: int, high: int) -> int:  # uniform in [low, high]
        return int(torch.randint(low, high + 1, (1,), generator=generator))

    length = draw(min_overlap, p)
    left = draw(0, p - length)
    right = left + length
    start, end = draw(0, left), draw(right, p)
    offsets = torch.arange(p)
    return (offsets >= start) & (offsets < right), (offsets >= left) & (offsets < end), slice(left, right)


def contrast(z: Tensor) -> Tensor:
    """Mean cross-entropy of ``z`` ``[G, 2n, D]``: within each group, sample ``i`` against every other sample
    by dot product, its positive the sample ``n`` further on (and back)."""
    n = z.shape[1] // 2
    sim = z @ z.transpose(1, 2)  # [G, 2n, 2n]
    eye = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logp = F.log_softmax(sim.masked_fill(eye, float("-inf")), dim=-1)
    i = torch.arange(n, device=z.device)
    return -(logp[:, i, n + i].mean() + logp[:, n + i, i].mean()) / 2


def hierarchical_contrastive(z1: Tensor, z2: Tensor) -> Tensor:
    """TS2Vec's loss of two views' tokens on their overlap ``[N, T, D]`` (N instances, T patches)."""
    loss, levels = z1.new_zeros(()), 0
    while True:
        if z1.shape[0] > 1:  # instance-wise: at each patch, the 2N tokens of both views
            loss = loss + ALPHA * contrast(rearrange(torch.cat([z1, z2]), "n t d -> t n d"))
        if z1.shape[1] == 1:
            return loss / (levels + 1)
        loss = loss + (1 - ALPHA) * contrast(torch.cat([z1, z2], 1))  # temporal: each instance's 2T tokens
        levels += 1
        z1, z2 = (F.max_pool1d(rearrange(z, "n t d -> n d t"), 2).transpose(1, 2) for z in (z1, z2))


class Contrastive(Objective):
    def forward(self, batch: Batch, step: int, generator: torch.Generator, with_embeddings: bool = True
                ) -> dict[str, Tensor]:
        """``loss`` = ``contrastive`` (its share 1), and with ``with_embeddings`` the detached full-view
        ``embeddings`` ``[N, D]`` (one more encoder pass, without gradient)."""
        observed = self.observed_patches(batch)  # [B, C, P]
        for _ in range(CROP_DRAWS):  # rejection sampling: crops whose overlap at least 2 instances observe
            first, second, overlap = overlapping_crops(observed.shape[-1], self.config.min_crop, generator)
            kept = observed[:, :, overlap].all(-1).flatten()  # instances observed over the whole overlap
            if int(kept.sum()) >= 2:
                break
        else:
            raise ValueError(f"fewer than 2 (window, channel) rows are observed over the crops' overlap in "
                             f"{CROP_DRAWS} draws: the batch's series are too short or too sparse for "
                             f"min_crop={self.config.min_crop} patches")
        zero = torch.zeros(self.encoder.config.d_model, device=observed.device)
        views = []
        for crop in (first, second):
            visible = observed & crop.to(observed.device)
            masked = random_patch_mask(visible, self.config.mask_ratio, generator)
            views.append(self.encoder(batch, context=visible, masked=masked, mask_token=zero).embeddings)
        z1, z2 = (rearrange(v[:, :, overlap], "b c t d -> (b c) t d")[kept] for v in views)
        terms = weighted_terms({"contrastive": (1.0, hierarchical_contrastive(z1, z2).float())})
        return terms | ({"embeddings": self.full_view_tokens(batch)} if with_embeddings else {})
