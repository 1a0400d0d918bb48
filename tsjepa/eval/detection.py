"""Anomaly-detection and channel-localisation metrics, computed per test time step.

- ``auc_pr`` (average precision) and ``auroc`` over every scored time step;
- ``vus_pr`` / ``vus_roc``: TSB-AD's volume under the range-aware PR / ROC surface (`tsjepa.eval.vus`), with
  the series' period as window, so tables compare with TSB-AD's;
- ``best_f1``: the best F1 over all thresholds, WITHOUT point adjustment;
- ``pa_f1``: the same with point adjustment (a whole labelled segment counts as detected once any of its
  steps is flagged), the inflated number much of the literature reports; shown beside, labelled;
- ``ucr_hit``: the top-scored step lies within ``max(anomaly length, 100)`` steps of the labelled anomaly;
- ``hitrate``/``ndcg`` at ``P%``: of a segment's ``g`` labelled channels, the share found among the top
  ``ceil(P% * g)`` ranked channels (HitRate@P%, as in OmniAnomaly / InterFusion), and NDCG of that ranking.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, ndcg_score, precision_recall_curve, roc_auc_score

from tsjepa.data.anomaly import Segment, segments_of
from tsjepa.eval.vus import vus


def best_f1(labels: np.ndarray, scores: np.ndarray) -> float:
    """Best F1 over thresholds of ``scores`` ``[T]`` against 0/1 ``labels`` ``[T]``."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(f1.max())


def point_adjusted(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Scores after point adjustment: every step of a labelled segment takes the segment's highest score, so a
    threshold flags the whole segment as soon as it flags one of its steps."""
    out = scores.astype(np.float64).copy()
    for seg in segments_of(labels):
        out[seg.start : seg.end] = scores[seg.start : seg.end].max()
    return out


def detection_metrics(labels: np.ndarray, scores: np.ndarray, window: int | None = None) -> dict[str, float]:
    """AUC-PR, AUROC, (with a VUS ``window``) VUS-PR and VUS-ROC, best F1 (no point adjustment) and
    point-adjusted best F1 of per-step ``scores``."""
    if labels.min() == labels.max():
        raise ValueError("detection metrics need both normal and anomalous steps")
    surface = vus(labels, scores, window) if window is not None else {}
    return {
        "auc_pr": float(average_precision_score(labels, scores)),
        "auroc": float(roc_auc_score(labels, scores)),
        **{k: surface[k] for k in ("vus_pr", "vus_roc") if k in surface},
        "best_f1": best_f1(labels, scores),
        "pa_f1": best_f1(labels, point_adjusted(labels, scores)),
    }


def ucr_hit(segment: Segment, scores: np.ndarray) -> float:
    """1.0 when the top-scored step is within ``max(segment length, 100)`` steps of ``segment``."""
    top = int(np.argmax(scores))
    slack = max(segment.end - segment.start, 100)
    return float(segment.start - slack <= top < segment.end + slack)


def localisation_metrics(channel_scores: np.ndarray, truth: tuple[int, ...],
                         percents: tuple[int, ...] = (100, 150)) -> dict[str, float]:
    """HitRate@P% and NDCG@P% of one segment's channel ranking (``channel_scores`` ``[C]``, higher = more
    anomalous) against its labelled channels ``truth`` (0-based)."""
    order = np.argsort(-channel_scores, kind="stable")
    relevant = np.zeros(len(channel_scores))
    relevant[list(truth)] = 1.0
    out = {}
    for p in percents:
        k = math.ceil(p / 100 * len(truth))
        out[f"hitrate@{p}"] = float(relevant[order[:k]].sum() / len(truth))
        out[f"ndcg@{p}"] = float(ndcg_score(relevant[None], channel_scores[None], k=k))
    return out
