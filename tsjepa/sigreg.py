r"""SIGReg: Sketched Isotropic Gaussian Regularization (LeJEPA, arXiv 2511.08544).

For embeddings ``z`` ``[N, D]`` and unit directions ``A`` ``[D, M]``, each slice ``x_m = z a_m`` is tested
against N(0, 1) with the Epps-Pulley statistic

    T_m = N * \int |phi_hat_m(t) - phi(t)|^2 w(t) dt,   phi(t) = w(t) = exp(-t^2 / 2),
    phi_hat_m(t) = (1/N) sum_n exp(i t x_nm),

and SIGReg is the mean of T_m over slices. The integrand is even in t, so the integral over R is twice the
integral over [0, t_max], computed by the trapezoid rule on ``knots`` equally spaced points. Under the null
E[T_m] -> \int (1 - e^{-t^2}) e^{-t^2/2} dt = sqrt(2 pi) (1 - 1/sqrt(3)) ~= 1.059 (`NULL_MEAN`).

Fast path: the empirical characteristic function sums (sum_n cos(t_k x), sum_n sin(t_k x)) come from one
cos/sin pair per element by the angle-addition recurrence (knots are equally spaced), chunked over N, with an
analytic backward that recomputes them: nothing of size N x M x K is ever held. In a distributed run the sums
are all-reduced with an autograd-aware all-reduce and N is the global count, so every rank computes the
statistic of the global batch and DDP's gradient averaging yields its exact gradient.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor

NULL_MEAN = math.sqrt(2 * math.pi) * (1 - 1 / math.sqrt(3))


def quadrature(knots: int = 17, t_max: float = 3.0, device=None) -> tuple[Tensor, Tensor]:
    """Knots ``t`` ``[K]`` on [0, t_max] and weights ``[K]`` that fold in w(t) and the symmetry factor 2."""
    if knots < 2 or t_max <= 0:
        raise ValueError(f"need knots >= 2 and t_max > 0, got knots={knots}, t_max={t_max}")
    t = torch.linspace(0.0, t_max, knots, dtype=torch.float64, device=device)
    dt = t_max / (knots - 1)
    trapezoid = torch.full_like(t, dt)
    trapezoid[[0, -1]] = dt / 2
    return t, 2 * trapezoid * torch.exp(-(t**2) / 2)


def random_directions(dim: int, num_slices: int, seed: int, step: int, device=None) -> Tensor:
    """``[dim, num_slices]`` unit columns drawn from a generator seeded by (seed, step).

    The same (seed, step) gives the same directions on every rank and after a restart from a checkpoint.
    """
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
    a = torch.randn(dim, num_slices, generator=gen)
    return (a / a.norm(dim=0, keepdim=True)).to(device)


class _CharacteristicSums(torch.autograd.Function):
    """x ``[N, M]`` -> (sum_n cos(t_k x_nm), sum_n sin(t_k x_nm)) ``[M, K]`` for t_k = k * dt."""

    @staticmethod
    def _sweep(x: Tensor, dt: float, knots: int, chunk: int, grads: tuple[Tensor, Tensor] | None):
        m = x.shape[1]
        cos_sum = x.new_zeros(m, knots)
        sin_sum = x.new_zeros(m, knots)
        grad_x = torch.empty_like(x) if grads is not None else None
        for lo in range(0, x.shape[0], chunk):
            xc = x[lo : lo + chunk]
            c1, s1 = torch.cos(dt * xc), torch.sin(dt * xc)
            c, s = c1, s1
            if grads is not None:
                g_cos, g_sin = grads  # [M, K], already multiplied by t_k
                acc = s1 * -g_cos[:, 1] + c1 * g_sin[:, 1]
            else:
                cos_sum[:, 1] += c1.sum(0)
                sin_sum[:, 1] += s1.sum(0)
            for k in range(2, knots):
                c, s = c * c1 - s * s1, s * c1 + c * s1
                if grads is not None:
                    acc = acc + s * -g_cos[:, k] + c * g_sin[:, k]
                else:
                    cos_sum[:, k] += c.sum(0)
                    sin_sum[:, k] += s.sum(0)
            if grads is not None:
                grad_x[lo : lo + chunk] = acc
        cos_sum[:, 0] = x.shape[0]
        return cos_sum, sin_sum, grad_x

    @staticmethod
    def forward(ctx, x: Tensor, dt: float, knots: int, chunk: int):
        ctx.save_for_backward(x)
        ctx.dt, ctx.knots, ctx.chunk = dt, knots, chunk
        cos_sum, sin_sum, _ = _CharacteristicSums._sweep(x, dt, knots, chunk, None)
        return cos_sum, sin_sum

    @staticmethod
    def backward(ctx, g_cos: Tensor, g_sin: Tensor):
        (x,) = ctx.saved_tensors
        t = ctx.dt * torch.arange(ctx.knots, dtype=x.dtype, device=x.device)
        grads = (g_cos * t, g_sin * t)
        _, _, grad_x = _CharacteristicSums._sweep(x, ctx.dt, ctx.knots, ctx.chunk, grads)
        return grad_x, None, None, None


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward sums the incoming gradients over ranks too.

    Every rank computes the same loss from the global sums, so the gradient reaching a rank's local sums is
    the sum of all ranks' (identical) gradients: world x dL/dS. DDP's averaging divides by world again, which
    leaves each parameter with exactly the gradient of the single-process loss on the global batch.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _global_sums(cos_sum: Tensor, sin_sum: Tensor, n: int) -> tuple[Tensor, Tensor, int]:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        cos_sum, sin_sum = _AllReduceSum.apply(cos_sum), _AllReduceSum.apply(sin_sum)
        count = torch.tensor([n], dtype=torch.long, device=cos_sum.device)
        dist.all_reduce(count)
        n = int(count.item())
    return cos_sum, sin_sum, n


def _check(z: Tensor, directions: Tensor | None) -> None:
    if z.ndim != 2:
        raise ValueError(f"sigreg expects embeddings [N, D], got shape {tuple(z.shape)}")
    if z.shape[0] < 2:
        raise ValueError(f"sigreg needs at least 2 samples, got N={z.shape[0]}")
    if directions is not None and directions.shape[0] != z.shape[1]:
        raise ValueError(
            f"directions have dimension {directions.shape[0]} but embeddings have D={z.shape[1]}"
        )
    if not torch.isfinite(z).all():
        raise ValueError("sigreg got non-finite embeddings (NaN or inf)")


def sigreg(
    z: Tensor,
    directions: Tensor | None = None,
    num_slices: int = 1024,
    knots: int = 17,
    t_max: float = 3.0,
    reduction: str = "mean",
    seed: int = 0,
    step: int = 0,
    chunk: int = 2048,
    sync: bool = True,
) -> Tensor:
    """The SIGReg statistic of embeddings ``z`` ``[N, D]`` (float32 scalar; ``[M]`` if reduction='none').

    Args:
        directions: ``[D, M]`` unit columns; drawn by `random_directions(D, num_slices, seed, step)` if None.
        knots, t_max: trapezoid quadrature on [0, t_max] (the integrand is even).
        chunk: rows of ``z`` processed at once; bounds the extra memory to O(chunk * M).
        sync: in a distributed run, all-reduce over ranks (the global-batch statistic; every rank must call);
            False computes this rank's local statistic (e.g. for rank-0-only diagnostics).
    Computed in float32 whatever the input dtype or autocast state (float64 for float64 input). In a distributed run, N is the global
    batch and every rank returns the same value.
    """
    _check(z, directions)
    if directions is None:
        directions = random_directions(z.shape[1], num_slices, seed, step, device=z.device)
    dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=z.device.type, enabled=False):
        x = z.to(dtype) @ directions.to(dtype)  # [N, M]
        t, weights = quadrature(knots, t_max, device=z.device)
        cos_sum, sin_sum = _CharacteristicSums.apply(x, t_max / (knots - 1), knots, chunk)
        n = x.shape[0]
        if sync:
            cos_sum, sin_sum, n = _global_sums(cos_sum, sin_sum, n)
        err = (cos_sum / n - torch.exp(-(t.to(dtype) ** 2) / 2)) ** 2 + (sin_sum / n) ** 2  # [M, K]
        per_slice = n * (err @ weights.to(dtype))  # [M]
    return per_slice.mean() if reduction == "mean" else per_slice


def sigreg_reference(z: Tensor, directions: Tensor, knots: int = 17, t_max: float = 3.0) -> Tensor:
    """The straightforward formulation (as in the paper's code): materialises ``[N, M, K]``. For tests and
    benchmarks; single process only."""
    x = z @ directions
    t, weights = quadrature(knots, t_max, device=z.device)
    t, weights = t.to(z.dtype), weights.to(z.dtype)
    xt = x[..., None] * t  # [N, M, K]
    err = (torch.cos(xt).mean(0) - torch.exp(-(t**2) / 2)) ** 2 + torch.sin(xt).mean(0) ** 2
    return (x.shape[0] * (err @ weights)).mean()
