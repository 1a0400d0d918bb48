"""Where the main job's time goes: ``python eval/main_job_profile.py [--steps N] [--no-main-job]``.

The main job is the README's pair of commands with defaults: ``python -m tsjepa.train data=etth1``, then
``python -m tsjepa.eval forecast ckpt=...`` (its random-init twin and the raw baselines in the same run).
This script

1. profiles pretraining steps of the default recipe in this process: the wall time per step of each forward
   part (the whole-window encoder pass, the context pass, predictor, projector, SIGReg, reconstruction head),
   the backward pass with clipping and the optimizer step, averaged over ``--steps`` steps after one warm-up step;
2. runs the main job itself, each command in a fresh process into a scratch folder, timing both, and
   profiles the evaluation (cProfile): encoding every window, the ridge fits (moments, cross terms, solves),
   the lookback diagnostic and the rest.

Writes ``eval/results/main-job/etth1.{json,md,png}``. Wall times are only meaningful on a quiet machine (no
other process on its cores); the record names the CPU.
"""

from __future__ import annotations

import argparse
import os
import pstats
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from tsjepa.device import device_description  # noqa: E402
from tsjepa.objective import JEPA  # noqa: E402
from tsjepa.results import save_figure, write_results  # noqa: E402
from tsjepa.train import CONFIG_DIR, Distributed, build, pretraining_windows, sample_batch, train_step  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# evaluation functions whose cumulative time the profile reports: (label, file suffix, function name)
EVAL_PARTS = [("encode every window (both encoders)", "tsjepa/encoding.py", "encode_windows"),
              ("ridge fits (probes and baselines)", "tsjepa/heads.py", "fit_ridge_rows"),
              ("  of which: second moments", "tsjepa/heads.py", "moments"),
              ("  of which: cross terms", "tsjepa/heads.py", "cross"),
              ("lookback recoverability diagnostic", "tsjepa/eval/forecast.py", "lookback_recoverability"),
              ("whole evaluation (score_seed)", "tsjepa/eval/forecast.py", "score_seed")]


class StepTimer:
    """Wall time of each timed forward part, summed over calls (the encoder's first call in a step is the whole
    window, its second the context view)."""

    def __init__(self, jepa: JEPA) -> None:
        self.total: dict[str, float] = defaultdict(float)
        self.calls = 0
        modules = {"encoder": jepa.encoder, "predictor": jepa.predictor, "projector": jepa.projector,
                   "reconstruction head": jepa.reconstruction}
        for name, module in modules.items():
            if module is not None:
                module.register_forward_pre_hook(lambda *_: setattr(self, "started", time.perf_counter()))
                module.register_forward_hook(lambda *_, name=name: self.stop(name))
        span_sigreg = jepa.span_sigreg

        def timed_sigreg(*args, **kwargs):
            start = time.perf_counter()
            out = span_sigreg(*args, **kwargs)
            self.total["SIGReg"] += time.perf_counter() - start
            return out

        jepa.span_sigreg = timed_sigreg

    def stop(self, name: str) -> None:
        if name == "encoder":
            self.calls += 1
            name = "encoder, whole window" if self.calls % 2 else "encoder, context view"
        self.total[name] += time.perf_counter() - self.started


def profile_steps(steps: int) -> tuple[list[dict], str]:
    """Rows ``{"part", "wall_s"}`` (seconds per step) of the default recipe's pretraining steps on ETTh1, each
    step the training loop's own (`train_step`), split at the end of the forward pass (a forward hook on the
    objective) and at the optimizer step (its pre-hook)."""
    with initialize_config_dir(CONFIG_DIR, version_base="1.3"):
        cfg = compose("train")
    windows, _ = pretraining_windows(cfg)
    jepa = build(cfg, windows[0].span, cfg.seed)
    if not isinstance(jepa, JEPA):
        raise TypeError(f"the default objective is {type(jepa).__name__}; this profile times the JEPA parts")
    optimizer = torch.optim.AdamW([p for p in jepa.parameters() if p.requires_grad], lr=cfg.train.lr,
                                  weight_decay=cfg.train.weight_decay)
    marks: dict[str, float] = {}
    jepa.register_forward_hook(lambda *_: marks.__setitem__("forward", time.perf_counter()))
    optimizer.register_step_pre_hook(lambda *_: marks.__setitem__("backward", time.perf_counter()))
    timer = StepTimer(jepa)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")
    total = defaultdict(float)
    for step in range(steps + 1):
        if step == 1:  # the first step warms up allocators and kernels
            timer.total.clear()
            total.clear()
        gen = torch.Generator().manual_seed(step)
        start = time.perf_counter()
        batch = sample_batch(windows, cfg.train.batch_size, gen, Distributed())
        train_step(jepa, jepa, optimizer, batch, step, gen, cfg.train, autocast)
        end = time.perf_counter()
        total["batch + forward"] += marks["forward"] - start
        total["backward + clip"] += marks["backward"] - marks["forward"]
        total["optimizer step + target update"] += end - marks["backward"]
    parts = [{"part": f"forward: {k}", "wall_s": v / steps} for k, v in timer.total.items()]
    forward = total["batch + forward"] / steps
    parts.append({"part": "forward: the rest (batch, masks, losses)", "wall_s": forward - sum(p["wall_s"] for p in parts)})
    rows = [*parts, *({"part": k, "wall_s": total[k] / steps} for k in ("backward + clip",
                                                                          "optimizer step + target update"))]
    rows.append({"part": "one step", "wall_s": sum(r["wall_s"] for r in rows)})
    recipe = (f"batch {cfg.train.batch_size}, {cfg.train.steps} steps, objective {cfg.model.objective.kind} "
              f"(reconstruction weight {cfg.model.objective.reconstruction_weight})")
    return [{"stage": "train step", **r, "wall_s": round(r["wall_s"], 4)} for r in rows], recipe


def timed(args: list[str]) -> float:
    print("+", " ".join(args), flush=True)
    start = time.perf_counter()
    subprocess.run(args, cwd=ROOT, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return time.perf_counter() - start


def main_job(scratch: Path) -> list[dict]:
    """The two README commands with defaults, timed, the evaluation under cProfile."""
    run_dir, stats = scratch / "etth1-run", scratch / "eval.prof"
    train_s = timed([sys.executable, "-m", "tsjepa.train", "data=etth1", f"run_dir={run_dir}"])
    eval_s = timed([sys.executable, "-m", "cProfile", "-o", str(stats), "-m", "tsjepa.eval", "forecast",
                    f"ckpt={run_dir / 'checkpoints' / 'last'}", f"out_dir={scratch / 'results'}"])
    profile = pstats.Stats(str(stats)).stats
    rows = [{"stage": "main job", "part": "python -m tsjepa.train data=etth1", "wall_s": round(train_s, 1)},
            {"stage": "main job", "part": "python -m tsjepa.eval forecast ckpt=... (under cProfile)",
             "wall_s": round(eval_s, 1)},
            {"stage": "main job", "part": "together", "wall_s": round(train_s + eval_s, 1)}]
    for label, suffix, function in EVAL_PARTS:
        cumulative = sum(v[3] for (path, _, name), v in profile.items() if path.endswith(suffix) and name == function)
        rows.append({"stage": "evaluation", "part": label, "wall_s": round(cumulative, 1)})
    return rows


def plot(path: Path, rows: list[dict], device: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, stage, unit in ((axes[0], "train step", "s per step"), (axes[1], "evaluation", "s")):
        mine = [r for r in rows if r["stage"] == stage and r["part"] not in ("one step",)
                and not r["part"].startswith("whole")]
        ax.barh([r["part"] for r in mine][::-1], [r["wall_s"] for r in mine][::-1], color="tab:blue")
        ax.set_xlabel(unit)
        ax.set_title(stage, fontsize=10)
        ax.tick_params(axis="y", labelsize=7)
    save_figure(fig, path, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="pretraining steps to average the step profile over")
    parser.add_argument("--no-main-job", action="store_true", help="profile the steps only")
    args = parser.parse_args()
    start = time.time()
    rows, recipe = profile_steps(args.steps)
    if not args.no_main_job:
        with tempfile.TemporaryDirectory(prefix="tsjepa-main-job-") as scratch:
            rows += main_job(Path(scratch))
    device = device_description(torch.device("cpu"))
    notes = (f"Default recipe: {recipe}. `train step`: seconds per pretraining step by part (forward hooks), mean of "
             f"{args.steps} steps after one warm-up step. `main job`: the README's two commands with defaults, each a "
             "fresh process (the evaluation under cProfile, which adds a few percent). `evaluation`: cumulative time "
             "of its parts. Measured on a quiet machine (no other process on its cores).")
    path = write_results(ROOT / "eval" / "results", "main-job", "etth1", rows, seed=0, device=device,
                         wall_s=time.time() - start, extra={"recipe": recipe}, notes=notes)
    plot(path.with_suffix(".png"), rows, device)
    print(f"results: {path} (+ .md, .png)")


if __name__ == "__main__":
    main()
