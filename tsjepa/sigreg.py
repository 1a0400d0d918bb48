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

import logging
import math
import os
import shutil

import torch
import torch.distributed as dist
from einops import rearrange
from torch import Tensor

NULL_MEAN = math.sqrt(2 * math.pi) * (1 - 1 / math.sqrt(3))
# On CPU, `auto` compiles calls of at least this many projected values (N * M); below, eager is about as fast
# and compiling (~4 s once per process) would not pay. Measured: eval/sigreg_benchmark.py --crossover.
AUTO_MIN_ELEMENTS = 1 << 18
_AUTO_CPU: dict[str, bool] = {}  # the one decision of this process: can the compiled kernel run on CPU?
log = logging.getLogger(__name__)


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


def _sums_kernel(x: Tensor, dt: float, knots: int) -> tuple[Tensor, Tensor]:
    """x ``[n, M]`` -> (sum_n cos(k dt x), sum_n sin(k dt x)) for k = 1..K-1, each ``[M, K-1]``.

    One cos/sin pair per element; the other knots follow from the angle-addition recurrence.
    """
    c1, s1 = torch.cos(dt * x), torch.sin(dt * x)
    c, s = c1, s1
    cos_cols, sin_cols = [c1.sum(0)], [s1.sum(0)]
    for _ in range(2, knots):
        c, s = c * c1 - s * s1, s * c1 + c * s1
        cos_cols.append(c.sum(0))
        sin_cols.append(s.sum(0))
    return torch.stack(cos_cols, -1), torch.stack(sin_cols, -1)


def _grad_kernel(x: Tensor, g_cos: Tensor, g_sin: Tensor, dt: float, knots: int) -> Tensor:
    """d/dx of sum_k g_cos[:, k] cos(k dt x) + g_sin[:, k] sin(k dt x), given g_* ``[M, K]`` already
    multiplied by t_k: ``[n, M]``."""
    c1, s1 = torch.cos(dt * x), torch.sin(dt * x)
    c, s = c1, s1
    acc = g_sin[:, 1] * c1 - g_cos[:, 1] * s1
    for k in range(2, knots):
        c, s = c * c1 - s * s1, s * c1 + c * s1
        acc = acc + g_sin[:, k] * c - g_cos[:, k] * s
    return acc


_COMPILED: dict[str, object] = {}


def cpu_compiler() -> str | None:
    """A C++ compiler on PATH ($CXX, g++, clang++ or c++), which the compiled CPU kernel needs."""
    for name in (os.environ.get("CXX"), "g++", "clang++", "c++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def resolve_backend(backend: str, x: Tensor) -> str:
    """'eager' or 'compiled' for projected values ``x`` ``[N, M]``. 'auto': compiled on CUDA; on CPU compiled
    when the call has at least `AUTO_MIN_ELEMENTS` values and a trial compilation works (a C++ compiler is
    present), eager otherwise. The CPU decision is made and logged once per process."""
    if backend != "auto":
        return backend
    if x.is_cuda:
        return "compiled"
    if x.numel() < AUTO_MIN_ELEMENTS:
        return "eager"
    if "ok" not in _AUTO_CPU:
        compiler = cpu_compiler()
        if compiler is None:
            _AUTO_CPU["ok"] = False
            log.info("SIGReg backend auto: eager on CPU (no C++ compiler for the compiled kernel)")
        else:
            try:
                _kernels("compiled")[0](torch.zeros(8, 4), 0.1, 3)
                _AUTO_CPU["ok"] = True
                log.info(f"SIGReg backend auto: compiled C++ kernel ({compiler}) for calls with N*M >= "
                         f"{AUTO_MIN_ELEMENTS}, eager below")
            except Exception as err:  # any compiler or inductor failure: the eager path is always there
                _AUTO_CPU["ok"] = False
                log.warning(f"SIGReg backend auto: eager on CPU; the compiled kernel failed to build ({err})")
    return "compiled" if _AUTO_CPU["ok"] else "eager"


def _kernels(backend: str):
    """(sums, grad) kernels: 'eager' runs them op by op per chunk; 'compiled' fuses each into one loop
    (torch.compile: a C++ kernel on CPU, Triton on GPU), so no [n, M] temporary is written per knot."""
    if backend == "eager":
        return _sums_kernel, _grad_kernel
    if backend != "compiled":
        raise ValueError(f"sigreg backend must be 'eager', 'compiled' or 'auto', got {backend!r}")
    if not _COMPILED:
        _COMPILED["sums"] = torch.compile(_sums_kernel, dynamic=True)
        _COMPILED["grad"] = torch.compile(_grad_kernel, dynamic=True)
    return _COMPILED["sums"], _COMPILED["grad"]


class _CharacteristicSums(torch.autograd.Function):
    """x ``[N, M]`` -> (sum_n cos(t_k x_nm), sum_n sin(t_k x_nm)) ``[M, K]`` for t_k = k * dt.

    The backward recomputes cos/sin instead of saving them: memory stays O(chunk * M) on top of x.
    """

    @staticmethod
    def forward(ctx, x: Tensor, dt: float, knots: int, chunk: int, backend: str):
        ctx.save_for_backward(x)
        ctx.dt, ctx.knots, ctx.chunk, ctx.backend = dt, knots, chunk, backend
        sums, _ = _kernels(backend)
        cos_sum = x.new_zeros(x.shape[1], knots)
        sin_sum = x.new_zeros(x.shape[1], knots)
        for xc in x.split(chunk):
            c, s = sums(xc, dt, knots)
            cos_sum[:, 1:] += c
            sin_sum[:, 1:] += s
        cos_sum[:, 0] = x.shape[0]
        return cos_sum, sin_sum

    @staticmethod
    def backward(ctx, g_cos: Tensor, g_sin: Tensor):
        (x,) = ctx.saved_tensors
        _, grad = _kernels(ctx.backend)
        t = ctx.dt * torch.arange(ctx.knots, dtype=x.dtype, device=x.device)
        g_cos, g_sin = (g_cos * t).contiguous(), (g_sin * t).contiguous()
        grad_x = torch.cat([grad(xc, g_cos, g_sin, ctx.dt, ctx.knots) for xc in x.split(ctx.chunk)])
        return grad_x, None, None, None, None


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


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def global_sum(x: Tensor) -> Tensor:
    """``x`` summed over the ranks of a distributed run (gradients summed back, see `_AllReduceSum`); ``x``
    itself in a single process."""
    return _AllReduceSum.apply(x) if _distributed() else x


def _global_sums(cos_sum: Tensor, sin_sum: Tensor, n: int) -> tuple[Tensor, Tensor, int]:
    if _distributed():
        cos_sum, sin_sum = global_sum(cos_sum), global_sum(sin_sum)
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
    chunk: int | None = None,
    sync: bool = True,
    backend: str = "eager",
) -> Tensor:
    """The SIGReg statistic of embeddings ``z`` ``[N, D]`` (float32 scalar; ``[M]`` if reduction='none').

    Args:
        directions: ``[D, M]`` unit columns; drawn by `random_directions(D, num_slices, seed, step)` if None.
        knots, t_max: trapezoid quadrature on [0, t_max] (the integrand is even).
        chunk: rows of ``z`` processed at once (default 2048); bounds the eager backend's extra memory to
            O(chunk * M), and keeps float32 accumulation short in the compiled one (partial sums per chunk).
        backend: 'eager' (any platform), 'compiled' (torch.compile-fused kernels; needs a C++ compiler on CPU
            or Triton on GPU; compiles once per dtype/device), or 'auto' (`resolve_backend`: compiled on CUDA,
            and on CPU for calls of at least `AUTO_MIN_ELEMENTS` projected values when a compiler works).
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
        per_slice = _column_statistics(z.to(dtype) @ directions.to(dtype), knots, t_max, chunk, backend, sync)
    return per_slice.mean() if reduction == "mean" else per_slice


def _column_statistics(x: Tensor, knots: int, t_max: float, chunk: int | None, backend: str, sync: bool) -> Tensor:
    """Epps-Pulley statistic of each column of projected samples ``x`` ``[N, M]``: ``[M]``."""
    t, weights = quadrature(knots, t_max, device=x.device)
    backend = resolve_backend(backend, x)
    cos_sum, sin_sum = _CharacteristicSums.apply(x, t_max / (knots - 1), knots, chunk or 2048, backend)
    n = x.shape[0]
    if sync:
        cos_sum, sin_sum, n = _global_sums(cos_sum, sin_sum, n)
    err = (cos_sum / n - torch.exp(-(t.to(x.dtype) ** 2) / 2)) ** 2 + (sin_sum / n) ** 2  # [M, K]
    return n * (err @ weights.to(x.dtype))  # [M]


def sigreg_per_group(z: Tensor, directions: Tensor | None = None, num_slices: int = 1024, knots: int = 17,
                     t_max: float = 3.0, seed: int = 0, step: int = 0, chunk: int | None = None,
                     backend: str = "eager") -> Tensor:
    """The SIGReg statistic of each of ``G`` sample sets ``z`` ``[G, n, D]`` at once, with the same directions:
    ``[G]`` float32, equal to ``sigreg`` of each ``z[g]`` without all-reduce (each set is local, e.g. the
    tokens of one window). One kernel call: the ``G x M`` projections are columns of one ``[n, G * M]``."""
    if z.ndim != 3 or z.shape[1] < 2:
        raise ValueError(f"sigreg_per_group expects [G, n >= 2, D], got shape {tuple(z.shape)}")
    _check(z[0], directions)
    if not torch.isfinite(z).all():
        raise ValueError("sigreg got non-finite embeddings (NaN or inf)")
    if directions is None:
        directions = random_directions(z.shape[-1], num_slices, seed, step, device=z.device)
    dtype = torch.float64 if z.dtype == torch.float64 else torch.float32
    with torch.autocast(device_type=z.device.type, enabled=False):
        x = rearrange(z.to(dtype) @ directions.to(dtype), "g n m -> n (g m)")
        per_column = _column_statistics(x.contiguous(), knots, t_max, chunk, backend, sync=False)
    return rearrange(per_column, "(g m) -> g m", g=z.shape[0]).mean(-1)


def sigreg_reference(z: Tensor, directions: Tensor, knots: int = 17, t_max: float = 3.0) -> Tensor:
    """The straightforward formulation (as in the paper's code): materialises ``[N, M, K]``. For tests and
    benchmarks; single process only."""
    x = z @ directions
    t, weights = quadrature(knots, t_max, device=z.device)
    t, weights = t.to(z.dtype), weights.to(z.dtype)
    xt = x[..., None] * t  # [N, M, K]
    err = (torch.cos(xt).mean(0) - torch.exp(-(t**2) / 2)) ** 2 + torch.sin(xt).mean(0) ** 2
    return (x.shape[0] * (err @ weights)).mean()
