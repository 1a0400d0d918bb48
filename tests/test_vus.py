"""VUS against the values TSB-AD 1.5's own code computes (``TSB_AD.evaluation.basic_metrics.generate_curve``,
version 'opt', 250 thresholds; ``TSB_AD.utils.slidingWindows.find_length_rank``), recorded here because the
package pins numpy<2 and cannot be installed beside this stack."""

import numpy as np
import pytest

from tsjepa.eval.vus import label_ranges, sliding_window, vus


def example(seed: int, n: int, ranges: list[tuple[int, int]], lift: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, int)
    for start, end in ranges:
        labels[start:end] = 1
    scores = rng.normal(size=n) + lift * labels + 0.3 * np.convolve(labels, np.ones(15) / 15, "same")
    return labels, scores


# (seed, length, labelled ranges, score lift, window) -> TSB-AD 1.5 (VUS-ROC, VUS-PR)
CASES = [
    ((0, 1000, [(100, 130), (500, 520), (990, 1000)], 1.5, 50), (0.9368329684227328, 0.5631812541338124)),
    ((1, 2000, [(0, 10), (400, 480)], 0.8, 100), (0.8759948889714918, 0.21983575686381582)),
    ((2, 600, [(300, 301)], 3.0, 20), (1.0, 1.0)),
    ((3, 1500, [(200, 260), (262, 300), (1000, 1100)], 0.5, 125), (0.8097081473123292, 0.37039786478825637)),
]


@pytest.mark.parametrize("case,expected", CASES)
def test_vus_matches_tsb_ad(case, expected):
    seed, n, ranges, lift, window = case
    labels, scores = example(seed, n, ranges, lift)
    got = vus(labels, scores, window)
    assert got["vus_roc"] == pytest.approx(expected[0], abs=1e-12)
    assert got["vus_pr"] == pytest.approx(expected[1], abs=1e-12)
    assert vus(labels, 3 * scores + 7, window) == got  # order-based: any increasing map of the scores


def test_vus_needs_both_classes_and_ranges_are_inclusive():
    with pytest.raises(ValueError, match="both normal and anomalous"):
        vus(np.zeros(10, int), np.arange(10.0), 4)
    assert label_ranges(np.array([1, 1, 0, 0, 1, 0, 1])) == [(0, 1), (4, 4), (6, 6)]


@pytest.mark.parametrize("period", [24, 100])
def test_sliding_window_finds_the_period(period):
    t = np.arange(5000)
    x = np.sin(2 * np.pi * t / period) + 0.1 * np.random.default_rng(0).normal(size=5000)
    assert sliding_window(x) == period


# white noise of seeds 0..3 and a random walk -> find_length_rank's values (125: no local maximum in 3..300)
@pytest.mark.parametrize("seed,expected", [(0, 125), (1, 149), (2, 15), (3, 37)])
def test_sliding_window_matches_tsb_ad_on_noise(seed, expected):
    assert sliding_window(np.random.default_rng(seed).normal(size=5000)) == expected
    assert sliding_window(np.cumsum(np.random.default_rng(0).normal(size=5000))) == 125
