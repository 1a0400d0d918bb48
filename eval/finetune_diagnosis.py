"""Why fine-tuning from the ridge probe does not train (issue "Make pretraining pay", item 2):
``python eval/finetune_diagnosis.py [--ckpt runs/etth1-base-cpu-s0/checkpoints/last] [--horizon 96]``.

The forecast harness's fine-tuning (``eval.modes=[probe,finetune]``) starts encoder + linear head at the ridge
probe and early-stops on val; on ETTh1 it never improves on the probe. This script follows what each part of
the model does to the *training* loss as well as to val, for one epoch without early stopping, so the
hypotheses can be told apart:

- ``all``: every parameter trained (the harness's fine-tuning, layer decay 1.0);
- ``head-frozen``: the ridge head fixed, only the encoder trained (if Adam's first steps on the head were what
  displaced the probe's solution, this would train);
- ``head-only``: the encoder fixed, only the head trained (the ridge head already minimises the penalised train
  loss, so this measures the optimiser's noise around that optimum);
- ``penalty x100``: the ridge head refit with 100 times the penalty chosen on val before fine-tuning (a smaller,
  smoother head: if the probe's head amplifies small encoder changes, this trains where the others do not).

Each variant runs for the pretrained encoder (``tsjepa``) and its random-init twin with the same seeds, AdamW,
batch 32, every ``1 / checks`` epoch: the MSE on 1024 fixed train windows and on the val windows (stride 4).
Writes ``eval/results/finetune/diagnosis.{json,md,png}``: per run the train and val MSE at the start, at the
end and at their best, and the test MSE of the weights with the best val (what the harness would keep).
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from tsjepa.device import device_description, resolve_device  # noqa: E402
from tsjepa.encoding import encode_windows  # noqa: E402
from tsjepa.eval import frozen_encoders  # noqa: E402
from tsjepa.eval.finetune import ForecastModel, fit_once, predict, val_mse  # noqa: E402
from tsjepa.eval.forecast import HorizonSplits, metrics, seed_data  # noqa: E402
from tsjepa.heads import fit_probe, smoother_probe  # noqa: E402
from tsjepa.results import save_figure, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FROZEN = {"all": (), "head-frozen": ("head",), "head-only": ("encoder",)}
# (encoder, trained parts, learning rate, ridge penalty / the one chosen on val): the runs of the committed table
RUNS = [("tsjepa", "all", 1e-5, 1), ("tsjepa", "head-frozen", 1e-5, 1), ("tsjepa", "head-only", 1e-5, 1),
        ("tsjepa", "head-frozen", 3e-5, 1), ("tsjepa", "all", 1e-5, 100), ("tsjepa", "head-frozen", 3e-5, 100),
        ("random-init", "all", 1e-5, 1), ("random-init", "head-frozen", 1e-5, 1)]
MONITORED_TRAIN_WINDOWS = 1024


def diagnose(ckpt: str, horizon: int, epochs: float, checks: int, seed: int, out_dir: str) -> Path:
    start = time.time()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("eval", ["data=etth1", f"ckpt={ckpt}", f"seed={seed}", "eval=forecast"])
    device = resolve_device(cfg.device)
    _, _, pretrained, data = next(seed_data(cfg, "forecast", device))
    splits = HorizonSplits.build(data, horizon, data.strides(horizon, cfg.eval.max_fit_rows))
    train, val = data.windows("train", horizon), data.windows("val", horizon, cfg.eval.finetune.val_stride)
    monitored = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:MONITORED_TRAIN_WINDOWS]
    monitored_batch = train.batch(monitored)
    finetune_cfg = OmegaConf.merge(cfg.eval.finetune, {"epochs": epochs, "evals_per_epoch": checks,
                                                       "patience": 10 ** 6})
    encoders = frozen_encoders(pretrained, seed, True, device)
    rows, traces = [], {}
    for name, encoder in encoders.items():
        encoded = {s: encode_windows(encoder, w, torch.arange(len(w)), cfg.eval.batch_size, device, desc=s)
                   for s, w in splits.windows.items()}
        targets = {s: b.target for s, b in splits.full.items()}
        probe = fit_probe(encoded, targets, splits.fit_rows(1.0), list(cfg.eval.alphas))
        for run_encoder, trained, lr, penalty in RUNS:
            if run_encoder != name:
                continue
            head = smoother_probe(probe, encoded, targets, splits.fit_rows(1.0), penalty)
            model = ForecastModel(copy.deepcopy(encoder), head).to(device)
            for part in FROZEN[trained]:
                getattr(model, part).requires_grad_(False)

            def train_mse(model: ForecastModel = model) -> float:
                return val_mse(model, train, monitored_batch.target, monitored_batch.target_observed,
                               cfg.eval.batch_size, device, index=monitored)

            label = f"{name} {trained} lr={lr:g}" + (f" penalty x{penalty}" if penalty != 1 else "")
            head_norm = float(model.head.weight.norm())
            tuned, log = fit_once(model, train, val, finetune_cfg, lr, 1.0, seed, device, desc=label,
                                  monitor=train_mse)
            trace = log["trace"]
            test = predict(tuned, splits.windows["test"], cfg.eval.batch_size, device)
            truth = splits.full["test"]
            rows.append({
                "model": name, "mode": f"finetune:{trained}", "horizon": horizon, "lr": lr,
                "ridge_alpha": head.alpha, "head_norm": head_norm,
                "steps": log["steps"], "train_mse_start": trace[0]["monitor"],
                "train_mse_end": trace[-1]["monitor"], "train_mse_min": min(t["monitor"] for t in trace),
                "val_mse_start": trace[0]["val_mse"], "val_mse_end": trace[-1]["val_mse"],
                "val_mse_min": log["best_val_mse"], "best_step": log["best_step"],
                "mse": metrics(test, truth.target, truth.target_observed)["mse"], "n_windows": splits.n("test"),
                "n_seeds": 1})
            traces[label] = trace
            print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items()),
                  flush=True)
    description = device_description(device)
    out = write_results(
        out_dir, "finetune", "diagnosis", rows, seed=seed, device=description, wall_s=time.time() - start,
        extra={"ckpt": ckpt, "traces": traces, "monitored_train_windows": MONITORED_TRAIN_WINDOWS},
        notes=(f"ETTh1, H = {horizon}. Encoder + linear head from the ridge probe, AdamW (weight decay "
               f"{finetune_cfg.weight_decay}, batch {finetune_cfg.batch_size}, clip 1.0), {epochs:g} epoch(s), no "
               f"early stopping; `finetune:<parts>`: all parameters, the encoder only (`head-frozen`) or the head "
               f"only. `train_mse_*`: MSE on {MONITORED_TRAIN_WINDOWS} fixed train windows; `val_mse_*`: val "
               "windows (stride 4); `_start` is the ridge probe (penalty `ridge_alpha`, relative to the feature "
               "scale; Frobenius norm `head_norm`). `mse`: test MSE (all windows) of the weights "
               "with the lowest val MSE. Single seed (0)."))
    plot(traces, out.with_suffix(".png"), horizon, description)
    return out


def plot(traces: dict[str, list[dict]], path: Path, horizon: int, device: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for label, trace in traces.items():
        steps = [t["step"] for t in trace]
        line, = axes[0].plot(steps, [t["monitor"] for t in trace], marker=".", label=label)
        axes[1].plot(steps, [t["val_mse"] for t in trace], marker=".", color=line.get_color(), label=label)
    for ax, split in zip(axes, ("train (1024 fixed windows)", "val (stride 4)"), strict=True):
        ax.set_xlabel("fine-tuning step (batch 32)")
        ax.set_ylabel(f"{split} MSE")
    axes[1].legend(fontsize=7)
    fig.suptitle(f"ETTh1 H={horizon}: fine-tuning from the ridge probe (step 0), single seed", fontsize=10)
    save_figure(fig, path, device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default="runs/etth1-base-cpu-s0/checkpoints/last")
    parser.add_argument("--horizon", type=int, default=96)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--checks", type=int, default=8, help="train / val checks per epoch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", default=str(ROOT / "eval" / "results"))
    args = parser.parse_args()
    out = diagnose(args.ckpt, args.horizon, args.epochs, args.checks, args.seed, args.out_dir)
    print(f"results: {out}")


if __name__ == "__main__":
    main()
