"""Dataset cards and loaders: find the file, verify its checksum, download it only when it is missing.

A card is ``datasets/<name>.yaml`` (source URL, sha256, license, file layout and evaluation protocol), shipped
with the package (`tsjepa.resources`). The data directory comes from the ``data.dir`` config key, else the
``TSJEPA_DATA_DIR`` environment variable, else `default_data_dir` (``../shared/datasets`` beside a checkout).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from omegaconf import DictConfig

from tsjepa.data.anomaly import AnomalySet, load_nab, load_smd, load_ucr
from tsjepa.data.collection import SeriesCollection, read_long_csv
from tsjepa.data.files import load_file
from tsjepa.data.labelled import LabelledSet, read_ts_archive, sktime_archive_dir, sktime_shipped
from tsjepa.data.records import RecordSet
from tsjepa.data.timeseries import TimeSeries
from tsjepa.resources import default_data_dir, resource_dir

DATA_DIR_ENV = "TSJEPA_DATA_DIR"


class DatasetError(RuntimeError):
    """The dataset file is missing, corrupt or cannot be fetched."""


@dataclass(frozen=True)
class DatasetCard:
    name: str
    file: str
    url: str | list[str] | None  # None: no public copy of these bytes (the staged corpus)
    sha256: str
    license: str
    format: str
    freq: str
    protocol: dict
    time_column: str | None = None
    missing_value: float | None = None  # a code in the file that means "not observed"
    time_from_rows: bool = False  # rows are consecutive steps whatever the timestamps say (standard protocol)
    channel_namespace: str | None = None  # channels of cards sharing it are the same sensors; default: name
    tree: bool = False  # ``file`` is a folder, checksummed by `tree_sha256`
    channels: tuple[str, ...] = ()  # for record datasets: the time-varying channels, in order
    files: tuple[str, ...] = ()  # for a folder: the files it must hold (relative paths); checksummed alone
    static: tuple[str, ...] = ()  # for record datasets: the static descriptors

    def channel_keys(self, channels: list[str]) -> list[str]:
        """Vocabulary keys of this dataset's channels, ``namespace/channel``: 'OT' of ETTh1 and 'OT' of
        weather are different channels, 'HUFL' of ETTh1 and ETTm1 the same sensor."""
        return [f"{self.channel_namespace or self.name}/{c}" for c in channels]


def load_card(name: str) -> DatasetCard:
    cards = resource_dir("datasets")
    path = cards / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.relative_to(cards).with_suffix("").as_posix() for p in cards.rglob("*.yaml"))
        raise DatasetError(f"unknown dataset {name!r}; cards exist for {known}")
    raw = yaml.safe_load(path.read_text())
    fields = DatasetCard.__dataclass_fields__
    raw = {k: tuple(v) if k in ("channels", "static", "files") else v for k, v in raw.items() if k in fields}
    return DatasetCard(**raw)


def data_dir(configured: str | os.PathLike | None = None) -> Path:
    """The data directory: ``configured``, else ``$TSJEPA_DATA_DIR``, else `default_data_dir`."""
    chosen = configured or os.environ.get(DATA_DIR_ENV) or default_data_dir()
    return Path(chosen).expanduser().resolve()


def sha256sum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_sha256(path: Path, files: tuple[str, ...] = ()) -> str:
    """sha256 of a directory: of the sorted lines ``<relative path> <file sha256>`` of every file in it, or
    of the listed ``files`` only (a missing one hashes as absent, so the check fails)."""
    if files:
        missing = [f for f in files if not (path / f).is_file()]
        if missing:
            return f"missing {missing[:3]}"
        files = sorted(path / f for f in files)
    else:
        files = sorted(p for p in path.rglob("*") if p.is_file())
    lines = "".join(f"{p.relative_to(path).as_posix()} {sha256sum(p)}\n" for p in files)
    return hashlib.sha256(lines.encode()).hexdigest()


def _download(url: str, target: Path, timeout: float) -> None:
    """Fetch ``url`` to ``target``; a ``.tar.gz`` or ``.zip`` is unpacked beside it instead."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url, timeout=timeout) as response, open(target, "wb") as out:
        shutil.copyfileobj(response, out)
    if target.name.endswith((".tar.gz", ".zip")):
        if target.name.endswith(".zip"):
            with zipfile.ZipFile(target) as archive:
                archive.extractall(target.parent)
        else:
            with tarfile.open(target) as archive:
                archive.extractall(target.parent, filter="data")
        target.unlink()


def _basename(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def _download_all(card: DatasetCard, staging: Path, timeout: float) -> Path:
    """Download the card's data into ``staging``; returns the file, or the folder laid out as the card says.

    ``url`` is one file, a list of files / archives unpacked into the folder, or, for a folder card with
    ``files``, a base URL ending in ``/`` that each listed file is fetched from (``url + file``). When archives
    hold the listed files elsewhere, each is found by name and moved into place."""
    urls = [card.url] if isinstance(card.url, str) else list(card.url)
    if not card.tree:
        _download(urls[0], staging / _basename(urls[0]), timeout)
        return staging / _basename(urls[0])
    if card.files and len(urls) == 1 and urls[0].endswith("/"):
        for file in card.files:
            _download(urls[0] + file, staging / file, timeout)
        return staging
    for url in urls:
        _download(url, staging / _basename(url), timeout)
    if not card.files:
        return staging
    tree = staging / ".tree"
    for file in card.files:
        found = [p for p in staging.rglob(Path(file).name) if p.is_file()]
        if found:
            (tree / file).parent.mkdir(parents=True, exist_ok=True)
            os.replace(found[0], tree / file)
    return tree


def fetch(card: DatasetCard, root: Path, timeout: float = 30.0) -> Path:
    """Path of the card's file (or folder, for a card with ``tree: true``) under ``root``, downloaded from
    ``card.url`` (a list of files and ``.tar.gz`` archives for a folder) if missing; checksum verified."""
    path = root / card.file
    checksum = (lambda p: tree_sha256(p, card.files)) if card.tree else sha256sum
    if not path.exists() and card.format == "sktime":  # the archive copy inside sktime's wheel, if it has one
        shipped = sktime_archive_dir() / card.file
        if shipped.exists():
            path = shipped
        elif card.url is None:
            raise DatasetError(f"{card.name}: sktime ships no dataset {card.file!r} (it ships {sktime_shipped()}) "
                               f"and {path} is missing; put the archive's .ts files there, or point data.dir / "
                               f"${DATA_DIR_ENV} at a folder that has them")
    if not path.exists() and card.url is None:
        raise DatasetError(f"{card.name}: {path} is missing and the card names no download URL (the file is staged, "
                           f"not published as is); put it there, or point data.dir / ${DATA_DIR_ENV} at a folder "
                           "that has it")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        urls = ", ".join([card.url] if isinstance(card.url, str) else card.url)
        staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            fetched = _download_all(card, staging, timeout)
        except (OSError, zipfile.BadZipFile, tarfile.TarError) as err:
            shutil.rmtree(staging, ignore_errors=True)
            raise DatasetError(
                f"{card.name}: {path} is missing and the download from {urls} failed ({type(err).__name__}: {err}). "
                f"Put the data there, or point data.dir / ${DATA_DIR_ENV} at a folder that has it."
            ) from err
        if checksum(fetched) != card.sha256:
            shutil.rmtree(staging, ignore_errors=True)
            raise DatasetError(f"{card.name}: data downloaded from {urls} fails its sha256 check")
        os.replace(fetched, path)
        shutil.rmtree(staging, ignore_errors=True)
    actual = checksum(path)
    if actual != card.sha256:
        raise DatasetError(
            f"{card.name}: {path} is corrupt or a different version (sha256 {actual}, card says {card.sha256})"
        )
    return path


def _load_wide_csv(path: Path, card: DatasetCard) -> TimeSeries:
    dates = [] if card.time_from_rows else [card.time_column]  # row numbers replace the stamps anyway
    frame = pd.read_csv(path, parse_dates=dates).set_index(card.time_column)
    if card.missing_value is not None:
        frame = frame.replace(card.missing_value, np.nan)
    if card.time_from_rows:  # time t = row number, in units of the card's freq
        frame.index = np.arange(len(frame), dtype=np.float64)
        return TimeSeries.from_wide(frame, name=card.name)
    return TimeSeries.from_wide(frame, step=card.freq, name=card.name)


def _load_physionet(path: Path, card: DatasetCard) -> RecordSet:
    """PhysioNet/CinC 2012: one ``Time,Parameter,Value`` file per ICU stay, times ``HH:MM`` since admission.

    Every observation keeps its own time (hours, float); the first ``00:00`` value of each static descriptor
    is metadata, later rows of the same name (e.g. ``Weight``) are observations. ``missing_value`` (-1) is a
    placeholder for "not measured", in static descriptors and observations alike; two values of one
    parameter at the same minute are averaged. Stays without a single
    time-varying observation are left out (three in set-a).
    """
    protocol, index = card.protocol, {c: i for i, c in enumerate(card.channels)}
    outcomes = pd.read_csv(path / protocol["outcomes"]).set_index("RecordID")
    files = sorted((path / protocol["records"]).glob("*.txt"))
    times, values, static, ids = [], [], [], []
    for file in files:
        rows = [line.split(",") for line in file.read_text().splitlines()[1:] if line]
        descriptors: dict[str, float] = {}
        stamps, cols, vals = [], [], []
        for stamp, parameter, value in rows:
            hours, minutes = stamp.split(":")
            t = int(hours) + int(minutes) / 60
            if t == 0 and parameter in card.static and parameter not in descriptors:
                descriptors[parameter] = float(value)
            elif parameter in index:
                stamps.append(t), cols.append(index[parameter]), vals.append(float(value))
            elif parameter not in card.static:
                raise DatasetError(f"{file}: unknown parameter {parameter!r} (card channels: {card.channels})")
        vals = np.array(vals, dtype=np.float64)
        seen = vals != card.missing_value
        grid, row = np.unique(np.array(stamps, dtype=np.float64), return_inverse=True)
        cols = np.array(cols, dtype=np.int64)
        total = np.zeros((len(grid), len(card.channels)))
        count = np.zeros((len(grid), len(card.channels)))
        np.add.at(total, (row[seen], cols[seen]), vals[seen])
        np.add.at(count, (row[seen], cols[seen]), 1)
        with np.errstate(invalid="ignore"):  # a repeated (time, parameter) is averaged, as in mTAND/Latent ODE
            dense = (total / count).astype(np.float32)
        keep = ~np.isnan(dense).all(1)
        if not keep.any():  # a stay with descriptors only: nothing to encode (see the card)
            continue
        times.append(grid[keep]), values.append(dense[keep])
        static.append([descriptors.get(k, np.nan) for k in card.static])
        ids.append(int(descriptors["RecordID"]))
    static = np.array(static, dtype=np.float32)
    static[static == card.missing_value] = np.nan
    ids = np.array(ids, dtype=np.int64)
    missing = sorted(set(ids) - set(outcomes.index))
    if missing:
        raise DatasetError(f"{card.name}: records {missing[:5]} have no outcome in {protocol['outcomes']}")
    labels = outcomes.loc[ids, protocol["label"]].to_numpy().astype(np.int64)
    names = [k for k in card.static if k != "RecordID"]
    return RecordSet(card.name, times, values, list(card.channels), static[:, 1:], names, labels, ids)


LOADERS = {
    "wide_csv": _load_wide_csv,
    "long_csv": lambda path, card: read_long_csv(path, card.name),
    "physionet2012": _load_physionet,
    "smd": lambda path, card: load_smd(path, card.name, card.files),
    "nab": lambda path, card: load_nab(path, card.name, card.files),
    "ucr": lambda path, card: load_ucr(path, card.name, card.files),
    "sktime": lambda path, card: read_ts_archive(path, Path(card.file).name, card.name),
}


def load_dataset(name: str, root: str | os.PathLike | None = None
                 ) -> TimeSeries | RecordSet | AnomalySet | SeriesCollection | LabelledSet:
    """Load dataset ``name`` (a card in ``datasets/``): a `TimeSeries`, a `RecordSet` for record data, an
    `AnomalySet` for a labelled anomaly benchmark, a `SeriesCollection` for a long-format collection, or a
    `LabelledSet` for a classification archive (``format: sktime``)."""
    card = load_card(name)
    return LOADERS[card.format](fetch(card, data_dir(root)), card)


def load_source(name: str, data: DictConfig
                ) -> tuple[TimeSeries | RecordSet | AnomalySet | SeriesCollection | LabelledSet, DatasetCard]:
    """A dataset named in ``data.datasets`` and its card: a card in ``datasets/``, or ``file`` for the user's
    own file (``data.path``, see `tsjepa.data.files`)."""
    if name == "file":
        return load_file(data)
    return load_dataset(name, data.get("dir")), load_card(name)


def split_rows(card: DatasetCard, n_rows: int, lookback: int) -> dict[str, tuple[int, int]]:
    """Row ranges ``[start, end)`` of train / val / test under the card's protocol.

    Val and test ranges start ``lookback`` rows early so their first window's lookback is available, as in
    the standard ETT protocol (train ``[0, 8640)``, val ``[8640 - L, 11520)``, test ``[11520 - L, 14400)``).
    Protocol ``fractions: [0.7, 0.1, 0.2]`` gives the usual 70/10/20 split.
    """
    if "borders" in card.protocol:
        train_end, val_end, test_end = card.protocol["borders"]
    else:
        train_frac, _, test_frac = card.protocol["fractions"]
        train_end = int(n_rows * train_frac)
        test_end = n_rows
        val_end = n_rows - int(n_rows * test_frac)
    if test_end > n_rows:
        raise DatasetError(f"{card.name}: protocol needs {test_end} rows, file has {n_rows}")
    return {
        "train": (0, train_end),
        "val": (train_end - lookback, val_end),
        "test": (val_end - lookback, test_end),
    }
