"""Rare-regime detection: ``python -m tsjepa.eval rare ckpt=... data=<smd|nab|ucr>``.

Protocol: every series of the benchmark is scaled on its normal train rows; every test row is scored. Scoring
windows of ``data.lookback`` rows (at most the encoder's span; `scoring_lookback`) end on a patch boundary and
their last patches tile the test rows (a last, overlapping window covers the remainder), so each window's score
is mapped back to the rows of its last patch.
Per series and on average over the series that hold an anomaly: AUC-PR, AUROC, best F1 without point
adjustment and, labelled, point-adjusted F1; UCR accuracy for UCR. Every model scores the same windows:

- ``tsjepa`` / ``prediction``: latent prediction error of the masked last patch (all channels masked), each
  channel standardised by its errors on normal train windows, averaged over channels;
- ``tsjepa`` / ``chi2``: squared Mahalanobis norm of the window embedding (mean of last-patch embeddings over
  channels) under a Gaussian fit to normal train windows, chi-square with D dof: its p-value is the calibrated
  score (ranking as the norm does), and
  ``false_alarm@0.01`` is the share of held-out normal train windows (the last 20%) with p < 0.01 (0.01 when
  calibrated);
- ``tsjepa`` / ``chi2-channels``: the same at token level, where SIGReg acts: one Gaussian per channel, fit to
  that channel's last-patch embeddings on normal train windows, and the squared whitened norms summed over
  channels (chi-square with C x D dof if the channels were independent), so a deviation in a few of many
  channels is not averaged away before it is measured;
- ``tsjepa`` / ``combined``: ``prediction`` + ``chi2``, each robust-standardised ((s - median) / IQR) on the
  held-out normal train windows, so neither unit dominates: one label-free score that is high when the window is
  either badly predicted or off the normal embedding distribution;
- ``random-init``: the same four scores from the same architecture with random weights (encoder and predictor);
- ``zscore``: largest robust z-score (median / MAD of the train rows) over the last patch's rows and channels;
- ``pca``: reconstruction error of the last patch (flattened channels x rows) by a PCA fit on train windows
  keeping 95% of the variance;
- ``iforest``: scikit-learn IsolationForest on the same last-patch vectors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from einops import rearrange  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.ensemble import IsolationForest  # noqa: E402

from tsjepa.checkpoint import from_pretrained  # noqa: E402
from tsjepa.data.anomaly import AnomalySet, LabelledSeries  # noqa: E402
from tsjepa.data.sources import load_source  # noqa: E402
from tsjepa.data.windows import Windows, fit_scaler  # noqa: E402
from tsjepa.device import device_description, resolve_device  # noqa: E402
from tsjepa.eval import SeedRows, frozen_encoders, seed_checkpoints, single_dataset  # noqa: E402
from tsjepa.eval.detection import detection_metrics, ucr_hit  # noqa: E402
from tsjepa.eval.latent_scores import Whitener, latent_scores, standardised  # noqa: E402
from tsjepa.eval.vus import sliding_window  # noqa: E402
from tsjepa.models import Encoder, Predictor  # noqa: E402
from tsjepa.results import save_figure, write_results  # noqa: E402

HELD_OUT = 0.2  # share of normal train windows kept out of every fit, for calibration


class ScoringSetup:
    """One series, keyed for a checkpoint: the scaled series as `Windows`, the train windows (fit part and
    held-out part) and the test windows whose last patches tile the test rows."""

    def __init__(self, item: LabelledSeries, ids: np.ndarray, lookback: int, patch: int, max_train: int) -> None:
        self.item, self.patch = item, patch
        n, start = len(item.series), item.test_start
        if start < lookback:
            raise ValueError(f"{item.name}: {start} train rows, fewer than the lookback {lookback}")
        test_origins = np.arange(start + patch, n + 1, patch)
        if test_origins[-1] != n:
            test_origins = np.append(test_origins, n)
        stride = max(1, (start - lookback) // max_train)
        train_origins = np.arange(lookback, start + 1, stride)
        self.n_fit = int(len(train_origins) * (1 - HELD_OUT))
        scaler = fit_scaler(item.series, (0, start))
        self.windows = Windows(item.series, (0, n), lookback, 0, ids, scaler,
                               origins=np.concatenate([train_origins, test_origins]))
        self.train = torch.arange(len(train_origins))
        self.test = torch.arange(len(train_origins), len(train_origins) + len(test_origins))
        self.scaled = self.windows.values.numpy().T  # [T, C]
        self.test_origins = test_origins

    def rows_of(self, window_scores: np.ndarray) -> np.ndarray:
        """Test-window scores ``[N_test]`` -> test-row scores ``[T_test]`` (each row from the window whose
        last patch holds it; the last window's patch overlaps the one before it)."""
        n_test = len(self.item.labels)
        k = np.minimum(np.arange(n_test) // self.patch, len(window_scores) - 1)
        return window_scores[k]

    def last_patches(self, index: torch.Tensor) -> np.ndarray:
        """Scaled values of the last patch of windows ``index``, ``[N, patch, C]``."""
        origins = self.windows.origins[index].numpy()
        return self.scaled[origins[:, None] + np.arange(-self.patch, 0)]


def baseline_scores(setup: ScoringSetup, seed: int) -> dict[str, np.ndarray]:
    """Test-window scores of the classical baselines, fit on the fit part of the train windows."""
    fit_rows = setup.scaled[: setup.item.test_start]
    med = np.nanmedian(fit_rows, 0)
    mad = 1.4826 * np.nanmedian(np.abs(fit_rows - med), 0) + 1e-6
    train = rearrange(setup.last_patches(setup.train[: setup.n_fit]), "n p c -> n (p c)")
    test_patches = setup.last_patches(setup.test)
    test = rearrange(test_patches, "n p c -> n (p c)")
    pca = PCA(n_components=0.95, random_state=seed).fit(train)
    recon = pca.inverse_transform(pca.transform(test))
    forest = IsolationForest(random_state=seed).fit(train)
    return {
        "zscore": np.abs((test_patches - med) / mad).max(axis=(1, 2)),
        "pca": ((test - recon) ** 2).sum(1),
        "iforest": -forest.score_samples(test),
    }


COMBINED = ("prediction", "chi2")  # the scores the label-free ``combined`` score sums


def encoder_scores(encoder: Encoder, predictor: Predictor | None, setup: ScoringSetup, cfg: DictConfig, device,
                   desc: str) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Test-window scores ``[N_test]`` of one encoder (``prediction``, ``chi2``, ``chi2-channels``, ``combined``;
    without a ``predictor`` only the chi-square scores) and, for each chi-square score, its false-alarm rate at
    p < 0.01 on held-out normal windows."""
    train = latent_scores(encoder, predictor, setup.windows, setup.train, cfg.eval.batch_size, device, f"{desc}/train")
    test = latent_scores(encoder, predictor, setup.windows, setup.test, cfg.eval.batch_size, device, f"{desc}/test")
    fit, held_out = slice(0, setup.n_fit), slice(setup.n_fit, None)
    # every score on the test windows and on the held-out normal train windows (its reference)
    scores, held = {}, {}
    if predictor is not None:
        scores["prediction"], held["prediction"] = (
            standardised(errors, train.errors[fit]).nanmean(1).nan_to_num(0.0)
            for errors in (test.errors, train.errors[held_out]))
    false_alarm = {}
    for mode, train_z, test_z in (("chi2", train.tail, test.tail), ("chi2-channels", train.tokens, test.tokens)):
        whitener = Whitener.fit(train_z[fit])
        # the squared norm orders windows as the p-value does (fixed dof) without underflowing to p = 0
        scores[mode], held[mode] = whitener.squared_norm(test_z), whitener.squared_norm(train_z[held_out])
        false_alarm[mode] = float((whitener.tail(held[mode]) < 0.01).mean())
    if predictor is not None:
        scores["combined"] = sum(standardised(scores[mode][:, None].float(), held[mode][:, None].float())[:, 0]
                                 for mode in COMBINED)
    return {mode: s.numpy() for mode, s in scores.items()}, false_alarm


def scoring_lookback(encoder: Encoder, cfg: DictConfig, ckpt: str) -> int:
    """Rows per scoring window: ``data.lookback``, a whole number of the encoder's patches and at most its span.
    A window shorter than the span is read by the encoder cropped to it (`Encoder.cropped`: e.g. 64-row windows
    under the 336-unit corpus encoder, so series with few train rows can still be scored)."""
    span, patch = encoder.config.span, encoder.config.patch_duration
    lookback = int(cfg.data.lookback)
    if lookback > span + 1e-6 or lookback % patch:
        raise ValueError(f"{ckpt} reads windows of at most {span:g} rows in patches of {patch:g}, but "
                         f"data.lookback={lookback}; set it to a multiple of {patch:g} up to {span:g}")
    return lookback


@dataclass
class AnomalyBench:
    """A labelled anomaly benchmark keyed for a JEPA checkpoint: the data, the vocabulary ids of its
    channels, the window geometry (rows), and the models to score with (the checkpoint's encoder and
    predictor, and with ``eval.random_baseline`` the same architecture at random weights)."""

    name: str
    data: AnomalySet
    ids: np.ndarray
    patch: int
    lookback: int
    models: dict[str, tuple[Encoder, Predictor | None]]
    pretrain_step: int

    @classmethod
    def load(cls, cfg: DictConfig, task: str, device, needs: str, ckpt: str, seed: int,
             min_channels: int = 1) -> AnomalyBench:
        """The benchmark ``cfg`` names, keyed for checkpoint ``ckpt`` and its random-init twin drawn with ``seed``.
        ``needs`` names the benchmarks ``task`` accepts, for the error on any other dataset."""
        name = single_dataset(cfg, task)
        data, card = load_source(name, cfg.data)
        if not isinstance(data, AnomalySet) or len(data.channels) < min_channels:
            raise ValueError(f"{task} needs {needs}, got {name!r}")
        pretrained = from_pretrained(ckpt, map_location=device)
        encoder, predictor = pretrained.encoder, pretrained.predictor
        lookback = scoring_lookback(encoder, cfg, ckpt)
        # each twin encoder gets a random predictor too, drawn right after it; an encoder pretrained without a
        # predictor (masked reconstruction, contrastive) and its twin score without latent prediction
        models = {model: (enc, predictor if model == "tsjepa" or predictor is None else
                          Predictor(predictor.config, encoder.config.d_model,
                                    encoder.config.channel_capacity).to(device))
                  for model, enc in frozen_encoders(pretrained, seed, cfg.eval.random_baseline, device,
                                                    span=lookback).items()}
        return cls(name, data, pretrained.vocab.ids(card.channel_keys(data.channels)),
                   int(round(encoder.config.patch_duration)), lookback, models,
                   pretrained.step)

    def selected(self, names: list[str] | None) -> list[tuple[int, LabelledSeries]]:
        """(position in the benchmark, series) of the series in ``names`` (every series when empty); a name the
        benchmark does not hold is an error that lists the names it does."""
        known = [item.name for item in self.data.series]
        unknown = sorted(set(names or ()) - set(known))
        if unknown:
            raise ValueError(f"eval.series names {unknown}, which {self.name} does not hold; its series: "
                             f"{', '.join(known)}")
        return [(k, item) for k, item in enumerate(self.data.series) if not names or item.name in set(names)]

    def setup(self, item: LabelledSeries, max_train: int) -> ScoringSetup:
        return ScoringSetup(item, self.ids, self.lookback, self.patch, max_train)


@dataclass(kw_only=True)
class AnomalySeedRows(SeedRows):
    """An anomaly harness's rows over the pretraining seeds of ``cfg.ckpt``: seed -> its ``series: mean`` rows,
    then its per-series rows; and the last seed's bench (the data and window geometry every seed shares)."""

    bench: AnomalyBench

    @classmethod
    def score(cls, cfg: DictConfig, task: str, device, needs: str,
              score_seed: Callable[[AnomalyBench, int, bool], list[dict]], min_channels: int = 1) -> AnomalySeedRows:
        """Load each seed's ``AnomalyBench`` (``needs`` and ``min_channels`` as in ``AnomalyBench.load``) and
        score it with ``score_seed(bench, seed, baselines)``: the raw baselines with the first seed only."""
        scored = SeedRows()
        for i, (seed, ckpt) in enumerate(seed_checkpoints(cfg).items()):
            bench = AnomalyBench.load(cfg, task, device, needs, ckpt, seed, min_channels=min_channels)
            per_series = score_seed(bench, seed, i == 0)
            scored.add(seed, ckpt, bench.pretrain_step, mean_rows(per_series) + per_series)
        return cls(scored.checkpoints, scored.by_seed, scored.steps, bench=bench)

    def rows(self, metrics: tuple[str, ...]) -> list[dict]:
        """Mean over seeds per (model, mode, series), with ``<metric>_std`` and ``n_seeds``."""
        return self.aggregate(keys=("model", "mode", "series"), metrics=metrics)

    def record(self) -> dict:
        """``SeedRows.record`` and the window geometry."""
        return {**super().record(), "lookback": self.bench.lookback, "patch": self.bench.patch}


def mean_rows(per_series: list[dict]) -> list[dict]:
    """One ``series: mean`` row per (model, mode): metrics averaged over the series, then counts (``n_*``)
    summed."""
    means = []
    for model, mode in dict.fromkeys((r["model"], r["mode"]) for r in per_series):
        mine = [r for r in per_series if (r["model"], r["mode"]) == (model, mode)]
        keys = [k for k in mine[0] if k not in ("model", "mode", "horizon", "series")]
        counts = [k for k in keys if k.startswith("n_")]
        means.append({"model": model, "mode": mode, "horizon": None, "series": "mean",
                      **{k: float(np.mean([r[k] for r in mine])) for k in keys if k not in counts},
                      **{k: int(sum(r[k] for r in mine)) for k in counts}})
    return means


def plot_series(path: Path, per_series: list[dict], metric: str, device: str) -> None:
    names = list(dict.fromkeys(r["series"] for r in per_series))
    models = list(dict.fromkeys(f"{r['model']}/{r['mode']}" for r in per_series))
    fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(names) * len(models) / 3), 4))
    width = 0.8 / len(models)
    for i, model in enumerate(models):
        vals = [next((r[metric] for r in per_series if r["series"] == s and f"{r['model']}/{r['mode']}" == model),
                     np.nan) for s in names]
        ax.bar(np.arange(len(names)) + i * width, vals, width, label=model)
    ax.set_xticks(np.arange(len(names)) + 0.4, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7, ncol=4)
    ax.set_title(f"{metric} per series (no point adjustment)", fontsize=9)
    save_figure(fig, path, device)


DETECTION_METRICS = ("auc_pr", "auroc", "best_f1", "pa_f1", "vus_pr", "vus_roc", "ucr_hit", "false_alarm@0.01")


def without_anomaly(bench: AnomalyBench, names: list[str] | None) -> list[str]:
    """The selected series that hold no labelled anomaly (skipped: no detection metric is defined on them)."""
    return [item.name for _, item in bench.selected(names) if item.labels.sum() == 0]


def score_seed(bench: AnomalyBench, cfg: DictConfig, seed: int, device, baselines: bool) -> list[dict]:
    """Per-series rows of every model of ``bench`` (and of the raw baselines when ``baselines``) on the series
    that hold an anomaly."""
    per_series = []
    skipped = without_anomaly(bench, cfg.eval.series)
    for _, item in bench.selected(cfg.eval.series):
        if item.name in skipped:
            continue
        setup = bench.setup(item, cfg.eval.max_train_windows)
        vus_window = sliding_window(np.nan_to_num(item.series.values[:, 0]))  # TSB-AD: first channel's period
        window_scores = ({(m, "baseline"): s for m, s in baseline_scores(setup, seed).items()} if baselines
                         else {})
        false_alarm = {}
        for model, (enc, pred) in bench.models.items():
            scores, calibration = encoder_scores(enc, pred, setup, cfg, device, f"s{seed} {item.name}/{model}")
            window_scores |= {(model, mode): s for mode, s in scores.items()}
            false_alarm |= {(model, mode): rate for mode, rate in calibration.items()}
        for (model, mode), s in window_scores.items():
            rows = setup.rows_of(s)
            row = {"model": model, "mode": mode, "horizon": None, "series": item.name,
                   **detection_metrics(item.labels, rows, vus_window), "vus_window": vus_window,
                   "n_windows": len(setup.test)}
            if bench.name == "ucr":
                row["ucr_hit"] = ucr_hit(item.segments[0], rows)
            if (model, mode) in false_alarm:
                row["false_alarm@0.01"] = false_alarm[model, mode]
            per_series.append(row)
        print(f"seed {seed} {item.name}: " + "  ".join(f"{r['model']}/{r['mode']} auc_pr={r['auc_pr']:.3f}"
                                                     for r in per_series if r["series"] == item.name), flush=True)
    if not per_series:
        raise ValueError(f"no series with an anomaly to score in {bench.name} (eval.series={cfg.eval.series})")
    return per_series


def run(cfg: DictConfig) -> Path:
    start = time.time()
    device = resolve_device(cfg.device)
    scored = AnomalySeedRows.score(cfg, "rare", device, "a labelled anomaly benchmark (smd, nab, ucr)",
                              lambda bench, seed, baselines: score_seed(bench, cfg, seed, device, baselines))
    rows, bench, seeds = scored.rows(DETECTION_METRICS), scored.bench, scored.seeds
    patch, lookback = bench.patch, bench.lookback
    n_series = len({r["series"] for r in rows}) - 1
    description = device_description(device)
    out = write_results(
        cfg.out_dir, "rare", bench.name, rows, seed=scored.label,
        device=description, wall_s=time.time() - start,
        extra={"ckpt": str(cfg.ckpt), **scored.record(),
               "skipped_without_anomaly": without_anomaly(bench, cfg.eval.series)},
        notes=(f"Every test row scored (window scores mapped to the rows of each window's last {patch}-row patch; "
               f"lookback {lookback}); `series: mean` rows average the {n_series} series "
               "holding an anomaly. Encoder rows: mean over the pretraining seed(s) "
               f"{seeds} (each with its own random-init twin), `<metric>_std` the sample std over seeds (the std "
               "of the per-seed means on `series: mean` rows; absent for one seed); baselines come from the "
               "first seed (n_seeds 1). "
               "`vus_pr` / `vus_roc`: TSB-AD 1.5's VUS with the period of the series' first channel "
               "as window (`vus_window`, TSB-AD's find_length_rank). `best_f1` has no point adjustment; `pa_f1` is point-adjusted (shown for "
               "comparison with the literature only). `prediction`: latent prediction error of the masked last "
               "patch; `chi2`: squared norm of the whitened window embedding (chi-square with D dof, p-value "
               "monotone in it); `chi2-channels`: per-channel whitened last-patch embeddings, squared norms summed "
               "over channels (C x D dof); `combined`: `prediction` + `chi2`, each robust-standardised (median / IQR) on "
               "held-out normal train windows; "
               "`false_alarm@0.01`: share of held-out normal train windows with p < 0.01 (0.01 = calibrated). "
               "`random-init`: same architecture, random weights. Baselines on the same last patches: robust "
               "z-score, PCA (95% variance) reconstruction error, IsolationForest."),
    )
    plot_series(out.with_suffix(".png"), [r for r in rows if r["series"] != "mean"], "auc_pr", description)
    print(f"results: {out} (+ .md, .png), {time.time() - start:.0f} s")
    return out
