"""VUS-ROC and VUS-PR (Paparrizos et al., VLDB 2022) exactly as TSB-AD 1.5 computes them.

TSB-AD's ``get_metrics(score, labels, slidingWindow)`` (``generate_curve`` with ``version='opt'``,
``thre=250``): for every buffer width ``w = 0 .. window``, each labelled range is widened by ``w // 2`` steps on
each side with soft labels ``sqrt(1 - d / w)`` at distance ``d``; at 250 thresholds (evenly spaced ranks of
the sorted scores) a range-aware TPR (recall x the share of widened ranges hit), FPR and precision are
computed; the ROC area (trapezoid over FPR, closed at (0, 0) and (1, 1)) and the PR area (recall steps x
precision) are averaged over ``w``. The window is the period of the series' first channel
(`sliding_window`, TSB-AD's ``find_length_rank(data[:, 0], rank=1)``). The `tsb-ad` package itself pins
``numpy<2`` and cannot be installed beside this stack; `tests/test_vus.py` checks this implementation against
values the package computed on fixed examples.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import argrelextrema


def label_ranges(labels: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive ``(start, end)`` of every run of 1s in 0/1 ``labels`` ``[T]``."""
    padded = np.diff(np.concatenate([[0], labels.astype(np.int64), [0]]))
    starts, ends = np.flatnonzero(padded == 1), np.flatnonzero(padded == -1) - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def widen(ranges: list[tuple[int, int]], width: int, length: int) -> list[tuple[int, int]]:
    """Ranges widened by ``width // 2`` on each side, merged where they meet (TSB-AD's ``new_sequence``)."""
    half = width // 2
    out, start = [], max(ranges[0][0] - half, 0)
    for (_, end), (nxt, _) in zip(ranges[:-1], ranges[1:], strict=True):
        if end + half < nxt - half:
            out.append((start, end + half))
            start = nxt - half
    out.append((start, min(ranges[-1][1] + half, length - 1)))
    return out


def soft_labels(labels: np.ndarray, ranges: list[tuple[int, int]], width: int) -> np.ndarray:
    """Labels with ``sqrt(1 - d / width)`` at distance ``d`` <= ``width // 2`` outside each range, capped at 1."""
    out = labels.astype(np.float64)
    n = len(out)
    for start, end in ranges:
        after = np.arange(end + 1, min(end + width // 2 + 1, n))
        out[after] += np.sqrt(1 - (after - end) / width)
        before = np.arange(max(start - width // 2, 0), start)
        out[before] += np.sqrt(1 - (start - before) / width)
    return np.minimum(out, 1.0)


def vus(labels: np.ndarray, scores: np.ndarray, window: int, thresholds: int = 250) -> dict[str, float]:
    """``{"vus_roc", "vus_pr"}`` of per-step ``scores`` ``[T]`` against 0/1 ``labels`` ``[T]``."""
    labels = np.asarray(labels).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.min() == labels.max():
        raise ValueError("VUS needs both normal and anomalous steps")
    n, positives = len(labels), labels.sum()
    ranges = label_ranges(labels)
    ranked = -np.sort(-scores)
    levels = ranked[np.linspace(0, n - 1, thresholds).astype(int)]
    pred = scores[None, :] >= levels[:, None]  # [K, T]
    n_pred = pred.sum(1)
    hits = np.concatenate([np.zeros((thresholds, 1), dtype=np.int64), np.cumsum(pred, 1)], 1)  # [K, T + 1]
    anomalous = labels.astype(bool)
    roc, pr = [], []
    for width in range(window + 1):
        soft = soft_labels(labels, ranges, width)
        buffered = widen(ranges, width, n)
        tp = pred @ soft  # [K]
        margin = np.zeros(n, dtype=bool)
        for start, end in buffered:
            margin[start : end + 1] = True
        margin &= ~anomalous
        n_labels = positives + pred[:, margin] @ soft[margin]  # the buffer's soft labels where predicted
        existence = sum((hits[:, end + 1] - hits[:, start]) > 0 for start, end in buffered)
        p_new = (positives + n_labels) / 2
        tpr = np.minimum(tp / p_new, 1) * existence / len(buffered)
        fpr = (n_pred - tp) / (n - p_new)
        precision = tp / n_pred
        tpr_curve = np.concatenate([[0.0], tpr, [1.0]])
        fpr_curve = np.concatenate([[0.0], fpr, [1.0]])
        roc.append(np.dot(np.diff(fpr_curve), (tpr_curve[1:] + tpr_curve[:-1]) / 2))
        pr.append(np.dot(np.diff(tpr_curve[:-1]), precision))
    return {"vus_roc": float(np.mean(roc)), "vus_pr": float(np.mean(pr))}


def sliding_window(series: np.ndarray, max_rows: int = 20000) -> int:
    """The period TSB-AD uses as VUS window: the lag of the highest local maximum of the autocorrelation
    (lags 3..400) of ``series`` ``[T]`` (its first ``max_rows`` steps); 125 when there is none or it lies
    outside 3..300 (``find_length_rank(series, rank=1)``)."""
    x = np.asarray(series, dtype=np.float64)[:max_rows]
    x = x - x.mean()
    size = 1 << int(np.ceil(np.log2(2 * len(x) - 1)))
    spectrum = np.fft.rfft(x, size)
    acov = np.fft.irfft(spectrum * np.conj(spectrum), size)[: min(401, len(x))]
    if acov[0] <= 0:
        return 125
    acf = (acov / acov[0])[3:]
    peaks = argrelextrema(acf, np.greater)[0]
    if not len(peaks):
        return 125
    best = peaks[np.argmax(acf[peaks])]
    return 125 if best < 3 or best > 300 else int(best + 3)
