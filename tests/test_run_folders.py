"""A user's own data and shared run folders: one run at a time per folder, runs bound to their data, shipped
weights verified, damaged weights refused, interrupted saves repaired on load, and user files checked."""

import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_MODEL, compose_config

import tsjepa
import tsjepa.checkpoint as checkpoint_module
import tsjepa.train as train_module
from tsjepa.checkpoint import CheckpointError
from tsjepa.data.files import FileError, read_file
from tsjepa.data.sources import load_card

ENV = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1"}
NAME = "tsjepa-base-corpus"


def training(run_dir, steps: int) -> list[str]:
    return [sys.executable, "-m", "tsjepa.train", "data=etth1", f"run_dir={run_dir}", f"train.steps={steps}",
            "train.batch_size=8", "train.warmup=1", "train.log_every=1", "train.ckpt_every=1", *TINY_MODEL]


def test_a_second_run_on_a_held_folder_fails_at_once_naming_the_holder(tmp_path):
    run_dir = tmp_path / "shared-run"
    first = subprocess.Popen(training(run_dir, 40), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    lock = run_dir / ".lock"
    deadline = time.time() + 120
    while not (lock.exists() and lock.read_text().strip()) and time.time() < deadline:
        assert first.poll() is None, first.communicate()[1][-2000:]
        time.sleep(0.2)
    holder = lock.read_text()
    assert f"pid {first.pid}" in holder
    start = time.time()
    second = subprocess.run([*training(run_dir, 40), "train.lr=1e-4"], env=ENV, capture_output=True, text=True,
                            timeout=300)
    assert second.returncode != 0 and first.poll() is None  # refused while the first still trains
    assert f"{run_dir} is in use by another run (pid {first.pid}" in second.stderr + second.stdout
    assert time.time() - start < 60
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err[-2000:]
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in (run_dir / "metrics.jsonl").open()]
    assert steps == list(range(1, 41))  # one run's log, each step once
    assert lock.read_text() == ""  # released: the next run may start
    train_module.train(compose_config("train", ["data=etth1", f"run_dir={run_dir}", "train.steps=41",
                                                "train.batch_size=8", "train.warmup=1", *TINY_MODEL]))


def test_an_edited_data_file_is_another_run(tmp_path, shared_data):
    csv = tmp_path / "plant.csv"
    pd.read_csv(shared_data / "ETT-small" / "ETTh1.csv").iloc[:1500].to_csv(csv, index=False)
    def overrides(steps: int) -> list[str]:
        return ["data=file", f"data.path={csv}", f"run_dir={tmp_path / 'run'}", f"train.steps={steps}",
                "train.batch_size=8", "train.warmup=1", *TINY_MODEL]

    train_module.train(compose_config("train", overrides(2)))
    train_module.train(compose_config("train", overrides(2)))  # the same file: resumes (nothing left to run)
    frame = pd.read_csv(csv)
    frame["OT"] = frame["OT"] + 1.0
    frame.to_csv(csv, index=False)
    with pytest.raises(ValueError, match=r"another configuration \(data_identity\.plant: 'content:"):
        train_module.train(compose_config("train", overrides(4)))


def test_card_datasets_are_bound_by_their_checksum(pretrained):
    config = tsjepa.from_pretrained(pretrained).config
    assert config["data_identity"] == {"etth1": load_card("etth1").sha256}


@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """A copy of the shipped encoders' folder, installed in its place."""
    folder = shutil.copytree(checkpoint_module.PRETRAINED_DIR, tmp_path / "pretrained")
    monkeypatch.setattr(checkpoint_module, "PRETRAINED_DIR", folder)
    return folder


def test_the_shipped_encoder_is_verified_at_load(shipped_copy):
    assert tsjepa.from_pretrained(NAME).step == 2000
    weights = shipped_copy / NAME / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one flipped bit in the last tensor
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its shipped sha256"):
        tsjepa.from_pretrained(NAME)
    (shipped_copy / f"{NAME}.sha256").unlink()
    with pytest.raises(CheckpointError, match="has no checksum file"):
        tsjepa.from_pretrained(NAME)


def test_non_finite_weights_are_refused(shipped_copy, tmp_path):
    copy = shutil.copytree(shipped_copy / NAME, tmp_path / "mine")
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-64:] = b"\xff" * 64  # fp16 0xFFFF is NaN
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"non-finite values \(NaN or inf\)"):
        tsjepa.from_pretrained(copy)


def test_a_folder_shadowing_a_shipped_name_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / NAME).mkdir()
    with pytest.raises(CheckpointError, match=f"is not a checkpoint but shadows the shipped encoder '{NAME}'"):
        tsjepa.from_pretrained(NAME)


def test_loading_finishes_an_interrupted_save(pretrained, tmp_path):
    last = tmp_path / "checkpoints" / "last"
    shutil.copytree(pretrained, last.with_name(".last.ready"))  # killed after the new copy was complete
    with pytest.warns(UserWarning, match="completed the interrupted save"):
        assert tsjepa.from_pretrained(last).step == tsjepa.from_pretrained(pretrained).step
    assert sorted(p.name for p in last.parent.iterdir()) == ["last"]


def test_a_channel_with_no_observed_value_is_refused(tmp_path):
    path = tmp_path / "plant.csv"
    pd.DataFrame({"date": pd.date_range("2024-01-01", periods=50, freq="h"), "a": np.arange(50.0),
                  "dead": np.nan}).to_csv(path, index=False)
    with pytest.raises(FileError, match=r"channel\(s\) \['dead'\] hold no observed value"):
        read_file(path)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_embed_refuses_a_bad_batch_size(batch_size):
    model = tsjepa.from_pretrained(NAME)
    frame = pd.DataFrame({"a": np.arange(200.0)}, index=pd.date_range("2024-01-01", periods=200, freq="h"))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        tsjepa.embed(model, frame, step="1h", batch_size=batch_size)


# ------------------------------------------------------------------ inputs accepted that should not be
def test_a_file_without_a_time_column_says_so(tmp_path):
    path = tmp_path / "sensors.csv"
    pd.DataFrame({"pressure": np.arange(1.0, 51.0), "flow": np.ones(50)}).to_csv(path, index=False)
    with pytest.raises(FileError, match=r"no time column: the first column 'pressure' holds numbers.*"
                                        r"data.time_column=row"):
        read_file(path)
    rows = read_file(path, time_column="row")
    assert rows.channels == ["pressure", "flow"] and rows.times.tolist() == list(range(50))
    with pytest.raises(FileError, match="drop data.freq"):
        read_file(path, time_column="row", freq="1h")


HOURLY = pd.DataFrame({"a": np.arange(3.0)}, index=pd.date_range("2024-01-01", periods=3, freq="h"))


@pytest.mark.parametrize("make,message", [
    (lambda: tsjepa.as_timeseries(HOURLY, step="1h", channels=["zz"]), r"channels do\(es\) not apply to a DataFrame"),
    (lambda: tsjepa.as_timeseries(pd.DataFrame({"a": [1.0, 2.0]}), step="1h"), "applies to datetime timestamps"),
    (lambda: tsjepa.as_timeseries(pd.DataFrame({"a": [1 + 2j, 2.0]})), "values are complex"),
    (lambda: tsjepa.as_timeseries(pd.DataFrame({"a": [9.969209968386869e36, 2.0]})), "NetCDF default fill value"),
    (lambda: tsjepa.as_timeseries(HOURLY, step="1h", colour="red"), r"unknown argument\(s\) \['colour'\]"),
])
def test_arguments_and_values_are_never_silently_dropped(make, message):
    with pytest.raises(tsjepa.data.timeseries.TimeSeriesError, match=message):
        make()


@pytest.mark.parametrize("data", [
    pd.DataFrame({"timestamp": ["2024-01-01 00:00", "2024-01-01 01:00"], "channel": ["a", "a"], "value": [1.0, 2.0]}),
    {"a": (["2024-01-01 00:00", "2024-01-01 01:00"], [1.0, 2.0])},
])
def test_date_strings_in_long_frames_and_dicts_are_parsed(data):
    series = tsjepa.as_timeseries(data, step="1h")
    assert series.channels == ["a"] and series.times.tolist() == [0.0, 1.0]


def test_embedding_in_another_time_unit_than_pretrained_is_refused(pretrained):
    model = tsjepa.from_pretrained(pretrained)  # ETTh1: one time unit = 1 h
    assert model.config["time_units"] == {"etth1": "0 days 01:00:00"}
    frame = pd.DataFrame({"OT": np.arange(400.0)}, index=pd.date_range("2024-01-01", periods=400, freq="h"))
    frame.columns = ["ett/OT"]
    with pytest.raises(tsjepa.data.timeseries.TimeSeriesError, match=r"pass step='0 days 01:00:00'"):
        tsjepa.embed(model, frame, step="15min", add_unknown_channels=True)


# ------------------------------------------------------------------ raw errors name the problem and the setting
def test_a_train_split_shorter_than_a_window_names_the_lookback(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("date,a\n2024-01-01 00:00,1.0\n")
    with pytest.raises(ValueError, match=r"train split holds 0 of 1 rows.*lower data.lookback"):
        train_module.train(compose_config("train", ["data=file", f"data.path={path}", "data.freq=1h",
                                                    f"run_dir={tmp_path / 'run'}", *TINY_MODEL]))
    assert not (tmp_path / "run").exists()  # the lock's folder is removed again: nothing half-written


def test_gluonts_series_shorter_than_the_horizon_are_named():
    from gluonts.dataset.common import ListDataset

    from tsjepa.integrations.gluonts import TSJEPAEstimator

    data = ListDataset([{"start": pd.Period("2024-01-01", "h"), "target": np.arange(10.0)}], freq="h")
    estimator = TSJEPAEstimator(NAME, prediction_length=24, context_length=64, trainer_kwargs={"max_epochs": 1})
    with pytest.raises(ValueError, match=r"no training series is longer than prediction_length=24 \(the longest "
                                         r"of 1 has 10 rows\)"):
        estimator.train(data)


def test_a_full_vocabulary_names_the_setting_that_raises_it():
    from tsjepa.data.vocab import ChannelVocab

    with pytest.raises(ValueError, match="raise model.encoder.channel_capacity"):
        ChannelVocab([f"c{i}" for i in range(65)], capacity=64)


def test_the_sktime_forecaster_takes_a_series():
    from tsjepa.integrations.sktime import TSJEPAForecaster

    y = pd.Series(np.sin(np.arange(500.0) / 10), index=pd.date_range("2024-01-01", periods=500, freq="h"))
    forecast = TSJEPAForecaster(NAME).fit(y, fh=[1, 2]).predict()
    assert isinstance(forecast, pd.Series) and len(forecast) == 2 and np.isfinite(forecast).all()
