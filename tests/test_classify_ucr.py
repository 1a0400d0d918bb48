"""UCR / UEA classification: the archive cards (sktime's shipped copies, offline), the tiled series encoding
for equal, unequal and multivariate series, the harness end to end, and its errors."""

import json
import shutil

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, compose_config

import tsjepa.train
from tsjepa.data.labelled import LabelledDataError, LabelledSet, read_ts_archive, sktime_archive_dir
from tsjepa.data.sources import DatasetError, fetch, load_card, load_dataset
from tsjepa.data.windows import TiledSeries
from tsjepa.encoding import channel_pool, encode_windows, series_embeddings
from tsjepa.eval import classify_ucr
from tsjepa.models import Encoder, EncoderConfig

# card -> (train, test, channels, classes, shortest, longest), as the archive documents them
ARCHIVE = {
    "arrowhead": (36, 175, 1, 3, 251, 251), "gunpoint": (50, 150, 1, 2, 150, 150),
    "italypowerdemand": (67, 1029, 1, 2, 24, 24), "osuleaf": (200, 242, 1, 6, 427, 427),
    "acsf1": (100, 100, 1, 10, 1460, 1460), "plaid": (537, 537, 1, 11, 100, 1344),
    "basicmotions": (40, 40, 6, 4, 100, 100), "japanesevowels": (270, 370, 12, 9, 7, 29),
}


@pytest.mark.parametrize("name", sorted(ARCHIVE))
def test_archive_card_loads_offline_with_its_split(name, tmp_path):
    n_train, n_test, n_channels, n_classes, shortest, longest = ARCHIVE[name]
    data = load_dataset(name, tmp_path)  # an empty data directory: sktime's shipped copy, checksum verified
    assert isinstance(data, LabelledSet)
    assert (len(data.train), len(data.test), len(data.channels), len(data.classes)) == (
        n_train, n_test, n_channels, n_classes)
    lengths = np.concatenate([data.train.lengths, data.test.lengths])
    assert (lengths.min(), lengths.max()) == (shortest, longest)
    for split in (data.train, data.test):
        assert all(v.shape[1] == n_channels and v.dtype == np.float32 for v in split.values)
        assert split.labels.min() >= 0 and split.labels.max() < n_classes
    assert set(np.unique(data.train.labels)) == set(range(n_classes))
    assert load_card(name).protocol["span"] >= longest


def test_archive_copy_in_the_data_directory_is_checksummed(tmp_path):
    card = load_card("gunpoint")
    copy = shutil.copytree(sktime_archive_dir() / "GunPoint", tmp_path / "GunPoint")
    assert fetch(card, tmp_path) == copy
    (copy / "GunPoint_TEST.ts").write_text((copy / "GunPoint_TEST.ts").read_text().replace("-0.6", "-0.5", 1))
    with pytest.raises(DatasetError, match="corrupt"):
        fetch(card, tmp_path)


def test_a_dataset_sktime_does_not_ship_is_a_clear_error(tmp_path):
    from dataclasses import replace

    card = replace(load_card("gunpoint"), name="nosuchset", file="NoSuchSet", url=None)
    with pytest.raises(DatasetError, match="sktime ships no dataset 'NoSuchSet'.*GunPoint"):
        fetch(card, tmp_path)


def write_ts(path, rows: list[tuple[str, str]]) -> None:
    """A univariate .ts file of ``(comma-separated values, label)`` rows."""
    labels = " ".join(sorted({label for _, label in rows}))
    header = f"@problemName toy\n@timeStamps false\n@univariate true\n@classLabel true {labels}\n@data\n"
    path.write_text(header + "".join(f"{values}:{label}\n" for values, label in rows))


def test_bad_archive_files_are_clear_errors(tmp_path):
    write_ts(tmp_path / "Toy_TRAIN.ts", [("1,2,3", "a"), ("2,3,4", "b")])
    write_ts(tmp_path / "Toy_TEST.ts", [("1,2,3", "a"), ("3,2,1", "c")])
    with pytest.raises(LabelledDataError, match=r"test labels \['c'\] are not among the train split's classes"):
        read_ts_archive(tmp_path, "Toy", "toy")
    write_ts(tmp_path / "Toy_TEST.ts", [("1,2,3", "a"), ("?,?,?", "b")])
    with pytest.raises(LabelledDataError, match="test series 1 has no observed value"):
        read_ts_archive(tmp_path, "Toy", "toy")


def test_tiles_cover_each_series_from_its_end():
    short, long_ = np.arange(5, dtype=np.float32)[:, None], np.arange(23, dtype=np.float32)[:, None]
    tiles = TiledSeries([short, long_], span=8.0, channel_ids=np.array([0]))
    assert tiles.owner.tolist() == [0, 1, 1, 1] and tiles.ends.tolist() == [5, 23, 15, 7]
    batch = tiles.batch(torch.arange(len(tiles)))
    batch.validate(8.0)
    assert batch.observed.sum(-1)[:, 0].tolist() == [5, 8, 8, 7]
    assert batch.values[0, 0, :5].tolist() == [0, 1, 2, 3, 4] and batch.times[0, 0, :5].tolist() == [-5, -4, -3, -2, -1]
    assert batch.values[1, 0, -1].item() == 22 and batch.times[1, 0, -1].item() == -1


@pytest.mark.parametrize("name", ["gunpoint", "plaid", "japanesevowels", "basicmotions"])
def test_series_embeddings_pool_every_window_of_a_series(name):
    data = load_dataset(name)
    values = data.train.values[:6]
    encoder = Encoder(EncoderConfig(span=64.0, patch_duration=8, slots=8, d_model=16, depth=1, heads=2))
    tiles = TiledSeries(values, 64.0, np.arange(len(data.channels)))
    pooled = series_embeddings(encoder, tiles, ("mean", "max"))
    assert pooled.shape == (6, len(data.channels) * (2 * 16 + 1))
    out = encode_windows(encoder, tiles, torch.arange(len(tiles)))
    for i in range(6):  # the same as pooling the series' windows' tokens side by side as one window
        mine = torch.from_numpy(tiles.owner == i)
        joined = channel_pool(torch.cat(list(out.embeddings[mine]), 1)[None],
                              torch.cat(list(out.patch_observed[mine]), 1)[None], ("mean", "max"))
        torch.testing.assert_close(pooled[i], joined[0])
    with pytest.raises(ValueError, match="'last' needs one window per row"):
        channel_pool(out.embeddings, out.patch_observed, ("last",), torch.from_numpy(tiles.owner))


@pytest.fixture(scope="module")
def gunpoint_checkpoint(tmp_path_factory):
    cfg = compose_config("train", ["data=gunpoint", f"run_dir={tmp_path_factory.mktemp('gp')}", "train.steps=6",
                                   "train.batch_size=16", "train.warmup=2", "train.log_every=3", *TINY_MODEL])
    return tsjepa.train.train(cfg)


def test_classify_ucr_end_to_end_on_gunpoint(gunpoint_checkpoint, tmp_path):
    cfg = compose_config("eval", ["eval=classify-ucr", "data=gunpoint", f"ckpt={gunpoint_checkpoint}",
                                  f"out_dir={tmp_path}", "eval.baselines=false"])
    record = json.loads(classify_ucr.run(cfg).read_text())
    rows = {(r["model"], r["pretrained_on"], r["mode"]): r for r in record["rows"]}
    assert {("tsjepa", "gunpoint", "svm"), ("tsjepa", "gunpoint", "ridge"), ("random-init", "-", "svm"),
            ("tsjepa", "corpus (zero-shot)", "svm"), ("rocket", "-", "published")} <= set(rows)
    assert rows[("tsjepa", "gunpoint", "svm")]["accuracy"] > 0.75  # two balanced classes: chance is 0.5
    assert 0 < rows[("tsjepa", "gunpoint", "svm")]["val_accuracy"] <= 1  # 50 series: C is searched
    assert all(r["n_windows"] == 150 for r in record["rows"]) and record["n_train"] == 50
    assert (tmp_path / "classify-ucr" / "gunpoint.png").exists()


def test_pretraining_on_multivariate_unequal_series(tmp_path):
    cfg = compose_config("train", ["data=japanesevowels", f"run_dir={tmp_path}", "train.steps=3",
                                   "train.batch_size=8", "train.warmup=1", "train.log_every=3", *TINY_MODEL])
    ckpt = tsjepa.train.train(cfg)
    config = json.loads((ckpt / "config.json").read_text())
    assert config["encoder"]["span"] == 32 and config["encoder"]["patch_duration"] == 4
    assert config["channels"]["names"][:12] == [f"japanesevowels/dim_{c}" for c in range(12)]


def test_baselines_on_the_archive_split():
    data = load_dataset("japanesevowels")  # multivariate, unequal and shorter than MiniRocket's kernels
    small = LabelledSet(data.name, data.channels, data.classes,
                        type(data.train)(data.train.values[:90], data.train.labels[:90]),
                        type(data.test)(data.test.values[:60], data.test.labels[:60]))
    rows = {r["model"]: r for r in classify_ucr.baseline_rows(small, [0, 1])}
    assert set(rows) == {"minirocket", "dtw-1nn", "raw"}
    assert rows["minirocket"]["n_seeds"] == 2 and "accuracy_std" in rows["minirocket"]
    assert all(r["accuracy"] > 0.5 for r in rows.values())  # 9 speakers: chance is about 0.11


def test_classify_ucr_refuses_other_data(pretrained, tmp_path):
    cfg = compose_config("eval", ["eval=classify-ucr", "data=etth1", f"ckpt={pretrained}", f"out_dir={tmp_path}"])
    with pytest.raises(ValueError, match="scores a classification archive"):
        classify_ucr.run(cfg)
