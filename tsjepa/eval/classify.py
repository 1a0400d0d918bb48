"""Outcome classification from irregular records: ``python -m tsjepa.eval classify ckpt=... data=physionet2012``.

Protocol: stratified ``data.folds``-fold cross-validation over the records (in-hospital mortality for
PhysioNet 2012); AUROC and AUPRC on each held-out fold, reported as mean and std over folds. Fold ``k`` is
scored with an encoder pretrained without fold ``k``'s records: a ``ckpt`` glob
(``runs/physionet2012-s*/fold*/checkpoints/last``) is read per match, its config naming the pretraining seed
and held-out fold (``data.fold``), and a checkpoint whose pretraining data included the held-out records is
refused. With several pretraining seeds (optionally narrowed to ``eval.seeds``) each seed is scored over the
folds with its own heads, subsets and random-init twin, and rows report the mean over seeds of each seed's fold
mean, with the std over seeds. Every model sees the same folds:

- ``tsjepa`` / ``probe``: frozen encoder; per channel the ``eval.pool`` statistics (mean, max, last) of its
  observed token embeddings (zeros and a flag for a channel never observed), concatenated over channels with
  the static descriptors, then a logistic regression (penalty chosen by inner cross-validation on the
  training folds);
- ``tsjepa`` / ``finetune``: encoder + linear head trained end to end from the probe's solution (binary
  cross-entropy, early stopping on the AUROC of a stratified val part of the training folds);
- ``random-init`` / ``probe``: the same architecture with random weights, frozen (what pretraining adds);
- ``summary-stats`` / ``logistic`` and ``gradient-boosting``: per-channel count, mean, std, min, max, first
  and last value plus the static descriptors, with logistic regression or scikit-learn's
  HistGradientBoostingClassifier (the classical baseline).
"""

from __future__ import annotations

import copy
import glob
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from sklearn.impute import SimpleImputer  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: E402
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from torch import Tensor, nn  # noqa: E402

from tsjepa.checkpoint import Pretrained, checkpoints_by, from_pretrained, read_config  # noqa: E402
from tsjepa.data.records import ClippedScaler, RecordSet, RecordWindows  # noqa: E402
from tsjepa.data.sources import load_source  # noqa: E402
from tsjepa.device import device_description, resolve_device  # noqa: E402
from tsjepa.encoding import channel_pool, encode_windows  # noqa: E402
from tsjepa.eval import SeedRows, frozen_encoders, single_dataset  # noqa: E402
from tsjepa.eval.finetune import train_with_early_stopping  # noqa: E402
from tsjepa.models import Encoder, EncoderOutput  # noqa: E402
from tsjepa.results import (  # noqa: E402
    plot_label_efficiency,
    save_figure,
    write_results,
)


def summary_features(records: RecordSet) -> np.ndarray:
    """``[N, C * 7 + S]``: per channel count, mean, std, min, max, first and last observed value (NaN when
    the channel is never observed), then the static descriptors."""
    rows = []
    for values in records.values:
        seen = ~np.isnan(values)
        count = seen.sum(0)
        with warnings.catch_warnings():  # all-NaN channels give NaN statistics, as intended
            warnings.simplefilter("ignore", RuntimeWarning)
            stats = [count, np.nanmean(values, 0), np.nanstd(values, 0), np.nanmin(values, 0), np.nanmax(values, 0)]
        first = np.where(count > 0, values[seen.argmax(0), np.arange(values.shape[1])], np.nan)
        last_row = len(values) - 1 - seen[::-1].argmax(0)
        last = np.where(count > 0, values[last_row, np.arange(values.shape[1])], np.nan)
        rows.append(np.concatenate([*stats, first, last]))
    return np.concatenate([np.array(rows, dtype=np.float64), records.static], axis=1)


def logistic(seed: int, cs: list[float]):
    """Median imputation (+ missing indicators), standardisation, L2 logistic regression with the penalty
    chosen by 3-fold inner cross-validation on AUROC."""
    pipeline = make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(max_iter=3000, random_state=seed),
    )
    inner = StratifiedKFold(3, shuffle=True, random_state=seed)
    return GridSearchCV(pipeline, {"logisticregression__C": cs}, cv=inner, scoring="roc_auc")


def scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    return {"auroc": float(roc_auc_score(y, p)), "auc_pr": float(average_precision_score(y, p))}


class Classifier(nn.Module):
    """Encoder + a linear head on the channel-pooled embeddings and the (imputed, standardised) statics."""

    def __init__(self, encoder: Encoder, n_channels: int, n_static: int, pool: Sequence[str]) -> None:
        super().__init__()
        self.encoder, self.pool = encoder, tuple(pool)
        self.head = nn.Linear(n_channels * (len(self.pool) * encoder.config.d_model + 1) + n_static, 1)

    def forward(self, batch, static: Tensor) -> Tensor:
        """Batch ``[B, C, T]`` and static ``[B, S]`` -> logits ``[B]``."""
        out = self.encoder(batch)
        return self.head(torch.cat([channel_pool(out.embeddings, out.patch_observed, self.pool), static], -1))[:, 0]

    @torch.no_grad()
    def init_head(self, features: np.ndarray, labels: np.ndarray, c: float, seed: int) -> None:
        """Linear probing before fine-tuning (Kumar et al. 2022): the head becomes the class-balanced logistic
        regression (inverse penalty ``c``, on standardised inputs) of the frozen head inputs ``features``
        ``[N, F]``, with the standardisation folded into its weights."""
        scaler = StandardScaler().fit(features)
        probe = LogisticRegression(C=c, class_weight="balanced", max_iter=3000, random_state=seed)
        probe.fit(scaler.transform(features), labels)
        weight = probe.coef_[0] / scaler.scale_
        self.head.weight.copy_(torch.as_tensor(weight[None], dtype=torch.float32))
        self.head.bias.fill_(float(probe.intercept_[0] - weight @ scaler.mean_))


@torch.no_grad()
def logits_of(model: Classifier, windows: RecordWindows, static: Tensor, batch_size: int, device,
              index: Tensor | None = None) -> Tensor:
    """Logits ``[N]`` of records ``index`` (default: all) of ``windows``; ``static`` ``[len(windows), S]``."""
    model.eval()
    index = torch.arange(len(windows)) if index is None else index
    return torch.cat([model(windows.batch(i).to(device), static[i].to(device)).cpu() for i in index.split(batch_size)])


def finetune_classifier(encoder: Encoder, train: RecordWindows, pooled: np.ndarray, static: np.ndarray,
                        labels: np.ndarray, pool: Sequence[str], c: float, cfg: DictConfig, seed: int, device,
                        desc: str) -> tuple[Classifier, callable, dict]:
    """Trains encoder + head on ``train`` with binary cross-entropy (positives weighted by the class ratio),
    starting from the logistic probe of the frozen encoder's ``pooled`` features ``[N, F]`` (inverse penalty
    ``c``); a stratified ``cfg.val_fraction`` is held out for early stopping on AUROC
    (`train_with_early_stopping`). Returns the best model, the static-feature transform it expects, and a log."""
    index = np.arange(len(train))
    fit_idx, val_idx = train_test_split(index, test_size=cfg.val_fraction, stratify=labels, random_state=seed)
    prep = make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True), StandardScaler())
    prep.fit(static[fit_idx])
    static_t = torch.as_tensor(prep.transform(static), dtype=torch.float32)
    y = torch.as_tensor(labels, dtype=torch.float32)
    model = Classifier(encoder, len(train.channel_ids), static.shape[1], pool)
    model.init_head(np.concatenate([pooled, static_t.numpy()], 1)[fit_idx], labels[fit_idx], c, seed)
    model = model.to(device)
    groups = [{"params": model.encoder.parameters(), "lr": cfg.lr},
              {"params": model.head.parameters(), "lr": cfg.head_lr}]
    optimizer = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=((1 - y.mean()) / y.mean()).to(device))
    fit_windows, val_windows = torch.as_tensor(fit_idx), torch.as_tensor(val_idx)

    def batch_loss(gen: torch.Generator) -> Tensor:
        pick = fit_windows[torch.randint(len(fit_windows), (cfg.batch_size,), generator=gen)]
        return loss_fn(model(train.batch(pick).to(device), static_t[pick].to(device)), y[pick].to(device))

    def validate() -> float:
        logits = logits_of(model, train, static_t, cfg.batch_size * 4, device, val_windows)
        return float(roc_auc_score(labels[val_idx], logits.numpy()))

    log = train_with_early_stopping(model, optimizer, batch_loss, validate, cfg, seed, "auroc", maximize=True,
                                    desc=desc)

    def transform(s: np.ndarray) -> Tensor:
        return torch.as_tensor(prep.transform(s), dtype=torch.float32)

    return model, transform, log


def fold_checkpoints(cfg: DictConfig, folds: list[int]) -> dict[int, dict[int, str]]:
    """Pretraining seed -> held-out fold -> checkpoint. A plain ``ckpt`` serves every fold (scored with ``seed``);
    a glob is read per match (its config's ``seed`` and ``data.fold``), narrowed to ``eval.seeds`` when set, and
    must hold every (seed, fold) pair scored; a match pretrained without a held-out fold (e.g. on other data)
    serves every fold of its seed (``checked_checkpoint`` refuses one that read the scored records)."""
    if not glob.has_magic(str(cfg.ckpt)):
        if cfg.eval.seeds and list(cfg.eval.seeds) != [cfg.seed]:
            raise ValueError(f"eval.seeds={list(cfg.eval.seeds)} needs one checkpoint per seed and fold: give ckpt "
                             "as a glob, e.g. ckpt='runs/physionet2012-s*/fold*/checkpoints/last'")
        return {int(cfg.seed): dict.fromkeys(folds, str(cfg.ckpt))}
    found = checkpoints_by(str(cfg.ckpt), lambda config: (int(config.get("seed", -1)),
                                                          config.get("data", {}).get("fold")),
                           "(seed, held-out fold)")
    for seed, fold in list(found):
        if fold is None:
            found |= {(seed, f): found[seed, fold] for f in folds if (seed, f) not in found}
    seeds = [int(s) for s in cfg.eval.seeds] if cfg.eval.seeds else sorted({s for s, _ in found})
    missing = [(s, f) for s in seeds for f in folds if (s, f) not in found]
    if not seeds or missing:
        raise ValueError(f"ckpt={cfg.ckpt} has no checkpoint for (seed, held-out fold) {missing or folds} (found "
                         f"{sorted(found, key=str)}); pretrain one per fold with data.fold=<k>")
    return {s: {f: found[s, f] for f in folds} for s in seeds}


def checked_checkpoint(path: str, fold: int, cfg: DictConfig, device) -> Pretrained:
    """The checkpoint at ``path`` for scoring ``fold``; refuses one whose pretraining read this fold's records."""
    pretrained = from_pretrained(path, map_location=device)
    seen = pretrained.config.get("data", {})
    if set(seen.get("datasets", [])) & set(cfg.data.datasets):
        split = {k: seen.get(k) for k in ("fold", "folds", "fold_seed")}
        wanted = {"fold": fold, "folds": cfg.data.folds, "fold_seed": cfg.data.fold_seed}
        if split != wanted:
            raise ValueError(
                f"{path} was pretrained on {cfg.data.datasets} with held-out split {split}, so it has seen the "
                f"records of fold {fold} (split {wanted}); pass a ckpt glob (e.g. ...fold*...) matching one "
                "checkpoint per fold, each pretrained with data.fold=<k>"
            )
    return pretrained


def labelled_subset(train_idx: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A stratified ``fraction`` of ``train_idx`` (all of it at 1.0), sorted."""
    if fraction >= 1:
        return train_idx
    keep, _ = train_test_split(train_idx, train_size=fraction, stratify=labels, random_state=seed)
    return np.sort(keep)


def plot_folds(path: Path, per_fold: dict[str, list[dict]], device: str) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    names = list(per_fold)
    for ax, metric in zip(axes, ("auroc", "auc_pr"), strict=True):
        for i, name in enumerate(names):
            vals = [f[metric] for f in per_fold[name]]
            ax.scatter(np.full(len(vals), i), vals, s=18, color="0.5")
            ax.errorbar(i, np.mean(vals), yerr=np.std(vals), fmt="o", color="C0", capsize=4)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(f"{metric.upper()} per fold (every seed's folds; mean ± std)", fontsize=9)
    save_figure(fig, path, device)


def score_folds(cfg: DictConfig, seed: int, ckpts: dict[int, str], records: RecordSet, summary: np.ndarray,
                card, fractions: list[float], device) -> tuple[dict[tuple[str, float], list[dict]], list[dict]]:
    """Every model's scores on each held-out fold for one pretraining seed: ``(model/mode, train fraction) ->
    [per-fold metrics]``, and the fine-tuning logs."""
    per_fold: dict[tuple[str, float], list[dict]] = {}
    logs = []
    for fold, ckpt in ckpts.items():
        train_idx, test_idx = records.split(fold, cfg.data.folds, cfg.data.fold_seed)
        y_test = records.labels[test_idx]
        # the labelled stays each fraction's heads are fit on: a stratified subset of the training folds
        labelled = {f: labelled_subset(train_idx, records.labels[train_idx], f, seed + fold) for f in fractions}
        probs: dict[tuple[str, float], np.ndarray] = {}
        val_auroc: dict[tuple[str, float], float] = {}  # inner-CV AUROC on the training stays (selection)
        probe_c: dict[str, float] = {}
        for fraction, fit_idx in labelled.items():
            for model_name, model in (("summary-stats/logistic", logistic(seed, list(cfg.eval.cs))),
                                      ("summary-stats/gradient-boosting",
                                       HistGradientBoostingClassifier(random_state=seed))):
                model.fit(summary[fit_idx], records.labels[fit_idx])
                probs[model_name, fraction] = model.predict_proba(summary[test_idx])[:, 1]
                if hasattr(model, "best_score_"):
                    val_auroc[model_name, fraction] = float(model.best_score_)
        pretrained = checked_checkpoint(ckpt, fold, cfg, device)
        ids = pretrained.vocab.ids(card.channel_keys(records.channels))
        scaler = ClippedScaler().fit(records.subset(train_idx).observations())
        windows = RecordWindows(records, ids, scaler, card.protocol["span"])
        encoders = frozen_encoders(pretrained, seed + fold, cfg.eval.random_baseline, device, span=windows.span)
        pooled: dict[str, np.ndarray] = {}
        for model_name, encoder in encoders.items():
            out: EncoderOutput = encode_windows(encoder, windows, torch.arange(len(windows)), cfg.eval.batch_size,
                                                device, desc=f"seed {seed} fold {fold} {model_name}")
            pooled[model_name] = channel_pool(out.embeddings, out.patch_observed, cfg.eval.pool).numpy()
            features = np.concatenate([pooled[model_name], records.static], 1)
            for fraction, fit_idx in labelled.items():
                probe = logistic(seed, list(cfg.eval.cs)).fit(features[fit_idx], records.labels[fit_idx])
                probs[f"{model_name}/probe", fraction] = probe.predict_proba(features[test_idx])[:, 1]
                val_auroc[f"{model_name}/probe", fraction] = float(probe.best_score_)
                if fraction == fractions[-1]:
                    probe_c[model_name] = float(probe.best_params_["logisticregression__C"])
        if "finetune" in cfg.eval.modes:
            fit_idx = labelled[fractions[-1]]
            train_windows = RecordWindows(records.subset(fit_idx), ids, scaler, card.protocol["span"])
            test_windows = RecordWindows(records.subset(test_idx), ids, scaler, card.protocol["span"])
            model, static_of, log = finetune_classifier(
                copy.deepcopy(encoders["tsjepa"]), train_windows, pooled["tsjepa"][fit_idx],
                records.static[fit_idx], records.labels[fit_idx], cfg.eval.pool, probe_c["tsjepa"],
                cfg.eval.finetune, seed + fold, device, desc=f"seed {seed} fold {fold} finetune")
            logits = logits_of(model, test_windows, static_of(records.static[test_idx]), cfg.eval.batch_size, device)
            probs["tsjepa/finetune", fractions[-1]] = torch.sigmoid(logits).numpy()
            logs.append({"seed": seed, "fold": fold, "probe_c": probe_c["tsjepa"], "train_fraction": fractions[-1],
                         **log})
        for key, p in probs.items():
            validation = {"val_auroc": val_auroc[key]} if key in val_auroc else {}
            per_fold.setdefault(key, []).append({"seed": seed, "fold": fold, **validation, **scores(y_test, p)})
        print(f"seed {seed} fold {fold}: " + "  ".join(f"{k}@{f:g} auroc={per_fold[k, f][-1]['auroc']:.3f}"
                                                      for k, f in probs))
    return per_fold, logs


def fold_means(per_fold: dict[tuple[str, float], list[dict]], n_records: int) -> list[dict]:
    """One row per (model/mode, train fraction): each metric's mean and std over folds."""
    rows = []
    for (key, fraction), folds_scored in per_fold.items():
        model, mode = key.split("/")
        row = {"model": model, "mode": mode, "horizon": None, "train_fraction": fraction}
        for metric in ("val_auroc", "auroc", "auc_pr"):
            if metric not in folds_scored[0]:
                continue
            vals = [f[metric] for f in folds_scored]
            row |= {metric: float(np.mean(vals)), f"{metric}_std": float(np.std(vals))}
        rows.append(row | {"n_windows": n_records, "folds": len(folds_scored)})
    return rows


def run(cfg: DictConfig) -> Path:
    start = time.time()
    device = resolve_device(cfg.device)
    name = single_dataset(cfg, "classify")
    records, card = load_source(name, cfg.data)
    if not isinstance(records, RecordSet):
        raise ValueError(f"classify needs a record dataset (e.g. physionet2012), got {name!r}")
    folds = list(cfg.eval.folds) if cfg.eval.folds is not None else list(range(cfg.data.folds))
    fractions = sorted({float(f) for f in cfg.eval.train_fractions})
    if not fractions or not all(0 < f <= 1 for f in fractions):
        raise ValueError(f"eval.train_fractions must be a non-empty list in (0, 1], got {cfg.eval.train_fractions}")
    summary = summary_features(records)
    per_fold: dict[tuple[str, float], list[dict]] = {}
    scored = SeedRows()
    logs = []
    # records scored: the test stays of the folds scored (each once per seed), not the whole dataset
    n_scored = sum(len(records.split(fold, cfg.data.folds, cfg.data.fold_seed)[1]) for fold in folds)
    for seed, ckpts in fold_checkpoints(cfg, folds).items():
        seed_folds, seed_logs = score_folds(cfg, seed, ckpts, records, summary, card, fractions, device)
        scored.add(seed, ckpts, {fold: int(read_config(ckpt)["step"]) for fold, ckpt in ckpts.items()},
                   fold_means(seed_folds, n_scored))
        logs += seed_logs
        for key, fold_scores in seed_folds.items():
            per_fold.setdefault(key, []).extend(fold_scores)
    rows = scored.aggregate(("model", "mode", "train_fraction"), ("val_auroc", "auroc", "auc_pr"))
    seeds = scored.seeds
    spread = ("mean and std over folds of AUROC and AUC-PR on each held-out fold" if len(seeds) == 1 else
              f"mean over {len(seeds)} pretraining seeds of each seed's mean over folds, and the sample std over "
              "seeds (each seed with its own heads, labelled subsets and random-init twin)")
    description = device_description(device)
    out = write_results(
        cfg.out_dir, "classify", name, rows, seed=scored.label, device=description, wall_s=time.time() - start,
        extra={"ckpt": str(cfg.ckpt), **scored.record(), "label": card.protocol["label"],
               "folds": {f"{k}@{f:g}": v for (k, f), v in per_fold.items()}, "finetune": logs,
               "fold_seed": cfg.data.fold_seed},
        notes=(f"{card.protocol['label']} from the first {card.protocol['span']} h, {len(records)} stays, "
               f"stratified {cfg.data.folds}-fold CV (seed {cfg.data.fold_seed}); {spread}; `n_windows` = records "
               "scored (each once per seed, in its test fold). Fold k is scored with an encoder pretrained without "
               "fold k's stays. `probe`: frozen encoder, channel-pooled embeddings + static descriptors, logistic "
               "regression; `finetune`: encoder + linear head trained end to end; `random-init`: same architecture, random weights; "
               "`summary-stats`: per-channel count/mean/std/min/max/first/last + statics. `val_auroc`: the logistic "
               "head's inner 3-fold cross-validated AUROC on the training stays at its chosen penalty (a "
               "validation score that never sees the held-out fold). `train_fraction`: the "
               "heads (and baselines) are fit on that stratified share of the training folds' labelled stays."),
    )
    plot_folds(out.with_suffix(".png"), {k: v for (k, f), v in per_fold.items() if f == fractions[-1]}, description)
    if len(fractions) > 1:
        plot_label_efficiency(
            out.with_name(f"{name}-label-efficiency.png"), rows,
            [("tsjepa", "probe"), ("random-init", "probe"), ("summary-stats", "gradient-boosting"),
             ("summary-stats", "logistic")], "auroc",
            f"test AUROC (mean ± std over {'folds' if len(seeds) == 1 else 'seeds'})",
            "share of labelled training stays the head is fit on",
            f"{name}: label efficiency", description)
    print(f"results: {out} (+ .md, .png), {time.time() - start:.0f} s")
    return out
