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

import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from einops import rearrange  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from tsjepa.checkpoint import Pretrained, from_pretrained  # noqa: E402
from tsjepa.data.sources import DatasetCard, load_source, split_rows  # noqa: E402
from tsjepa.data.timeseries import TimeSeries  # noqa: E402
from tsjepa.data.windows import Windows, count_windows, fit_scaler  # noqa: E402
from tsjepa.device import device_description, resolve_device  # noqa: E402
from tsjepa.diagnostics import embedding_report, position_r2, recoverability, slot_share  # noqa: E402
from tsjepa.encoding import encode_windows  # noqa: E402
from tsjepa.eval import SeedRows, frozen_encoders, seed_checkpoints, single_dataset  # noqa: E402
from tsjepa.eval.baselines import decomposition_features, seasonal_naive  # noqa: E402
from tsjepa.eval.finetune import finetune, predict  # noqa: E402
from tsjepa.heads import (  # noqa: E402
    fit_head,
    fit_probe,
    fit_stride,
    normalise,
    probe_features,
    probe_predict,
    probe_rows,
    smoother_probe,
)
from tsjepa.models import Encoder, EncoderOutput  # noqa: E402
from tsjepa.results import (  # noqa: E402
    plot_label_efficiency,
    save_figure,
    write_results,
)

BASELINE_FEATURES = {"linear": lambda x: x, "dlinear": decomposition_features}


def embedding_health(out: EncoderOutput, seed: int, tokens: int = 8192) -> dict[str, float]:
    """Effective rank and SIGReg isotropy statistic (null ~1.06) of a fixed random subset of test tokens, and
    the share of all test tokens' variance their (channel, patch) slot explains (`slot_share`), and the R² with
    which slot means fit on the even test windows predict the odd windows' tokens (`position_r2`). Where every
    patch is observed (regular series) the tokens are a view of the embeddings, not a copy."""
    every = bool(out.patch_observed.all())
    z = rearrange(out.embeddings, "n c p d -> (n c p) d") if every else out.embeddings[out.patch_observed]
    pick = torch.randperm(len(z), generator=torch.Generator().manual_seed(seed))[:tokens]
    report = embedding_report(z[pick], seed=seed)
    windows, channels, patches = out.patch_observed.shape
    slots = torch.arange(channels * patches).reshape(1, channels, patches).expand_as(out.patch_observed)
    window_ids = torch.arange(windows)[:, None, None].expand_as(out.patch_observed)
    return {"effective_rank": report["effective_rank"], "isotropy": report["sigreg_mean"],
            "slot_share": slot_share(z, slots[out.patch_observed]),
            "position_r2": position_r2(z, slots[out.patch_observed], window_ids[out.patch_observed])}


def metrics(pred: torch.Tensor, target: torch.Tensor, observed: torch.Tensor) -> dict[str, float]:
    """MSE / MAE over the observed target values (``[N, H]`` each; ``observed`` bool)."""
    err = (pred - target)[observed]
    return {"mse": float((err**2).mean()), "mae": float(err.abs().mean())}


def check_span(encoder: Encoder, windows: Windows, ckpt: str) -> None:
    """Windows may be shorter than the encoder's span (their earlier patches are then unobserved, e.g. the
    104-week illness lookback under a 336-unit corpus encoder), never longer."""
    if windows.span > encoder.config.span + 1e-6:
        raise ValueError(
            f"checkpoint {ckpt} encodes windows of span up to {encoder.config.span}, but data.lookback="
            f"{windows.lookback} gives span {windows.span}; set data.lookback to at most "
            f"{int(encoder.config.span // windows.dt)}"
        )


def plot_forecasts(path: Path, history: torch.Tensor, truth: torch.Tensor, preds: dict[str, torch.Tensor],
                   channel: str, horizon: int, origins: list[int], device: str) -> None:
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
    save_figure(fig, path, device)


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
        series, card = load_source(name, cfg.data)
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


def check_eval_config(cfg: DictConfig) -> None:
    """Range-check the forecast keys before any work starts."""
    e = cfg.eval
    rules = {"eval.batch_size": e.batch_size >= 1, "eval.max_fit_rows": e.max_fit_rows >= 1,
             "eval.alphas": len(e.alphas) > 0 and all(a > 0 for a in e.alphas),
             "eval.plot_windows": e.plot_windows >= 1,
             "eval.modes": len(e.modes) > 0 and set(e.modes) <= {"probe", "finetune"},
             "eval.horizons": e.horizons is None or (len(e.horizons) > 0 and all(h >= 1 for h in e.horizons))}
    bad = [f"{k}={OmegaConf.select(cfg, k)}" for k, ok in rules.items() if not ok]
    if bad:
        raise ValueError(f"invalid forecast eval config: {', '.join(bad)} (see configs/eval/forecast.yaml)")


def train_fractions(cfg: DictConfig) -> list[float]:
    fractions = sorted({float(f) for f in cfg.eval.train_fractions})
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"eval.train_fractions must be a non-empty list in (0, 1], got {cfg.eval.train_fractions}")
    return fractions


def latest(keep: torch.Tensor, n_windows: int, fraction: float) -> torch.Tensor:
    """``keep`` ``[N * C]`` restricted to the (window, channel) rows of the last ``fraction`` of ``n_windows``."""
    recent = torch.arange(n_windows) >= n_windows - math.ceil(fraction * n_windows)
    return keep & recent.repeat_interleave(len(keep) // n_windows)


def lookback_recoverability(encoded: dict[str, EncoderOutput], split_windows: dict[str, Windows],
                            alphas: list[float], every: int = 4) -> float:
    """R² with which a ridge map from a channel's frozen tokens recovers its instance-normalised lookback
    window (every ``every``-th window of each split; fit on train, penalty on val, scored on test)."""
    features, targets, observed = {}, {}, {}
    for split, w in split_windows.items():
        index = torch.arange(0, len(w), every)
        batch, out = w.batch(index), encoded[split]
        part = out.take(index)
        features[split] = probe_features(part)
        targets[split] = normalise(batch.values, part)
        observed[split] = rearrange(batch.observed, "n c l -> (n c) l")
    return recoverability(features, targets, observed, alphas)


@dataclass
class SeedScores:
    rows: list[dict]
    penalties: dict[str, float]
    finetune_logs: dict[str, dict]
    examples: dict


@dataclass
class HorizonSplits:
    """The windows of one horizon, per split, as ``(window, channel)`` rows: ``windows[s]``, their batches
    ``full[s]``, the raw lookback ``lookback[s]`` ``[N * C, L]``, targets ``truth[s]`` and their observed mask
    ``observed[s]`` ``[N * C, H]``, and ``keep[s]`` ``[N * C]``: rows whose whole target is observed (the rows
    heads are fit on)."""

    windows: dict[str, Windows]
    full: dict
    lookback: dict[str, torch.Tensor]
    truth: dict[str, torch.Tensor]
    observed: dict[str, torch.Tensor]
    keep: dict[str, torch.Tensor]

    @classmethod
    def build(cls, data: ForecastData, horizon: int, stride: dict[str, int]) -> HorizonSplits:
        windows = {split: data.windows(split, horizon, stride[split]) for split in stride}
        full = {split: w.batch(torch.arange(len(w))) for split, w in windows.items()}
        observed = {s: rearrange(b.target_observed, "n c h -> (n c) h") for s, b in full.items()}
        # unobserved lookback values sit at the train mean (0)
        return cls(windows, full, {s: rearrange(b.values, "n c l -> (n c) l") for s, b in full.items()},
                   {s: rearrange(b.target, "n c h -> (n c) h") for s, b in full.items()}, observed,
                   {s: o.all(-1) for s, o in observed.items()})

    def n(self, split: str) -> int:
        return len(self.windows[split])

    def fit_rows(self, fraction: float) -> dict[str, torch.Tensor]:
        """``keep`` with the train rows narrowed to the most recent ``fraction`` of the train windows."""
        return self.keep | {"train": latest(self.keep["train"], self.n("train"), fraction)}

    def row(self, model: str, mode: str, horizon: int, fraction: float, pred: dict[str, torch.Tensor]) -> dict:
        """A result row from ``pred[s]`` ``[N * C, H]`` (test, and val when present)."""
        val = ({"val_mse": metrics(pred["val"], self.truth["val"], self.observed["val"])["mse"]}
               if "val" in pred else {})
        return {"model": model, "mode": mode, "horizon": horizon, "train_fraction": fraction,
                **metrics(pred["test"], self.truth["test"], self.observed["test"]), **val,
                "n_windows": self.n("test")}


def seed_data(cfg: DictConfig, task: str, device: torch.device) -> Iterator[tuple[int, str, Pretrained, ForecastData]]:
    """For each pretraining seed of ``cfg.ckpt`` (``seed_checkpoints``): the seed, its checkpoint path, the
    checkpoint loaded on ``device`` and the dataset windowed for it."""
    for seed, ckpt in seed_checkpoints(cfg).items():
        pretrained = from_pretrained(ckpt, map_location=device)
        yield seed, ckpt, pretrained, ForecastData.load(cfg, task, pretrained)


def score_seed(cfg: DictConfig, ckpt: str, pretrained: Pretrained, data: ForecastData, seed: int,
               device: torch.device, baselines: bool) -> SeedScores:
    """Every row of one pretraining seed (checkpoint ``ckpt``, loaded as ``pretrained``): probes (and fine-tuning)
    of its encoder and of the random-init twin drawn with ``seed``, per horizon and train fraction; the raw
    baselines too when ``baselines``. Encoders are scored one after the other, so memory holds one encoder's
    features at a time."""
    horizons = sorted(cfg.eval.horizons or data.card.protocol["horizons"])
    fractions, layers, alphas = train_fractions(cfg), tuple(cfg.eval.probe_layers), list(cfg.eval.alphas)
    # Windows for the shortest horizon are a superset (same origins, in order) of those for longer ones.
    stride = data.strides(horizons[0], cfg.eval.max_fit_rows)
    base = {split: data.windows(split, horizons[0], stride[split]) for split in stride}
    check_span(pretrained.encoder, base["train"], ckpt)
    encoders = frozen_encoders(pretrained, seed, cfg.eval.random_baseline, device)
    rows, penalties, finetune_logs, examples = [], {}, {}, {}

    def record(splits: HorizonSplits, horizon: int, fraction: float, preds: dict) -> None:
        for (model, mode), pred in preds.items():
            rows.append(splits.row(model, mode, horizon, fraction, pred))
            print(f"seed {seed} H={horizon:4d} f={fraction:g} {model:14s} {mode:10s} mse={rows[-1]['mse']:.4f} "
                  f"mae={rows[-1]['mae']:.4f} n_windows={rows[-1]['n_windows']}")
        keep_example(horizon, fraction, splits, preds)

    def keep_example(horizon: int, fraction: float, splits: HorizonSplits, preds: dict) -> None:
        if horizon == horizons[0] and fraction == fractions[-1]:
            examples.setdefault("preds", {}).update({k: v["test"] for k, v in preds.items()})
            examples.update(batch=splits.full["test"], n=splits.n("test"), horizon=horizon, data=data)

    # Each horizon is scored inside a function, so its windows, features and predictions are freed before the
    # next horizon's (and before the encoders' features) are built: memory holds one horizon at a time.
    def score_baselines(horizon: int) -> None:
        splits = HorizonSplits.build(data, horizon, stride)
        for fraction in fractions:  # each baseline's predictions ({split: [(N C), H]}) are scored, then freed
            for model, features in BASELINE_FEATURES.items():
                x = {s: features(v) for s, v in splits.lookback.items()}
                ridge = fit_head(x, splits.truth, splits.fit_rows(fraction), alphas)
                penalties[f"{model}/{horizon}@{fraction:g}"] = ridge.alpha
                record(splits, horizon, fraction,
                       {(model, "supervised"): {s: ridge(x[s]).float() for s in ("val", "test")}})
            if fraction == fractions[-1]:
                record(splits, horizon, fraction, {("seasonal-naive", "naive"): {
                    s: seasonal_naive(splits.lookback[s], horizon, data.card.protocol["season"]) for s in ("val", "test")}})

    def score_encoder(model: str, encoder: Encoder, encoded: dict[str, EncoderOutput], rows_of: dict,
                      horizon: int) -> None:
        splits = HorizonSplits.build(data, horizon, stride)
        part = {s: o.take(slice(splits.n(s))) for s, o in encoded.items()}
        for fraction in fractions:
            preds, targets = {}, {s: b.target for s, b in splits.full.items()}
            head = fit_probe(part, targets, splits.fit_rows(fraction), alphas, rows_of)
            penalties[f"{model}/{horizon}@{fraction:g}"] = head.alpha
            preds[model, "probe"] = {s: rearrange(probe_predict(head, part[s]), "n c h -> (n c) h")
                                     for s in ("val", "test")}
            if "finetune" in cfg.eval.modes and fraction == fractions[-1]:
                if layers != (-1,):
                    raise ValueError("eval.modes=[finetune] fine-tunes the last layer's head; set "
                                     "eval.probe_layers=[-1]")
                heads = {float(k): smoother_probe(head, part, targets, splits.fit_rows(fraction), k, rows_of)
                         for k in cfg.eval.finetune.head_penalty_scales}
                tuned, log = finetune(
                    encoder, heads, data.windows("train", horizon),
                    data.windows("val", horizon, cfg.eval.finetune.val_stride),
                    cfg.eval.finetune, seed, device, desc=f"{model}/finetune H={horizon}")
                mode = "finetune" if model == "tsjepa" else "supervised"
                preds[model, mode] = {"test": rearrange(
                    predict(tuned, splits.windows["test"], cfg.eval.batch_size, device), "n c h -> (n c) h")}
                finetune_logs[f"{model}/{horizon}"] = log
            record(splits, horizon, fraction, preds)

    for horizon in horizons if baselines else ():
        score_baselines(horizon)
    health = {}
    for model, encoder in encoders.items():
        encoded = {split: encode_windows(encoder, w, torch.arange(len(w)), cfg.eval.batch_size, device,
                                         desc=f"{model}/{split}", layers=layers) for split, w in base.items()}
        # anti-collapse and lost-detail evidence beside the errors: effective rank / isotropy of test token
        # embeddings, and how much of the lookback window a ridge map recovers from them
        health[model] = {**embedding_health(encoded["test"], seed),
                         "lookback_r2": lookback_recoverability(encoded, base, alphas)}
        rows_of = probe_rows(encoded)  # one set of probe rows (and their moments) for every horizon's fits
        for horizon in horizons:
            score_encoder(model, encoder, encoded, rows_of, horizon)
        del encoded, rows_of  # the next encoder's features take their place
    # rows in (horizon, fraction) order; within one: baselines, then each encoder's rows
    rows.sort(key=lambda r: (horizons.index(r["horizon"]), r["train_fraction"]))
    for model, mode, fraction in dict.fromkeys((r["model"], r["mode"], r["train_fraction"]) for r in rows):
        mine = [r for r in rows if (r["model"], r["mode"], r["train_fraction"]) == (model, mode, fraction)]
        mean = {k: sum(r[k] for r in mine) / len(mine) for k in ("mse", "mae", "val_mse") if k in mine[0]}
        rows.append({"model": model, "mode": mode, "horizon": "avg", "train_fraction": fraction, **mean,
                     "n_windows": sum(r["n_windows"] for r in mine),
                     **(health[model] if mode == "probe" else {})})
    return SeedScores(rows, penalties, finetune_logs, examples)


def run(cfg: DictConfig) -> Path:
    start = time.time()
    check_eval_config(cfg)
    train_fractions(cfg)
    device = resolve_device(cfg.device)
    scored, scores, architectures = SeedRows(), {}, {}
    for i, (seed, ckpt, pretrained, data) in enumerate(seed_data(cfg, "forecast", device)):
        scores[seed] = score_seed(cfg, ckpt, pretrained, data, seed, device, baselines=i == 0)
        scored.add(seed, ckpt, pretrained.step, scores[seed].rows)
        architectures[str(seed)] = asdict(pretrained.encoder.config)  # also what its random-init twin draws
    first = scores[scored.seeds[0]]
    rows = scored.aggregate(keys=("model", "mode", "horizon", "train_fraction"), metrics=("mse", "mae", "val_mse"))
    examples = first.examples
    data: ForecastData = examples["data"]
    card, lookback = data.card, data.lookback
    stride = data.strides(examples["horizon"], cfg.eval.max_fit_rows)
    seeds = scored.seeds
    description = device_description(device)
    # the scored encoders' architecture (what their random-init twins draw): one, or by seed where they differ
    first_architecture = architectures[str(seeds[0])]
    architecture = (first_architecture if all(a == first_architecture for a in architectures.values())
                    else architectures)
    out = write_results(
        cfg.out_dir, "forecast", card.name, rows, seed=scored.label,
        device=description, wall_s=time.time() - start,
        extra={"ckpt": str(cfg.ckpt), **scored.record(), "encoder": architecture,
               "lookback": lookback,
               "probe_layers": list(cfg.eval.probe_layers),
               "fit_stride": {s: stride[s] for s in ("train", "val")},
               # one seed: as before; several: keyed by seed
               "ridge_alpha": first.penalties if len(seeds) == 1 else {str(k): s.penalties for k, s in scores.items()},
               "finetune": first.finetune_logs if len(seeds) == 1 else
               {str(k): s.finetune_logs for k, s in scores.items() if s.finetune_logs}},
        notes=(f"Frozen encoder + ridge head per horizon (penalty chosen on val); lookback {lookback}; "
               "all test windows, stride 1; MSE/MAE on train-standardised values (observed targets only); "
               f"ridge heads fit on train windows with stride {stride['train']}, penalty chosen on val windows "
               f"with stride {stride['val']}; `train_fraction`: heads fit on that share of the train windows, "
               "the most recent ones; `val_mse`: the same head on the val windows (what variants are chosen "
               f"on). Encoder rows: mean over {len(seeds)} seed(s) {seeds} (pretraining seed and the random-init "
               "twin's seed), `mse_std`/`mae_std` the std over seeds (sample std; absent for one seed); baselines "
               "are deterministic (n_seeds 1). `linear`: ridge on the raw lookback window; `dlinear`: ridge on "
               "its trend/remainder decomposition (kernel 25); "
               f"`seasonal-naive`: last season repeated (period {card.protocol['season']}); "
               "`random-init`: the same encoder architecture with random weights, frozen. On the avg rows of "
               "encoders: effective rank of 8192 test token embeddings, their SIGReg statistic "
               "(`isotropy`, about 1.06 for an isotropic Gaussian), and `lookback_r2`: the test R² of a ridge "
               "map from a channel's tokens back to its instance-normalised lookback window (1 = nothing lost)."),
    )
    ts = data.series
    channel = ts.channels.index(cfg.eval.plot_channel) if cfg.eval.plot_channel in ts.channels else -1
    picks = torch.linspace(0, examples["n"] - 1, cfg.eval.plot_windows).long()
    batch = examples["batch"]
    plot_forecasts(
        out.with_suffix(".png"), batch.values[picks, channel], batch.target[picks, channel],
        {f"{m} ({mode})": rearrange(p, "(n c) h -> n c h", n=examples["n"])[picks, channel]
         for (m, mode), p in examples["preds"].items()},
        ts.channels[channel], examples["horizon"], [int(data.rows["test"][0] + lookback + i) for i in picks],
        description,
    )
    if len(train_fractions(cfg)) > 1:
        plot_label_efficiency(
            out.with_name(f"{card.name}-label-efficiency.png"), [r for r in rows if r["horizon"] == "avg"],
            [("tsjepa", "probe"), ("random-init", "probe"), ("linear", "supervised")], "mse",
            "test MSE, average over horizons (mean ± std over seeds)",
            "share of train windows the head is fit on (the most recent ones)",
            f"{card.name}: label efficiency", description)
    print(f"results: {out} (+ .md, .png), {time.time() - start:.0f} s")
    return out
