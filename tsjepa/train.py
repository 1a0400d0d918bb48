"""Pretrain an encoder with JEPA + SIGReg: ``python -m tsjepa.train data=etth1``.

Reads the train split only. Each step is seeded by (seed, step), so a run resumed from its last checkpoint
reproduces the uninterrupted run. (``python -m`` imports the ``tsjepa`` package first, which sets
OMP_WAIT_POLICY before torch loads.) Under ``torchrun`` it runs DistributedDataParallel: each rank samples
from its own shard of windows and SIGReg sees the global batch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from tsjepa.atomic import recover_dir, write_file
from tsjepa.checkpoint import (
    CheckpointError,
    load_into,
    load_optimizer,
    load_weights,
    read_config,
    save_pretrained,
    with_added_fields,
)
from tsjepa.contrastive import Contrastive
from tsjepa.data.anomaly import AnomalySet
from tsjepa.data.batch import Batch
from tsjepa.data.collection import SeriesCollection, collection_windows
from tsjepa.data.labelled import LabelledSet
from tsjepa.data.records import ClippedScaler, RecordSet, RecordWindows
from tsjepa.data.sources import DatasetCard, load_source, split_rows
from tsjepa.data.timeseries import TimeSeries, fixed_duration
from tsjepa.data.vocab import UNKNOWN, ChannelVocab
from tsjepa.data.windows import SpanWindows, TiledSeries, Windows, fit_scaler, labelled_scaler, observed_ends
from tsjepa.device import device_description, peak_memory_gb, release_freed_host_memory, resolve_device
from tsjepa.diagnostics import embedding_report, patch_recoverability, position_r2, slot_share
from tsjepa.masked_modelling import MaskedReconstruction
from tsjepa.models import Encoder, EncoderConfig, Predictor, PredictorConfig
from tsjepa.objective import JEPA, Objective, ObjectiveConfig
from tsjepa.resources import resource_dir
from tsjepa.runlock import RunLock

CONFIG_DIR = str(resource_dir("configs"))
TRIM_EVERY = 10  # steps between handing freed host memory back to the OS


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> Distributed:
    """Join the process group when launched by torchrun (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Distributed()
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(dist.get_rank(), dist.get_world_size())


def pretraining_windows(cfg: DictConfig, sources: list[tuple[TimeSeries, DatasetCard]] | None = None
                        ) -> tuple[list[Windows | RecordWindows | SpanWindows | TiledSeries], ChannelVocab]:
    """Train-split windows (no val/test rows, no held-out records) of every dataset in ``cfg.data.datasets``
    (or of the given ``sources``: (data, card) pairs already loaded), and their vocabulary.

    Pretraining-only cards (the corpus, ``protocol.pretrain_only``) give windows over every row: windows of
    ``data.lookback`` time units ending after each row whose window holds at least ``data.min_observed``
    rows with an observation (early windows are padded as unobserved); a long-format collection gives such
    windows over each of its series (`collection_windows`); a classification archive gives its train series,
    each tiled from its last row by windows of ``data.lookback`` rows (`TiledSeries`). With ``data.unknown_channel_prob > 0`` the
    vocabulary also holds `UNKNOWN`."""
    sources = sources or [load_source(name, cfg.data) for name in cfg.data.datasets]
    loaded, cards = zip(*sources, strict=True)
    keys = [card.channel_keys(data.channels) for data, card in zip(loaded, cards, strict=True)]
    vocab = ChannelVocab(capacity=cfg.model.encoder.channel_capacity)
    for names in keys:
        vocab.extend(names)
    if cfg.data.get("unknown_channel_prob", 0.0) > 0:
        vocab.extend([UNKNOWN])
    min_observed = cfg.data.get("min_observed", 1)
    windows = []
    for data, card, names in zip(loaded, cards, keys, strict=True):
        if isinstance(data, SeriesCollection):
            found, skipped = collection_windows(data, float(cfg.data.lookback), min_observed, vocab.ids(names)[0])
            windows.append(found)
            if skipped:
                print(f"{card.name}: {skipped} of {len(data)} series are shorter than data.min_observed="
                      f"{min_observed} and were skipped")
        elif card.protocol.get("pretrain_only"):
            span = cfg.data.lookback * data.interval
            windows.append(SpanWindows(data, observed_ends(data, span, min_observed), span, 0, vocab.ids(names),
                                       fit_scaler(data, (0, len(data)))))
        elif isinstance(data, RecordSet):
            train = data.subset(data.split(cfg.data.fold, cfg.data.folds, cfg.data.fold_seed)[0])
            scaler = ClippedScaler().fit(train.observations())
            windows.append(RecordWindows(train, vocab.ids(names), scaler, card.protocol["span"]))
        elif isinstance(data, LabelledSet):  # the train split's series, tiled by windows of data.lookback rows
            windows.append(TiledSeries(data.train.values, float(cfg.data.lookback), vocab.ids(names),
                                       labelled_scaler(data.train.observations())))
        elif isinstance(data, AnomalySet):  # each series' normal train rows, scaled on them
            for item in data.series:
                train_rows = (0, item.test_start)
                windows.append(Windows(item.series, train_rows, cfg.data.lookback, 0, vocab.ids(names),
                                       fit_scaler(item.series, train_rows)))
        else:
            train_rows = split_rows(card, len(data), cfg.data.lookback)["train"]
            if train_rows[1] - train_rows[0] <= cfg.data.lookback:
                raise ValueError(f"{card.name}: its train split holds {train_rows[1] - train_rows[0]} of {len(data)} "
                                 f"rows, fewer than one window of data.lookback={cfg.data.lookback} rows plus one; "
                                 "give it more rows, or lower data.lookback")
            windows.append(Windows(data, train_rows, cfg.data.lookback, 0, vocab.ids(names),
                                   fit_scaler(data, train_rows)))
    spans = {w.span for w in windows}
    if len(spans) > 1:
        raise ValueError(f"datasets give different window spans {spans}; use one time unit per patch")
    return windows, vocab


def sample_batch(windows: list[Windows | RecordWindows | SpanWindows | TiledSeries], batch_size: int, gen: torch.Generator,
                 ddp: Distributed, alpha: float = 1.0, max_channels: int | None = None,
                 unknown: tuple[int, float] | None = None) -> Batch:
    """Pick a dataset with probability proportional to (its number of windows) ** ``alpha`` (1: as sampled
    uniformly over all windows; smaller: small datasets drawn more often), then ``batch_size`` windows from
    this rank's shard; keep at most ``max_channels`` of its channels (one random subset per batch). With
    ``unknown = (id, p)``, each (window, channel) is presented under the unknown identity ``id`` with
    probability ``p``."""
    sizes = torch.tensor([len(w) for w in windows], dtype=torch.float) ** alpha
    source = windows[int(torch.multinomial(sizes, 1, generator=gen))]
    shard = torch.arange(ddp.rank, len(source), ddp.world)
    draws = torch.randint(len(shard), (ddp.world, batch_size), generator=gen)[ddp.rank]
    batch = source.batch(shard[draws])
    n_channels = batch.channel_ids.shape[1]
    if max_channels is not None and n_channels > max_channels:  # a random subset, observed channels first
        order = torch.randperm(n_channels, generator=gen)
        seen = batch.observed.any(2).any(0)[order]
        order = order[torch.argsort((~seen).to(torch.int8), stable=True)]
        batch = batch.select_channels(order[:max_channels].sort().values)
    if unknown is not None:
        hidden = torch.rand(batch.channel_ids.shape, generator=gen) < unknown[1]
        batch.channel_ids = batch.channel_ids.masked_fill(hidden, unknown[0])
    return batch


def learning_rate(step: int, cfg: DictConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_step(model: torch.nn.Module, jepa: Objective, optimizer: torch.optim.Optimizer, batch: Batch, step: int,
               gen: torch.Generator, schedule: DictConfig, autocast: torch.autocast, with_embeddings: bool = False
               ) -> dict[str, torch.Tensor]:
    """One optimisation step of ``jepa`` (called through ``model``: itself, or its DDP wrapper) on ``batch``:
    the learning rate of ``step`` (`learning_rate` of the ``train`` config ``schedule``), the forward pass under
    ``autocast`` (masks drawn from ``gen``), backward, gradient clipping at ``schedule.grad_clip``, the optimizer
    step and the target update. Returns the objective's outputs (``loss`` and its parts; the token
    ``embeddings`` when ``with_embeddings``)."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step, schedule)
    with autocast:
        out = model(batch, step, gen, with_embeddings=with_embeddings)
    optimizer.zero_grad(set_to_none=True)
    out["loss"].backward()
    torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]],
                                   schedule.grad_clip)
    optimizer.step()
    jepa.update_target()
    return out


def build(cfg: DictConfig, span: float, seed: int) -> Objective:
    """The configured objective (``model.objective.kind``) around a new encoder of windows of ``span``."""
    encoder = Encoder(EncoderConfig(span=span, **cfg.model.encoder))
    objective = ObjectiveConfig(**OmegaConf.to_container(cfg.model.objective, resolve=True))
    if objective.kind == "mae":
        return MaskedReconstruction(encoder, objective, seed=seed)
    if objective.kind == "contrastive":
        return Contrastive(encoder, objective, seed=seed)
    predictor = Predictor(PredictorConfig(**cfg.model.predictor), encoder.config.d_model,
                          encoder.config.channel_capacity)
    return JEPA(encoder, predictor, objective, seed=seed)


def restore(jepa: Objective, optimizer: torch.optim.Optimizer, path: Path) -> int:
    """Load weights and optimizer state of a training checkpoint; returns its step."""
    weights = load_weights(path)
    load_into(jepa.encoder, weights, "encoder", path)
    if jepa.predictor is not None:
        load_into(jepa.predictor, weights, "predictor", path)
    for name, module in jepa.training_modules().items():
        load_into(module, weights, name, path)
    if not (path / "optimizer.safetensors").exists():
        raise CheckpointError(f"{path} holds no optimizer state; it cannot be resumed")
    load_optimizer(path, optimizer)
    return int(read_config(path)["step"])


PRECISIONS = ("fp32", "bf16")
# keys that may differ when a run resumes: a longer schedule, logging, where data and compute come from
RESUMABLE = ("train.steps", "train.log_every", "train.ckpt_every", "train.keep_every", "train.diagnostic_tokens",
             "train.resume", "train.device", "data.dir")


def check_config(cfg: DictConfig) -> None:
    """Range-check the training keys before any work starts; one ValueError naming every bad key."""
    t = cfg.train
    rules = {
        "train.steps": (t.steps, t.steps >= 1, ">= 1"),
        "train.batch_size": (t.batch_size, t.batch_size >= 1, ">= 1"),
        "train.lr": (t.lr, t.lr > 0, "> 0"),
        "train.warmup": (t.warmup, t.warmup >= 0, ">= 0"),
        "train.min_lr_ratio": (t.min_lr_ratio, 0 <= t.min_lr_ratio <= 1, "in [0, 1]"),
        "train.weight_decay": (t.weight_decay, t.weight_decay >= 0, ">= 0"),
        "train.grad_clip": (t.grad_clip, t.grad_clip > 0, "> 0"),
        "train.log_every": (t.log_every, t.log_every >= 1, ">= 1"),
        "train.ckpt_every": (t.ckpt_every, t.ckpt_every >= 1, ">= 1"),
        "train.keep_every": (t.get("keep_every", 0), t.get("keep_every", 0) >= 0, ">= 0 (0: keep none)"),
        "train.diagnostic_tokens": (t.diagnostic_tokens, t.diagnostic_tokens >= 4, ">= 4"),
        "train.precision": (t.precision, t.precision in PRECISIONS, f"one of {PRECISIONS}"),
        "data.lookback": (cfg.data.lookback, cfg.data.lookback is None or cfg.data.lookback >= 1,
                          ">= 1 (null for record datasets)"),
    }
    bad = [f"{key}={value!r} (must be {want})" for key, (value, ok, want) in rules.items() if not ok]
    if bad:
        raise ValueError("invalid training config: " + "; ".join(bad))


def flat(tree: dict, prefix: str = "") -> dict:
    """Nested dict -> ``{"a.b": value}``."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def data_identity(data: TimeSeries | RecordSet | AnomalySet | SeriesCollection, card: DatasetCard) -> str:
    """What the data of one source was: its card's sha256 (the loader verified the bytes against it), or for a
    user's own file or in-memory series (no card checksum) the sha256 of its values, timestamps, channel names
    and step, so an edited file makes another run."""
    if card.sha256:
        return card.sha256
    if not isinstance(data, TimeSeries):
        raise TypeError(f"{card.name}: a source without a card checksum must be a TimeSeries, got "
                        f"{type(data).__name__}")
    digest = hashlib.sha256()
    array = data.data
    for part in (array.values, array["time"].values, repr(list(array["channel"].values)), repr(array.attrs.get("step"))):
        digest.update(part.tobytes() if hasattr(part, "tobytes") else part.encode())
    return "content:" + digest.hexdigest()


def time_unit(data: TimeSeries | RecordSet | AnomalySet | SeriesCollection, card: DatasetCard) -> str | None:
    """One model time unit of a source: its card's ``freq``, else the step of a datetime series, as a duration
    (``0 days 01:00:00`` for hourly data read in hours) where it is a fixed one, else as the card writes it
    (``1 month``); None where times are plain numbers of no stated unit."""
    step = card.freq or (data.data.attrs.get("step") if isinstance(data, TimeSeries) else None)
    duration = fixed_duration(step)
    return str(duration) if duration is not None else (str(step) if step else None)


def run_identity(config: dict) -> dict:
    """What makes a run the same run: data (and what the data was, `data_identity`), model, objective,
    schedule and seed of a checkpoint config. An encoder or objective option the checkpoint does not name, of
    those added after checkpoints were first written (`ADDED_FIELDS`), did not exist then: the run had its
    default."""
    keys = ("data", "encoder", "predictor", "objective", "train", "seed", "data_identity")
    tree = {k: config.get(k) for k in keys}
    tree["objective"] = with_added_fields("objective", tree["objective"] or {}, ObjectiveConfig().to_dict())
    tree["encoder"] = with_added_fields("encoder", tree["encoder"] or {}, EncoderConfig().to_dict())
    return {k: v for k, v in flat(tree).items() if k not in RESUMABLE}


def check_resumable(path: Path, config: dict, steps: int) -> None:
    """Refuse to continue the checkpoint at ``path`` with a different configuration ``config``, or to a
    shorter schedule than it has already run."""
    saved = read_config(path)
    old, new = run_identity(saved), run_identity(config)
    if "data_identity" not in saved:  # written before runs recorded their data: nothing to compare it with
        new = {k: v for k, v in new.items() if not k.startswith("data_identity.")}
    changed = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    run_dir = path.parents[1]
    if changed:
        raise ValueError(f"{run_dir} holds a run with another configuration ({'; '.join(changed)}). Only a longer "
                         "train.steps may change on resume: start a new run with run_dir=<new folder>, or "
                         f"delete {run_dir} to start this one over")
    if saved["step"] > steps:
        raise ValueError(f"{run_dir} has already run {saved['step']} steps, more than train.steps={steps}; "
                         "use a new run_dir for a shorter run")


def trim_metrics(path: Path, step: int) -> None:
    """Drop the log lines of steps after ``step`` (logged after the last checkpoint by a run that was then
    interrupted), so a resumed run logs each step once."""
    if path.exists():
        lines = path.read_text().splitlines()
        kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
        if len(kept) != len(lines):
            write_file(path, "".join(f"{line}\n" for line in kept))


def train(cfg: DictConfig, sources: list[tuple[TimeSeries, DatasetCard]] | None = None) -> Path:
    """Run pretraining as configured (on ``sources`` instead of ``cfg.data.datasets`` when given: (data, card)
    pairs already in memory); returns the final checkpoint directory. The run folder is held exclusively
    (`RunLock`) from before its checkpoint is read until the run ends: a second run on it fails at once."""
    check_config(cfg)
    main = int(os.environ.get("RANK", "0")) == 0
    with RunLock(cfg.run_dir) if main else contextlib.nullcontext():
        return run_training(cfg, sources)


def run_training(cfg: DictConfig, sources: list[tuple[TimeSeries, DatasetCard]] | None) -> Path:
    """The body of `train`, under its run-folder lock."""
    device = resolve_device(cfg.train.device)
    ddp = setup_distributed(device)
    if device.type == "cuda":
        device = torch.device("cuda", ddp.rank % torch.cuda.device_count())
    torch.manual_seed(cfg.seed)
    sources = sources or [load_source(name, cfg.data) for name in cfg.data.datasets]
    windows, vocab = pretraining_windows(cfg, sources)
    p_unknown = cfg.data.get("unknown_channel_prob", 0.0)
    mixture = {"alpha": cfg.data.get("mixture_alpha", 1.0), "max_channels": cfg.data.get("max_channels"),
               "unknown": (int(vocab.ids([UNKNOWN])[0]), p_unknown) if p_unknown > 0 else None}
    jepa = build(cfg, windows[0].span, cfg.seed).to(device)
    model = torch.nn.parallel.DistributedDataParallel(jepa) if ddp.world > 1 else jepa
    params = [p for p in jepa.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    run_dir = Path(cfg.run_dir)
    last = run_dir / "checkpoints" / "last"
    extra = {"data": OmegaConf.to_container(cfg.data, resolve=True),
             "objective": OmegaConf.to_container(cfg.model.objective, resolve=True),
             "train": OmegaConf.to_container(cfg.train, resolve=True), "seed": cfg.seed,
             "data_identity": {card.name: data_identity(data, card) for data, card in sources},
             "time_units": {card.name: time_unit(data, card) for data, card in sources}}
    if ddp.main:
        repaired = recover_dir(last)
        if repaired:
            print(f"{last}: an interrupted checkpoint save was repaired: {repaired}")
    if last.exists():
        if not cfg.train.resume:
            raise ValueError(f"{run_dir} already holds a checkpoint and train.resume=false: choose a new run_dir, "
                             f"or delete {run_dir} to start over")
        predictor = jepa.predictor and jepa.predictor.config.to_dict()
        check_resumable(last, {"encoder": jepa.encoder.config.to_dict(), "predictor": predictor, **extra},
                        cfg.train.steps)
    step = restore(jepa, optimizer, last) if last.exists() else 0
    # what ran each stretch of steps: a seeded run repeats bit for bit only on the same CPU model, instruction set,
    # thread count and torch build (or GPU), so the checkpoint says which ran it
    here = device_description(device)
    machines = read_config(last).get("machines", []) if last.exists() else []
    if not machines or machines[-1]["device"] != here:
        machines.append({"from_step": step, "device": here})
    extra["machines"] = machines
    logger = None
    if ddp.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        trim_metrics(run_dir / "metrics.jsonl", step)
        if cfg.wandb.mode != "disabled":
            import wandb

            logger = wandb.init(project=cfg.wandb.project, mode=cfg.wandb.mode, dir=str(run_dir),
                                config=OmegaConf.to_container(cfg, resolve=True))
        if step:
            print(f"resuming {run_dir} from step {step}")

    def checkpoint(at: int) -> None:
        if ddp.main:
            save_pretrained(last, jepa.encoder, vocab, jepa.predictor, jepa.training_modules(), optimizer, at,
                            extra)
            if keep_every and at % keep_every == 0:  # a kept snapshot for step curves (no optimizer state)
                save_pretrained(last.with_name(f"step-{at}"), jepa.encoder, vocab, jepa.predictor, step=at,
                                extra=extra)

    keep_every = cfg.train.get("keep_every", 0)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.train.precision == "bf16")
    progress = tqdm(range(step, cfg.train.steps), initial=step, total=cfg.train.steps, disable=not ddp.main,
                    desc="pretrain", dynamic_ncols=True)
    for step in progress:
        step_seed = cfg.seed * 1_000_003 + step
        gen = torch.Generator().manual_seed(step_seed)  # batch and masks
        torch.manual_seed(step_seed)  # dropout etc.
        batch = sample_batch(windows, cfg.train.batch_size, gen, ddp, **mixture).to(device)
        logs = ddp.main and ((step + 1) % cfg.train.log_every == 0 or step + 1 == cfg.train.steps)
        out = train_step(model, jepa, optimizer, batch, step, gen, cfg.train, autocast, with_embeddings=logs)
        if (step + 1) % TRIM_EVERY == 0:  # keep host memory from growing with the steps (see the function)
            release_freed_host_memory()
        if logs:
            tokens = slice(0, cfg.train.diagnostic_tokens)
            slots = jepa.patch_values(batch)  # [B, C, P, 2, S]; observed patches in the order of out["embeddings"]
            observed = slots[:, :, :, 1].amax(-1) > 0  # [B, C, P]
            slots = slots[observed][tokens]
            positions = torch.arange(observed.shape[2], device=observed.device)
            slot_ids = (batch.channel_ids[:, :, None] * observed.shape[2] + positions)[observed]
            window_ids = torch.arange(observed.shape[0], device=observed.device)[:, None, None].expand_as(
                observed)[observed]
            metrics = {"step": step + 1, "time": round(time.time(), 1), **{k: v.item() for k, v in out.items() if v.ndim == 0},
                       "lr": optimizer.param_groups[0]["lr"],
                       **embedding_report(out["embeddings"][tokens], step=step),
                       "patch_r2": patch_recoverability(out["embeddings"][tokens], slots[:, 0], slots[:, 1] > 0),
                       "slot_share": slot_share(out["embeddings"], slot_ids),
                       "position_r2": position_r2(out["embeddings"], slot_ids, window_ids),
                       "peak_memory_gb": round(peak_memory_gb(device), 3)}
            progress.set_postfix({k: f"{v:.3g}" for k, v in metrics.items() if k in
                                  ("loss", "prediction", "sigreg", "effective_rank", "patch_r2")})
            with open(run_dir / "metrics.jsonl", "a") as log:
                log.write(json.dumps(metrics) + "\n")
            if logger is not None:
                logger.log(metrics, step=step + 1)
        if (step + 1) % cfg.train.ckpt_every == 0 or step + 1 == cfg.train.steps or (
                keep_every and (step + 1) % keep_every == 0):
            checkpoint(step + 1)
    if logger is not None:
        logger.finish()
    if ddp.world > 1:
        dist.destroy_process_group()
    return last


@hydra.main(config_path=CONFIG_DIR, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    path = train(cfg)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"checkpoint: {path}")


if __name__ == "__main__":
    main()
