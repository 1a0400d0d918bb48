"""JEPA predictor: context embeddings + mask tokens at target (time, channel) positions -> target embeddings."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tsjepa.models.blocks import axial_stack
from tsjepa.models.encoder import check_dims
from tsjepa.models.tokenizer import TimeEncoding


@dataclass
class PredictorConfig:
    d_model: int = 64  # narrower than the encoder, as in I-JEPA
    depth: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0

    def __post_init__(self) -> None:
        check_dims(self, positive=("d_model", "depth", "heads", "mlp_ratio"))

    def to_dict(self) -> dict:
        return asdict(self)


class Predictor(nn.Module):
    def __init__(self, config: PredictorConfig, encoder_dim: int, channel_capacity: int) -> None:
        super().__init__()
        dim = config.d_model
        self.config = config
        self.embed = nn.Linear(encoder_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(dim))
        self.time_encoding = TimeEncoding(dim)
        self.channel_embedding = nn.Embedding(channel_capacity, dim)
        nn.init.normal_(self.channel_embedding.weight, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        self.blocks = axial_stack(dim, config.heads, config.depth, config.mlp_ratio, 0.0)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, encoder_dim)

    def forward(
        self, context_embeddings: Tensor, context: Tensor, target: Tensor, patch_starts: Tensor, channel_ids: Tensor,
        position_noise: Tensor | None = None,
    ) -> Tensor:
        """Predict embeddings ``[B, C, P, D_enc]`` (read them at ``target``).

        Args:
            context_embeddings: ``[B, C, P, D_enc]`` encoder output of the context view.
            context, target: ``[B, C, P]`` bool, disjoint.
            patch_starts: ``[P]`` patch start times; channel_ids: ``[B, C]``.
            position_noise: ``[B, C, P, D_enc]`` Gaussian noise added to the mask tokens through the context
                projection's weights (StoP: stochastic positions, tied to the context projection so the model
                cannot shrink the noise away without shrinking its view of the context); None: exact positions.
        """
        mask = self.mask_token if position_noise is None else self.mask_token + F.linear(position_noise,
                                                                                          self.embed.weight)
        x = torch.where(context[..., None], self.embed(context_embeddings), mask)
        x = x + self.time_encoding(patch_starts) + self.channel_embedding(channel_ids)[:, :, None, :]
        keys = context | target
        for block in self.blocks:
            x = block(x, keys)
        return self.head(self.norm(x))
