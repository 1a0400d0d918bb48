"""Anomaly scores read from a pretrained JEPA: latent prediction error of masked final patches, and the
distance of window embeddings from the training distribution with a chi-square calibration.

Scoring windows end on a patch boundary; their last patch is the region they score. The prediction error of a
channel is how far the predictor, given the rest of the window (every channel's earlier patches and, when only
that channel is masked, the other channels' last patch), lands from the encoder's embedding of that channel's
last patch: large when the channel breaks its own dynamics or its relation to the others.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from einops import repeat
from scipy.stats import chi2
from torch import Tensor
from tqdm import tqdm

from tsjepa.data.batch import Batch
from tsjepa.data.windows import Windows
from tsjepa.models import Encoder, EncoderOutput, Predictor


@dataclass
class LatentScores:
    errors: Tensor  # [N, C] prediction error of each channel's last patch (NaN: patch unobserved, or no predictor)
    tokens: Tensor  # [N, C, D] each channel's last-patch embedding (NaN: patch unobserved)

    @property
    def tail(self) -> Tensor:
        """``[N, D]`` the window embedding: mean over channels of their observed last-patch embeddings."""
        return self.tokens.nanmean(1).nan_to_num(0.0)


def patch_errors(encoder: Encoder, predictor: Predictor | None, batch: Batch, per_channel: bool = False
                 ) -> tuple[Tensor, EncoderOutput]:
    """Latent prediction error of each channel's last patch, ``[B, C]`` (NaN where that patch is unobserved,
    and everywhere without a ``predictor``: an encoder pretrained without one, e.g. masked reconstruction),
    and the target view. The last patches of all channels are masked together, or, with ``per_channel``, each
    channel's alone with the others visible (one context pass per channel)."""
    full = encoder(batch)
    n_windows, n_channels = batch.values.shape[:2]
    if predictor is None:
        return full.embeddings.new_full((n_windows, n_channels), float("nan")), full
    if per_channel:
        batch = Batch(*(repeat(t, "b ... -> (b k) ...", k=n_channels)
                        for t in (batch.values, batch.times, batch.observed, batch.channel_ids)))
        seen = repeat(full.patch_observed, "b c p -> (b k) c p", k=n_channels)
        targets = repeat(full.embeddings, "b c p d -> (b k) c p d", k=n_channels)
        target = torch.zeros_like(seen)
        target[torch.arange(len(seen)), torch.arange(n_channels).repeat(n_windows), -1] = True
    else:
        seen, targets = full.patch_observed, full.embeddings
        target = torch.zeros_like(seen)
        target[..., -1] = True
    target &= seen
    context_mask = seen & ~target
    context = encoder(batch, context=context_mask)
    predicted = predictor(context.embeddings, context_mask, target,
                          encoder.tokenizer.patch_starts(batch.values.device), batch.channel_ids)
    err = ((predicted - targets)[..., -1, :] ** 2).mean(-1).masked_fill(~target[..., -1], float("nan"))
    if per_channel:
        err = err.reshape(n_windows, n_channels, n_channels).diagonal(dim1=1, dim2=2)
    return err, full


@torch.no_grad()
def latent_scores(encoder: Encoder, predictor: Predictor | None, windows: Windows, index: Tensor, batch_size: int,
                  device, desc: str, per_channel: bool = False,
                  edit: Callable[[Batch, Tensor], Batch] | None = None) -> LatentScores:
    """Scores of windows ``index`` ``[N]`` (see `patch_errors`); ``edit(batch, index)`` changes a batch before
    scoring (e.g. an injected anomaly)."""
    encoder.eval()
    if predictor is not None:
        predictor.eval()
    errors, tokens = [], []
    for chunk in tqdm(index.split(batch_size), desc=desc, leave=False, dynamic_ncols=True):
        batch = windows.batch(chunk)
        batch = (batch if edit is None else edit(batch, chunk)).to(device)
        batch.validate(windows.span)
        err, full = patch_errors(encoder, predictor, batch, per_channel)
        seen = full.patch_observed[..., -1, None]  # [B, C, 1]
        tokens.append(full.embeddings[..., -1, :].masked_fill(~seen, float("nan")).cpu())
        errors.append(err.cpu())
    return LatentScores(torch.cat(errors), torch.cat(tokens))


def standardised(errors: Tensor, reference: Tensor) -> Tensor:
    """Per-channel robust standardisation of ``errors`` ``[N, C]`` by ``reference`` ``[M, C]`` (errors of
    normal windows): (e - median) / IQR, so channels with noisier predictions do not dominate."""
    ref = reference.nan_to_num(nan=float(reference.nanmedian()))
    med = ref.median(0).values
    iqr = (ref.quantile(0.75, dim=0) - ref.quantile(0.25, dim=0)).clamp(min=1e-6)
    return (errors - med) / iqr


@dataclass
class Whitener:
    """Gaussian fits of normal embeddings, one per group (a group is e.g. a channel; one group for window
    embeddings). Squared whitened norms are chi-square with ``D`` degrees of freedom per group when the
    embeddings are Gaussian, as SIGReg pushes them to be, and their sum over ``G`` independent groups is
    chi-square with ``G * D``."""

    mean: Tensor  # [G, D]
    cholesky: Tensor  # [G, D, D]

    @classmethod
    def fit(cls, z: Tensor, ridge: float = 1e-4) -> Whitener:
        """``z`` ``[N, D]`` (one group) or ``[N, G, D]``; a group's NaN rows (unobserved) are left out of its
        fit. ``ridge`` times the mean variance over all groups is added to every covariance diagonal: the groups
        share one embedding space, so a group whose embedding barely moves on normal data (a constant channel)
        is regularised on the common scale instead of turning its tiny variance into huge distances."""
        z = grouped(z).double()
        seen = ~z.isnan().any(-1, keepdim=True)  # [N, G, 1]
        count = seen.sum(0)  # [G, 1]
        sparse = (count[:, 0] < 2).nonzero()[:, 0].tolist()
        if sparse:
            raise ValueError(f"groups (channels) {sparse} have fewer than 2 observed embeddings in the fit windows; "
                             "a Gaussian needs at least 2")
        z = z.nan_to_num(0.0)
        mean = (z * seen).sum(0) / count
        centred = (z - mean) * seen
        cov = torch.einsum("ngd,nge->gde", centred, centred) / (count[..., None] - 1)
        eye = torch.eye(z.shape[-1], dtype=cov.dtype)
        scale = cov.diagonal(dim1=1, dim2=2).mean().clamp(min=1e-6)
        return cls(mean, torch.linalg.cholesky(cov + ridge * scale * eye))

    @property
    def dof(self) -> int:
        """Degrees of freedom of `squared_norm`: groups x dimensions."""
        return self.mean.numel()

    def group_norms(self, z: Tensor) -> Tensor:
        """``[N, G, D]`` (or ``[N, D]``) -> ``[N, G]`` squared Mahalanobis distance of each group's embedding
        (0 where unobserved)."""
        centred = (grouped(z).double() - self.mean).permute(1, 2, 0)  # [G, D, N]
        w = torch.linalg.solve_triangular(self.cholesky, centred, upper=False)
        return (w**2).sum(1).T.nan_to_num(0.0)

    def squared_norm(self, z: Tensor) -> Tensor:
        """``[N, G, D]`` (or ``[N, D]``) -> ``[N]``: the squared whitened norms summed over groups."""
        return self.group_norms(z).sum(1)

    def p_values(self, z: Tensor) -> np.ndarray:
        """``[N, G, D]`` (or ``[N, D]``) -> ``[N]`` chi-square upper-tail p-values (`dof` degrees of freedom)
        of `squared_norm`."""
        return self.tail(self.squared_norm(z))

    def tail(self, squared_norms: Tensor) -> np.ndarray:
        """``[N]`` squared norms (from `squared_norm`) -> ``[N]`` chi-square upper-tail p-values."""
        return chi2.sf(squared_norms.numpy(), df=self.dof)


def grouped(z: Tensor) -> Tensor:
    """``[N, D]`` -> ``[N, 1, D]``; ``[N, G, D]`` unchanged."""
    if z.ndim not in (2, 3):
        raise ValueError(f"embeddings must be [N, D] or [N, G, D], got shape {tuple(z.shape)}")
    return z[:, None] if z.ndim == 2 else z
