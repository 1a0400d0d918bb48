"""ETTh1 pretraining ablations and tuning, frozen-probe forecasting: ``python eval/forecast_ablation.py``.

Each variant is the default recipe (``python -m tsjepa.train data=etth1``) with a few overrides, pretrained
into ``runs/ablation-etth1/<variant>`` and scored by ``python -m tsjepa.eval forecast`` (probe mode, all test
windows). The suite is resumable: a finished pretraining run is not repeated (the trainer resumes from its
last checkpoint) and a variant whose evaluation of that checkpoint exists is not re-scored unless ``--rescore``
is given (after a change to the evaluation itself). It collects every
finished variant into ``eval/results/forecast-ablation/etth1.{json,md,png}``: MSE/MAE per horizon and on
average, with the effective rank and the SIGReg isotropy statistic of the test token embeddings.

    python eval/forecast_ablation.py                       # every variant (about 10 minutes each, 2 CPU cores)
    python eval/forecast_ablation.py --variants lam0 ema   # some of them (results collect all finished ones)
    python eval/forecast_ablation.py --rescore             # score every checkpoint again with the current eval
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

from tsjepa.results import save_figure, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "ablation-etth1"
OBJ = "model.objective"

# name -> (group, what it tests, overrides of the default recipe)
VARIANTS: dict[str, tuple[str, str, list[str]]] = {
    "default": ("ablation", "default: SIGReg on tokens, lambda 0.05, no EMA", []),
    "lam0": ("ablation", "no SIGReg (lambda = 0)", [f"{OBJ}.lam=0.0"]),
    "pooled": ("ablation", "SIGReg on pooled (window, channel) embeddings", [f"{OBJ}.sigreg_on=pooled"]),
    "both": ("ablation", "SIGReg on tokens and pooled embeddings", [f"{OBJ}.sigreg_on=both"]),
    "ema": ("ablation", "EMA target encoder (0.996), SIGReg kept", [f"{OBJ}.ema=0.996"]),
    "ema-lam0": ("ablation", "EMA target encoder, no SIGReg (I-JEPA style)", [f"{OBJ}.ema=0.996", f"{OBJ}.lam=0.0"]),
    "lam0.005": ("tuning", "lambda 0.005", [f"{OBJ}.lam=0.005"]),
    "lam0.2": ("tuning", "lambda 0.2", [f"{OBJ}.lam=0.2"]),
    "tail0.5": ("tuning", "half the target masks at the window's end", [f"{OBJ}.mask_tail_prob=0.5"]),
    "mask0.6": ("tuning", "mask ratio 0.6", [f"{OBJ}.mask_ratio=0.6"]),
    "patch8": ("tuning", "patch 8 steps (42 patches)", ["model.encoder.patch_duration=8", "model.encoder.slots=8"]),
    "depth2": ("tuning", "2 block pairs", ["model.encoder.depth=2"]),
    "norevin": ("tuning", "no instance normalisation", ["model.encoder.instance_norm=false"]),
    "lookback512": ("tuning", "lookback 512", ["data.lookback=512"]),
}


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})


def variant(name: str, rescore: bool) -> None:
    """Pretrain and evaluate one variant, skipping finished work (the evaluation too, unless ``rescore``)."""
    _, _, overrides = VARIANTS[name]
    run_dir, out_dir = RUNS / name, RUNS / name / "eval"
    ckpt = run_dir / "checkpoints" / "last"
    run([sys.executable, "-m", "tsjepa.train", "data=etth1", f"run_dir={run_dir}", *overrides])
    step = json.loads((ckpt / "config.json").read_text())["step"]
    result = out_dir / "forecast" / "etth1.json"
    if rescore or not result.exists() or json.loads(result.read_text())["pretrain_step"] != step:
        data = [o for o in overrides if o.startswith("data.")]
        run([sys.executable, "-m", "tsjepa.eval", "forecast", f"ckpt={ckpt}", f"out_dir={out_dir}",
             "eval.random_baseline=false", *data])


def collect() -> tuple[list[dict], dict, str]:
    """Rows of every finished variant, in VARIANTS order, the configurations they ran, and their device."""
    rows, runs, device, reference = [], {}, "none", None
    for name, (group, what, overrides) in VARIANTS.items():
        result = RUNS / name / "eval" / "forecast" / "etth1.json"
        if not result.exists():
            continue
        record = json.loads(result.read_text())
        device = record["device"]
        runs[name] = {"group": group, "what": what, "overrides": overrides, "pretrain_step": record["pretrain_step"],
                      "eval_command": record["command"], "eval_commit": record["commit"]}
        for row in record["rows"]:
            if row["model"] == "tsjepa":
                rows.append({"model": "tsjepa", "variant": name, "group": group, **row})
            elif row["model"] == "linear" and row["horizon"] == "avg" and name == "default":
                reference = row  # the default lookback (336), as in forecast/etth1
    return rows + ([{"variant": "-", "group": "reference", **reference}] if reference else []), runs, device


def plot(rows: list[dict], path: Path, device: str) -> None:
    avg = [r for r in rows if r["horizon"] == "avg" and r["model"] == "tsjepa"]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 0.45 * len(avg) + 1.5), sharey=True)
    names = [r["variant"] for r in avg]
    colors = ["tab:blue" if r["group"] == "ablation" else "tab:orange" for r in avg]
    ax.barh(names, [r["mse"] for r in avg], color=colors)
    linear = next((r["mse"] for r in rows if r["model"] == "linear"), None)
    if linear is not None:
        ax.axvline(linear, color="black", ls="--", lw=1, label=f"raw-window ridge {linear:.3f}")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlim(min(r["mse"] for r in avg) * 0.9, max(r["mse"] for r in avg) * 1.02)
    ax.set_xlabel("ETTh1 probe MSE, average of H = 96..720 (lower is better)")
    bx.barh(names, [r["effective_rank"] for r in avg], color=colors)
    bx.set_xlabel("effective rank of test token embeddings (of d_model)")
    ax.invert_yaxis()
    fig.suptitle("Pretraining ablations (blue) and tuning (orange), frozen encoder + ridge head", fontsize=10)
    save_figure(fig, path, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out-dir", default=str(ROOT / "eval" / "results"))
    parser.add_argument("--rescore", action="store_true", help="evaluate finished checkpoints again")
    args = parser.parse_args()
    start = time.time()
    for name in args.variants:
        variant(name, args.rescore)
    rows, runs, device = collect()
    if not rows:
        raise SystemExit("no finished variant to collect")
    out = write_results(
        args.out_dir, "forecast-ablation", "etth1", rows, seed=0, device=device,
        wall_s=time.time() - start, extra={"variants": runs},
        notes=("Each variant = the default recipe (`python -m tsjepa.train data=etth1`) with the overrides "
               "listed in the JSON (`variants`), frozen encoder + ridge head per horizon, every test window. "
               "`effective_rank` / `isotropy`: test token embeddings (isotropy = SIGReg statistic, ~1.06 for "
               "an isotropic Gaussian). `linear` is the raw-window ridge reference on the same windows."),
    )
    plot(rows, out.with_suffix(".png"), device)
    print(f"results: {out} (+ .md, .png)")


if __name__ == "__main__":
    main()
