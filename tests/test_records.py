"""Irregular data on real files: the data API's input formats, PhysioNet 2012 records, dropped observations."""

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from tsjepa.data.records import ClippedScaler, RecordWindows
from tsjepa.data.sources import load_card, load_dataset, split_rows
from tsjepa.data.timeseries import TimeSeries, TimeSeriesError, as_timeseries
from tsjepa.data.vocab import ChannelVocab
from tsjepa.data.windows import Windows, drop_observations, fit_scaler
from tsjepa.eval.baselines import fill_gaps


def test_every_input_format_gives_the_same_series():
    long = pd.DataFrame({"timestamp": [0.0, 0.5, 1.0, 2.0], "channel": ["hr", "bp", "hr", "bp"],
                         "value": [70.0, 120.0, 72.0, 118.0]})
    expected = np.array([[70.0, np.nan], [np.nan, 120.0], [72.0, np.nan], [np.nan, 118.0]])
    pairs = {"hr": ([0.0, 1.0], [70.0, 72.0]), "bp": ([0.5, 2.0], [120.0, 118.0])}
    wide = pd.DataFrame(expected, index=[0.0, 0.5, 1.0, 2.0], columns=["hr", "bp"])
    dataset = xr.Dataset({c: ("time", expected[:, i]) for i, c in enumerate(["hr", "bp"])},
                         coords={"time": [0.0, 0.5, 1.0, 2.0]})
    inputs = [long, pairs, list(pairs.values()), wide, dataset, TimeSeries.from_wide(wide).data]
    for data in inputs:
        ts = as_timeseries(data, channels=["hr", "bp"]) if isinstance(data, list) else as_timeseries(data)
        assert ts.channels == ["hr", "bp"], type(data)
        np.testing.assert_array_equal(ts.values, expected)
        np.testing.assert_array_equal(ts.times, [0.0, 0.5, 1.0, 2.0])


def test_input_errors_name_the_problem():
    long = pd.DataFrame({"timestamp": [1.0, 0.0, 0.5], "channel": ["hr", "hr", "bp"], "value": [1.0, 2.0, 3.0]})
    with pytest.raises(TimeSeriesError, match="channel 'hr': unsorted timestamps"):
        as_timeseries(long)
    with pytest.raises(TimeSeriesError, match="channel 'hr': duplicate timestamps"):
        as_timeseries({"hr": ([0.0, 0.0], [1.0, 2.0])})
    with pytest.raises(TimeSeriesError, match=r"unknown channel\(s\) \['bp'\]"):
        TimeSeries.from_long(long.iloc[[1, 0, 2]], channels=["hr"])
    with pytest.raises(TimeSeriesError, match="column 'value' must be numeric"):
        as_timeseries(long.assign(value=["a", "b", "c"]))
    with pytest.raises(TimeSeriesError, match="channel 'hr': values must be numeric"):
        as_timeseries({"hr": ([0.0, 1.0], ["a", "b"])})
    with pytest.raises(TimeSeriesError, match="non-numeric columns"):
        as_timeseries(pd.DataFrame({"hr": ["a"]}, index=[0.0]))
    with pytest.raises(TimeSeriesError, match="lacks column"):
        TimeSeries.from_long(long.drop(columns="value"))
    with pytest.raises(TimeSeriesError, match="cannot make a time series from int"):
        as_timeseries(3)


@pytest.fixture(scope="module")
def physionet(shared_data):
    return load_dataset("physionet2012")


def test_physionet_loader_keeps_every_observation_at_its_own_time(physionet, shared_data):
    card = load_card("physionet2012")
    assert len(physionet) == 3997 and physionet.labels.sum() == 554  # 3 stays without observations left out
    assert physionet.channels == list(card.channels) and len(physionet.channels) == 37
    assert physionet.static_names == ["Age", "Gender", "Height", "ICUType", "Weight"]
    first = int(np.flatnonzero(physionet.ids == 132539)[0])
    rec = physionet.record(first)
    assert rec.static["Age"] == 54 and np.isnan(rec.static["Height"])  # -1 placeholder -> missing
    np.testing.assert_allclose(rec.times[:3], [7 / 60, 37 / 60, 97 / 60])  # minutes kept, no hourly bins
    hr = rec.channels.index("HR")
    assert rec.values[0, hr] == 73 and rec.values[1, hr] == 77
    assert np.isnan(rec.values[0, rec.channels.index("pH")])
    raw = (shared_data / "physionet2012/set-a/132539.txt").read_text().splitlines()[1:]
    stamps = {tuple(line.split(",")[:2]) for line in raw if line.split(",")[1] in card.channels}
    stamps.discard(("00:00", "Weight"))  # the static descriptor, not an observation
    assert (~np.isnan(rec.values)).sum() == len(stamps)
    urine = rec.values[np.flatnonzero(np.isclose(rec.times, 27 + 37 / 60))[0], rec.channels.index("Urine")]
    repeated = [float(line.split(",")[2]) for line in raw if line.startswith("27:37,Urine")]
    assert len(repeated) == 2 and urine == pytest.approx(np.mean(repeated))  # same-minute repeats averaged
    all_obs = physionet.observations()
    assert not (all_obs == -1).any()
    minutes = np.concatenate(physionet.times) * 60
    assert np.allclose(minutes, np.round(minutes), atol=1e-6) and (minutes % 60 != 0).mean() > 0.5


def test_physionet_folds_are_stratified_and_disjoint(physionet):
    tests = [physionet.split(k, 5, 0)[1] for k in range(5)]
    assert sorted(np.concatenate(tests).tolist()) == list(range(len(physionet)))
    for k, test in enumerate(tests):
        train, same = physionet.split(k, 5, 0)
        np.testing.assert_array_equal(same, test)
        assert not set(train) & set(test)
        assert abs(physionet.labels[test].mean() - physionet.labels.mean()) < 0.01


def test_record_windows_form_valid_irregular_batches(physionet):
    ids = ChannelVocab(physionet.channels).ids(physionet.channels)
    scaler = ClippedScaler().fit(physionet.observations())
    windows = RecordWindows(physionet, ids, scaler, span=48.0)
    batch = windows.batch(torch.arange(8))
    batch.validate(48.0)
    assert batch.values.shape[:2] == (8, 37)
    counts = [(~np.isnan(v)).sum() for v in physionet.values[:8]]
    assert batch.observed.flatten(1).sum(1).tolist() == counts
    # each channel on its own clock: within one record, channels are observed at different times
    obs = batch.observed[0]
    assert (obs.sum(-1) > 0).sum() > 5 and not (obs == obs[obs.sum(-1).argmax()]).all()
    z = scaler.transform(physionet.observations())
    assert np.nanmax(np.abs(z)) < 50 and abs(np.nanmean(z)) < 1e-3
    late = physionet.subset(np.arange(2))
    late.times[0] = late.times[0] + 1.0
    with pytest.raises(ValueError, match="after the window end"):
        RecordWindows(late, ids, scaler, span=48.0)


def test_fill_gaps_uses_only_the_window():
    x = torch.tensor([[0.0, 1.0, 0.0, 0.0, 4.0, 0.0], [0.0, 0.0, 0.0, 2.0, 0.0, 0.0]])
    seen = torch.tensor([[0, 1, 0, 0, 1, 0], [0, 0, 0, 1, 0, 0]], dtype=torch.bool)
    torch.testing.assert_close(fill_gaps(x, seen, "linear"), torch.tensor([[1.0, 1, 2, 3, 4, 4], [2.0] * 6]))
    torch.testing.assert_close(fill_gaps(x, seen, "ffill"), torch.tensor([[1.0, 1, 1, 1, 4, 4], [2.0] * 6]))
    with pytest.raises(ValueError, match="at least one observed"):
        fill_gaps(x, torch.zeros_like(seen))


def test_dropped_observations_make_each_channel_irregular(shared_data):
    ts, card = load_dataset("etth1"), load_card("etth1")
    rows = split_rows(card, len(ts), 336)
    hidden = drop_observations(ts, 0.5, seed=0)
    np.testing.assert_array_equal(hidden, drop_observations(ts, 0.5, seed=0))  # fixed seed
    assert abs(hidden.mean() - 0.5) < 0.01
    ids = np.arange(7)
    plain = Windows(ts, rows["test"], 336, 96, ids, fit_scaler(ts, rows["train"]))
    dropped = Windows(ts, rows["test"], 336, 96, ids, fit_scaler(ts, rows["train"]), hidden=hidden)
    a, b = plain.batch(torch.arange(4)), dropped.batch(torch.arange(4))
    b.validate(dropped.span)
    torch.testing.assert_close(a.target, b.target)  # targets are never dropped
    assert b.target_observed.all() and a.observed.all()
    kept = b.observed.float().mean().item()
    assert 0.45 < kept < 0.55
    assert not (b.observed[:, 0] == b.observed[:, 1]).all()  # channels lose different time stamps
    torch.testing.assert_close(a.values[b.observed], b.values[b.observed])


def test_folder_datasets_are_checksummed_and_fetched_only_when_missing(shared_data, tmp_path):
    from tsjepa.data.sources import DatasetError, fetch, tree_sha256

    card = load_card("physionet2012")
    assert card.tree and fetch(card, shared_data) == shared_data / "physionet2012"
    folder = tmp_path / "physionet2012"
    (folder / "set-a").mkdir(parents=True)
    (folder / "set-a" / "1.txt").write_text("Time,Parameter,Value\n")
    before = tree_sha256(folder)
    (folder / "set-a" / "1.txt").write_text("Time,Parameter,Value\n00:00,HR,1\n")
    assert tree_sha256(folder) != before
    with pytest.raises(DatasetError, match="corrupt or a different version"):
        fetch(card, tmp_path)
    offline = card.__class__(**{**card.__dict__, "url": ["http://127.0.0.1:9/set-a.tar.gz"]})
    with pytest.raises(DatasetError, match=r"missing and the download from http://127.0.0.1:9/set-a.tar.gz failed"):
        fetch(offline, tmp_path / "empty")
    assert not (tmp_path / "empty" / "physionet2012").exists()  # nothing half-written
