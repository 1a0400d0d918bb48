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


def test_ridge_rows_share_moments_across_nested_fits_and_match_direct_fits():
    """Fits on row subsets of one `RidgeRows` (nested prefixes, a recent range, gaps) give the fit on those rows
    alone, and the moment-based validation choice is the alpha a direct validation error would pick."""
    from tsjepa.heads import Moments, RidgeRows, fit_ridge, fit_ridge_rows

    gen = torch.Generator().manual_seed(1)
    x, x_val = torch.randn(300, 6, generator=gen) + 3, torch.randn(120, 6, generator=gen) + 3
    coef = torch.randn(6, 4, generator=gen)
    y = x @ coef + 2 * torch.randn(300, 4, generator=gen)
    y_val = x_val @ coef + 2 * torch.randn(120, 4, generator=gen)
    w, w_val = torch.rand(300, generator=gen) + 0.5, torch.rand(120, generator=gen) + 0.5
    rows, rows_val = RidgeRows(x, w), RidgeRows(x_val, w_val)
    alphas = [1e-3, 1e-1, 10.0, 1e3]
    gaps = torch.rand(300, generator=gen) > 0.2
    for end, start, holes in ((300, 0, False), (200, 0, False), (250, 0, False), (250, 100, True), (120, 30, False)):
        select = torch.zeros(300, dtype=torch.bool)
        select[start:end] = True
        if holes:
            select &= gaps
        direct = Moments.of(x[select], w[select])
        torch.testing.assert_close(rows.moments(select).second, direct.second)
        shared = fit_ridge_rows(rows, select, y[select], rows_val, torch.ones(120, dtype=torch.bool), y_val, alphas)
        alone = fit_ridge(x[select], y[select], x_val, y_val, alphas, w[select], w_val)
        torch.testing.assert_close(shared.weight, alone.weight)
        # the alpha of the lowest weighted validation MSE, computed from predictions
        errors = [(w_val.double() @ ((fit_ridge(x[select], y[select], x_val, y_val, [a], w[select], w_val)(x_val)
                                      - y_val.double()) ** 2).mean(-1)).item() for a in alphas]
        assert shared.alpha == alphas[errors.index(min(errors))]
    assert len(rows.prefixes) > 2  # prefixes were kept and reused
    with pytest.raises(ValueError, match="no row"):
        rows.moments(torch.zeros(300, dtype=torch.bool))
