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


def test_weighted_ridge_matches_sklearn_and_repeated_rows():
    from sklearn.linear_model import Ridge as SkRidge

    from tsjepa.heads import fit_ridge

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=gen), torch.randn(40, 3, generator=gen)
    weight = torch.randint(1, 4, (40,), generator=gen).double()
    ours = fit_ridge(x, y, x, y, [0.1], weight, weight)
    # our penalty is alpha * trace(G)/F with G the weighted centred Gram matrix (weights summing to 1)
    xc = x.double() - (weight / weight.sum()) @ x.double()
    penalty = 0.1 * float((weight / weight.sum() * (xc**2).sum(1)).sum() / 5) * float(weight.sum())
    sk = SkRidge(alpha=penalty).fit(x.double().numpy(), y.double().numpy(), sample_weight=weight.numpy())
    np.testing.assert_allclose(ours(x).numpy(), sk.predict(x.double().numpy()), rtol=1e-6, atol=1e-8)
    # integer weights = rows repeated
    rep = weight.long()
    repeated = fit_ridge(x.repeat_interleave(rep, 0), y.repeat_interleave(rep, 0), x, y, [0.1])
    np.testing.assert_allclose(ours(x).numpy(), repeated(x).numpy(), rtol=1e-6, atol=1e-8)
    # a row with almost no weight barely moves the fit, however large its target
    y_out = y.clone()
    y_out[0] = 1e4
    tiny = weight.clone()
    tiny[0] = 1e-12
    robust = fit_ridge(x, y_out, x, y, [0.1], tiny, weight)
    np.testing.assert_allclose(robust(x[1:]).numpy(), fit_ridge(x[1:], y[1:], x, y, [0.1], weight[1:])(x[1:]).numpy(),
                               atol=1e-5)
