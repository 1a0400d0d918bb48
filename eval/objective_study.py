"""The objective study (issue "Make pretraining pay"): which pretraining objective makes a frozen encoder worth
more than the same architecture with random weights? ``python eval/objective_study.py [--data etth1]``.

Each variant is the default recipe (``python -m tsjepa.train data=<data> seed=<s>``) with a few objective
overrides, pretrained into ``runs/objective-study/<data>/<variant>-s<seed>`` and scored by
``python -m tsjepa.eval forecast`` (frozen probe, every val and test window). The default variant's
evaluation also probes the random-init twin of each seed and the raw baselines. Variants are **selected on
validation MSE** (the probe's average over horizons on the val windows); test MSE is reported beside it and
never used to choose. The suite is resumable: finished pretraining is not repeated and an existing
evaluation of the same checkpoint step is not re-scored.

    python eval/objective_study.py                                  # every variant, seed 0
    python eval/objective_study.py --variants default proj-axes --seeds 0 1 2
    python eval/objective_study.py --stage collect                  # only rebuild the table
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tsjepa.results import aggregate_seeds, save_figure, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OBJ = "model.objective"
PROJECTOR = f"{OBJ}.projector=[512,512,64]"

# name -> (what it tests, overrides of the default recipe)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "default": ("today's default: SIGReg on every token (N ~ 9.4k), no projector", []),
    "lam0": ("no SIGReg (lambda = 0): the reference that earlier probed best", [f"{OBJ}.lam=0.0"]),
    "proj-tokens": ("projector 512-512-64; prediction and SIGReg on its output, over tokens", [PROJECTOR]),
    "proj-pooled": ("projector; SIGReg over (window, channel) means (N = B*C)",
                    [PROJECTOR, f"{OBJ}.sigreg_on=pooled"]),
    "proj-window": ("projector; SIGReg over window means (N = B)", [PROJECTOR, f"{OBJ}.sigreg_on=window"]),
    "proj-axes": ("projector; SIGReg over window means and within each window over its tokens",
                  [PROJECTOR, f"{OBJ}.sigreg_on=axes"]),
    "multiview": ("projector; LeJEPA multi-view loss over 4 time crops (2 global 70%, 2 local 30%) beside the "
                  "span predictor; SIGReg over window means and each view", [PROJECTOR, f"{OBJ}.sigreg_on=window",
                                                                             f"{OBJ}.views=4"]),
    "recon": ("projector + axes, and a linear head reconstructing masked patch values from the predicted "
              "latents (weight 1)", [PROJECTOR, f"{OBJ}.sigreg_on=axes", f"{OBJ}.reconstruction_weight=1.0"]),
    "proj-axes-ema": ("proj-axes with an EMA target encoder (0.996)", [PROJECTOR, f"{OBJ}.sigreg_on=axes",
                                                                       f"{OBJ}.ema=0.996"]),
}


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})


def run_dir(data: str, name: str, seed: int) -> Path:
    return ROOT / "runs" / "objective-study" / data / f"{name}-s{seed}"


def result_path(data: str, name: str, seed: int) -> Path:
    return run_dir(data, name, seed) / "eval" / "forecast" / f"{data}.json"


def pretrain(data: str, name: str, seed: int) -> None:
    run([sys.executable, "-m", "tsjepa.train", f"data={data}", f"seed={seed}",
         f"run_dir={run_dir(data, name, seed)}", *VARIANTS[name][1]])


def score(data: str, name: str, seed: int) -> None:
    """Probe one finished checkpoint (with the random-init twin and baselines for the default variant)."""
    ckpt = run_dir(data, name, seed) / "checkpoints" / "last"
    step = json.loads((ckpt / "config.json").read_text())["step"]
    result = result_path(data, name, seed)
    if result.exists() and json.loads(result.read_text())["pretrain_step"] == step:
        return
    run([sys.executable, "-m", "tsjepa.eval", "forecast", f"data={data}", f"ckpt={ckpt}", f"seed={seed}",
         f"out_dir={result.parents[1]}", f"eval.random_baseline={'true' if name == 'default' else 'false'}"])


def avg_rows(record: dict) -> dict[str, dict]:
    """model -> its average-over-horizons row at full labels."""
    return {r["model"]: r for r in record["rows"] if r["horizon"] == "avg" and r.get("train_fraction", 1.0) == 1.0}


STUDY_KEYS = ("val_mse", "mse", "mae", "lookback_r2", "effective_rank", "isotropy")
ERRORS = ("val_mse", "mse", "mae")  # the keys whose spread over seeds is reported


def over_seeds(rows: dict[int, dict], labels: dict) -> dict:
    """One study row: ``labels``, then the mean over seeds of each of ``rows``' `STUDY_KEYS` (with the sample
    std of the errors when there are several seeds) and ``n_seeds``."""
    (row,) = aggregate_seeds({seed: [r] for seed, r in rows.items()}, keys=("model",), metrics=ERRORS)
    ordered = [k for key in STUDY_KEYS for k in (key, f"{key}_std") if k in row]
    return labels | {k: row[k] for k in ordered} | {"n_seeds": row["n_seeds"]}


def collect(data: str) -> tuple[list[dict], dict, str]:
    """One row per variant (mean ± std over its scored seeds), the random-init twin and the raw baselines;
    the variant with the lowest validation MSE is marked ``selected``."""
    rows, runs, device = [], {}, "none"
    twins, baselines = [], {}
    for name, (what, overrides) in VARIANTS.items():
        records = {}
        for path in sorted(result_path(data, name, 0).parents[3].glob(f"{name}-s*/eval/forecast/{data}.json")):
            record = json.loads(path.read_text())
            records[int(record["seed"])] = record
        if not records:
            continue
        device = next(iter(records.values()))["device"]
        rows.append(over_seeds({seed: avg_rows(r)["tsjepa"] for seed, r in records.items()},
                               {"model": "tsjepa", "variant": name, "mode": "probe", "horizon": "avg"}))
        runs[name] = {"what": what, "overrides": overrides, "seeds": sorted(records),
                      "eval_commands": {s: r["command"] for s, r in records.items()},
                      "eval_commits": {s: r["commit"] for s, r in records.items()},
                      "eval_wall_s": {s: r["wall_s"] for s, r in records.items()},
                      "pretrain_wall_s": {s: pretrain_seconds(data, name, s) for s in records}}
        if name == "default":
            twins = {seed: avg_rows(r)["random-init"] for seed, r in records.items() if "random-init" in avg_rows(r)}
            baselines = {m: r for m, r in avg_rows(next(iter(records.values()))).items()
                         if m not in ("tsjepa", "random-init")}
    if rows:
        best = min(rows, key=lambda r: r["val_mse"])
        for row in rows:
            row["selected"] = row is best
    if twins:
        rows.append(over_seeds(twins, {"model": "random-init", "variant": "-", "mode": "probe", "horizon": "avg"}))
    for model, r in baselines.items():
        rows.append({"model": model, "variant": "-", "mode": r["mode"], "horizon": "avg", "val_mse": r["val_mse"],
                     "mse": r["mse"], "mae": r["mae"], "n_seeds": 1})
    return rows, runs, device


def pretrain_seconds(data: str, name: str, seed: int) -> float | None:
    """Wall time of a finished pretraining run, from its log's first and last metric lines."""
    path = run_dir(data, name, seed) / "metrics.jsonl"
    times = [json.loads(line).get("time") for line in path.read_text().splitlines()] if path.exists() else []
    times = [t for t in times if t is not None]
    return round(times[-1] - times[0], 1) if len(times) > 1 else None


def plot(rows: list[dict], path: Path, data: str, device: str) -> None:
    ours = [r for r in rows if r["model"] == "tsjepa"]
    refs = {r["model"]: r for r in rows if r["model"] != "tsjepa"}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 0.45 * len(ours) + 2.2), sharey=True)
    names = [r["variant"] + (" (selected)" if r["selected"] else "") for r in ours]
    for axis, key in ((ax, "val_mse"), (bx, "mse")):
        axis.barh(names, [r[key] for r in ours], xerr=[r.get(f"{key}_std", 0) for r in ours],
                  color=["tab:green" if r["selected"] else "tab:blue" for r in ours], capsize=3)
        for model, style in (("random-init", "--"), ("linear", ":")):
            if model in refs:
                axis.axvline(refs[model][key], color="black", ls=style, lw=1, label=f"{model} {refs[model][key]:.3f}")
        values = [r[key] for r in ours] + [refs[m][key] for m in ("random-init", "linear") if m in refs]
        axis.set_xlim(min(values) * 0.97, max(values) * 1.02)
        axis.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    ax.set_xlabel("validation MSE, avg over horizons (selection)")
    bx.set_xlabel("test MSE, avg over horizons (reported)")
    ax.invert_yaxis()
    fig.suptitle(f"Objective study on {data}: frozen encoder + ridge probe, mean ± std over seeds ({device})",
                 fontsize=10)
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", nargs="?", default="all", choices=["all", "pretrain", "score", "collect"])
    parser.add_argument("--data", default="etth1")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--out-dir", default=str(ROOT / "eval" / "results"))
    args = parser.parse_args()
    start = time.time()
    for name in args.variants:
        for seed in args.seeds:
            if args.stage in ("all", "pretrain"):
                pretrain(args.data, name, seed)
            if args.stage in ("all", "score"):
                score(args.data, name, seed)
    if args.stage == "pretrain":
        return
    rows, runs, device = collect(args.data)
    if not rows:
        raise SystemExit("no scored variant to collect")
    out = write_results(
        args.out_dir, "objective-study", args.data, rows, seed=args.seeds, device=device,
        wall_s=time.time() - start, extra={"variants": runs},
        notes=("Each variant = the default recipe with the overrides in the JSON (`variants`), 300 pretraining "
               "steps, frozen encoder + ridge probe per horizon (penalty chosen on val), every val and test window. "
               "`val_mse` (selection) and `mse` (test, reported only) are averages over the protocol horizons, "
               "mean over the variant's seeds (`*_std`: sample std, present with more than one seed). "
               "`selected`: the lowest validation MSE. `lookback_r2`: test R² of a ridge map from a channel's "
               "tokens back to its instance-normalised lookback window. `random-init`: the default's "
               "architecture with random weights, one twin per seed; `linear`/`dlinear`: raw-window ridge."),
    )
    plot(rows, out.with_suffix(".png"), args.data, device)
    print(f"results: {out} (+ .md, .png)")


if __name__ == "__main__":
    main()
