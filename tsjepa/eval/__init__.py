"""Evaluation harnesses: ``python -m tsjepa.eval <task> ckpt=... [data=...]``."""

import glob

from omegaconf import DictConfig

from tsjepa.checkpoint import checkpoints_by


def single_dataset(cfg: DictConfig, task: str) -> str:
    """The one dataset an eval scores (``cfg.data.datasets`` must name exactly one)."""
    if len(cfg.data.datasets) != 1:
        raise ValueError(f"{task} evaluates one dataset at a time, got data.datasets={list(cfg.data.datasets)}")
    return cfg.data.datasets[0]


def seed_checkpoints(cfg: DictConfig) -> dict[int, str]:
    """Seed -> checkpoint path. A ``ckpt`` glob (``'runs/etth1-base-cpu-s*/checkpoints/last'``) gives one
    checkpoint per pretraining seed (read from each one's config.json), optionally narrowed to
    ``eval.seeds``; each seed also draws its random-init twin. A single checkpoint is scored with ``seed``."""
    if not glob.has_magic(str(cfg.ckpt)):
        if cfg.eval.seeds and list(cfg.eval.seeds) != [cfg.seed]:
            raise ValueError(f"eval.seeds={list(cfg.eval.seeds)} needs one checkpoint per seed: give ckpt as a "
                             "glob, e.g. ckpt='runs/etth1-base-cpu-s*/checkpoints/last'")
        return {int(cfg.seed): str(cfg.ckpt)}
    found = checkpoints_by(str(cfg.ckpt), lambda config: int(config.get("seed", -1)), "seed")
    wanted = [int(s) for s in cfg.eval.seeds] if cfg.eval.seeds else sorted(found)
    missing = [s for s in wanted if s not in found]
    if not found or missing:
        raise ValueError(f"ckpt={cfg.ckpt} matches no checkpoint of seed(s) {missing or wanted} "
                         f"(found seeds {sorted(found)})")
    return {s: found[s] for s in wanted}
