"""SIGReg fast paths vs the materialising formulation: forward+backward time, extra peak memory, exactness.

    python eval/sigreg_benchmark.py                    # writes eval/results/sigreg/benchmark-<device>.{json,md}
    python eval/sigreg_benchmark.py --suite crossover  # small calls: where compiling pays (benchmark-<device>-crossover)
    python eval/sigreg_benchmark.py --suite target     # N=8192, D=512, M=1024 only, the default (auto) path included

Each (method, shape) runs in a fresh subprocess. Time: median of `--reps` steady-state forward+backward
calls after one warm-up call (the warm-up of the compiled method, which includes compilation, is reported
separately as `first_call_s`). Extra peak memory: the process's resident-set high-water mark during one
forward+backward minus its resident set just before (Linux: /proc/self/clear_refs; measured after the timing, with
glibc's mmap threshold set to 64 KiB so freed blocks leave the resident set), so it counts everything the call allocates, the projections
and gradients included. The `matmul` row is the floor: the projection z @ A and its backward alone.
Exactness: value and gradient of each method vs the materialising formulation in float64.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import time
from pathlib import Path

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
METHODS = ("reference", "eager", "compiled", "auto", "matmul")  # auto: the default path (resolve_backend)
SUITES = {
    "full": [(n, d, m) for n in (1024, 4096, 16384) for d in (128, 512) for m in (256, 1024)] + [(8192, 512, 1024)],
    # N * M from 4k to 1M at the default 256 slices: eager's per-call cost against compiling once
    "crossover": [(n, 128, 256) for n in (16, 64, 256, 1024, 4096)],
    "target": [(8192, 512, 1024)],  # the shape the issue states the speed and memory goals at
}


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def worker(method: str, n: int, d: int, m: int, knots: int, reps: int, device: str) -> dict:
    import torch

    from tsjepa.sigreg import random_directions, sigreg, sigreg_reference

    gen = torch.Generator().manual_seed(0)
    z64 = (torch.randn(n, d, generator=gen) * 0.9 + 0.1).double()
    a64 = random_directions(d, m, seed=0, step=0).double()
    z = z64.float().to(device).requires_grad_()
    a = a64.float().to(device)
    call = {
        "reference": lambda: sigreg_reference(z, a, knots=knots),
        "eager": lambda: sigreg(z, a, knots=knots, backend="eager"),
        "compiled": lambda: sigreg(z, a, knots=knots, backend="compiled"),
        "auto": lambda: sigreg(z, a, knots=knots, backend="auto"),
        "matmul": lambda: (z @ a).sum(),
    }[method]

    def step() -> float:
        z.grad = None
        start = time.perf_counter()
        value = call()
        value.backward()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    first = step()
    times = sorted(step() for _ in range(reps))
    z.grad = None
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        value = call()
        value.backward()
        extra_mb = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        # from here on glibc serves every allocation >= 64 KiB by mmap and returns it on free, so the
        # resident set follows live memory (set after the timing, which runs with the default allocator)
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(M_MMAP_THRESHOLD, 65536)
        libc.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        before = _rss_kb("VmRSS:")
        value = call()
        value.backward()
        extra_mb = (_rss_kb("VmHWM:") - before) / 1024
    row = {"first_call_s": round(first, 3), "time_ms": 1000 * times[len(times) // 2], "peak_extra_mb": extra_mb}
    if method != "matmul":
        z_ref = z64.clone().requires_grad_()
        ref = sigreg_reference(z_ref, a64, knots=knots)
        ref.backward()
        row["rel_err_value"] = abs(value.detach().item() - ref.detach().item()) / abs(ref.detach().item())
        row["rel_err_grad"] = float((z.grad.double().cpu() - z_ref.grad).norm() / z_ref.grad.norm())
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--knots", type=int, default=17)
    parser.add_argument("--out-dir", default="eval/results")
    parser.add_argument("--suite", default="full", choices=list(SUITES))
    parser.add_argument("--worker", nargs=4, metavar=("METHOD", "N", "D", "M"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, n, d, m = args.worker
        print(json.dumps(worker(method, int(n), int(d), int(m), args.knots, args.reps, args.device)))
        return

    import torch
    from tqdm import tqdm

    from tsjepa.device import device_description
    from tsjepa.results import write_results

    start = time.time()
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    rows = []
    methods = ("reference", "eager", "compiled", "matmul") if args.suite == "crossover" else METHODS
    for n, d, m in tqdm(SUITES[args.suite], desc="sigreg benchmark"):
        shape_rows = {}
        for method in methods:
            out = subprocess.run(
                [sys.executable, __file__, "--device", args.device, "--reps", str(args.reps), "--knots",
                 str(args.knots), "--worker", method, str(n), str(d), str(m)],
                capture_output=True, text=True, env=env, check=True)
            shape_rows[method] = json.loads(out.stdout.strip().splitlines()[-1])
        ref, floor = shape_rows["reference"], shape_rows["matmul"]
        for method, r in shape_rows.items():
            rows.append({"model": method, "mode": "fwd+bwd", "horizon": None, "n": n, "d": d, "m": m,
                         "k": args.knots, "time_ms": r["time_ms"], "first_call_s": r["first_call_s"],
                         "peak_extra_mb": r["peak_extra_mb"],
                         "speedup_vs_reference": ref["time_ms"] / r["time_ms"],
                         "memory_ratio_vs_reference": ref["peak_extra_mb"] / max(r["peak_extra_mb"], 1e-3),
                         "time_vs_matmul_floor": r["time_ms"] / floor["time_ms"],
                         "rel_err_value": r.get("rel_err_value"), "rel_err_grad": r.get("rel_err_grad"),
                         "n_windows": None})
    device = torch.device(args.device)
    name = f"benchmark-{device.type}" + ("" if args.suite == "full" else f"-{args.suite}")
    write_results(args.out_dir, "sigreg", name, rows, seed=0,
                  device=device_description(device), wall_s=time.time() - start,
                  notes=__doc__.split("\n\n", 2)[2].strip())


if __name__ == "__main__":
    main()
