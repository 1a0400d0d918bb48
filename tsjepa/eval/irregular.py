"""Forecasting from irregularly observed lookbacks: ``python -m tsjepa.eval irregular ckpt=... [data=etth1]``.

For each drop fraction p (``eval.fractions``), every channel loses a random fraction p of its observations
(independently per channel, fixed seed; `drop_observations`), so each lookback window is observed on an
irregular, channel-specific set of time stamps; targets are never dropped and every test window is scored
as in the forecast protocol. Heads are refit at each p on train windows with the same drop rate.

- ``tsjepa`` / ``probe``: the frozen encoder reads the remaining observations natively (their own time
  stamps, observed mask; nothing imputed) and a ridge head maps its tokens to the forecast;
- ``linear`` / ``ffill-filled`` and ``linear`` / ``linear-filled``: the raw-window ridge model on the lookback with the
  gaps forward-filled or linearly interpolated from the same window's remaining observations;
- ``random-init`` / ``probe`` (``eval.random_baseline``): the same architecture with random weights.

A checkpoint glob over pretraining seeds (``ckpt='runs/etth1-base-cpu-s*/checkpoints/last'``) scores each seed with
its own random-init twin on the same dropped observations; rows carry the mean, ``<metric>_std`` and ``n_seeds``.
"""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from einops import rearrange  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from tsjepa.checkpoint import Pretrained  # noqa: E402
from tsjepa.data.windows import drop_observations  # noqa: E402
from tsjepa.device import device_description, resolve_device  # noqa: E402
from tsjepa.encoding import encode_windows  # noqa: E402
from tsjepa.eval import SeedRows, frozen_encoders  # noqa: E402
from tsjepa.eval.baselines import fill_gaps  # noqa: E402
from tsjepa.eval.forecast import ForecastData, check_span, metrics, seed_data  # noqa: E402
from tsjepa.heads import fit_head, fit_probe, probe_predict  # noqa: E402
from tsjepa.results import save_figure, write_results  # noqa: E402

FILLS = ("ffill", "linear")


def plot_degradation(path: Path, rows: list[dict], horizons: list[int], device: str) -> None:
    fig, axes = plt.subplots(1, len(horizons), figsize=(5 * len(horizons), 3.6), squeeze=False)
    for ax, horizon in zip(axes[0], horizons, strict=True):
        mine = [r for r in rows if r["horizon"] == horizon]
        for key in dict.fromkeys((r["model"], r["mode"]) for r in mine):
            pts = [(r["drop"], r["mse"]) for r in mine if (r["model"], r["mode"]) == key]
            ax.plot(*zip(*pts, strict=True), marker="o", label=f"{key[0]} ({key[1]})")
        ax.set_xlabel("fraction of lookback observations dropped per channel")
        ax.set_ylabel("test MSE")
        ax.set_title(f"horizon {horizon}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    save_figure(fig, path, device)


def score_seed(cfg: DictConfig, ckpt: str, pretrained: Pretrained, data: ForecastData, seed: int, device,
               horizons: list[int], baselines: bool) -> list[dict]:
    """Rows of the encoder of checkpoint ``ckpt`` (and its random-init twin, drawn with ``seed``) at every drop fraction
    and horizon, and of the filled raw-window baselines when ``baselines``. The dropped observations depend on
    ``cfg.seed`` only, so every pretraining seed reads the same lookbacks."""
    alphas = list(cfg.eval.alphas)
    encoders = frozen_encoders(pretrained, seed, cfg.eval.random_baseline, device)
    stride = data.strides(horizons[0], cfg.eval.max_fit_rows)  # counts only: the same at every fraction
    out_rows = []
    for fraction in cfg.eval.fractions:
        hidden = drop_observations(data.series, fraction, cfg.seed)
        base = {s: data.windows(s, horizons[0], stride[s], hidden) for s in stride}
        check_span(pretrained.encoder, base["train"], ckpt)
        encoded = {model: {s: encode_windows(enc, w, torch.arange(len(w)), cfg.eval.batch_size, device,
                                             desc=f"s{seed} p={fraction} {model}/{s}") for s, w in base.items()}
                   for model, enc in encoders.items()}
        for horizon in horizons:
            split_windows = {s: data.windows(s, horizon, stride[s], hidden) for s in base}
            full = {s: w.batch(torch.arange(len(w))) for s, w in split_windows.items()}
            n = {s: len(b.values) for s, b in full.items()}
            keep = {s: rearrange(b.target_observed, "n c h -> (n c) h").all(-1) for s, b in full.items()}
            y = {s: rearrange(b.target, "n c h -> (n c) h") for s, b in full.items()}
            preds = {}
            for model, enc in encoded.items():
                part = {s: o.take(slice(n[s])) for s, o in enc.items()}
                head = fit_probe(part, {s: b.target for s, b in full.items()}, keep, alphas)
                preds[model, "probe"] = rearrange(probe_predict(head, part["test"]), "n c h -> (n c) h")
            for fill in FILLS if baselines else ():
                x = {s: fill_gaps(rearrange(b.values, "n c l -> (n c) l"),
                                  rearrange(b.observed, "n c l -> (n c) l"), fill) for s, b in full.items()}
                preds["linear", f"{fill}-filled"] = fit_head(x, y, keep, alphas)(x["test"]).float()
            observed = rearrange(full["test"].target_observed, "n c h -> (n c) h")
            for (model, mode), pred in preds.items():
                out_rows.append({"model": model, "mode": mode, "horizon": horizon, "drop": fraction,
                                 **metrics(pred, y["test"], observed), "n_windows": n["test"]})
                print(f"s{seed} p={fraction:.1f} H={horizon:4d} {model:12s} {mode:14s} "
                      f"mse={out_rows[-1]['mse']:.4f} mae={out_rows[-1]['mae']:.4f}")
    return out_rows


def run(cfg: DictConfig) -> Path:
    start = time.time()
    device = resolve_device(cfg.device)
    scored = SeedRows()
    for i, (seed, ckpt, pretrained, data) in enumerate(seed_data(cfg, "irregular", device)):
        horizons = sorted(cfg.eval.horizons or data.card.protocol["horizons"])
        scored.add(seed, ckpt, pretrained.step,
                   score_seed(cfg, ckpt, pretrained, data, seed, device, horizons, baselines=i == 0))
    rows = scored.aggregate(keys=("model", "mode", "horizon", "drop"), metrics=("mse", "mae"))
    description = device_description(device)
    out = write_results(
        cfg.out_dir, "irregular", data.card.name, rows, seed=scored.label,
        device=description, wall_s=time.time() - start,
        extra={"ckpt": str(cfg.ckpt), **scored.record(), "lookback": data.lookback},
        notes=(f"Each channel's lookback observations dropped independently with probability `drop` (seed "
               f"{cfg.seed}, the same for every pretraining seed); targets complete; all test windows; MSE/MAE on "
               "train-standardised values. "
               "`tsjepa`/`probe`: frozen encoder on the remaining observations at their own time stamps "
               "(no imputation) + ridge head; `random-init`: the same architecture with random weights; "
               "`linear`: raw-window ridge on the lookback with gaps "
               "forward-filled (`ffill-filled`) or linearly interpolated (`linear-filled`) within the window. "
               "Heads refit at each drop rate on train windows with the same drop rate. Encoder rows: mean over "
               f"the pretraining seed(s) {scored.seeds} (each with its own random-init twin), `<metric>_std` the sample "
               "std over seeds (absent for one seed); baselines from the first seed."),
    )
    plot_degradation(out.with_suffix(".png"), rows, horizons, description)
    print(f"results: {out} (+ .md, .png), {time.time() - start:.0f} s")
    return out
