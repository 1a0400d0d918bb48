"""The channel-aware patch encoder: tokenizer + channel identity + continuous time + axial transformer."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tsjepa.data.batch import Batch
from tsjepa.models.blocks import axial_stack, rotary
from tsjepa.models.tokenizer import PatchTokenizer, TimeEncoding, instance_norm


def check_dims(config, positive: tuple[str, ...]) -> None:
    """Shared checks of a model config: ``positive`` fields > 0, d_model divisible by heads, dropout in [0, 1)."""
    bad = [f"{k}={getattr(config, k)!r}" for k in positive if not getattr(config, k) > 0]
    if bad:
        raise ValueError(f"{type(config).__name__}: must be > 0: {', '.join(bad)}")
    if config.d_model % config.heads:
        raise ValueError(f"{type(config).__name__}: d_model={config.d_model} is not divisible by heads={config.heads}")
    if not 0 <= getattr(config, "dropout", 0.0) < 1:
        raise ValueError(f"{type(config).__name__}: dropout must lie in [0, 1), got {config.dropout}")


POSITIONS = ("absolute", "rotary")


@dataclass
class EncoderConfig:
    span: float = 336.0  # window duration in time units (lookback x sampling interval for regular data)
    patch_duration: float = 16.0  # time units per patch
    slots: int = 16  # sub-intervals per patch (= patch length for regular data)
    d_model: int = 128
    depth: int = 3  # (time, channel) block pairs
    heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.0
    channel_capacity: int = 64  # rows of the channel-identity embedding table
    instance_norm: bool = True  # standardise each window and channel (RevIN without affine)
    # where time enters: "absolute" adds the continuous-time encoding of each patch's start to its token;
    # "rotary" adds none and rotates time attention's queries and keys by it (RoPE): relative positions only
    position: str = "absolute"

    def __post_init__(self) -> None:
        check_dims(self, positive=("span", "patch_duration", "slots", "d_model", "depth", "heads", "mlp_ratio",
                                   "channel_capacity"))
        if self.position not in POSITIONS:
            raise ValueError(f"EncoderConfig: position must be one of {POSITIONS}, got {self.position!r}")
        if self.patch_duration > self.span:
            raise ValueError(f"patch_duration {self.patch_duration} exceeds the window span {self.span}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class EncoderOutput:
    embeddings: Tensor  # [B, C, P, D]
    patch_observed: Tensor  # [B, C, P] bool: the patch holds at least one observation
    loc: Tensor  # [B, C] instance-normalisation mean (0 when instance_norm is off)
    scale: Tensor  # [B, C] instance-normalisation std (1 when off)

    def take(self, index: Tensor | slice) -> EncoderOutput:
        """The outputs of windows ``index`` (a slice or an index tensor into B)."""
        return EncoderOutput(self.embeddings[index], self.patch_observed[index], self.loc[index], self.scale[index])


class Encoder(nn.Module):
    """Batch ``[B, C, T]`` -> `EncoderOutput` with embeddings ``[B, C, P, D]``.

    Attention alternates between time (within a channel) and channels (within a patch), so information mixes
    across both axes at O(C P^2 + P C^2) cost. Unobserved patches, and patches outside ``context`` when one is
    given, are never attended to: their values cannot influence any other token.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.tokenizer = PatchTokenizer(config.span, config.patch_duration, config.slots, config.d_model)
        self.time_encoding = TimeEncoding(config.d_model) if config.position == "absolute" else None
        self.channel_embedding = nn.Embedding(config.channel_capacity, config.d_model)
        nn.init.normal_(self.channel_embedding.weight, std=0.02)
        self.blocks = axial_stack(config.d_model, config.heads, config.depth, config.mlp_ratio, config.dropout)
        self.norm = nn.LayerNorm(config.d_model)

    @property
    def num_patches(self) -> int:
        return self.tokenizer.num_patches

    @property
    def num_layers(self) -> int:
        """Outputs `forward` can read with ``layers``: 0 the input tokens, k after block k, the last normed."""
        return len(self.blocks) + 1

    def cropped(self, span: float) -> Encoder:
        """A copy of this encoder whose grid covers only the last ``span`` time units of its window (a whole number
        of patches, at most its span). On windows observed only there (``Batch.validate(span)``) it gives every
        observed patch the embedding this encoder gives it, since the earlier patches are unobserved and never
        attended to, at the cost of the patches it keeps (e.g. 4 of the corpus encoder's 21 on 64-row windows).
        The unobserved patches it keeps, never attended to either, may differ. Draws nothing from torch's global
        generator."""
        patches = span / self.config.patch_duration
        if not 0 < span <= self.config.span + 1e-6 or abs(patches - round(patches)) > 1e-6:
            raise ValueError(f"windows of {span:g} time units do not fit this encoder: it reads a whole number of "
                             f"patches of {self.config.patch_duration:g} units, up to its span of {self.config.span:g}")
        with torch.random.fork_rng(devices=[]):  # its initial draws are overwritten: leave the global generator be
            view = Encoder(replace(self.config, span=float(span)))
        view.load_state_dict(self.state_dict())
        return view.to(self.norm.weight.device).train(self.training)

    def forward(self, batch: Batch, context: Tensor | None = None, layers: tuple[int, ...] | None = None,
                masked: Tensor | None = None, mask_token: Tensor | None = None) -> EncoderOutput:
        """context ``[B, C, P]`` bool: the visible patches (default: all observed ones). Other patches are never
        attended to, and their values do not enter the instance-normalisation statistics.

        masked ``[B, C, P]`` bool with mask_token ``[D]`` (masked reconstruction, PatchTST / MOMENT style): these
        patches' tokens are replaced by ``mask_token`` before the time and channel embeddings are added; they are
        still attended to (when observed and in ``context``), and their values do not enter the
        instance-normalisation statistics, so nothing of a masked value reaches the output.

        layers: which outputs make the embeddings, concatenated along D (``[B, C, P, len(layers) * D]``):
        0 = the input tokens (patch embedding + channel, + time when ``position`` is absolute), k = after block k (1..2*depth), -1 = the
        final, normed output (the default, alone). Intermediate outputs are layer-normed without affine."""
        picks = [-1] if layers is None else [int(k) for k in layers]
        if not picks or any(not -self.num_layers <= k < self.num_layers for k in picks):
            raise ValueError(f"layers must be a non-empty list in [-{self.num_layers}, {self.num_layers}), "
                             f"got {layers}")
        picks = [k % self.num_layers for k in picks]
        if (batch.channel_ids >= self.config.channel_capacity).any() or (batch.channel_ids < 0).any():
            raise ValueError(
                f"channel ids must lie in [0, {self.config.channel_capacity}); "
                f"got {batch.channel_ids.min().item()}..{batch.channel_ids.max().item()}"
            )
        if (masked is None) != (mask_token is None):
            raise ValueError("masked and mask_token go together")
        values, observed = batch.values, batch.observed
        shown = context  # [B, C, P] the patches whose values may set the normalisation, None = all
        if masked is not None:
            shown = ~masked if context is None else context & ~masked
        if self.config.instance_norm:
            visible = None if shown is None else shown.gather(-1, self.tokenizer.patch_index(batch.times))
            values, loc, scale = instance_norm(values, observed, visible)
        else:
            loc = values.new_zeros(values.shape[:2])
            scale = values.new_ones(values.shape[:2])
        tokens, patch_observed = self.tokenizer(values, batch.times, observed)
        if masked is not None:
            tokens = torch.where(masked[..., None], mask_token.to(tokens.dtype), tokens)
        starts = self.tokenizer.patch_starts(values.device)
        channels = self.channel_embedding(batch.channel_ids)[:, :, None, :]
        if self.time_encoding is not None:
            x, rotation = tokens + self.time_encoding(starts) + channels, None
        else:
            x, rotation = tokens + channels, rotary(starts, self.config.d_model // self.config.heads)
        keys = patch_observed if context is None else patch_observed & context
        outputs = {0: x}
        for k, block in enumerate(self.blocks, start=1):
            x = block(x, keys, rotation)
            outputs[k] = x
        last = self.num_layers - 1
        outputs[last] = self.norm(x)
        embeddings = [outputs[k] if k == last else F.layer_norm(outputs[k], outputs[k].shape[-1:]) for k in picks]
        return EncoderOutput(torch.cat(embeddings, -1), patch_observed, loc, scale)
