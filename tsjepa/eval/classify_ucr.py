"""Frozen-embedding classification of the UCR / UEA archives: ``python -m tsjepa.eval classify-ucr
data=gunpoint ckpt=...``.

The protocol of the published self-supervised tables (TS2Vec, T-Loss, TNC, TS-TCC): the archive's official
train/test split; one embedding per series from the frozen encoder; an RBF SVM whose C is chosen by 5-fold
cross-validation on the train split (TS2Vec's ``fit_svm``: C in 1e-4 .. 1e4 and no penalty; no search when the
train split has under 50 series or under 5 per class); accuracy on the test split.

- embedding: each series tiled from its last row by windows of the encoder's span (`TiledSeries`: no series is
  cut, padded to a fixed length or resampled; a short one is one window observed in its last patches), and per
  channel the ``eval.pool`` statistics (mean, max) of the observed tokens of all its windows, concatenated over
  channels (`series_embeddings`);
- ``tsjepa`` / ``svm`` and ``ridge``: the encoder of ``ckpt`` (a glob gives one per pretraining seed; mean and
  std over seeds) with the SVM, or a ridge classifier (alpha by leave-one-out CV, standardised embeddings);
  ``pretrained_on`` names its pretraining data;
- ``random-init``: the same architecture with random weights, one draw per seed (what pretraining adds);
- ``eval.zero_shot``: further checkpoints scored beside it (default the shipped ``tsjepa-base-corpus``, whose
  corpus holds none of these datasets): one frozen encoder each, so one score (``n_seeds`` 1);
- baselines on the same split: MiniRocket (sktime's; ridge on its features, one draw per seed), 1-NN with
  DTW (sktime's interface to dtaidistance: full window, unequal lengths natively), and a ridge classifier on
  the raw values (each series linearly resampled to the longest length where lengths differ);
- ``published``: the accuracies the card lists (labelled with their source; other budgets, not rerun here).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from sklearn.linear_model import RidgeClassifierCV  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.svm import SVC  # noqa: E402

from tsjepa.checkpoint import Pretrained, from_pretrained  # noqa: E402
from tsjepa.data.labelled import LabelledSet, LabelledSplit  # noqa: E402
from tsjepa.data.sources import DatasetCard, load_source  # noqa: E402
from tsjepa.data.vocab import UNKNOWN, ChannelVocab  # noqa: E402
from tsjepa.data.windows import TiledSeries, labelled_scaler  # noqa: E402
from tsjepa.device import device_description, resolve_device  # noqa: E402
from tsjepa.encoding import series_embeddings  # noqa: E402
from tsjepa.eval import SeedRows, frozen_encoders, seed_checkpoints, single_dataset  # noqa: E402
from tsjepa.models import Encoder  # noqa: E402
from tsjepa.results import save_figure, write_results  # noqa: E402

TASK = "classify-ucr"
SVM_CS = [10.0**i for i in range(-4, 5)] + [np.inf]
# TS2Vec's iteration cap for the searched SVMs: without it the hard-margin candidate (C = inf) never converges on
# some folds (PLAID), and with it such a fit stops after ~4 s on 537 series; a fit that converges is unchanged
SVM_MAX_ITER = 10_000_000
RIDGE_ALPHAS = np.logspace(-3, 3, 10)


def fit_svm(features: np.ndarray, labels: np.ndarray) -> tuple[SVC, float | None]:
    """TS2Vec's ``fit_svm``: an RBF SVM (``gamma='scale'``) with C chosen by 5-fold CV over `SVM_CS` (at most
    `SVM_MAX_ITER` solver iterations, as TS2Vec), or with
    no penalty (C = inf) when the train split is too small to cross-validate (under 50 series or under 5 per
    class). Returns the fit SVM and its cross-validated accuracy (None without the search)."""
    n_classes = len(np.unique(labels))
    if len(labels) // n_classes < 5 or len(labels) < 50:
        return SVC(C=np.inf, gamma="scale").fit(features, labels), None
    with warnings.catch_warnings():  # a capped fit warns; it is TS2Vec's protocol, as published
        warnings.filterwarnings("ignore", message="Solver terminated early")
        search = GridSearchCV(SVC(gamma="scale", max_iter=SVM_MAX_ITER), {"C": SVM_CS}, cv=5).fit(features, labels)
    return search.best_estimator_, float(search.best_score_)


def fit_ridge(features: np.ndarray, labels: np.ndarray):
    """Standardised features, ridge classifier with alpha by efficient leave-one-out CV."""
    return make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=RIDGE_ALPHAS)).fit(features, labels)


def head_rows(train: np.ndarray, test: np.ndarray, data: LabelledSet, row: dict) -> list[dict]:
    """Accuracy of the SVM and the ridge head fit on ``train`` ``[N, F]`` embeddings, scored on ``test``."""
    svm, val = fit_svm(train, data.train.labels)
    ridge = fit_ridge(train, data.train.labels)
    svm_row = row | {"mode": "svm", "accuracy": float((svm.predict(test) == data.test.labels).mean())}
    if val is not None:
        svm_row["val_accuracy"] = val
    ridge_row = row | {"mode": "ridge", "accuracy": float((ridge.predict(test) == data.test.labels).mean())}
    return [svm_row, ridge_row]


def channel_ids(pretrained: Pretrained, card: DatasetCard, channels: list[str]) -> np.ndarray:
    """Vocabulary ids of the dataset's channels: its own ids for an encoder pretrained on it; for another
    encoder the shared `UNKNOWN` identity where its vocabulary trained one, else new (untrained) rows."""
    vocab = ChannelVocab.from_dict(pretrained.vocab.to_dict())  # a copy: scoring never changes the model
    return vocab.ids(card.channel_keys(channels), add_unknown=UNKNOWN not in vocab.names)


def scoring_span(encoder: Encoder, data: LabelledSet) -> float:
    """The encoder's span, cropped to the whole patches the longest series needs when that is shorter (the
    patches before it would be unobserved in every window)."""
    longest = max(int(data.train.lengths.max()), int(data.test.lengths.max()))
    patch = encoder.config.patch_duration
    return min(encoder.config.span, float(np.ceil(longest / patch) * patch))


def encoder_rows(pretrained: Pretrained, seed: int, data: LabelledSet, card: DatasetCard, cfg: DictConfig,
                 device, random_baseline: bool, scaler: StandardScaler) -> list[dict]:
    """Rows of one checkpoint (and, with ``random_baseline``, its random-init twin drawn with ``seed``); series
    values scaled by ``scaler`` (fit on the train split)."""
    ids = channel_ids(pretrained, card, data.channels)
    span = scoring_span(pretrained.encoder, data)
    encoders = frozen_encoders(pretrained, seed, random_baseline, device, span)
    tiles = [TiledSeries(split.values, span, ids, scaler) for split in (data.train, data.test)]  # both encoders'
    rows = []
    for name, encoder in encoders.items():
        source = pretrained.config.get("data", {}).get("name", "?") if name == "tsjepa" else "-"
        train, test = (series_embeddings(encoder, t, cfg.eval.pool, cfg.eval.batch_size, device).numpy()
                       for t in tiles)
        rows += head_rows(train, test, data, {"model": name, "pretrained_on": source})
    return rows


def nested(split: LabelledSplit) -> pd.DataFrame:
    """sktime's nested frame (a row per series, a cell per channel), each channel's trailing NaN dropped."""
    def cell(column: np.ndarray) -> pd.Series:
        seen = np.flatnonzero(~np.isnan(column))
        return pd.Series(column[: seen[-1] + 1] if len(seen) else column[:0])

    return pd.DataFrame([[cell(v[:, c]) for c in range(v.shape[1])] for v in split.values])


def resampled(split: LabelledSplit, length: int) -> np.ndarray:
    """``[N, C * length]``: each channel linearly interpolated at ``length`` evenly spaced points over its
    observed rows (the raw baseline's fixed-length input)."""
    rows = []
    for values in split.values:
        channels = []
        for column in values.T:
            seen = np.flatnonzero(~np.isnan(column))
            channels.append(np.interp(np.linspace(seen[0], seen[-1], length), seen, column[seen]))
        rows.append(np.concatenate(channels))
    return np.array(rows)


def baseline_rows(data: LabelledSet, seeds: list[int]) -> list[dict]:
    """MiniRocket (mean and std over ``seeds``), DTW 1-NN and raw-value ridge on the archive split."""
    from sktime.classification.distance_based import KNeighborsTimeSeriesClassifier
    from sktime.dists_kernels.dtw import DtwDtaidistMultiv
    from sktime.transformations.panel.rocket import MiniRocketMultivariate, MiniRocketMultivariateVariable

    lengths = np.concatenate([data.train.lengths, data.test.lengths])
    equal = bool((lengths == lengths[0]).all())
    train, test = nested(data.train), nested(data.test)
    y_train, y_test = data.train.labels, data.test.labels
    accuracy = {}
    for seed in seeds:
        # Variable handles unequal lengths; it pads series shorter than MiniRocket's 9-point kernels
        rocket = (MiniRocketMultivariate(random_state=seed) if equal and lengths.min() >= 9 else
                  MiniRocketMultivariateVariable(random_state=seed, pad_value_short_series=0.0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            features = rocket.fit_transform(train)
            head = fit_ridge(features, y_train)
            accuracy.setdefault("minirocket", []).append(float((head.predict(rocket.transform(test)) == y_test).mean()))
    knn = KNeighborsTimeSeriesClassifier(n_neighbors=1, distance=DtwDtaidistMultiv(use_c=True)).fit(train, y_train)
    accuracy["dtw-1nn"] = [float((knn.predict(test) == y_test).mean())]
    longest = int(lengths.max())
    raw = fit_ridge(resampled(data.train, longest), y_train)
    accuracy["raw"] = [float((raw.predict(resampled(data.test, longest)) == y_test).mean())]
    modes = {"minirocket": "ridge", "dtw-1nn": "1-nn", "raw": "ridge"}
    rows = []
    for model, values in accuracy.items():
        row = {"model": model, "pretrained_on": "-", "mode": modes[model], "accuracy": float(np.mean(values))}
        if len(values) > 1:
            row["accuracy_std"] = float(np.std(values, ddof=1))
        rows.append(row | {"n_seeds": len(values)})
    return rows


def published_rows(card: DatasetCard) -> list[dict]:
    """The card's published accuracies as rows (``mode: published``, with their source)."""
    return [{"model": p["model"], "pretrained_on": "-", "mode": "published", "accuracy": float(p["accuracy"]),
             "source": p["source"]} for p in card.protocol.get("published", [])]


def plot(path: Path, rows: list[dict], name: str, device: str) -> None:
    """Test accuracy (± std over seeds) of every row, one bar each."""
    labels = [f"{r['model']} ({r['mode']})" + (f" [{r['pretrained_on']}]" if r["pretrained_on"] != "-" else "")
              for r in rows]
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(rows) + 1.2))
    colours = ["0.6" if r["mode"] == "published" else ("C0" if r["model"] == "tsjepa" else "C1") for r in rows]
    ax.barh(range(len(rows)), [r["accuracy"] for r in rows], xerr=[r.get("accuracy_std", 0.0) for r in rows],
            color=colours, capsize=2)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("test accuracy (mean ± std over seeds; grey: published)")
    ax.set_title(f"{name}: frozen-embedding classification", fontsize=10)
    save_figure(fig, path, device)


def run(cfg: DictConfig) -> Path:
    start = time.time()
    device = resolve_device(cfg.device)
    name = single_dataset(cfg, TASK)
    data, card = load_source(name, cfg.data)
    if not isinstance(data, LabelledSet):
        raise ValueError(f"{TASK} scores a classification archive (a card with format: sktime, e.g. data=gunpoint); "
                         f"{name!r} is a {type(data).__name__}")
    scaler = labelled_scaler(data.train.observations())
    scored = SeedRows()
    for seed, ckpt in seed_checkpoints(cfg).items():
        pretrained = from_pretrained(ckpt, device)
        scored.add(seed, ckpt, pretrained.step,
                   encoder_rows(pretrained, seed, data, card, cfg, device, cfg.eval.random_baseline, scaler))
    rows = scored.aggregate(("model", "pretrained_on", "mode"), ("accuracy", "val_accuracy"))
    for ckpt in cfg.eval.zero_shot or []:
        zero_shot = encoder_rows(from_pretrained(ckpt, device), scored.seeds[0], data, card, cfg, device, False,
                                 scaler)
        rows += [r | {"pretrained_on": f"{r['pretrained_on']} (zero-shot)", "ckpt": str(ckpt), "n_seeds": 1}
                 for r in zero_shot]
    if cfg.eval.baselines:
        rows += baseline_rows(data, scored.seeds)
    rows += published_rows(card)
    for row in rows:
        row |= {"horizon": None, "n_windows": len(data.test)}
    description = device_description(device)
    out = write_results(
        cfg.out_dir, TASK, name, rows, seed=scored.label, device=description, wall_s=time.time() - start,
        extra={"ckpt": str(cfg.ckpt), **scored.record(), "classes": data.classes,
               "n_train": len(data.train), "n_test": len(data.test)},
        notes=(f"{name}: {len(data.train)} train / {len(data.test)} test series, {len(data.classes)} classes; "
               "accuracy on the archive's test split (`n_windows` = test series). Frozen encoder, one embedding per "
               f"series (per channel the {'/'.join(cfg.eval.pool)} of its observed tokens over the windows tiling it); "
               "`svm`: RBF SVM, C by 5-fold CV on train (TS2Vec's protocol; `val_accuracy` = that CV accuracy, none "
               "where the train split is too small to search); `ridge`: ridge classifier on standardised embeddings. "
               "`random-init`: the same architecture with random weights. Mean ± std over "
               f"{len(scored.seeds)} seed(s) (pretraining seeds; MiniRocket draws). `published`: reported elsewhere "
               "with other budgets (source in the JSON), not rerun."),
    )
    plot(out.with_suffix(".png"), rows, name, description)
    print(f"results: {out} (+ .md, .png), {time.time() - start:.0f} s")
    return out
