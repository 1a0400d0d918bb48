"""Ridge regression heads fit in closed form, with the penalty chosen on a validation set."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Ridge:
    weight: Tensor  # [F, H]
    bias: Tensor  # [H]
    alpha: float

    def __call__(self, x: Tensor) -> Tensor:
        """x ``[N, F]`` -> ``[N, H]``."""
        return x.to(self.weight.dtype) @ self.weight + self.bias


def fit_ridge(x: Tensor, y: Tensor, x_val: Tensor, y_val: Tensor, alphas: list[float]) -> Ridge:
    """Least squares ``[N, F] -> [N, H]`` with an intercept and penalty ``alpha * trace(G)/F * |W|^2``
    (scale-free), for each alpha; keeps the one with the lowest validation MSE. Float64 throughout."""
    x, y = x.double(), y.double()
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc = x - x_mean
    gram = xc.T @ xc
    cross = xc.T @ (y - y_mean)
    scale = gram.diagonal().mean()
    best = None
    for alpha in alphas:
        w = torch.linalg.solve(gram + alpha * scale * torch.eye(len(gram), dtype=gram.dtype), cross)
        model = Ridge(w, y_mean - x_mean @ w, alpha)
        err = ((model(x_val) - y_val.double()) ** 2).mean().item()
        if best is None or err < best[0]:
            best = (err, model)
    return best[1]
