"""Loaders of the labelled anomaly benchmarks (SMD, NAB, UCR) on the real files, and folder fetching."""

import json
import zipfile

import numpy as np
import pandas as pd
import pytest

from tsjepa.data.anomaly import Segment, segments_of
from tsjepa.data.sources import DatasetError, fetch, load_card, load_dataset, tree_sha256


def test_smd_official_layout(shared_data):
    smd = load_dataset("smd", shared_data)
    assert [s.name for s in smd.series] == [f"machine-1-{k}" for k in range(2, 9)] + ["machine-2-1"]
    assert smd.channels == [f"m{c}" for c in range(1, 39)]
    first = smd.series[0]
    raw_train = np.loadtxt(shared_data / "ServerMachineDataset/train/machine-1-2.txt", delimiter=",")
    raw_test = np.loadtxt(shared_data / "ServerMachineDataset/test/machine-1-2.txt", delimiter=",")
    assert first.test_start == len(raw_train) and len(first.series) == len(raw_train) + len(raw_test)
    np.testing.assert_allclose(first.series.values[first.test_start], raw_test[0], rtol=1e-6)
    assert first.labels.shape == (len(raw_test),) and set(np.unique(first.labels)) == {0, 1}
    # interpretation labels: "4629-4688:9,10,11,13,15,18" -> rows [4629, 4688), 0-based channels
    assert first.segments[0] == Segment(4629, 4688, (8, 9, 10, 12, 14, 17))
    for machine in smd.series:
        for seg in machine.segments:
            assert 0 <= seg.start < seg.end <= len(machine.labels) and seg.channels
            assert machine.labels[seg.start : seg.end].all()  # interpreted segments are labelled anomalous
            assert max(seg.channels) < 38


def test_nab_windows_and_probation(shared_data):
    nab = load_dataset("nab", shared_data)
    assert len(nab) == 58 and nab.channels == ["value"]
    taxi = next(s for s in nab.series if s.name == "realKnownCause/nyc_taxi")
    frame = pd.read_csv(shared_data / "NAB/data/realKnownCause/nyc_taxi.csv", parse_dates=["timestamp"])
    assert taxi.test_start == int(0.15 * len(frame))
    windows = json.loads((shared_data / "NAB/labels/combined_windows.json").read_text())["realKnownCause/nyc_taxi.csv"]
    start, end = (pd.Timestamp(t) for t in windows[0])
    inside = ((frame.timestamp >= start) & (frame.timestamp <= end)).to_numpy()[taxi.test_start :]
    assert taxi.labels[inside].all() and len(taxi.segments) == len(windows)
    flat = next(s for s in nab.series if s.name == "artificialNoAnomaly/art_flatline")
    assert flat.labels.sum() == 0 and flat.segments == []


def test_ucr_labels_from_file_name(shared_data):
    ucr = load_dataset("ucr", shared_data)
    assert len(ucr) == 4
    series = next(s for s in ucr.series if s.name.startswith("135_"))  # ..._1200_4187_4199
    assert series.test_start == 1200
    anomalous = np.flatnonzero(series.labels) + series.test_start  # 0-based rows of the whole file
    assert anomalous[0] == 4186 and anomalous[-1] == 4198 and len(anomalous) == 13
    assert series.segments == [Segment(2986, 2999)]


def test_segments_of():
    assert segments_of(np.array([0, 1, 1, 0, 0, 1])) == [Segment(1, 3), Segment(5, 6)]
    assert segments_of(np.zeros(4, dtype=np.int8)) == []


def test_folder_fetch_from_base_url_and_archive(shared_data, tmp_path):
    card = load_card("ucr")
    source = shared_data / card.file
    assert fetch(card, shared_data) == source
    # a base URL ending in "/": every listed file fetched to its place, checksum verified
    base = card.__class__(**{**card.__dict__, "url": source.as_uri() + "/"})
    assert tree_sha256(fetch(base, tmp_path / "a"), card.files) == card.sha256
    # an archive holding the files under other folders: found by name and laid out as the card says
    archive = tmp_path / "ucr.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in card.files:
            zf.write(source / file, f"Archive/Deep/{file}")
    zipped = card.__class__(**{**card.__dict__, "url": archive.as_uri()})
    assert sorted(p.name for p in fetch(zipped, tmp_path / "b").iterdir()) == sorted(card.files)
    # a listed file missing: the check fails and nothing is left behind
    partial = card.__class__(**{**card.__dict__, "url": archive.as_uri(), "files": (*card.files, "extra.txt")})
    with pytest.raises(DatasetError, match="fails its sha256 check"):
        fetch(partial, tmp_path / "c")
    assert not (tmp_path / "c" / card.file).exists() and not list((tmp_path / "c").iterdir())
