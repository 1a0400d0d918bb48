"""tsjepa in other libraries' pipelines, on real ETTh1: xarray embeddings, the GluonTS estimator and predictor,
sktime's conformance suite, and save/load of pretrained encoders."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from conftest import seed_copies
from gluonts.dataset.common import ListDataset
from gluonts.dataset.pandas import PandasDataset
from gluonts.dataset.split import split
from gluonts.ev.metrics import MASE, MSE, MeanWeightedSumQuantileLoss
from gluonts.evaluation import Evaluator, MultivariateEvaluator, make_evaluation_predictions
from gluonts.model import evaluate_model
from gluonts.model.predictor import Predictor
from sktime.utils.estimator_checks import check_estimator

import tsjepa
from tsjepa.data.sources import load_card, load_dataset
from tsjepa.data.vocab import UnknownChannelError
from tsjepa.data.windows import Windows
from tsjepa.integrations.gluonts import TSJEPAEstimator
from tsjepa.integrations.sktime import TSJEPAForecaster, TSJEPATransformer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def etth1(shared_data) -> xr.DataArray:
    """The first 3000 hours of ETTh1 (train-period rows), channels named as in the checkpoint."""
    series, card = load_dataset("etth1", shared_data), load_card("etth1")
    return series.data.isel(time=slice(0, 3000)).assign_coords(channel=card.channel_keys(series.channels))


def quick(**kwargs) -> dict:
    return {"trainer_kwargs": {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False,
                               "logger": False}, "num_batches_per_epoch": 3, "batch_size": 8,
            "num_parallel_samples": 20, **kwargs}


def univariate(frame: pd.DataFrame) -> PandasDataset:
    return PandasDataset({c: frame[c].rename("target").to_frame() for c in frame.columns}, target="target", freq="h")


def test_pretrained_saves_and_loads_itself(pretrained, tmp_path):
    loaded = tsjepa.from_pretrained(pretrained)
    copy = tsjepa.from_pretrained(loaded.save_pretrained(tmp_path / "copy"))
    assert copy.vocab.names == loaded.vocab.names and copy.step == loaded.step == 4
    assert copy.config["data"] == loaded.config["data"]  # the pretraining record travels along
    for key, value in loaded.encoder.state_dict().items():
        torch.testing.assert_close(copy.encoder.state_dict()[key], value, rtol=0, atol=0)


def test_embed_keeps_labels_and_matches_the_forecast_windows(pretrained, etth1):
    model = tsjepa.from_pretrained(pretrained)
    ds = tsjepa.embed(model, etth1)
    assert ds["embedding"].dims == ("time", "channel", "patch", "feature")
    assert ds.sizes == {"time": 9, "channel": 7, "patch": 21, "feature": 32}
    assert list(ds["channel"].values) == list(etth1["channel"].values)
    # windows tile the series backwards from one hour after its last row, 336 h apart
    assert ds["time"].values[-1] == etth1["time"].values[-1] + np.timedelta64(1, "h")
    assert (np.diff(ds["time"].values) == np.timedelta64(336, "h")).all()
    assert ds["patch_start"].values[-1, 0] == ds["time"].values[-1] - np.timedelta64(336, "h")
    assert not ds["patch_observed"].values[0, :, 0].any() and ds["patch_observed"].values[1:].all()
    # the last window is exactly the forecasting harness's window over the same 336 rows
    series = tsjepa.as_timeseries(etth1)
    windows = Windows(series, (len(series) - 336, len(series)), 336, 0, model.vocab.ids(series.channels))
    windows.origins = torch.tensor([len(series)])
    direct = model.encoder.eval()(windows.batch(torch.tensor([0])))
    torch.testing.assert_close(torch.from_numpy(ds["embedding"].values[-1]), direct.embeddings[0].detach())
    assert tsjepa.pooled(ds).dims == ("feature",)


def test_embed_reads_irregular_xarray_and_refuses_unknown_channels(pretrained, etth1):
    model = tsjepa.from_pretrained(pretrained)
    holes = etth1.copy(data=np.where(np.random.default_rng(0).random(etth1.shape) < 0.5, np.nan, etth1.values))
    ds = tsjepa.embed(model, holes.to_dataset("channel"), stride=168)  # a Dataset with a variable per channel
    assert ds.sizes["time"] == 18 and np.isfinite(ds["embedding"].values).all()
    renamed = etth1.assign_coords(channel=[f"x{i}" for i in range(7)])
    with pytest.raises(UnknownChannelError, match=r"unknown channel\(s\) \['x0'"):
        tsjepa.embed(model, renamed)
    assert tsjepa.embed(model, renamed, add_unknown_channels=True).sizes["channel"] == 7
    assert len(model.vocab) == 7  # embedding never changes the model


def test_gluonts_estimator_in_standard_pipelines(pretrained, etth1, tmp_path):
    frame = etth1.to_pandas()
    dataset = univariate(frame)
    train, template = split(dataset, offset=-96)
    estimator = TSJEPAEstimator(str(pretrained), prediction_length=24, channel_field="item_id", **quick())
    frozen = {k: v.clone() for k, v in estimator.pretrained.encoder.state_dict().items()}
    predictor = estimator.train(train)
    for key, value in predictor.prediction_net.model.encoder.state_dict().items():
        torch.testing.assert_close(value, frozen[key], rtol=0, atol=0)  # head-only training
    forecasts, series = make_evaluation_predictions(dataset, predictor, num_samples=20)
    forecasts = list(forecasts)
    assert len(forecasts) == 7 and forecasts[0].samples.shape == (20, 24)
    assert forecasts[0].item_id == "ett/HUFL" and forecasts[0].start_date == pd.Period(frame.index[-24], "h")
    aggregate, _ = Evaluator(quantiles=[0.1, 0.5, 0.9])(series, forecasts)
    assert np.isfinite([aggregate["MASE"], aggregate["mean_wQuantileLoss"], aggregate["MSE"]]).all()
    scores = evaluate_model(predictor, test_data=template.generate_instances(24, windows=4, distance=24),
                            metrics=[MASE(), MeanWeightedSumQuantileLoss(quantile_levels=[0.1, 0.5, 0.9]), MSE()],
                            seasonality=24)
    assert np.isfinite(scores.to_numpy()).all()
    (tmp_path / "predictor").mkdir()
    predictor.serialize(tmp_path / "predictor")
    restored = Predictor.deserialize(tmp_path / "predictor")
    torch.manual_seed(0)
    before = next(iter(predictor.predict(dataset))).samples
    torch.manual_seed(0)
    np.testing.assert_array_equal(next(iter(restored.predict(dataset))).samples, before)


def test_gluonts_estimator_multivariate_finetuning_and_errors(pretrained, etth1):
    frame = etth1.to_pandas()
    names = list(frame.columns)
    data = ListDataset([{"start": pd.Period(frame.index[0], "h"), "target": frame.to_numpy().T}], freq="h",
                       one_dim_target=False)
    estimator = TSJEPAEstimator(str(pretrained), prediction_length=12, context_length=200, target_dim=7,
                                channels=names, finetune_encoder=True, **quick())
    frozen = {k: v.clone() for k, v in estimator.pretrained.encoder.state_dict().items()}
    predictor = estimator.train(data)
    tuned = predictor.prediction_net.model.encoder.state_dict()
    assert any(not torch.equal(tuned[k], v) for k, v in frozen.items())
    forecast = next(iter(predictor.predict(data)))
    assert forecast.samples.shape == (20, 12, 7) and np.isfinite(forecast.quantile(0.9)).all()
    forecasts, series = make_evaluation_predictions(data, predictor)
    aggregate, _ = MultivariateEvaluator(quantiles=[0.1, 0.5, 0.9])(series, forecasts)
    assert np.isfinite([aggregate["MASE"], aggregate["mean_wQuantileLoss"], aggregate["6_MSE"]]).all()
    _, template = split(data, offset=-48)
    scores = evaluate_model(predictor, test_data=template.generate_instances(12, windows=3, distance=12),
                            metrics=[MASE(), MSE()], seasonality=24)
    assert np.isfinite(scores.to_numpy()).all()
    with pytest.raises(UnknownChannelError, match="unknown channel"):
        TSJEPAEstimator(str(pretrained), prediction_length=12, target_dim=1, channels=["nope"])
    with pytest.raises(ValueError, match="context_length 400 exceeds the checkpoint's span 336"):
        TSJEPAEstimator(str(pretrained), prediction_length=12, context_length=400)
    unnamed = TSJEPAEstimator(str(pretrained), prediction_length=12, target_dim=7, **quick())
    assert unnamed.channel_ids.ids == list(range(7, 14))  # new channels after the checkpoint's seven
    with pytest.raises(ValueError, match="has 7 target dimension"):
        TSJEPAEstimator(str(pretrained), prediction_length=12, **quick()).train(data)


def test_gluonts_example_reports_every_model_over_pretraining_seeds(pretrained, tmp_path, shared_data):
    result = subprocess.run(
        [sys.executable, "eval/gluonts_etth1.py", "--ckpt", seed_copies(pretrained, tmp_path), "--epochs", "1",
         "--batches-per-epoch", "2", "--batch-size", "8", "--distance", "960", "--out-dir", str(tmp_path),
         "--data-dir", str(shared_data)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((tmp_path / "gluonts" / "etth1.json").read_text())
    models = [(r["model"], r["mode"]) for r in record["rows"]]
    assert models == [("tsjepa", "probe"), ("tsjepa", "finetune"), ("random-init", "supervised"),
                      ("deepar", "supervised"), ("patchtst", "supervised"), ("seasonal-naive", "naive")]
    for row in record["rows"]:
        assert row["n_windows"] == 3 * 7 and row["horizon"] == 96
        assert all(np.isfinite(row[k]) and row[k] > 0 for k in ("mase", "mean_wql", "mse"))
        # the tsjepa rows are trained once per seed (same weights, own Lightning seed); baselines once
        assert row["n_seeds"] == (2 if row["model"] in ("tsjepa", "random-init") else 1)
    assert record["seed"] == [0, 1] and [len(record["per_seed"][s]) for s in ("0", "1")] == [6, 3]
    assert "| deepar | supervised |" in (tmp_path / "gluonts" / "etth1.md").read_text()


def conformance_failures(estimator) -> dict[str, str]:
    """sktime's own conformance suite on ``estimator``: the checks that did not pass, by name (it must run some)."""
    results = check_estimator(estimator, raise_exceptions=False, verbose=False)
    assert results, "check_estimator ran no checks"
    return {name: str(outcome)[:300] for name, outcome in results.items() if outcome != "PASSED"}


@pytest.mark.parametrize("estimator", [TSJEPAForecaster, TSJEPATransformer])
def test_sktime_conformance(estimator):
    assert conformance_failures(estimator) == {}


def test_sktime_estimators_with_a_pretrained_checkpoint(pretrained, etth1):
    frame = etth1.to_pandas().asfreq("h")
    frame.columns = [c.split("/")[1] for c in frame.columns]  # HUFL, ... mapped back to the checkpoint's names
    channels = {c: f"ett/{c}" for c in frame.columns}
    forecaster = TSJEPAForecaster(str(pretrained), channels=channels, max_windows=512)
    pred = forecaster.fit(frame.iloc[:-48], fh=np.arange(1, 49)).predict()
    assert pred.shape == (48, 7) and list(pred.columns) == list(frame.columns)
    assert (pred.index == frame.index[-48:]).all() and np.isfinite(pred.to_numpy()).all()
    # a frozen probe on real data beats predicting the training mean
    assert ((pred - frame.iloc[-48:]) ** 2).mean().mean() < ((frame.iloc[-48:] - frame.iloc[:-48].mean()) ** 2).mean().mean()
    with pytest.raises(UnknownChannelError, match="unknown channel"):
        TSJEPAForecaster(str(pretrained)).fit(frame, fh=[1])
    features = TSJEPATransformer(str(pretrained), channels=channels).fit_transform(frame)
    assert features.shape == (1, 32)
    assert conformance_failures(TSJEPAForecaster(str(pretrained), add_unknown_channels=True, max_windows=64)) == {}
