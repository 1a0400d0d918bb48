"""Cross-channel anomaly probing: ``python -m tsjepa.eval crosschannel ckpt=... data=smd``.

Two questions, one encoder:

1. **Localisation on labelled anomalies.** For every anomalous segment with an ``interpretation_label``, the
   channels are ranked and the ranking scored by HitRate@100% / @150% and NDCG@100% / @150% against the
   labelled channels, per machine and on average. tsjepa ranks channel ``c`` by the latent prediction error
   of its last patch when that channel alone is masked and predicted from its own past and the other channels
   (standardised by the same errors on normal train windows; mode ``prediction``), or by the squared whitened
   norm of its last-patch embedding under a Gaussian fit to that channel's embeddings on normal train windows
   (mode ``chi2``, the per-channel term of the rare-regime ``chi2-channels`` score), or by their sum after
   each is robust-standardised per channel on held-out normal train windows (mode ``combined``), averaged over
   the windows whose last patch overlaps the segment (at most ``eval.windows_per_segment``, evenly spaced).
2. **Controlled decoupling.** On normal test windows, one random channel is replaced by the same channel's
   values from a random normal train window: its own dynamics are kept, its relation to the other channels
   is broken. Reported: how often the injected channel is ranked first (``top1``; chance = 1 / C) and its
   mean reciprocal rank.

Baselines on the same windows: ``zscore`` (per-channel largest robust z-score over the scored rows), ``pca``
(per-channel squared residual of a PCA fit on train rows, 95% of the variance), ``iforest`` (one
IsolationForest per channel on its train values; the mean anomaly score over the scored rows), and the same
architecture at random weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.ensemble import IsolationForest  # noqa: E402

from tsjepa.data.batch import Batch  # noqa: E402
from tsjepa.device import device_description, resolve_device  # noqa: E402
from tsjepa.eval.detection import localisation_metrics  # noqa: E402
from tsjepa.eval.latent_scores import LatentScores, Whitener, latent_scores, standardised  # noqa: E402
from tsjepa.eval.rare import AnomalyBench, AnomalySeedRows, ScoringSetup  # noqa: E402
from tsjepa.results import save_figure, write_results  # noqa: E402


class ChannelBaselines:
    """Per-channel scores of rows ``[N, R, C]`` (scaled) from statistics of a series' normal train rows."""

    def __init__(self, train_rows: np.ndarray, seed: int) -> None:
        self.median = np.median(train_rows, 0)
        self.mad = 1.4826 * np.median(np.abs(train_rows - self.median), 0) + 1e-6
        self.pca = PCA(n_components=0.95, random_state=seed).fit(train_rows)
        self.forests = [IsolationForest(random_state=seed).fit(column[:, None]) for column in train_rows.T]

    def __call__(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """``[N, R, C]`` -> name -> ``[N, C]``."""
        flat = rows.reshape(-1, rows.shape[-1])
        residual = (flat - self.pca.inverse_transform(self.pca.transform(flat))) ** 2
        isolation = np.stack([-forest.score_samples(column[:, None])
                              for forest, column in zip(self.forests, flat.T, strict=True)], -1)
        return {"zscore": np.abs((rows - self.median) / self.mad).max(1),
                "pca": residual.reshape(rows.shape).mean(1),
                "iforest": isolation.reshape(rows.shape).mean(1)}


def segment_windows(setup: ScoringSetup, start: int, end: int, limit: int) -> torch.Tensor:
    """Test windows (indices into ``setup.windows``) whose last patch overlaps test rows ``[start, end)``."""
    first = setup.item.test_start
    origins = setup.test_origins
    hit = np.flatnonzero((origins - setup.patch < first + end) & (origins > first + start))
    if len(hit) > limit:
        hit = hit[np.linspace(0, len(hit) - 1, limit).round().astype(int)]
    return setup.test[torch.as_tensor(hit)]


def injection(setup: ScoringSetup, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` normal test windows (no labelled row in them), a channel for each and a normal train window to
    take that channel's values from: (window index, channel, source window index), each ``[n]``."""
    gen = np.random.default_rng(seed)
    lookback = setup.windows.lookback
    labels = setup.item.labels
    origins = setup.test_origins - setup.item.test_start  # in test rows
    normal = [i for i, o in enumerate(origins) if o >= lookback and not labels[o - lookback : o].any()]
    picks = gen.choice(normal, size=min(n, len(normal)), replace=False)
    channels = gen.integers(0, len(setup.item.channels), size=len(picks))
    sources = gen.integers(0, setup.n_fit, size=len(picks))
    return setup.test[torch.as_tensor(picks)], torch.as_tensor(channels), setup.train[torch.as_tensor(sources)]


def injected(setup: ScoringSetup, targets: torch.Tensor, channels: torch.Tensor, sources: torch.Tensor):
    """An ``edit`` for `latent_scores`: in each window, channel ``c`` takes its values from the source window."""
    by_window = {int(t): (int(c), int(s)) for t, c, s in zip(targets, channels, sources, strict=True)}

    def edit(batch: Batch, index: torch.Tensor) -> Batch:
        for row, window in enumerate(index.tolist()):
            channel, source = by_window[window]
            donor = setup.windows.batch(torch.tensor([source]))
            batch.values[row, channel] = donor.values[0, channel]
            batch.observed[row, channel] = donor.observed[0, channel]
        return batch

    return edit


def injected_rows(setup: ScoringSetup, targets, channels, sources) -> np.ndarray:
    """Scaled rows of the injected windows' last patches, ``[n, patch, C]``."""
    rows = setup.last_patches(targets).copy()
    donor = setup.last_patches(sources)
    rows[np.arange(len(channels)), :, channels.numpy()] = donor[np.arange(len(channels)), :, channels.numpy()]
    return rows


def channel_combined(held_out: LatentScores, whitener: Whitener) -> Callable[[torch.Tensor, torch.Tensor],
                                                                              torch.Tensor]:
    """The per-channel ``combined`` score: a channel's prediction error and its squared whitened norm
    (`Whitener.group_norms`), each robust-standardised per channel by the same score on held-out normal windows
    (so neither unit dominates), summed. Returns (errors ``[N, C]``, norms ``[N, C]``) -> ``[N, C]`` (NaN where
    the channel's last patch is unobserved)."""
    held_norms = whitener.group_norms(held_out.tokens).float()

    def combined(errors: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        return standardised(errors, held_out.errors) + standardised(norms.float(), held_norms)

    return combined


def rank_of(scores: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """1-based rank of channel ``truth[i]`` in ``scores[i]`` (higher score = ranked earlier; a tie ranks the
    true channel last among those it ties with, so constant scores earn nothing)."""
    return (scores >= scores[np.arange(len(truth)), truth][:, None]).sum(1)


def plot(path: Path, rows: list[dict], device: str) -> None:
    means = [r for r in rows if r["series"] == "mean"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, (metric, title) in zip(axes, (("hitrate@150", "labelled segments: HitRate@150%"),
                                          ("top1", "injected decoupling: injected channel ranked first")),
                                   strict=True):
        picked = [r for r in means if metric in r]
        ax.barh([f"{r['model']}/{r['mode']}" for r in picked], [r[metric] for r in picked], color="tab:blue")
        ax.set_title(title, fontsize=9)
        ax.invert_yaxis()
    save_figure(fig, path, device)


METRICS = ("hitrate@100", "hitrate@150", "ndcg@100", "ndcg@150", "top1", "mrr")


def score_seed(bench: AnomalyBench, cfg: DictConfig, device, with_baselines: bool) -> list[dict]:
    """Per-machine rows of every model of ``bench`` (and of the per-channel baselines when ``with_baselines``). The
    injected windows depend on ``cfg.seed`` only, so every pretraining seed ranks the same windows."""
    batch = max(1, cfg.eval.batch_size // len(bench.data.channels))
    per_series = []
    for k, item in bench.selected(cfg.eval.series):
        setup = bench.setup(item, cfg.eval.normal_windows)
        segments = [s for s in item.segments if s.channels]
        seg_windows = [segment_windows(setup, s.start, s.end, cfg.eval.windows_per_segment) for s in segments]
        targets, channels, sources = injection(setup, cfg.eval.injections, cfg.seed + k)
        rank_scores: dict[tuple[str, str], tuple[list[np.ndarray], np.ndarray]] = {}
        if with_baselines:
            first = item.test_start
            baselines = ChannelBaselines(setup.scaled[:first], cfg.seed)
            seg_baselines = [baselines(setup.scaled[first + s.start : first + s.end][None])
                             for s in segments]  # name -> [1, C] per segment
            inj_baselines = baselines(injected_rows(setup, targets, channels, sources))
            for baseline in ("zscore", "pca", "iforest"):
                rank_scores[baseline, "baseline"] = ([b[baseline][0] for b in seg_baselines],
                                                     inj_baselines[baseline])
        for model, (enc, pred) in bench.models.items():
            desc = f"{item.name}/{model}"
            normal, held_out = (latent_scores(enc, pred, setup.windows, index, batch, device, f"{desc}/{part}",
                                              per_channel=True)
                                for part, index in (("normal", setup.train[: setup.n_fit]),
                                                    ("held-out", setup.train[setup.n_fit:])))
            whitener = Whitener.fit(normal.tokens)
            seg = [latent_scores(enc, pred, setup.windows, w, batch, device, f"{desc}/segments", per_channel=True)
                   for w in seg_windows]
            inj = latent_scores(enc, pred, setup.windows, targets, batch, device, f"{desc}/injected", per_channel=True,
                                edit=injected(setup, targets, channels, sources))
            if pred is not None:  # pretrained without a predictor: no latent prediction to rank by
                rank_scores[model, "prediction"] = (
                    [standardised(s.errors, normal.errors).nanmean(0).numpy() for s in seg],
                    standardised(inj.errors, normal.errors).nan_to_num(-1e9).numpy())
            seg_norms, inj_norms = [whitener.group_norms(s.tokens) for s in seg], whitener.group_norms(inj.tokens)
            rank_scores[model, "chi2"] = [n.mean(0).numpy() for n in seg_norms], inj_norms.numpy()
            if pred is None:
                continue
            combined = channel_combined(held_out, whitener)
            seg_combined = [combined(s.errors, n).nanmean(0).numpy() for s, n in zip(seg, seg_norms, strict=True)]
            rank_scores[model, "combined"] = seg_combined, combined(inj.errors, inj_norms).nan_to_num(-1e9).numpy()
        for (model, mode), (seg_scores, inj) in rank_scores.items():
            found = [localisation_metrics(s, seg.channels) for s, seg in zip(seg_scores, segments, strict=True)]
            ranks = rank_of(inj, channels.numpy())
            per_series.append({
                "model": model, "mode": mode, "horizon": None, "series": item.name,
                **{key: float(np.mean([f[key] for f in found])) for key in found[0]},
                "top1": float((ranks == 1).mean()), "mrr": float((1 / ranks).mean()),
                "n_segments": len(segments), "n_injected": len(ranks), "n_windows": int(sum(map(len, seg_windows))),
            })
        print(f"{item.name}: " + "  ".join(f"{r['model']}/{r['mode']} hit@150={r['hitrate@150']:.3f} "
                                           f"top1={r['top1']:.2f}" for r in per_series if r["series"] == item.name),
              flush=True)
    return per_series


def run(cfg: DictConfig) -> Path:
    start = time.time()
    device = resolve_device(cfg.device)
    scored = AnomalySeedRows.score(cfg, "crosschannel", device, "a multivariate labelled anomaly benchmark (smd)",
                              lambda bench, seed, baselines: score_seed(bench, cfg, device, baselines),
                              min_channels=2)
    rows, seeds = scored.rows(METRICS), scored.seeds
    n_channels = len(scored.bench.data.channels)
    description = device_description(device)
    out = write_results(
        cfg.out_dir, "crosschannel", scored.bench.name, rows, seed=scored.label,
        device=description, wall_s=time.time() - start,
        extra={"ckpt": str(cfg.ckpt), **scored.record(), "chance_top1": 1 / n_channels},
        notes=(f"Encoder rows: mean over the pretraining seed(s) {seeds} (each with its own random-init twin), "
               "`<metric>_std` the sample std over seeds (absent for one seed); baselines from the first seed. "
               "Localisation against `interpretation_label`: HitRate@P% = share of a segment's labelled channels "
               "among the top ceil(P% x their number) ranked channels; NDCG at the same cut-off; averaged over "
               "segments, then machines (`series: mean`). tsjepa/random-init rank by the latent prediction error "
               "of a channel's last patch when it alone is masked, standardised by normal train windows "
               "(`prediction`), or by the squared whitened norm of that patch's embedding under a per-channel "
               "Gaussian of normal train windows (`chi2`), or their sum after each is robust-standardised per channel "
               "(median / IQR) on held-out normal train windows (`combined`). "
               f"Controlled decoupling: one channel of a normal test window replaced by its values from a normal "
               f"train window; `top1` = share ranked first (chance {1 / n_channels:.3f}), `mrr` = mean "
               "reciprocal rank. Baselines per channel: robust z-score, PCA residual, IsolationForest score."),
    )
    plot(out.with_suffix(".png"), rows, description)
    print(f"results: {out} (+ .md, .png), {time.time() - start:.0f} s")
    return out
