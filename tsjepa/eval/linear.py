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


def fit_ridge(x: Tensor, y: Tensor, x_val: Tensor, y_val: Tensor, alphas: list[float],
              weight: Tensor | None = None, weight_val: Tensor | None = None) -> Ridge:
    """Least squares ``[N, F] -> [N, H]`` with an intercept and penalty ``alpha * trace(G)/F * |W|^2``
    (scale-free), for each alpha; keeps the one with the lowest validation MSE. Rows may carry weights
    (``[N]``, ``[N_val]``; uniform when None) in both the fit and the validation error. Float64 throughout."""
    w = torch.ones(len(x), dtype=torch.float64) if weight is None else weight.double()
    w_val = torch.ones(len(x_val), dtype=torch.float64) if weight_val is None else weight_val.double()
    w, w_val = w / w.sum(), w_val / w_val.sum()
    xs = x.to(torch.float64, copy=True)  # one working copy: centred, then rows scaled by sqrt(weight)
    x_mean, y_mean = w @ xs, w @ y.double()
    xs.sub_(x_mean).mul_(w.sqrt()[:, None])
    gram = xs.T @ xs
    cross = xs.T @ ((y.double() - y_mean) * w.sqrt()[:, None])
    scale = gram.diagonal().mean()
    best = None
    for alpha in alphas:
        coef = torch.linalg.solve(gram + alpha * scale * torch.eye(len(gram), dtype=gram.dtype), cross)
        model = Ridge(coef, y_mean - x_mean @ coef, alpha)
        err = (w_val @ ((model(x_val) - y_val.double()) ** 2).mean(-1)).item()
        if best is None or err < best[0]:
            best = (err, model)
    return best[1]
