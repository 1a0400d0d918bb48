"""The main job from Python: ``tsjepa.pretrain(data, **overrides)``, the same run as ``python -m tsjepa.train``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tsjepa.checkpoint import Pretrained, from_pretrained
from tsjepa.data.files import file_card, read_file
from tsjepa.data.timeseries import as_timeseries
from tsjepa.resources import resource_dir

GROUPS = ("data", "model", "train")  # config groups: a string value picks a preset, a dict sets its keys


def _flatten(prefix: str, value: Any) -> list[str]:
    if isinstance(value, dict):
        return [o for k, v in value.items() for o in _flatten(f"{prefix}.{k}", v)]
    if isinstance(value, list | tuple):
        return [f"{prefix}=[{','.join(str(v) for v in value)}]"]
    return [f"{prefix}={'null' if value is None else value}"]


def pretrain_config(data: str, overrides: dict[str, Any]) -> DictConfig:
    """The composed training config for data preset ``data`` and keyword ``overrides``: a group name with a
    string picks its preset (``model="large"``), with a dict sets keys (``train={"steps": 600}``); any other
    key is a top-level or dotted key (``seed=1``, ``run_dir="runs/mine"``)."""
    args = [f"data={data}"]
    for key, value in overrides.items():
        if key in GROUPS and isinstance(value, str):
            args.append(f"{key}={value}")
        else:
            args += _flatten(key, value)
    with initialize_config_dir(config_dir=str(resource_dir("configs")), version_base="1.3"):
        return compose(config_name="train", overrides=args)


def pretrain(data: Any, data_options: dict[str, Any] | None = None, **overrides: Any) -> Pretrained:
    """Pretrain an encoder and return it, exactly as ``python -m tsjepa.train`` would (same defaults,
    checkpoints under ``run_dir``, resume, progress bar, seeding by (seed, step)).

    Args:
        data: a dataset card's name (``"etth1"``), a path to a CSV / Parquet / NetCDF / Zarr file (as
            ``data=file data.path=...``), or anything `as_timeseries` accepts (a DataFrame, an xarray object,
            a `TimeSeries`); a series in memory is split 70/10/20 in time and pretrained on its train part.
        data_options: keys of the data config, e.g. ``{"lookback": 512}`` or, for files and series,
            ``{"fractions": [0.8, 0.1, 0.1], "namespace": "plant"}``.
        overrides: other config keys, e.g. ``train={"steps": 600}``, ``model="large"``, ``seed=1``,
            ``run_dir="runs/mine"``.
    """
    from tsjepa.train import train

    options = {"data": data_options} if data_options else {}
    if isinstance(data, str | Path) and Path(data).suffix == "" and not Path(data).exists():
        cfg = pretrain_config(str(data), {**options, **overrides})
        return from_pretrained(train(cfg))
    if isinstance(data, str | Path):
        series = read_file(data, **{k: v for k, v in (data_options or {}).items()
                                    if k in ("format", "time_column", "channel_column", "value_column", "freq")})
        data_options = {**(data_options or {}), "path": str(data)}
    else:
        series = as_timeseries(data)
    options = {"data": {"name": series.name, **(data_options or {})}}
    cfg = pretrain_config("file", {**options, **overrides})
    card = file_card(cfg.data, series.name, str(cfg.data.path or ""))
    return from_pretrained(train(cfg, sources=[(series, card)]))
