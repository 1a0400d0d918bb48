"""Evaluation harnesses: ``python -m tsjepa.eval <task> ckpt=... [data=...]``."""

import glob

import torch
from omegaconf import DictConfig

from tsjepa.checkpoint import Pretrained, checkpoints_by
from tsjepa.models import Encoder


def single_dataset(cfg: DictConfig, task: str) -> str:
    """The one dataset an eval scores (``cfg.data.datasets`` must name exactly one)."""
    if len(cfg.data.datasets) != 1:
        raise ValueError(f"{task} evaluates one dataset at a time, got data.datasets={list(cfg.data.datasets)}")
    return cfg.data.datasets[0]


def checkpoints_by_seed(ckpt: str, seed: int, seeds: list[int] | None = None) -> dict[int, str]:
    """Seed -> checkpoint path. A ``ckpt`` glob (``'runs/etth1-base-cpu-s*/checkpoints/last'``) gives one
    checkpoint per pretraining seed (read from each one's config.json), optionally narrowed to ``seeds``; each
    seed also draws its random-init twin. A single checkpoint is scored with ``seed``."""
    if not glob.has_magic(ckpt):
        if seeds and list(seeds) != [seed]:
            raise ValueError(f"eval.seeds={list(seeds)} needs one checkpoint per seed: give ckpt as a "
                             "glob, e.g. ckpt='runs/etth1-base-cpu-s*/checkpoints/last'")
        return {int(seed): ckpt}
    found = checkpoints_by(ckpt, lambda config: int(config.get("seed", -1)), "seed")
    wanted = [int(s) for s in seeds] if seeds else sorted(found)
    missing = [s for s in wanted if s not in found]
    if not found or missing:
        raise ValueError(f"ckpt={ckpt} matches no checkpoint of seed(s) {missing or wanted} "
                         f"(found seeds {sorted(found)})")
    return {s: found[s] for s in wanted}


def seed_checkpoints(cfg: DictConfig) -> dict[int, str]:
    """``checkpoints_by_seed`` of an eval config: ``ckpt``, ``seed`` and ``eval.seeds``."""
    return checkpoints_by_seed(str(cfg.ckpt), int(cfg.seed), cfg.eval.seeds)


def frozen_encoders(pretrained: Pretrained, seed: int, random_baseline: bool, device: torch.device
                    ) -> dict[str, Encoder]:
    """The encoders a harness scores: the checkpoint's (``tsjepa``) and, with ``random_baseline``, its random-init
    twin (``random-init``: the same architecture, weights drawn with ``seed``). Seeds torch's global generator
    with ``seed`` either way, so what the harness draws next does not depend on ``random_baseline``."""
    torch.manual_seed(seed)
    encoders = {"tsjepa": pretrained.encoder}
    if random_baseline:
        encoders["random-init"] = Encoder(pretrained.encoder.config).to(device)
    return encoders


def seed_label(seeds: list[int]) -> int | list[int]:
    """A result file's ``seed``: the one pretraining seed scored, or the list of them."""
    return seeds if len(seeds) > 1 else seeds[0]


def pretrain_steps(steps: dict[int, int]) -> int | dict[str, int]:
    """A result file's ``pretrain_step``: the pretraining seeds' common step count, or each seed's."""
    return next(iter(steps.values())) if len(set(steps.values())) == 1 else {str(k): v for k, v in steps.items()}


def seed_fields(checkpoints: dict[int, str], rows_by_seed: dict[int, list[dict]]) -> dict:
    """A result file's fields about the scored pretraining seeds: each seed's checkpoint and (several seeds) each
    seed's rows, from which the mean and std rows were aggregated."""
    return {"checkpoints": {str(k): v for k, v in checkpoints.items()},
            "per_seed": {str(k): v for k, v in rows_by_seed.items()} if len(checkpoints) > 1 else {}}
