"""Which torch device a run uses."""

from __future__ import annotations

import sys

import torch

try:
    import resource
except ImportError:  # Windows has no getrusage
    resource = None


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``; asking for CUDA without it is an
    error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(name).startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name} asked for, but no CUDA device is available; use cpu or auto")
    return torch.device(name)


def peak_memory_gb(device: torch.device) -> float:
    """The run's peak memory so far: tensors allocated on a CUDA ``device``, else the process' peak resident
    set (host memory, which on CPU includes every tensor; NaN where the platform does not report it)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    if resource is None:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**30 if sys.platform == "darwin" else 2**20)
