"""The LeJEPA objective for time series.

    loss = (1 - lam) * (prediction + view_weight * multiview) + lam * SIGReg + reconstruction_weight * recon

- ``prediction``: the encoder sees the whole window (target view) and, separately, only the context tokens
  (context view); the predictor maps the context embeddings to the target view's embeddings at the masked
  (time, channel) spans. The loss compares both after the projector (identity when ``projector`` is empty).
- ``SIGReg`` acts on the projector's output (LeJEPA Sec. 5), over the sample unit ``sigreg_on``; probes read
  the encoder output before the projector.
- ``centre_slots``: SIGReg reads each projected token minus its (channel, patch) slot's mean over the batch's
  windows. Position and channel identity alone then cannot pass the test: what is left is how windows differ
  at the same slot, their content. (Without it, the study's proj-axes encoders put ~98% of their token
  variance into the slot code and the predictor matches its targets with R^2 0.999 from position alone.)
- ``multiview`` (``views > 0``): LeJEPA's own loss over time crops of one window: every view's pooled
  projection predicts the mean of the global views' projections; SIGReg also acts on each view's projections
  (one sample per window).
- ``recon`` (``reconstruction_weight > 0``): a linear head reads the masked patches' instance-normalised
  values back out of the predicted latents (a dense-detail auxiliary).

Options against the positional shortcut (a target that is a function of its (channel, patch) slot is the
cheapest to predict, since the predictor gets the target positions):

- ``content_targets``: the prediction loss compares with each projected target minus its slot's batch mean,
  so position alone predicts nothing;
- ``position_noise`` (StoP, Bar et al. 2024): Gaussian noise of this std on the mask tokens' positions,
  through the predictor's own context projection;
- ``target_norm``: ``layer`` (I-JEPA: layer norm over features) or ``instance`` (data2vec: each (window,
  channel) target sequence standardised over its patches) before the projector;
- ``sigreg_on: slots`` (each (channel, patch) slot tested across the batch's windows) and ``within`` (each
  window's tokens alone, LeNEPA's time-axis placement).

SIGReg keeps the embeddings isotropic Gaussian, so no EMA teacher or stop-gradient is needed; both exist as
switches for ablations (the ``ijepa`` preset: EMA + stop-gradient, no SIGReg). ``kind`` picks the objective
itself: ``jepa`` (this module), or the peers it is compared with, ``mae`` (`tsjepa.masked_modelling`) and
``contrastive`` (`tsjepa.contrastive`), on the same encoder.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from tsjepa.data.batch import Batch
from tsjepa.masks import sample_crops, sample_span_mask
from tsjepa.models import Encoder, Predictor
from tsjepa.models.projector import Projector
from tsjepa.models.tokenizer import instance_norm
from tsjepa.sigreg import global_sum, sigreg, sigreg_per_group

# What counts as one SIGReg sample:
#   tokens: every observed (window, channel, patch) token;
#   pooled: the mean token of each (window, channel);
#   window: the mean token of each window (over its channels and patches);
#   axes:   both across samples (window means) and, within each window, across its own tokens (the two
#           statistics averaged), against the time-axis collapse that SIGReg over samples alone allows;
#   both:   tokens and pooled (the two statistics averaged);
#   slots:  for each (channel, patch) slot, the batch's windows (the statistic averaged over slots);
#   within: each window's own tokens alone (the within-window half of axes).
SIGREG_UNITS = ("tokens", "pooled", "window", "axes", "both", "slots", "within")
KINDS = ("jepa", "mae", "contrastive")
TARGET_NORMS = ("none", "layer", "instance")


@dataclass
class ObjectiveConfig:
    kind: str = "jepa"  # one of KINDS: JEPA (+ SIGReg), or a peer objective on the same encoder
    lam: float = 0.05  # SIGReg weight lambda
    sigreg_on: str = "tokens"  # the sample unit, one of SIGREG_UNITS
    num_slices: int = 256
    knots: int = 17
    t_max: float = 3.0
    sigreg_backend: str = "auto"  # eager | compiled | auto (tsjepa.sigreg.resolve_backend)
    mask_ratio: float = 0.4
    mask_spans: int = 2
    channel_subset_prob: float = 0.5
    mask_tail_prob: float = 0.0  # share of windows whose target is the end of the window (extrapolation)
    projector: list[int] = field(default_factory=list)  # hidden and output widths; [] = none (identity)
    views: int = 0  # time crops per window for the multi-view loss; 0 = off
    global_views: int = 2
    global_keep: float = 0.7  # share of patches a global crop keeps
    local_keep: float = 0.3
    view_weight: float = 1.0  # weight of the multi-view loss beside the span prediction
    reconstruction_weight: float = 0.0  # weight of the masked-patch value reconstruction; 0 = off
    ema: float = 0.0  # momentum of an EMA target encoder; 0 = none (the target is the online encoder)
    stop_grad: bool = False  # detach the targets
    centre_slots: bool = False  # SIGReg on tokens minus their (channel, patch) slot's batch mean
    content_targets: bool = False  # prediction loss on targets minus their slot's batch mean
    position_noise: float = 0.0  # std of the StoP noise on the predictor's masked positions; 0 = off
    target_norm: str = "none"  # one of TARGET_NORMS, applied to the targets before the projector
    min_crop: int = 2  # contrastive: the fewest patches two crops share

    def __post_init__(self) -> None:
        for key, allowed in (("kind", KINDS), ("sigreg_on", SIGREG_UNITS), ("target_norm", TARGET_NORMS)):
            if getattr(self, key) not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {getattr(self, key)!r}")
        if not 0 <= self.lam <= 1:
            raise ValueError(f"lam must lie in [0, 1], got {self.lam}")
        if self.views < 0 or self.view_weight < 0 or self.reconstruction_weight < 0:
            raise ValueError("views, view_weight and reconstruction_weight must be >= 0, got "
                             f"{self.views}, {self.view_weight}, {self.reconstruction_weight}")
        if not 0 <= self.ema < 1:
            raise ValueError(f"ema must lie in [0, 1), got {self.ema}")
        if self.sigreg_backend not in ("eager", "compiled", "auto"):
            raise ValueError(f"sigreg_backend must be eager, compiled or auto, got {self.sigreg_backend!r}")
        checks = {"num_slices": self.num_slices >= 1, "knots": self.knots >= 2, "t_max": self.t_max > 0,
                  "mask_ratio": 0 < self.mask_ratio < 1, "mask_spans": self.mask_spans >= 1,
                  "channel_subset_prob": 0 <= self.channel_subset_prob <= 1,
                  "mask_tail_prob": 0 <= self.mask_tail_prob <= 1, "global_keep": 0 < self.global_keep <= 1,
                  "local_keep": 0 < self.local_keep <= 1, "position_noise": self.position_noise >= 0,
                  "min_crop": self.min_crop >= 2,
                  "global_views": not self.views or 0 < self.global_views <= self.views}
        bad = [f"{k}={getattr(self, k)!r}" for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"invalid objective settings: {', '.join(bad)} (see configs/model/base.yaml)")
        self.projector = [int(d) for d in self.projector]

    def to_dict(self) -> dict:
        return asdict(self)


def masked_mean(embeddings: Tensor, weight: Tensor, dims: tuple[int, ...]) -> Tensor:
    """Mean of ``embeddings`` ``[..., D]`` over ``dims`` where ``weight`` (bool, ``embeddings.shape[:-1]``)."""
    w = weight[..., None].to(embeddings.dtype)
    return (embeddings * w).sum(dims) / w.sum(dims).clamp(min=1)


def sigreg_inputs(embeddings: Tensor, patch_observed: Tensor, where: str) -> list[Tensor]:
    """Embeddings ``[B, C, P, D]`` -> the ``[N, D]`` sample matrices SIGReg tests across samples.

    tokens: every observed token (N = observed B*C*P); pooled: each (window, channel) mean over its observed
    patches (N = B*C with an observation); window / axes: each window's mean (N = B with an observation).
    The within-window part of ``axes`` is `within_window_inputs`.
    """
    out = []
    if where in ("tokens", "both"):
        out.append(embeddings[patch_observed])
    if where in ("pooled", "both"):
        out.append(masked_mean(embeddings, patch_observed, (2,))[patch_observed.any(-1)])
    if where in ("window", "axes"):
        out.append(masked_mean(embeddings, patch_observed, (1, 2))[patch_observed.flatten(1).any(1)])
    return out


def slot_centred(embeddings: Tensor, patch_observed: Tensor) -> Tensor:
    """Embeddings ``[B, C, P, D]`` minus each (channel, patch) slot's mean over the windows that observe it
    (over every rank's windows in a distributed run): what position and channel identity alone do not
    explain. Unobserved tokens keep their values (they never enter SIGReg)."""
    weight = patch_observed[..., None].to(embeddings.dtype)
    sums = global_sum((embeddings * weight).sum(0))
    counts = global_sum(weight.sum(0))
    return embeddings - weight * sums / counts.clamp(min=1)


def slot_inputs(embeddings: Tensor, patch_observed: Tensor) -> Tensor:
    """Embeddings ``[B, C, P, D]`` -> ``[G, B, D]``: for each of the G (channel, patch) slots that every window
    of the batch observes, its token in each window (the samples of per-slot SIGReg)."""
    every = patch_observed.all(0).flatten()  # [C * P]
    return rearrange(embeddings, "b c p d -> (c p) b d")[every]


def target_normalised(targets: Tensor, patch_observed: Tensor, how: str) -> Tensor:
    """Targets ``[B, C, P, D]`` normalised as ``how`` says: ``layer`` over features (I-JEPA), ``instance`` over
    each (window, channel)'s observed patches, per feature (data2vec), ``none`` as they are."""
    if how == "layer":
        return F.layer_norm(targets, targets.shape[-1:])
    if how == "instance":
        weight = patch_observed[..., None].to(targets.dtype)
        count = weight.sum(2, keepdim=True).clamp(min=1)
        mean = (targets * weight).sum(2, keepdim=True) / count
        var = (((targets - mean) ** 2) * weight).sum(2, keepdim=True) / count
        return (targets - mean) / torch.sqrt(var + 1e-5)
    return targets


def within_window_inputs(embeddings: Tensor, patch_observed: Tensor) -> list[Tensor]:
    """Each window's observed tokens, windows of equal token count stacked: ``[G, n, D]`` per count ``n``
    (windows with fewer than 2 are left out)."""
    counts = patch_observed.flatten(1).sum(1)
    return [torch.stack([z[m] for z, m, c in zip(embeddings, patch_observed, counts, strict=True) if c == n])
            for n in sorted({int(c) for c in counts if c >= 2})]


class Objective(nn.Module):
    """What the training loop drives: ``forward(batch, step, generator)`` gives ``loss``, its terms and the
    detached target-view ``embeddings`` ``[N, D]``; ``encoder`` (and ``predictor``, None for objectives without
    one) are what a checkpoint ships, `training_modules` what else it keeps for resuming."""

    def __init__(self, encoder: Encoder, config: ObjectiveConfig, seed: int = 0) -> None:
        super().__init__()
        self.encoder, self.config, self.seed = encoder, config, seed
        self.predictor: Predictor | None = None

    def training_modules(self) -> dict[str, nn.Module]:
        """Modules besides encoder and predictor that a training checkpoint keeps for resuming."""
        return {}

    @torch.no_grad()
    def update_target(self) -> None:
        """After each optimizer step (the EMA teacher's update; nothing by default)."""

    @torch.no_grad()
    def observed_patches(self, batch: Batch) -> Tensor:
        """``[B, C, P]`` bool: the patches holding at least one observation."""
        tokenizer = self.encoder.tokenizer
        return tokenizer.slot_features(batch.values, batch.times, batch.observed)[:, :, :, 1].amax(-1) > 0

    @torch.no_grad()
    def full_view_tokens(self, batch: Batch) -> Tensor:
        """The encoder's tokens of every observed patch of the whole windows ``[N, D]``, for diagnostics."""
        full = self.encoder(batch)
        return full.embeddings[full.patch_observed]

    @torch.no_grad()
    def patch_values(self, batch: Batch, visible: Tensor | None = None) -> Tensor:
        """Per slot of every patch, the window's instance-normalised value and observed flag ``[B, C, P, 2, S]``
        (the same normalisation the encoder applies, with statistics of the ``visible`` patches ``[B, C, P]``
        when given)."""
        values, observed = batch.values, batch.observed
        if self.encoder.config.instance_norm:
            seen = None if visible is None else visible.gather(-1, self.encoder.tokenizer.patch_index(batch.times))
            values = instance_norm(values, observed, seen)[0]
        return self.encoder.tokenizer.slot_features(values, batch.times, observed)[:, :, :, :2]


def weighted_terms(terms: dict[str, tuple[float, Tensor]]) -> dict[str, Tensor]:
    """``{name: (weight, value)}`` -> ``loss`` (the weighted sum), each detached value and its weighted share of
    the loss ``share_<name>``."""
    loss = sum(w * v for w, v in terms.values())
    out = {"loss": loss, **{k: v.detach() for k, (_, v) in terms.items()}}
    return out | {f"share_{k}": (w * v.detach() / loss.detach()) for k, (w, v) in terms.items()}


class JEPA(Objective):
    def __init__(self, encoder: Encoder, predictor: Predictor, config: ObjectiveConfig, seed: int = 0) -> None:
        super().__init__(encoder, config, seed)
        self.predictor = predictor
        dim = encoder.config.d_model
        self.projector = Projector(dim, config.projector) if config.projector else None
        self.reconstruction = (nn.Linear(dim, encoder.config.slots) if config.reconstruction_weight > 0
                               else None)
        self.target_encoder = copy.deepcopy(encoder).requires_grad_(False) if config.ema > 0 else None

    def training_modules(self) -> dict[str, nn.Module]:
        named = {"projector": self.projector, "reconstruction": self.reconstruction,
                 "target_encoder": self.target_encoder}
        return {k: v for k, v in named.items() if v is not None}

    def project(self, x: Tensor) -> Tensor:
        return x if self.projector is None else self.projector(x)

    @torch.no_grad()
    def update_target(self) -> None:
        """EMA step of the target encoder (no-op without EMA)."""
        if self.target_encoder is not None:
            for t, o in zip(self.target_encoder.parameters(), self.encoder.parameters(), strict=True):
                t.lerp_(o, 1 - self.config.ema)

    def sigreg(self, z: Tensor, step: int, sync: bool = True) -> Tensor:
        cfg = self.config
        return sigreg(z, num_slices=cfg.num_slices, knots=cfg.knots, t_max=cfg.t_max, seed=self.seed, step=step,
                      backend=cfg.sigreg_backend, sync=sync)

    def span_sigreg(self, z: Tensor, patch_observed: Tensor, step: int) -> list[Tensor]:
        """SIGReg statistics of projected target-view tokens ``[B, C, P, K]`` over the configured unit."""
        cfg = self.config
        stats = [self.sigreg(x, step) for x in sigreg_inputs(z, patch_observed, cfg.sigreg_on)]
        groups = {"axes": within_window_inputs, "within": within_window_inputs,
                  "slots": lambda *a: [slot_inputs(*a)]}.get(cfg.sigreg_on)
        if groups is not None:  # sets tested one by one (a window's tokens, a slot's windows): local
            per_group = torch.cat([
                sigreg_per_group(x, num_slices=cfg.num_slices, knots=cfg.knots, t_max=cfg.t_max, seed=self.seed,
                                 step=step, backend=cfg.sigreg_backend)
                for x in groups(z, patch_observed) if len(x) and x.shape[1] >= 2])
            if not len(per_group):
                raise ValueError(f"sigreg_on={cfg.sigreg_on}: no set of at least 2 samples in this batch")
            stats.append(per_group.mean())
        return stats

    def multiview(self, batch: Batch, patch_observed: Tensor, step: int,
                  generator: torch.Generator) -> tuple[Tensor, list[Tensor]]:
        """LeJEPA's loss over time crops: mean over views of ``|z_v - mean_global z_g|^2 / K`` with ``z`` the
        projected mean token of each window's view ``[B, K]``; and SIGReg of each view's ``[B, K]``."""
        cfg = self.config
        crops = sample_crops(patch_observed, cfg.views, cfg.global_views, cfg.global_keep, cfg.local_keep,
                             generator)
        z = torch.stack([self.project(masked_mean(self.encoder(batch, context=crop).embeddings, crop, (1, 2)))
                         for crop in crops])  # [V, B, K]
        seen = crops.flatten(2).any(-1).all(0)  # [B]: windows every view sees
        centre = z[: cfg.global_views].mean(0)
        loss = ((z - centre) ** 2).mean(-1)[:, seen].mean()
        return loss, [self.sigreg(v[seen], step) for v in z]

    def forward(self, batch: Batch, step: int, generator: torch.Generator, with_embeddings: bool = True
                ) -> dict[str, Tensor]:
        """Losses of one batch: ``loss`` and each term (``prediction``, ``sigreg``, and ``multiview`` /
        ``reconstruction`` when on) with its weighted share of the loss ``share_<term>``; ``embeddings``
        ``[N, D]`` (detached target-view encoder tokens of the observed patches, for diagnostics; free here,
        so given whatever ``with_embeddings`` says)."""
        cfg = self.config
        # the whole window's online pass needs a gradient only where a loss reads it: SIGReg, or as the target
        with torch.set_grad_enabled(torch.is_grad_enabled() and (
                cfg.lam > 0 or (self.target_encoder is None and not cfg.stop_grad))):
            full = self.encoder(batch)
        target_mask = sample_span_mask(
            full.patch_observed, cfg.mask_ratio, cfg.mask_spans, cfg.channel_subset_prob, generator,
            cfg.mask_tail_prob,
        )
        if not target_mask.any():
            raise ValueError("no target patch could be sampled: windows have too few observed patches")
        context_mask = full.patch_observed & ~target_mask
        context = self.encoder(batch, context=context_mask)
        noise = None
        if cfg.position_noise > 0:
            noise = cfg.position_noise * torch.randn(full.embeddings.shape, generator=generator).to(
                full.embeddings)
        predicted = self.predictor(
            context.embeddings, context_mask, target_mask,
            self.encoder.tokenizer.patch_starts(batch.values.device), batch.channel_ids, position_noise=noise,
        )
        if self.target_encoder is not None:
            with torch.no_grad():
                targets = self.target_encoder(batch).embeddings
        else:
            targets = full.embeddings.detach() if cfg.stop_grad else full.embeddings
        projected = self.project(full.embeddings)
        if cfg.target_norm != "none":
            targets = target_normalised(targets, full.patch_observed, cfg.target_norm)
        target_z = projected if targets is full.embeddings else self.project(targets)
        if cfg.content_targets:
            target_z = slot_centred(target_z, full.patch_observed)
        prediction = ((self.project(predicted[target_mask]) - target_z[target_mask]) ** 2).mean().float()
        terms = {"prediction": (1 - cfg.lam, prediction)}
        stats = []
        if cfg.lam > 0:  # lambda = 0 (ijepa, lam0): SIGReg is not computed, so its wall time is not paid
            tested = slot_centred(projected, full.patch_observed) if cfg.centre_slots else projected
            stats = self.span_sigreg(tested, full.patch_observed, step)
        if cfg.views:
            multiview, view_stats = self.multiview(batch, full.patch_observed, step, generator)
            stats += view_stats
            terms["multiview"] = ((1 - cfg.lam) * cfg.view_weight, multiview.float())
        if cfg.lam > 0:
            terms["sigreg"] = (cfg.lam, torch.stack(stats).mean())
        if self.reconstruction is not None:
            slots = self.patch_values(batch)  # [B, C, P, 2, S]: normalised value, observed flag
            recon_err = (self.reconstruction(predicted) - slots[..., 0, :]) ** 2
            weight = slots[..., 1, :] * target_mask[..., None]
            terms["reconstruction"] = (cfg.reconstruction_weight,
                                       ((recon_err * weight).sum() / weight.sum().clamp(min=1)).float())
        return weighted_terms(terms) | {"embeddings": full.embeddings.detach()[full.patch_observed]}
