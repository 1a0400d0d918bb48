"""The LeJEPA objective for time series: (1 - lambda) * latent prediction + lambda * SIGReg.

The encoder sees the whole window (target view) and, separately, only the context tokens (context view); the
predictor maps the context embeddings to the target view's embeddings at the masked (time, channel) spans.
SIGReg keeps the target view's embeddings isotropic Gaussian, so no EMA teacher or stop-gradient is needed;
both exist as switches for ablations.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

from tsjepa.data.batch import Batch
from tsjepa.masks import sample_span_mask
from tsjepa.models import Encoder, Predictor
from tsjepa.sigreg import sigreg

SIGREG_TARGETS = ("tokens", "pooled", "both")


@dataclass
class ObjectiveConfig:
    lam: float = 0.05  # SIGReg weight lambda
    sigreg_on: str = "tokens"  # tokens: every (window, channel, patch) token; pooled: mean per (window, channel)
    num_slices: int = 256
    knots: int = 17
    t_max: float = 3.0
    sigreg_backend: str = "auto"  # eager | compiled | auto (compiled on CUDA, eager on CPU)
    mask_ratio: float = 0.4
    mask_spans: int = 2
    channel_subset_prob: float = 0.5
    mask_tail_prob: float = 0.0  # share of windows whose target is the end of the window (extrapolation)
    ema: float = 0.0  # momentum of an EMA target encoder; 0 = none (the target is the online encoder)
    stop_grad: bool = False  # detach the targets

    def __post_init__(self) -> None:
        if self.sigreg_on not in SIGREG_TARGETS:
            raise ValueError(f"sigreg_on must be one of {SIGREG_TARGETS}, got {self.sigreg_on!r}")
        if not 0 <= self.lam <= 1:
            raise ValueError(f"lam must lie in [0, 1], got {self.lam}")

    def to_dict(self) -> dict:
        return asdict(self)


def sigreg_inputs(embeddings: Tensor, patch_observed: Tensor, where: str) -> list[Tensor]:
    """Embeddings ``[B, C, P, D]`` -> the ``[N, D]`` matrices SIGReg regularises.

    tokens: every observed token (N = observed B*C*P); pooled: the mean over observed patches of each
    (window, channel) (N = B*C with at least one observation).
    """
    out = []
    if where in ("tokens", "both"):
        out.append(embeddings[patch_observed])
    if where in ("pooled", "both"):
        w = patch_observed[..., None].to(embeddings.dtype)
        pooled = (embeddings * w).sum(2) / w.sum(2).clamp(min=1)
        out.append(pooled[patch_observed.any(-1)])
    return out


class JEPA(nn.Module):
    def __init__(self, encoder: Encoder, predictor: Predictor, config: ObjectiveConfig, seed: int = 0) -> None:
        super().__init__()
        self.encoder, self.predictor, self.config, self.seed = encoder, predictor, config, seed
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False) if config.ema > 0 else None

    @torch.no_grad()
    def update_target(self) -> None:
        """EMA step of the target encoder (no-op without EMA)."""
        if self.target_encoder is not None:
            for t, o in zip(self.target_encoder.parameters(), self.encoder.parameters(), strict=True):
                t.lerp_(o, 1 - self.config.ema)

    def forward(self, batch: Batch, step: int, generator: torch.Generator) -> dict[str, Tensor]:
        """Losses of one batch: ``loss``, ``prediction``, ``sigreg`` (scalars) and ``embeddings`` ``[N, D]``
        (detached target-view tokens, for diagnostics)."""
        cfg = self.config
        full = self.encoder(batch)
        target_mask = sample_span_mask(
            full.patch_observed, cfg.mask_ratio, cfg.mask_spans, cfg.channel_subset_prob, generator,
            cfg.mask_tail_prob,
        )
        context_mask = full.patch_observed & ~target_mask
        context = self.encoder(batch, context=context_mask)
        predicted = self.predictor(
            context.embeddings, context_mask, target_mask,
            self.encoder.tokenizer.patch_starts(batch.values.device), batch.channel_ids,
        )
        if self.target_encoder is not None:
            with torch.no_grad():
                targets = self.target_encoder(batch).embeddings
        else:
            targets = full.embeddings.detach() if cfg.stop_grad else full.embeddings
        if not target_mask.any():
            raise ValueError("no target patch could be sampled: windows have too few observed patches")
        prediction = ((predicted - targets) ** 2).mean(-1)[target_mask].mean()
        regularised = sigreg_inputs(full.embeddings, full.patch_observed, cfg.sigreg_on)
        statistic = torch.stack([
            sigreg(z, num_slices=cfg.num_slices, knots=cfg.knots, t_max=cfg.t_max, seed=self.seed, step=step,
                   backend=cfg.sigreg_backend)
            for z in regularised
        ]).mean()
        loss = (1 - cfg.lam) * prediction.float() + cfg.lam * statistic
        return {
            "loss": loss,
            "prediction": prediction.detach(),
            "sigreg": statistic.detach(),
            "embeddings": full.embeddings.detach()[full.patch_observed],
        }
