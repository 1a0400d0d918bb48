"""Which torch device a run uses, and how results describe it."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import sys
from pathlib import Path

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


def cpu_model() -> str:
    """The CPU's model name as the OS reports it (``/proc/cpuinfo`` on Linux), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_description(device: torch.device) -> str:
    """What ran a measurement, as results and figures record it. On the CPU it names what decides the exact
    floating-point results (and so whether a seeded run repeats bit for bit): the CPU model, the instruction
    set torch's kernels dispatch to, the threads torch uses, and the torch build."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return (f"cpu: {cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} cores, "
            f"{torch.get_num_threads()} threads, torch {torch.__version__}")


def peak_memory_gb(device: torch.device) -> float:
    """The run's peak memory so far: tensors allocated on a CUDA ``device``, else the process' peak resident
    set (host memory, which on CPU includes every tensor; NaN where the platform does not report it)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    if resource is None:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None  # glibc; musl has no malloc_trim
    except OSError:
        return None


_LIBC = _glibc()


def release_freed_host_memory() -> bool:
    """Return the heap's freed pages to the OS (glibc's ``malloc_trim``); False where there is no glibc.

    Training steps allocate host tensors of varying sizes (random masks and channel subsets), and glibc keeps
    what they free: measured on ETTh1 (80 CPU steps), the peak RSS grew from 2.16 to 3.16 GB, and on SMD by
    ~1.2 GB every 50 steps. Trimming every 10 steps cut the growth over steps 10-40 from 0.68 to 0.21 GB at
    the same step time."""
    if _LIBC is None:
        return False
    _LIBC.malloc_trim(0)
    return True
