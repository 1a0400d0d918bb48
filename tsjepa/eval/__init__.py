"""Evaluation harnesses: ``python -m tsjepa.eval <task> ckpt=... [data=...]``."""

from omegaconf import DictConfig


def single_dataset(cfg: DictConfig, task: str) -> str:
    """The one dataset an eval scores (``cfg.data.datasets`` must name exactly one)."""
    if len(cfg.data.datasets) != 1:
        raise ValueError(f"{task} evaluates one dataset at a time, got data.datasets={list(cfg.data.datasets)}")
    return cfg.data.datasets[0]
