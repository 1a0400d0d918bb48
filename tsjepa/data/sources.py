"""Dataset cards and loaders: find the file, verify its checksum, download it only when it is missing.

A card is ``datasets/<name>.yaml`` at the repository root (source URL, sha256, license, file layout and
evaluation protocol). The data directory comes from the ``data.dir`` config key, else the
``TSJEPA_DATA_DIR`` environment variable, else ``../shared/datasets`` beside the repository.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from tsjepa.data.timeseries import TimeSeries

REPO_ROOT = Path(__file__).resolve().parents[2]
CARDS_DIR = REPO_ROOT / "datasets"
DATA_DIR_ENV = "TSJEPA_DATA_DIR"


class DatasetError(RuntimeError):
    """The dataset file is missing, corrupt or cannot be fetched."""


@dataclass(frozen=True)
class DatasetCard:
    name: str
    file: str
    url: str
    sha256: str
    license: str
    format: str
    freq: str
    protocol: dict
    time_column: str | None = None
    missing_value: float | None = None  # a code in the file that means "not observed"
    time_from_rows: bool = False  # rows are consecutive steps whatever the timestamps say (standard protocol)
    channel_namespace: str | None = None  # channels of cards sharing it are the same sensors; default: name

    def channel_keys(self, channels: list[str]) -> list[str]:
        """Vocabulary keys of this dataset's channels, ``namespace/channel``: 'OT' of ETTh1 and 'OT' of
        weather are different channels, 'HUFL' of ETTh1 and ETTm1 the same sensor."""
        return [f"{self.channel_namespace or self.name}/{c}" for c in channels]


def load_card(name: str) -> DatasetCard:
    path = CARDS_DIR / f"{name}.yaml"
    if not path.exists():
        known = sorted(p.stem for p in CARDS_DIR.glob("*.yaml"))
        raise DatasetError(f"unknown dataset {name!r}; cards exist for {known}")
    raw = yaml.safe_load(path.read_text())
    fields = DatasetCard.__dataclass_fields__
    return DatasetCard(**{k: v for k, v in raw.items() if k in fields})


def data_dir(configured: str | os.PathLike | None = None) -> Path:
    """The data directory: ``configured``, else ``$TSJEPA_DATA_DIR``, else ``<repo>/../shared/datasets``."""
    chosen = configured or os.environ.get(DATA_DIR_ENV) or REPO_ROOT.parent / "shared" / "datasets"
    return Path(chosen).expanduser().resolve()


def sha256sum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(card: DatasetCard, root: Path, timeout: float = 30.0) -> Path:
    """Path of the card's file under ``root``, downloaded from ``card.url`` if missing; checksum verified."""
    path = root / card.file
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with urllib.request.urlopen(card.url, timeout=timeout) as response:
                with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
                    tmp.write(response.read())
        except OSError as err:
            raise DatasetError(
                f"{card.name}: {path} is missing and the download from {card.url} failed ({err}). "
                f"Put the file there, or point data.dir / ${DATA_DIR_ENV} at a folder that has it."
            ) from err
        if sha256sum(Path(tmp.name)) != card.sha256:
            Path(tmp.name).unlink()
            raise DatasetError(f"{card.name}: downloaded file from {card.url} fails its sha256 check")
        os.replace(tmp.name, path)
    actual = sha256sum(path)
    if actual != card.sha256:
        raise DatasetError(
            f"{card.name}: {path} is corrupt or a different version (sha256 {actual}, card says {card.sha256})"
        )
    return path


def _load_wide_csv(path: Path, card: DatasetCard) -> TimeSeries:
    frame = pd.read_csv(path, parse_dates=[card.time_column]).set_index(card.time_column)
    if card.missing_value is not None:
        frame = frame.replace(card.missing_value, np.nan)
    if card.time_from_rows:  # time t = row number, in units of the card's freq
        frame.index = np.arange(len(frame), dtype=np.float64)
        return TimeSeries.from_wide(frame, name=card.name)
    return TimeSeries.from_wide(frame, step=card.freq, name=card.name)


LOADERS = {"wide_csv": _load_wide_csv}


def load_dataset(name: str, root: str | os.PathLike | None = None) -> TimeSeries:
    """Load dataset ``name`` (a card in ``datasets/``) as a `TimeSeries`."""
    card = load_card(name)
    return LOADERS[card.format](fetch(card, data_dir(root)), card)


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
