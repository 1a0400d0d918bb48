"""Forecasting with a frozen encoder: ``python -m tsjepa.eval forecast ckpt=... [data=etth1]``.

Protocol (dataset card): scaler fit on train rows, train/val/test windows with stride 1, every test window
scored, MSE/MAE on standardised values. For each horizon a linear head maps a channel's token embeddings
``[P * D]`` (channel-independent, weights shared across channels) to its ``H`` future values in the
instance-normalised space; the window's loc/scale are added back. The head is fit in closed form on train
windows with the ridge penalty chosen on val. In the same run, on the same windows:

- ``linear``: the same ridge head on the raw (standardised) lookback window, the reference row;
- ``dlinear``: ridge on DLinear's trend / remainder decomposition of the lookback window;
- ``seasonal-naive``: the last season repeated (period from the dataset card), as sktime's NaiveForecaster;
- ``random-init`` (probe): the same architecture with random weights, frozen, so the table shows what
  pretraining adds over the inductive bias of the architecture alone.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from einops import rearrange  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from tsjepa.checkpoint import Pretrained, from_pretrained  # noqa: E402
from tsjepa.data.sources import DatasetCard, load_card, load_dataset, split_rows  # noqa: E402
from tsjepa.data.timeseries import TimeSeries  # noqa: E402
from tsjepa.data.windows import Windows, count_windows, fit_scaler  # noqa: E402
from tsjepa.device import resolve_device  # noqa: E402
from tsjepa.diagnostics import embedding_report  # noqa: E402
from tsjepa.encoding import encode_windows  # noqa: E402
from tsjepa.eval import single_dataset  # noqa: E402
from tsjepa.eval.baselines import decomposition_features, seasonal_naive  # noqa: E402
from tsjepa.eval.finetune import ForecastModel, finetune, predict  # noqa: E402
from tsjepa.heads import (  # noqa: E402
    first_windows,
    fit_head,
    fit_probe,
    fit_stride,
    probe_predict,
)
from tsjepa.models import Encoder, EncoderOutput  # noqa: E402
from tsjepa.results import device_description, save_figure, write_results  # noqa: E402

BASELINE_FEATURES = {"linear": lambda x: x, "dlinear": decomposition_features}




def embedding_health(out: EncoderOutput, seed: int, tokens: int = 8192) -> dict[str, float]:
    """Effective rank and SIGReg isotropy statistic (null ~1.06) of a fixed random subset of test tokens."""
    z = out.embeddings[out.patch_observed]
    pick = torch.randperm(len(z), generator=torch.Generator().manual_seed(seed))[:tokens]
    report = embedding_report(z[pick], seed=seed)
    return {"effective_rank": report["effective_rank"], "isotropy": report["sigreg_mean"]}


def metrics(pred: torch.Tensor, target: torch.Tensor, observed: torch.Tensor) -> dict[str, float]:
    """MSE / MAE over the observed target values (``[N, H]`` each; ``observed`` bool)."""
    err = (pred - target)[observed]
    return {"mse": float((err**2).mean()), "mae": float(err.abs().mean())}







def check_span(encoder: Encoder, windows: Windows, ckpt: str) -> None:
    if abs(encoder.config.span - windows.span) > 1e-6:
        raise ValueError(
            f"checkpoint {ckpt} encodes windows of span {encoder.config.span}, but data.lookback="
            f"{windows.lookback} gives span {windows.span}; set data.lookback to match"
        )


def plot_forecasts(path: Path, history: torch.Tensor, truth: torch.Tensor, preds: dict[str, torch.Tensor],
                   channel: str, horizon: int, origins: list[int]) -> None:
    """history ``[K, L]``, truth ``[K, H]``, preds name -> ``[K, H]`` for K example windows."""
    fig, axes = plt.subplots(len(origins), 1, figsize=(10, 2.6 * len(origins)), squeeze=False)
    for ax, k in zip(axes[:, 0], range(len(origins)), strict=True):
        tail = history[k, -2 * horizon :]
        ax.plot(range(-len(tail), 0), tail, color="0.4", lw=1, label="lookback")
        ax.plot(range(horizon), truth[k], color="black", lw=1.2, label="truth")
        for name, pred in preds.items():
            ax.plot(range(horizon), pred[k], lw=1.2, label=name)
        ax.axvline(0, color="0.7", ls="--", lw=0.8)
        ax.set_title(f"{channel}, test window at row {origins[k]}, horizon {horizon}", fontsize=9)
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=4)
    save_figure(fig, path)


@dataclass
class ForecastData:
    """One dataset under its card's protocol, keyed for a checkpoint: row splits, the scaler fit on train
    rows, and the checkpoint vocabulary's ids of the dataset's channels."""

    series: TimeSeries
    card: DatasetCard
    rows: dict[str, tuple[int, int]]
    scaler: StandardScaler
    ids: np.ndarray
    lookback: int

    @classmethod
    def load(cls, cfg: DictConfig, task: str, pretrained: Pretrained) -> ForecastData:
        name = single_dataset(cfg, task)
        series, card = load_dataset(name, cfg.data.dir), load_card(name)
        rows = split_rows(card, len(series), cfg.data.lookback)
        ids = pretrained.vocab.ids(card.channel_keys(series.channels))
        return cls(series, card, rows, fit_scaler(series, rows["train"]), ids, cfg.data.lookback)

    def windows(self, split: str, horizon: int, stride: int = 1, hidden: np.ndarray | None = None) -> Windows:
        return Windows(self.series, self.rows[split], self.lookback, horizon, self.ids, self.scaler, stride, hidden)

    def strides(self, horizon: int, max_rows: int) -> dict[str, int]:
        """Window stride per split: ridge heads are fit on every k-th train / val window when a dataset has
        more than ``max_rows`` (window, channel) rows; every test window is scored (stride 1)."""
        counts = {s: count_windows(self.rows[s], self.lookback, horizon) for s in ("train", "val")}
        return {s: fit_stride(n, len(self.ids), max_rows) for s, n in counts.items()} | {"test": 1}


def run(cfg: DictConfig) -> Path:
    start = time.time()
    device = resolve_device(cfg.device)
    pretrained = from_pretrained(cfg.ckpt, map_location=device)
    data = ForecastData.load(cfg, "forecast", pretrained)
    ts, card, rows, lookback = data.series, data.card, data.rows, data.lookback
    name = card.name
    horizons = sorted(cfg.eval.horizons or card.protocol["horizons"])
    windows = data.windows
    # Windows for the shortest horizon are a superset (same origins, in order) of those for longer ones.
    stride = data.strides(horizons[0], cfg.eval.max_fit_rows)
    base = {split: windows(split, horizons[0], stride[split]) for split in stride}
    check_span(pretrained.encoder, base["train"], cfg.ckpt)
    torch.manual_seed(cfg.seed)
    encoders = {"tsjepa": pretrained.encoder}
    if cfg.eval.random_baseline:
        encoders["random-init"] = Encoder(pretrained.encoder.config).to(device)
    encoded = {
        model: {split: encode_windows(enc, w, torch.arange(len(w)), cfg.eval.batch_size, device,
                                      desc=f"{model}/{split}")
                for split, w in base.items()}
        for model, enc in encoders.items()
    }
    # anti-collapse evidence beside the errors: effective rank / isotropy of test token embeddings
    health = {model: embedding_health(enc["test"], cfg.seed) for model, enc in encoded.items()}
    rows_out, examples, finetune_logs, penalties = [], {}, {}, {}
    alphas = list(cfg.eval.alphas)
    for horizon in horizons:
        split_windows = {split: windows(split, horizon, stride[split]) for split in base}
        n = {split: len(w) for split, w in split_windows.items()}
        full = {split: w.batch(torch.arange(len(w))) for split, w in split_windows.items()}
        # rows (window, channel); fitting uses the rows whose whole target is observed
        keep = {s: rearrange(b.target_observed, "n c h -> (n c) h").all(-1) for s, b in full.items()}
        # the raw-window linear model: features = lookback values (unobserved ones at the train mean, 0)
        raw = {s: (rearrange(b.values, "n c l -> (n c) l"), rearrange(b.target, "n c h -> (n c) h"))
               for s, b in full.items()}
        preds = {}  # (model, mode) -> [(N C), H]
        for model, features in BASELINE_FEATURES.items():
            x = {s: features(v[0]) for s, v in raw.items()}
            ridge = fit_head(x, {s: v[1] for s, v in raw.items()}, keep, alphas)
            preds[model, "supervised"], penalties[f"{model}/{horizon}"] = ridge(x["test"]).float(), ridge.alpha
        preds["seasonal-naive", "naive"] = seasonal_naive(raw["test"][0], horizon, card.protocol["season"])
        for model, enc in encoded.items():
            part = {s: first_windows(o, n[s]) for s, o in enc.items()}
            head = fit_probe(part, {s: b.target for s, b in full.items()}, keep, alphas)
            penalties[f"{model}/{horizon}"] = head.alpha
            preds[model, "probe"] = rearrange(probe_predict(head, part["test"]), "n c h -> (n c) h")
            if "finetune" in cfg.eval.modes:
                tuned, log = finetune(
                    ForecastModel(copy.deepcopy(encoders[model]), head), windows("train", horizon),
                    windows("val", horizon, cfg.eval.finetune.val_stride),
                    cfg.eval.finetune, cfg.seed, device, desc=f"{model}/finetune H={horizon}")
                mode = "finetune" if model == "tsjepa" else "supervised"
                preds[model, mode] = rearrange(predict(tuned, split_windows["test"], cfg.eval.batch_size, device),
                                               "n c h -> (n c) h")
                finetune_logs[f"{model}/{horizon}"] = log
        truth = raw["test"][1]
        observed = rearrange(full["test"].target_observed, "n c h -> (n c) h")
        for (model, mode), pred in preds.items():
            rows_out.append({"model": model, "mode": mode, "horizon": horizon,
                             **metrics(pred, truth, observed),
                             "n_windows": n["test"]})
            print(f"H={horizon:4d} {model:14s} {mode:10s} mse={rows_out[-1]['mse']:.4f} "
                  f"mae={rows_out[-1]['mae']:.4f} n_windows={n['test']}")
        if horizon == horizons[0]:
            examples = {"batch": full["test"], "preds": preds, "n": n["test"]}
    for model, mode in dict.fromkeys((r["model"], r["mode"]) for r in rows_out):
        mine = [r for r in rows_out if (r["model"], r["mode"]) == (model, mode)]
        rows_out.append({"model": model, "mode": mode, "horizon": "avg",
                         "mse": sum(r["mse"] for r in mine) / len(mine),
                         "mae": sum(r["mae"] for r in mine) / len(mine),
                         "n_windows": sum(r["n_windows"] for r in mine),
                         **(health[model] if mode == "probe" else {})})
    out = write_results(
        cfg.out_dir, "forecast", name, rows_out, seed=cfg.seed, device=device_description(device),
        wall_s=time.time() - start,
        extra={"ckpt": str(cfg.ckpt), "lookback": lookback, "pretrain_step": pretrained.step,
               "fit_stride": {s: stride[s] for s in ("train", "val")},
               "ridge_alpha": penalties, "finetune": finetune_logs},
        notes=(f"Frozen encoder + ridge head per horizon (penalty chosen on val); lookback {lookback}; "
               "all test windows, stride 1; MSE/MAE on train-standardised values (observed targets only); "
               f"ridge heads fit on train windows with stride {stride['train']}, penalty chosen on val windows "
               f"with stride {stride['val']}. `linear`: ridge on the raw lookback window; `dlinear`: ridge on its trend/remainder decomposition (kernel 25); "
               f"`seasonal-naive`: last season repeated (period {card.protocol['season']}); "
               "`random-init`: the same encoder architecture with random weights, frozen. On the avg rows of "
               "encoders: effective rank of 8192 test token embeddings and their SIGReg statistic "
               "(`isotropy`, about 1.06 for an isotropic Gaussian)."),
    )
    channel = ts.channels.index(cfg.eval.plot_channel) if cfg.eval.plot_channel in ts.channels else -1
    picks = torch.linspace(0, examples["n"] - 1, cfg.eval.plot_windows).long()
    batch = examples["batch"]
    plot_forecasts(
        out.with_suffix(".png"), batch.values[picks, channel], batch.target[picks, channel],
        {f"{m} ({mode})": rearrange(p, "(n c) h -> n c h", n=examples["n"])[picks, channel]
         for (m, mode), p in examples["preds"].items()},
        ts.channels[channel], horizons[0], [int(rows["test"][0] + lookback + i) for i in picks],
    )
    print(f"results: {out} (+ .md, .png), {time.time() - start:.0f} s")
    return out
