"""The pretraining corpus: its cards and checksums, windows over long collections and wide files, the
size ** alpha mixture, channel subsets, and the shared unknown-channel identity that lets a corpus encoder
read datasets it never saw."""

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_MODEL, compose_config

from tsjepa.checkpoint import from_pretrained
from tsjepa.data.collection import (
    CollectionError,
    SeriesCollection,
    collection_windows,
    observed_ends,
    read_long_csv,
)
from tsjepa.data.sources import DatasetError, load_card, load_dataset
from tsjepa.data.timeseries import TimeSeries
from tsjepa.data.vocab import UNKNOWN, ChannelVocab, UnknownChannelError
from tsjepa.data.windows import SpanWindows
from tsjepa.train import Distributed, pretraining_windows, sample_batch, train

CORPUS = compose_config("train", ["data=corpus"]).data


def test_every_corpus_file_has_a_verified_card(shared_data):
    assert len(CORPUS.datasets) == 29
    m4 = load_dataset("corpus/m4_hourly_train", shared_data)  # checksum verified on load
    assert isinstance(m4, SeriesCollection) and len(m4) == 414
    assert sum(len(v) for v in m4.values) == 353500 and min(len(v) for v in m4.values) == 700
    loop = load_dataset("corpus/la_loop_speed_5min", shared_data)
    assert isinstance(loop, TimeSeries) and loop.values.shape == (2016, 207)
    assert np.array_equal(loop.times, np.arange(2016.0))  # step-indexed: one row = one time unit
    bikes = load_dataset("corpus/bike_sharing_hourly", shared_data)
    assert bikes.values.shape == (17379, 7) and bikes.times[-1] > 17379 - 1  # 165 missing hours stay gaps
    for name in CORPUS.datasets:
        assert load_card(name).protocol["pretrain_only"] and load_card(name).url is None


def test_missing_corpus_file_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="missing and the card names no download URL"):
        load_dataset("corpus/us_births_daily", tmp_path)
    assert not any(tmp_path.iterdir())  # nothing half-written


def test_long_csv_checks_its_steps(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"series_id": ["a", "a", "b"], "step": [0, 2, 0], "value": [1.0, 2.0, 3.0]}).to_csv(path, index=False)
    with pytest.raises(CollectionError, match="series 'a' does not run through steps 0..1"):
        read_long_csv(path, "bad")


def test_collection_windows_never_mix_series():
    rng = np.random.default_rng(0)
    lengths = [3, 40, 50, 7]
    collection = SeriesCollection("toy", tuple("abcd"), tuple(rng.normal(size=n).astype(np.float32) for n in lengths))
    windows, skipped = collection_windows(collection, span=16.0, min_observed=4, channel_id=5)
    assert skipped == 1  # the 3-value series
    ends = [j for n in lengths if n >= 4 for j in range(4, n + 1)]
    assert len(windows) == len(ends) and windows.span == 16.0
    batch = windows.batch(torch.arange(len(windows)))
    # a window after step j holds exactly min(j, span) values: never a step of the previous series
    assert batch.observed.sum((1, 2)).tolist() == [min(j, 16) for j in ends]
    assert (batch.channel_ids == 5).all()
    assert (batch.times[batch.observed] >= -16).all() and (batch.times[batch.observed] < 0).all()


def test_observed_ends_need_enough_observed_rows():
    values = np.ones((30, 2))
    values[10:25] = np.nan  # a 15-row gap in both channels
    series = TimeSeries(values, np.arange(30.0), ["x", "y"])
    ends = observed_ends(series, span=8.0, min_observed=3)
    counts = [int((~np.isnan(values[max(0, e - 8):e, 0])).sum()) for e in range(1, 31)]
    assert ends.tolist() == [e for e, c in zip(range(1, 31), counts, strict=True) if c >= 3]


def toy_source(n_windows: int, n_channels: int, first_id: int, observed_channels: int | None = None) -> SpanWindows:
    values = np.ones((n_windows + 7, n_channels))
    if observed_channels is not None:
        values[:, observed_channels:] = np.nan
    series = TimeSeries(values, np.arange(n_windows + 7.0), [f"c{i}" for i in range(n_channels)])
    return SpanWindows(series, np.arange(8, n_windows + 8), 8.0, 0, np.arange(first_id, first_id + n_channels))


def test_mixture_alpha_and_channel_subsets():
    small, big = toy_source(4, 1, 0), toy_source(400, 1, 1)
    gen = torch.Generator().manual_seed(0)
    for alpha, expected in ((1.0, 4 / 404), (0.0, 0.5), (0.5, 2 / 22)):
        drawn = [int(sample_batch([small, big], 2, gen, Distributed(), alpha).channel_ids[0, 0]) for _ in range(2000)]
        assert abs(drawn.count(0) / 2000 - expected) < 0.03
    wide = toy_source(10, 40, 0, observed_channels=3)
    batch = sample_batch([wide], 4, gen, Distributed(), max_channels=6)
    assert batch.values.shape[1] == 6 and {0, 1, 2} <= set(batch.channel_ids[0].tolist())  # observed ones first


def test_unknown_channel_identity():
    vocab = ChannelVocab(["a/x", "a/y"], capacity=8)
    with pytest.raises(UnknownChannelError):
        vocab.ids(["b/z"])
    vocab.extend([UNKNOWN])
    assert vocab.ids(["a/y", "b/z", "b/w"]).tolist() == [1, 2, 2]
    gen = torch.Generator().manual_seed(0)
    batch = sample_batch([toy_source(50, 4, 0)], 500, gen, Distributed(), unknown=(7, 0.25))
    hidden = (batch.channel_ids == 7).float().mean().item()
    assert 0.2 < hidden < 0.3 and set(batch.channel_ids.unique().tolist()) == {0, 1, 2, 3, 7}


def test_corpus_pretraining_transfers_to_unseen_channels(tmp_path, shared_data):
    subset = "[corpus/m3_monthly_train,corpus/beijing_pm25_hourly,corpus/sunspots_monthly]"
    cfg = compose_config("train", ["data=corpus", f"data.datasets={subset}", f"run_dir={tmp_path}",
                                   "train.steps=2", "train.batch_size=4", "train.warmup=1", *TINY_MODEL])
    windows, vocab = pretraining_windows(cfg)
    assert {w.span for w in windows} == {336.0} and vocab.names[-1] == UNKNOWN
    pretrained = from_pretrained(train(cfg))
    assert pretrained.vocab.names[-1] == UNKNOWN and len(pretrained.vocab) == 1 + 7 + 1 + 1
    etth1 = load_dataset("etth1", shared_data)  # channels it never saw: every one gets <unknown>'s identity
    ids = pretrained.vocab.ids([f"ett/{c}" for c in etth1.channels])
    assert (ids == len(pretrained.vocab) - 1).all()
