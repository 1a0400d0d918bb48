"""Axial transformer blocks: self-attention along time (per channel) or across channels (per patch), with
optional rotary position embedding (RoPE) along time."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

# axis -> (tokens to sequences, key mask to sequences, sequences back to tokens)
AXIS_PATTERNS = {
    "time": ("b c p d -> (b c) p d", "b c p -> (b c) p", "(b c) p d -> b c p d"),
    "channel": ("b c p d -> (b p) c d", "b c p -> (b p) c", "(b p) c d -> b c p d"),
}


def rotary(positions: Tensor, dim: int, base: float = 10_000.0) -> tuple[Tensor, Tensor]:
    """RoPE (Su et al., RoFormer) of continuous ``positions`` ``[S]`` for heads of ``dim`` features: cos and sin
    ``[S, dim]`` of the angles ``position * base^(-2i/dim)``, each frequency on a pair of features (i, i + dim/2)."""
    if dim % 2:
        raise ValueError(f"rotary position embedding needs an even head dimension, got {dim}")
    freqs = base ** (-torch.arange(0, dim, 2, device=positions.device, dtype=torch.float32) / dim)
    angle = positions.float()[:, None] * freqs
    angle = torch.cat([angle, angle], -1)
    return angle.cos(), angle.sin()


def rotate(x: Tensor, rotation: tuple[Tensor, Tensor]) -> Tensor:
    """x ``[..., S, E]`` rotated by ``rotation`` (cos, sin ``[S, E]`` of `rotary`), in x's dtype: the dot product of
    two rotated vectors depends on their positions only through the difference."""
    cos, sin = rotation
    half = x.shape[-1] // 2
    turned = torch.cat([-x[..., half:], x[..., :half]], -1)
    return (x * cos + turned * sin).to(x.dtype)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"d_model={dim} is not divisible by heads={heads}")
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, keys: Tensor, rotation: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x ``[N, S, D]``; keys ``[N, S]`` bool, which positions may be attended to; rotation: RoPE of the S
        positions (`rotary`, ``[S, D / heads]`` each) applied to queries and keys, or None."""
        q, k, v = rearrange(self.qkv(x), "n s (three h e) -> three n h s e", three=3, h=self.heads)
        if rotation is not None:
            q, k = rotate(q, rotation), rotate(k, rotation)
        # a sequence with no valid key attends to everything: its outputs are never read, but stay finite
        keys = keys | ~keys.any(-1, keepdim=True)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keys[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(rearrange(y, "n h s e -> n s (h e)"))


class AxialBlock(nn.Module):
    """Pre-norm transformer block whose attention runs along ``axis`` ('time' or 'channel') of ``[B, C, P, D]``."""

    def __init__(self, dim: int, heads: int, axis: str, mlp_ratio: float = 2.0, dropout: float = 0.0) -> None:
        super().__init__()
        if axis not in AXIS_PATTERNS:
            raise ValueError(f"axis must be one of {list(AXIS_PATTERNS)}, got {axis!r}")
        self.axis = axis
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: Tensor, keys: Tensor, rotation: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x ``[B, C, P, D]``; keys ``[B, C, P]`` bool (tokens other tokens may attend to); rotation: RoPE of the
        P patch positions (`rotary`), used by time attention only (channels have no order)."""
        split, split_keys, merge = AXIS_PATTERNS[self.axis]
        b, c, p, _ = x.shape
        h = rearrange(x, split)
        h = h + self.attn(self.norm1(h), rearrange(keys, split_keys), rotation if self.axis == "time" else None)
        h = h + self.mlp(self.norm2(h))
        return rearrange(h, merge, b=b, c=c, p=p)


def axial_stack(dim: int, heads: int, depth: int, mlp_ratio: float, dropout: float) -> nn.ModuleList:
    """``depth`` pairs of (time-attention, channel-attention) blocks."""
    return nn.ModuleList(
        AxialBlock(dim, heads, axis, mlp_ratio, dropout) for _ in range(depth) for axis in ("time", "channel")
    )
