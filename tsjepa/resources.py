"""Where the Hydra configs and the dataset cards live: inside the installed package (a wheel carries them
as ``tsjepa/configs`` and ``tsjepa/datasets``), or at the root of a source checkout (``configs/``,
``datasets/``; an editable install reads them there)."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
CHECKOUT = PACKAGE_DIR.parent  # the repository root when tsjepa runs from a source checkout


def in_checkout() -> bool:
    """True when tsjepa runs from its source tree (not from an installed wheel)."""
    return (CHECKOUT / "pyproject.toml").is_file() and (CHECKOUT / "configs").is_dir()


def resource_dir(name: str) -> Path:
    """``configs`` or ``datasets``: the packaged copy when there is one, else the checkout's folder."""
    if name not in ("configs", "datasets"):
        raise ValueError(f"unknown resource folder {name!r}")
    packaged = PACKAGE_DIR / name
    if packaged.is_dir():
        return packaged
    if in_checkout():
        return CHECKOUT / name
    raise FileNotFoundError(f"tsjepa's {name}/ is neither inside the package ({packaged}) nor in a source "
                            f"checkout ({CHECKOUT / name}); reinstall tsjepa")


def default_data_dir() -> Path:
    """``../shared/datasets`` beside a source checkout; for an installed package the user cache
    (``$XDG_CACHE_HOME/tsjepa/datasets``, default ``~/.cache/tsjepa/datasets``), where missing files are
    downloaded."""
    if in_checkout():
        return CHECKOUT.parent / "shared" / "datasets"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tsjepa" / "datasets"
