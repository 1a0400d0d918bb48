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
