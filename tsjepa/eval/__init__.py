"""Evaluation harnesses: ``python -m tsjepa.eval <task> ckpt=... [data=...]``."""

import glob
from dataclasses import dataclass, field

import torch
from omegaconf import DictConfig

from tsjepa.checkpoint import Pretrained, checkpoints_by
from tsjepa.models import Encoder
from tsjepa.results import aggregate_seeds


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


def frozen_encoders(pretrained: Pretrained, seed: int, random_baseline: bool, device: torch.device,
                    span: float | None = None) -> dict[str, Encoder]:
    """The encoders a harness scores: the checkpoint's (``tsjepa``) and, with ``random_baseline``, its random-init
    twin (``random-init``: the same architecture, weights drawn with ``seed``). Seeds torch's global generator
    with ``seed`` either way, so what the harness draws next does not depend on ``random_baseline``. With
    ``span``, both are cropped to windows of that many time units (`Encoder.cropped`: e.g. 48-h records or 64-row
    windows under the 336-unit corpus encoder)."""
    torch.manual_seed(seed)
    encoders = {"tsjepa": pretrained.encoder}
    if random_baseline:
        encoders["random-init"] = Encoder(pretrained.encoder.config).to(device)
    return encoders if span is None else {name: encoder.cropped(span) for name, encoder in encoders.items()}


@dataclass
class SeedRows:
    """A harness's result rows per pretraining seed, with each seed's checkpoint and pretraining steps: what it
    aggregates (mean, ``<metric>_std``, ``n_seeds``) and records in its result file."""

    checkpoints: dict[int, str | dict[int, str]] = field(default_factory=dict)
    by_seed: dict[int, list[dict]] = field(default_factory=dict)
    steps: dict[int, int | dict[int, int]] = field(default_factory=dict)

    def add(self, seed: int, ckpt: str | dict[int, str], step: int | dict[int, int], rows: list[dict]) -> None:
        """Record one seed's checkpoint (or fold -> checkpoint, for a harness that pretrains per held-out fold),
        its pretraining step count (or fold -> steps) and its rows."""
        self.checkpoints[seed], self.steps[seed], self.by_seed[seed] = ckpt, step, rows

    @property
    def seeds(self) -> list[int]:
        return list(self.checkpoints)

    @property
    def label(self) -> int | list[int]:
        """A result file's ``seed``: the one pretraining seed scored, or the list of them."""
        return self.seeds if len(self.seeds) > 1 else self.seeds[0]

    def aggregate(self, keys: tuple[str, ...], metrics: tuple[str, ...]) -> list[dict]:
        """One row per ``keys`` value: mean over seeds, ``<metric>_std`` and ``n_seeds`` (``aggregate_seeds``)."""
        return aggregate_seeds(self.by_seed, keys=keys, metrics=metrics)

    def record(self) -> dict:
        """The result file's fields about the scored seeds: each seed's checkpoint(s), the pretraining step count
        common to every checkpoint (or each seed's, per fold where given), and (several seeds) each seed's rows,
        from which the mean and std rows came."""
        counts = [n for step in self.steps.values() for n in (step.values() if isinstance(step, dict) else (step,))]
        common = all(n == counts[0] for n in counts)
        return {"checkpoints": {str(k): v for k, v in self.checkpoints.items()},
                "per_seed": {str(k): v for k, v in self.by_seed.items()} if len(self.seeds) > 1 else {},
                "pretrain_step": counts[0] if common else {str(k): v for k, v in self.steps.items()}}
