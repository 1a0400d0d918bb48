import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from conftest import random_batch

from tsjepa.data.batch import BatchError
from tsjepa.data.sources import DatasetError, fetch, load_card, load_dataset, split_rows
from tsjepa.data.timeseries import TimeSeries, TimeSeriesError
from tsjepa.data.vocab import ChannelVocab, UnknownChannelError
from tsjepa.data.windows import Windows, fit_scaler


def test_timeseries_validates_input():
    t = np.array([0.0, 1.0, 2.5])
    ts = TimeSeries(np.array([[1.0, np.nan], [2.0, 3.0], [np.nan, 4.0]]), t, ["a", "b"])
    assert ts.observed.tolist() == [[True, False], [True, True], [False, True]]
    assert ts.data.dims == ("time", "channel") and ts.channels == ["a", "b"]
    np.testing.assert_array_equal(ts.times, t)
    with pytest.raises(TimeSeriesError, match="unsorted"):
        TimeSeries(np.zeros((3, 1)), [0.0, 2.0, 1.0], ["a"])
    with pytest.raises(TimeSeriesError, match="duplicate timestamps"):
        TimeSeries(np.zeros((3, 1)), [0.0, 1.0, 1.0], ["a"])
    with pytest.raises(TimeSeriesError, match="2-D"):
        TimeSeries(np.zeros(3), [0.0, 1.0, 2.0], ["a"])
    with pytest.raises(TimeSeriesError, match="non-numeric"):
        TimeSeries.from_wide(pd.DataFrame({"a": ["x", "y"]}, index=[0.0, 1.0]))
    with pytest.raises(TimeSeriesError, match="inf"):
        TimeSeries(np.array([[np.inf]]), [0.0], ["a"])


def test_timeseries_xarray_roundtrip_keeps_coordinates():
    time = pd.date_range("2020-01-01", periods=4, freq="15min").to_numpy()
    arr = xr.DataArray(np.arange(8.0).reshape(2, 4), dims=("channel", "time"),
                       coords={"channel": ["x", "y"], "time": time}, name="demo")
    ts = TimeSeries.from_xarray(arr, step="15min")
    assert ts.values.shape == (4, 2)
    np.testing.assert_array_equal(ts.times, [0.0, 1.0, 2.0, 3.0])
    np.testing.assert_array_equal(ts.data["time"].values, time)


def test_etth1_loader_and_standard_split_sizes(shared_data):
    ts = load_dataset("etth1", shared_data)
    assert ts.values.shape == (17420, 7)
    assert ts.channels == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"]
    np.testing.assert_array_equal(ts.times[:3], [0.0, 1.0, 2.0])  # hours
    rows = split_rows(load_card("etth1"), len(ts), 336)
    assert rows == {"train": (0, 8640), "val": (8304, 11520), "test": (11184, 14400)}
    scaler = fit_scaler(ts, rows["train"])
    np.testing.assert_allclose(scaler.mean_, ts.values[:8640].mean(0), rtol=1e-5)
    ids = ChannelVocab(ts.channels).ids(ts.channels)
    for horizon, expected in [(96, 2785), (720, 2161)]:
        test = Windows(ts, rows["test"], 336, horizon, ids, scaler)
        assert len(test) == expected  # every test window, stride 1: 2880 - H + 1
        batch = test.batch(torch.tensor([0, len(test) - 1]))
        assert batch.values.shape == (2, 7, 336) and batch.target.shape == (2, 7, horizon)
        first_target = scaler.transform(ts.values[11520:11521])[0]
        np.testing.assert_allclose(batch.target[0, :, 0].numpy(), first_target, rtol=1e-5)
        last_row = scaler.transform(ts.values[14399:14400])[0]  # the last test row is scored
        np.testing.assert_allclose(batch.target[1, :, -1].numpy(), last_row, rtol=1e-5)
        assert batch.times[0, 0, 0] == -336 and batch.times[0, 0, -1] == -1
        batch.validate(test.span)
    train = Windows(ts, rows["train"], 336, 0, ids, scaler)
    assert int(train.origins.max()) == 8640 and train.batch(torch.tensor([0])).target is None


@pytest.mark.parametrize("name, shape, train_end, val_end, horizons", [
    ("weather", (52696, 21), 36887, 42157, [96, 192, 336, 720]),
    ("exchange_rate", (7588, 8), 5311, 6071, [96, 192, 336, 720]),
    ("illness", (966, 7), 676, 773, [24, 36, 48, 60]),
])
def test_seventy_ten_twenty_datasets(shared_data, name, shape, train_end, val_end, horizons):
    """Autoformer's split: train int(0.7 n) rows, test int(0.2 n), val the rest; val / test start L early."""
    ts, card = load_dataset(name, shared_data), load_card(name)
    assert ts.values.shape == shape and card.protocol["horizons"] == horizons
    assert split_rows(card, len(ts), 96) == {
        "train": (0, train_end), "val": (train_end - 96, val_end), "test": (val_end - 96, shape[0])}
    assert np.all(np.diff(ts.times) == 1.0)  # one time unit per row


def test_weather_missing_code_and_row_time(shared_data):
    """-9999 is unobserved, not a value; the duplicated timestamp does not break the row-time protocol."""
    ts = load_dataset("weather", shared_data)
    raw = pd.read_csv(shared_data / "weather.csv")
    assert (raw.iloc[:, 1:].to_numpy() == -9999).sum() == np.isnan(ts.values).sum() == 81
    assert not np.isnan(raw.iloc[:, 1:].to_numpy()).any()
    scaler = fit_scaler(ts, (0, 36887))  # statistics of the observed train values only
    expected = raw.iloc[:36887, 1:].replace(-9999, np.nan)
    np.testing.assert_allclose(scaler.mean_, expected.mean().to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(scaler.scale_, expected.std(ddof=0).to_numpy(), rtol=1e-6)
    rows = np.flatnonzero(np.isnan(ts.values).any(1))
    windows = Windows(ts, (int(rows[0]) - 10, int(rows[0]) + 10), 8, 4, np.arange(21), scaler)
    batch = windows.batch(torch.arange(len(windows)))
    assert not batch.observed.all() and not batch.target_observed.all()
    assert torch.isfinite(batch.values).all() and torch.isfinite(batch.target).all()


def test_channel_namespaces_share_sensors_not_names(shared_data):
    ett, ettm, weather = (load_card(n) for n in ("etth1", "ettm1", "weather"))
    assert ett.channel_keys(["OT"]) == ettm.channel_keys(["OT"]) == ["ett/OT"]  # the same transformer
    assert weather.channel_keys(["OT"]) == ["weather/OT"]  # CO2, not oil temperature


def test_checksum_and_offline_download_errors(shared_data, tmp_path):
    card = load_card("etth1")
    corrupt = tmp_path / card.file
    corrupt.parent.mkdir(parents=True)
    data = bytearray((shared_data / card.file).read_bytes())
    data[100] ^= 1
    corrupt.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="corrupt"):
        fetch(card, tmp_path)
    offline = card.__class__(**{**card.__dict__, "url": "http://127.0.0.1:9/ETTh1.csv"})
    with pytest.raises(DatasetError, match=r"missing and the download from http://127.0.0.1:9/ETTh1.csv failed"):
        fetch(offline, tmp_path / "empty")
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_card("no-such-data")


def test_vocab_unknown_channel():
    vocab = ChannelVocab(["a", "b"], capacity=3)
    assert vocab.ids(["b", "a"]).tolist() == [1, 0]
    with pytest.raises(UnknownChannelError, match="unknown channel.*'z'"):
        vocab.ids(["a", "z"])
    vocab.extend(["c"])
    with pytest.raises(ValueError, match="full"):
        vocab.extend(["d"])


def test_batch_validation_names_the_problem():
    good = random_batch()
    good.validate(64.0)
    bad = random_batch()
    bad.values = bad.values[0]
    with pytest.raises(BatchError, match=r"\[B, C, T\]"):
        bad.validate(64.0)
    empty = random_batch()
    empty.observed[1] = False
    with pytest.raises(BatchError, match=r"window\(s\) \[1\].*all-NaN"):
        empty.validate(64.0)
    unsorted = random_batch()
    unsorted.times[0, 2, 10] = unsorted.times[0, 2, 5]
    with pytest.raises(BatchError, match="unsorted or duplicate timestamps in window 0, channel 2"):
        unsorted.validate(64.0)
    nan = random_batch()
    nan.values[0, 0, 3] = float("nan")
    with pytest.raises(BatchError, match="NaN"):
        nan.validate(64.0)
    nan.observed[0, 0, 3] = False  # NaN where unobserved is the missing-value policy: allowed
    nan.validate(64.0)
    with pytest.raises(BatchError, match=r"\[-span, 0\)"):
        good.validate(32.0)
