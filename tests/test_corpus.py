"""The pretraining corpus: its cards and checksums, windows over long collections and wide files, the
size ** alpha mixture, channel subsets, and the shared unknown-channel identity that lets a corpus encoder
read datasets it never saw."""

import numpy as np
import pandas as pd
import pytest
import safetensors.torch
import torch
from conftest import TINY_MODEL, compose_config

from tsjepa import checkpoint
from tsjepa.checkpoint import from_pretrained
from tsjepa.data.collection import (
    CollectionError,
    SeriesCollection,
    collection_windows,
    read_long_csv,
)
from tsjepa.data.sources import DatasetError, load_card, load_dataset
from tsjepa.data.timeseries import TimeSeries
from tsjepa.data.vocab import UNKNOWN, ChannelVocab, UnknownChannelError
from tsjepa.data.windows import SpanWindows, observed_ends
from tsjepa.export import main
from tsjepa.integrations.gluonts import TSJEPAEstimator
from tsjepa.integrations.sktime import TSJEPAForecaster
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


SUBSET = "[corpus/m3_monthly_train,corpus/beijing_pm25_hourly,corpus/sunspots_monthly]"


def tiny_corpus_config(run_dir):
    return compose_config("train", ["data=corpus", f"data.datasets={SUBSET}", f"run_dir={run_dir}", "train.steps=2",
                                    "train.batch_size=4", "train.warmup=1", "train.keep_every=1", *TINY_MODEL])


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory, shared_data):
    """A tiny encoder pretrained for 2 steps on 3 corpus files (1 + 7 + 1 channels and <unknown>)."""
    return train(tiny_corpus_config(tmp_path_factory.mktemp("corpus")))


def test_corpus_pretraining_is_reproducible_and_keeps_snapshots(tiny_corpus, tmp_path):
    windows, vocab = pretraining_windows(tiny_corpus_config(tmp_path))
    assert {w.span for w in windows} == {336.0} and vocab.names[-1] == UNKNOWN
    assert sorted(p.name for p in tiny_corpus.parent.iterdir()) == ["last", "step-1", "step-2"]
    again = train(tiny_corpus_config(tmp_path))  # seeded by (seed, step): the same bytes
    assert (again / "model.safetensors").read_bytes() == (tiny_corpus / "model.safetensors").read_bytes()


def test_unseen_channels_take_the_unknown_identity(tiny_corpus, shared_data):
    pretrained = from_pretrained(tiny_corpus)
    assert pretrained.vocab.names[-1] == UNKNOWN and len(pretrained.vocab) == 1 + 7 + 1 + 1
    etth1 = load_dataset("etth1", shared_data)
    ids = pretrained.vocab.ids([f"ett/{c}" for c in etth1.channels])
    assert (ids == len(pretrained.vocab) - 1).all()
    frame = etth1.data.isel(time=slice(0, 2000)).to_pandas().asfreq("h")  # read without naming any channel
    pred = TSJEPAForecaster(str(tiny_corpus), max_windows=64).fit(frame, fh=[1, 2, 3]).predict()
    assert pred.shape == (3, 7) and np.isfinite(pred.to_numpy()).all()
    estimator = TSJEPAEstimator(str(tiny_corpus), prediction_length=12, target_dim=7)
    assert estimator.channel_ids.ids == [len(pretrained.vocab) - 1] * 7
    assert len(estimator.pretrained.vocab) == len(pretrained.vocab)  # no untrained rows added


def test_export_ships_half_precision_weights_loadable_by_name(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "PRETRAINED_DIR", tmp_path)
    main([str(tiny_corpus), str(tmp_path / "tiny-corpus")])
    assert checkpoint.shipped_names() == ["tiny-corpus"]
    shipped = safetensors.torch.load_file(str(tmp_path / "tiny-corpus" / "model.safetensors"))
    assert {v.dtype for v in shipped.values()} == {torch.float16} and not any(k.startswith("projector") for k in shipped)
    original, by_name = from_pretrained(tiny_corpus), from_pretrained("tiny-corpus")
    assert by_name.config["dtype"] == "float16" and by_name.vocab.names == original.vocab.names
    rows = len(original.vocab)  # unseen channels read <unknown>: the tables keep only the vocabulary's rows
    assert by_name.encoder.config.channel_capacity == by_name.vocab.capacity == rows < original.vocab.capacity
    assert shipped["predictor.channel_embedding.weight"].shape[0] == rows
    torch.testing.assert_close(shipped["encoder.channel_embedding.weight"].float(),
                               original.encoder.channel_embedding.weight[:rows].half().float(), atol=0, rtol=0)
    batch = load_windows_batch()
    with torch.no_grad():
        a, b = original.encoder(batch).embeddings, by_name.encoder(batch).embeddings
    torch.testing.assert_close(b, a, atol=2e-2, rtol=2e-2)  # fp16 rounding only
    with pytest.raises(checkpoint.CheckpointError, match=r"shipped encoders, loadable by name: \['tiny-corpus'\]"):
        from_pretrained("no-such-encoder")


def test_export_keeps_channel_rows_for_new_channels_without_unknown(pretrained, tmp_path):
    """A checkpoint without <unknown> gives new channels rows of their own, so its capacity is kept."""
    original = from_pretrained(pretrained)
    assert UNKNOWN not in original.vocab.names
    main([str(pretrained), str(tmp_path / "exported")])
    exported = from_pretrained(tmp_path / "exported")
    assert exported.encoder.config.channel_capacity == exported.vocab.capacity == original.vocab.capacity


def load_windows_batch():
    series = TimeSeries(np.sin(np.arange(400.0))[:, None], np.arange(400.0), ["x"])
    return SpanWindows(series, np.array([336, 400]), 336.0, 0, np.array([0])).batch(torch.arange(2))
