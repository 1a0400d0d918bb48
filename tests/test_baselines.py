import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from sktime.forecasting.naive import NaiveForecaster

from tsjepa.eval.baselines import decomposition_features, moving_average, seasonal_naive


@pytest.mark.parametrize("period", [1, 7, 24])
def test_seasonal_naive_equals_sktime(period):
    gen = torch.Generator().manual_seed(period)
    x = torch.randn(3, 60, generator=gen, dtype=torch.float64)
    ours = seasonal_naive(x, horizon=50, period=period)
    for row in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            sk = NaiveForecaster(strategy="last", sp=period).fit(pd.Series(x[row].numpy()))
            expected = sk.predict(fh=np.arange(1, 51)).to_numpy()
        np.testing.assert_allclose(ours[row].numpy(), expected)
    with pytest.raises(ValueError, match="longer than the lookback"):
        seasonal_naive(x, 5, 61)


def test_moving_average_and_decomposition():
    x = torch.arange(10.0)[None, :]
    trend = moving_average(x, kernel=3)
    torch.testing.assert_close(trend[0, 1:-1], x[0, 1:-1])  # a line is its own moving average
    assert trend[0, 0] == pytest.approx(1 / 3) and trend[0, -1] == pytest.approx(9 - 1 / 3)
    feats = decomposition_features(x, kernel=3)
    torch.testing.assert_close(feats[:, :10] + feats[:, 10:], x)
