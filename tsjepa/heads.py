"""Linear heads on frozen encoder outputs: closed-form ridge regression with the penalty chosen on a
validation set, and the forecasting probe (a channel's tokens -> its future values) that the evaluation
harnesses and the adapters share."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from tsjepa.models import EncoderOutput

CHUNK = 16384  # rows per float64 block: memory stays O(CHUNK * F) beside the features themselves


@dataclass
class Ridge:
    weight: Tensor  # [F, H]
    bias: Tensor  # [H]
    alpha: float

    def __call__(self, x: Tensor) -> Tensor:
        """x ``[N, F]`` -> ``[N, H]`` (float64, computed in blocks of rows)."""
        return torch.cat([block.to(self.weight.dtype) @ self.weight + self.bias for block in x.split(CHUNK)])


def fit_ridge(x: Tensor, y: Tensor, x_val: Tensor, y_val: Tensor, alphas: list[float],
              weight: Tensor | None = None, weight_val: Tensor | None = None) -> Ridge:
    """Least squares ``[N, F] -> [N, H]`` with an intercept and penalty ``alpha * trace(G)/F * |W|^2``
    (scale-free), for each alpha; keeps the one with the lowest validation MSE. Rows may carry weights
    (``[N]``, ``[N_val]``; uniform when None) in both the fit and the validation error. Float64 throughout,
    accumulated over blocks of rows (no float64 copy of ``x``)."""
    w = torch.ones(len(x), dtype=torch.float64) if weight is None else weight.double()
    w_val = torch.ones(len(x_val), dtype=torch.float64) if weight_val is None else weight_val.double()
    w, w_val = w / w.sum(), w_val / w_val.sum()
    x_mean = sum(wb @ xb.double() for wb, xb in zip(w.split(CHUNK), x.split(CHUNK), strict=True))
    y_mean = w @ y.double()
    gram = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64)
    cross = torch.zeros(x.shape[1], y.shape[1], dtype=torch.float64)
    for wb, xb, yb in zip(w.sqrt().split(CHUNK), x.split(CHUNK), y.split(CHUNK), strict=True):
        xc = (xb.double() - x_mean) * wb[:, None]  # centred rows scaled by sqrt(weight)
        gram += xc.T @ xc
        cross += xc.T @ ((yb.double() - y_mean) * wb[:, None])
    scale = gram.diagonal().mean()
    best = None
    for alpha in alphas:
        coef = torch.linalg.solve(gram + alpha * scale * torch.eye(len(gram), dtype=gram.dtype), cross)
        model = Ridge(coef, y_mean - x_mean @ coef, alpha)
        err = (w_val @ ((model(x_val) - y_val.double()) ** 2).mean(-1)).item()
        if best is None or err < best[0]:
            best = (err, model)
    return best[1]

def probe_features(out: EncoderOutput) -> torch.Tensor:
    """``[N, C, P, D]`` embeddings -> ``[N * C, P * D]`` rows, one per (window, channel)."""
    return rearrange(out.embeddings, "n c p d -> (n c) (p d)")


def normalise(target: torch.Tensor, out: EncoderOutput) -> torch.Tensor:
    """``[N, C, H]`` -> ``[N * C, H]`` in each window's instance-normalised units."""
    return rearrange((target - out.loc[..., None]) / out.scale[..., None], "n c h -> (n c) h")


def fit_head(x: dict[str, Tensor], y: dict[str, torch.Tensor], keep: dict[str, torch.Tensor],
             alphas: list[float], weight: dict[str, torch.Tensor] | None = None) -> Ridge:
    """Ridge ``[N, F] -> [N, H]`` fit on the ``keep`` rows of split "train", penalty chosen on "val";
    ``weight[s]`` ``[N]`` weighs each row's squared error (uniform when None)."""
    w = {s: None if weight is None else weight[s][keep[s]] for s in ("train", "val")}
    return fit_ridge(x["train"][keep["train"]], y["train"][keep["train"]], x["val"][keep["val"]],
                     y["val"][keep["val"]], alphas, w["train"], w["val"])


def fit_probe(encoded: dict[str, EncoderOutput], target: dict[str, torch.Tensor], keep: dict[str, torch.Tensor],
              alphas: list[float]) -> Ridge:
    """Ridge head from a channel's tokens to its instance-normalised future, per split ``encoded[s]``
    (``[N, C, P, D]``) and ``target[s]`` ``[N, C, H]``; fit on "train", penalty chosen on "val". Each
    (window, channel) row is weighted by its scale², so the objective is the squared error in data units,
    the metric the head is scored on: near-constant windows (scale ~ 0, e.g. rain or night-time radiation
    in weather) would otherwise have huge normalised targets and dominate the fit."""
    return fit_head({s: probe_features(o) for s, o in encoded.items()},
                    {s: normalise(target[s], o) for s, o in encoded.items()}, keep, alphas,
                    {s: rearrange(o.scale, "n c -> (n c)") ** 2 for s, o in encoded.items()})


def smoother_probe(probe: Ridge, encoded: dict[str, EncoderOutput], target: dict[str, torch.Tensor],
                   keep: dict[str, torch.Tensor], scale: float) -> Ridge:
    """``probe`` (a `fit_probe` solution) when ``scale`` is 1, else the probe refit on the same rows with ``scale``
    times its val-chosen penalty: the smoother start fine-tuning can train through."""
    return probe if scale == 1 else fit_probe(encoded, target, keep, [probe.alpha * scale])


def probe_predict(head: Ridge, out: EncoderOutput) -> torch.Tensor:
    """Forecasts ``[N, C, H]`` in data units (the window's loc/scale added back)."""
    pred = rearrange(head(probe_features(out)).float(), "(n c) h -> n c h", n=out.embeddings.shape[0])
    return pred * out.scale[..., None] + out.loc[..., None]


def fit_stride(n_windows: int, n_channels: int, max_rows: int) -> int:
    """Stride over windows that keeps at most ``max_rows`` (window, channel) rows for fitting ridge heads."""
    return max(1, math.ceil(n_windows * n_channels / max_rows))
