"""Checkpoints: a directory with ``config.json`` and safetensors weights (no pickle), written atomically.

Layout::

    <dir>/config.json           {"format": "tsjepa-checkpoint", "version": 1, "encoder": {...},
                                 "predictor": {...}, "channels": {...}, "step": N, ...}
    <dir>/model.safetensors     encoder.* (and predictor.*, target_encoder.* when saved)
    <dir>/optimizer.safetensors optimizer tensors (training checkpoints only)
    <dir>/optimizer.json        optimizer hyper-parameters and scalar state (training checkpoints only)
"""

from __future__ import annotations

import glob
import json
import os
import typing
import warnings
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from tsjepa.atomic import recover_dir, replace_dir, write_file
from tsjepa.data.sources import sha256sum
from tsjepa.data.vocab import UNKNOWN, ChannelVocab
from tsjepa.models import Encoder, EncoderConfig, Predictor, PredictorConfig

PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"  # encoders shipped in the package, by name
FORMAT = "tsjepa-checkpoint"
VERSION = 1
OWN_FILES = {"config.json", "model.safetensors", "optimizer.safetensors", "optimizer.json"}


class CheckpointError(RuntimeError):
    """The path is missing, not a tsjepa checkpoint, or corrupt."""


@dataclass
class Pretrained:
    encoder: Encoder
    vocab: ChannelVocab
    predictor: Predictor | None = None
    config: dict = field(default_factory=dict)  # the whole config.json
    step: int = 0

    def save_pretrained(self, path: str | os.PathLike) -> Path:
        """Write this encoder (and predictor) as a checkpoint directory that `from_pretrained` reads back,
        keeping the config's other entries (e.g. the pretraining data and objective)."""
        own = {"format", "version", "encoder", "predictor", "channels", "step"}
        return save_pretrained(path, self.encoder, self.vocab, self.predictor, step=self.step,
                               extra={k: v for k, v in self.config.items() if k not in own})


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_pretrained(
    path: str | os.PathLike,
    encoder: Encoder,
    vocab: ChannelVocab,
    predictor: Predictor | None = None,
    modules: dict[str, nn.Module] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    step: int = 0,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint directory, crash-safely (`tsjepa.atomic.replace_dir`: at every instant ``path`` is
    the old or the new complete checkpoint). ``path`` must be new, empty, or a tsjepa checkpoint holding
    nothing but its own files: anything else is refused, never overwritten. ``modules`` adds further named
    modules' weights (e.g. an EMA target encoder); ``optimizer`` makes it a resumable training checkpoint;
    ``extra`` goes into config.json."""
    path = Path(path)
    check_replaceable(path)
    named = {"encoder": encoder, **({"predictor": predictor} if predictor is not None else {}), **(modules or {})}
    weights = {f"{prefix}.{k}": v.detach().cpu().contiguous()
               for prefix, module in named.items() for k, v in module.state_dict().items()}
    config = {
        "format": FORMAT,
        "version": VERSION,
        "encoder": encoder.config.to_dict(),
        "predictor": predictor.config.to_dict() if predictor is not None else None,
        "channels": vocab.to_dict(),
        "step": int(step),
        **(extra or {}),
    }

    def write(tmp: Path) -> None:
        save_file(weights, str(tmp / "model.safetensors"))
        if optimizer is not None:
            tensors, meta = _optimizer_tensors(optimizer)
            save_file(tensors, str(tmp / "optimizer.safetensors"))
            (tmp / "optimizer.json").write_text(json.dumps(meta))
        (tmp / "config.json").write_text(json.dumps(config, indent=2))

    return replace_dir(path, write)


def check_replaceable(path: Path) -> None:
    """Refuse to save over anything but a new or empty folder or a tsjepa checkpoint of only its own files."""
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path} is a file, not a checkpoint folder; save to a new or empty folder")
    if not path.is_dir() or not any(path.iterdir()):
        return
    others = sorted(p.name for p in path.iterdir() if p.name not in OWN_FILES)
    if others:
        raise CheckpointError(f"{path} holds files that are not a tsjepa checkpoint's ({', '.join(others[:5])}); "
                              "save_pretrained replaces only a checkpoint folder: choose a new or empty folder")
    try:
        read_config(path)
    except CheckpointError as err:
        raise CheckpointError(f"{path} is not a tsjepa checkpoint, so it is not replaced: {err}") from err


def shipped_names() -> list[str]:
    """Names of the encoders shipped with tsjepa (`from_pretrained` loads them by name)."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / "config.json").is_file())


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A checkpoint directory, or the name of a shipped encoder (e.g. ``"tsjepa-base-corpus"``) when no such
    directory exists. A save that a kill interrupted (`tsjepa.atomic.replace_dir`) is finished or rolled back
    first, as a training start does; a folder of a shipped encoder's name that is not a checkpoint is an error,
    not a silent stand-in for it."""
    candidate = Path(path).expanduser()
    repaired = recover_dir(candidate)
    if repaired:
        warnings.warn(f"{candidate}: an interrupted checkpoint save was repaired: {repaired}", stacklevel=3)
    if str(path) in shipped_names():
        if not candidate.exists():
            return PRETRAINED_DIR / str(path)
        if not (candidate / "config.json").is_file():
            raise CheckpointError(f"{candidate.resolve()} is not a checkpoint but shadows the shipped encoder "
                                  f"{str(path)!r}: rename or remove that folder, or load the shipped one by its path "
                                  f"{PRETRAINED_DIR / str(path)}")
    return candidate


def verify_shipped(path: Path) -> None:
    """Check a shipped encoder's files against the sha256 sums shipped beside it (``<name>.sha256``, as
    ``sha256sum`` writes them); a `CheckpointError` names any file that differs or is missing."""
    sums = shipped_sums(path)
    if not sums.is_file():
        raise CheckpointError(f"{path}: the shipped encoder has no checksum file {sums.name}; reinstall tsjepa")
    for line in sums.read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        file = path.parent / name.lstrip("*")
        if not file.is_file() or sha256sum(file) != digest:
            raise CheckpointError(f"{file} does not match its shipped sha256 {digest[:12]}...: the installed file "
                                  "is damaged or was changed; reinstall tsjepa")


def read_config(path: str | os.PathLike) -> dict:
    path = resolve_checkpoint(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist (shipped encoders, loadable by name: "
                              f"{shipped_names()})")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path} is not a tsjepa checkpoint: no config.json")
    try:
        config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}/config.json is corrupt: {err}") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tsjepa checkpoint (config.json has no format '{FORMAT}')")
    if config.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {config.get('version')}, this tsjepa reads {VERSION}")
    return config


def checkpoints_by(pattern: str, key: typing.Callable[[dict], typing.Hashable], what: str) -> dict:
    """The checkpoint folders a glob ``pattern`` matches, keyed by ``key(config)`` (e.g. the pretraining seed);
    a folder reached through several links counts once, and two folders with one key are refused, naming
    ``what`` the key is."""
    found: dict = {}
    unique = {str(Path(p).resolve()): p for p in sorted(glob.glob(pattern), reverse=True)}  # a link once
    for path in sorted(unique.values()):
        k = key(read_config(path))
        if k in found:
            raise ValueError(f"checkpoints {found[k]} and {path} were both pretrained with {what} {k}")
        found[k] = path
    return found


def load_weights(path: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    """The tensors of ``path/name``; a `CheckpointError` when the file is missing or corrupt, or when any
    floating-point tensor holds a NaN or an infinity (no training writes one: such weights are damaged)."""
    try:
        tensors = load_file(str(path / name))
    except FileNotFoundError as err:
        raise CheckpointError(f"{path} has no {name}") from err
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}/{name} is corrupt or not a safetensors file: {err}") from err
    damaged = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if damaged:
        raise CheckpointError(f"{path}/{name} holds non-finite values (NaN or inf) in {len(damaged)} tensor(s), "
                              f"e.g. {damaged[0]}: the file is damaged")
    return tensors


def load_into(module: nn.Module, weights: dict[str, torch.Tensor], prefix: str, path: Path) -> None:
    """Load ``prefix.*`` of ``weights`` into ``module`` strictly, naming the mismatch if any."""
    own = {k[len(prefix) + 1 :]: v for k, v in weights.items() if k.startswith(prefix + ".")}
    try:
        module.load_state_dict(own, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: {prefix} weights do not match the config: {err}") from err


# config fields added after checkpoints were first written (the shipped encoder among them), by config section:
# a checkpoint that does not name one was written before it existed and ran with its default
ADDED_FIELDS: dict[str, tuple[str, ...]] = {
    "encoder": ("position",),
    "objective": ("kind", "sigreg_backend", "mask_tail_prob", "projector", "views", "global_views", "global_keep",
                  "local_keep", "view_weight", "reconstruction_weight", "centre_slots", "content_targets",
                  "position_noise", "target_norm", "min_crop"),
}


def with_added_fields(key: str, raw: dict, defaults: dict) -> dict:
    """Config section ``key`` as saved (``raw``) with the ``defaults`` of the fields added after it could have
    been written (`ADDED_FIELDS`) where it does not name them; every other field stays as saved, or missing."""
    return {**{name: defaults[name] for name in ADDED_FIELDS.get(key, ())}, **raw}


def section(config: dict, key: str, cls: type, path: Path):
    """``config[key]`` as dataclass ``cls``, strictly: every field present with its type (but those of
    `ADDED_FIELDS`, which default), nothing else, and the values the class accepts; one `CheckpointError`
    naming the problem otherwise."""
    raw = config.get(key)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}/config.json has no '{key}' section" if raw is None else
                              f"{path}/config.json: '{key}' must be an object, got {type(raw).__name__}")
    raw = with_added_fields(key, raw, cls().to_dict()) if key in ADDED_FIELDS else raw
    names = {f.name for f in fields(cls)}
    missing, extra = sorted(names - set(raw)), sorted(set(raw) - names)
    if missing or extra:
        raise CheckpointError(f"{path}/config.json: '{key}' " + "; ".join(
            part for part in (f"misses {missing}" if missing else "", f"has unknown keys {extra}" if extra else "")
            if part))
    hints = typing.get_type_hints(cls)
    for name, value in raw.items():
        want = hints[name]
        ok = (isinstance(value, bool) if want is bool else
              isinstance(value, int | float) and not isinstance(value, bool) if want is float else
              isinstance(value, int) and not isinstance(value, bool) if want is int else
              isinstance(value, want) if isinstance(want, type) else True)
        if not ok:
            raise CheckpointError(f"{path}/config.json: {key}.{name} must be {getattr(want, '__name__', want)}, "
                                  f"got {value!r}")
    try:
        return cls(**raw)
    except (ValueError, TypeError) as err:
        raise CheckpointError(f"{path}/config.json: invalid '{key}': {err}") from err


def from_pretrained(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Pretrained:
    """Load the encoder (and the predictor, if saved) of a checkpoint directory, or of a shipped encoder by
    name (`shipped_names`). Its config is validated strictly (`section`); the weights must match it exactly
    (half-precision weights, as shipped, load into fp32 modules)."""
    path = resolve_checkpoint(path)
    if path.parent.resolve() == PRETRAINED_DIR.resolve():
        verify_shipped(path)
    config = read_config(path)
    encoder_config = section(config, "encoder", EncoderConfig, path)
    predictor_config = section(config, "predictor", PredictorConfig, path) if config.get("predictor") else None
    try:
        vocab = ChannelVocab.from_dict(config["channels"])
    except (KeyError, TypeError, ValueError) as err:
        raise CheckpointError(f"{path}/config.json: 'channels' must hold the channel vocabulary ({err})") from err
    step = config.get("step", 0)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"{path}/config.json: step must be a non-negative integer, got {step!r}")
    weights = load_weights(path)
    encoder = Encoder(encoder_config)
    load_into(encoder, weights, "encoder", path)
    predictor = None
    if predictor_config is not None:
        predictor = Predictor(predictor_config, encoder.config.d_model, encoder.config.channel_capacity)
        load_into(predictor, weights, "predictor", path)
        predictor.to(map_location)
    return Pretrained(encoder.to(map_location), vocab, predictor, config, step)


def load_optimizer(path: Path, optimizer: torch.optim.Optimizer) -> None:
    """Restore the optimizer state of a training checkpoint."""
    tensors = load_weights(path, "optimizer.safetensors")
    meta = json.loads((path / "optimizer.json").read_text())
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *meta["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def export_pretrained(source: str | os.PathLike, target: str | os.PathLike, dtype: torch.dtype = torch.float16
                      ) -> Path:
    """Write the encoder and predictor of checkpoint ``source`` to ``target`` for shipping: weights in
    ``dtype`` (half the size in fp16), no optimizer, projector or EMA state, the pretraining config kept.
    When the vocabulary has the shared ``<unknown>`` identity, which every channel the encoder does not know
    receives, the channel-identity tables keep only the vocabulary's rows (capacity = ``len(vocab)``): no
    channel ever reads the untrained rows past them. Without it the capacity stays, so new channels can still
    get rows of their own. The files' sha256 sums go to ``<target>.sha256`` beside it (`write_shipped_sums`)."""
    pretrained = from_pretrained(source)
    rows = len(pretrained.vocab) if UNKNOWN in pretrained.vocab.names else pretrained.vocab.capacity
    encoder = Encoder(replace(pretrained.encoder.config, channel_capacity=rows))
    encoder.load_state_dict(trimmed(pretrained.encoder.state_dict(), rows))
    predictor = None
    if pretrained.predictor is not None:
        predictor = Predictor(pretrained.predictor.config, encoder.config.d_model, rows)
        predictor.load_state_dict(trimmed(pretrained.predictor.state_dict(), rows))
        predictor = predictor.to(dtype)
    own = {"format", "version", "encoder", "predictor", "channels", "step"}
    extra = {k: v for k, v in pretrained.config.items() if k not in own} | {"dtype": str(dtype).removeprefix("torch.")}
    path = save_pretrained(target, encoder.to(dtype), ChannelVocab(pretrained.vocab.names, rows), predictor,
                           step=pretrained.step, extra=extra)
    write_shipped_sums(path)
    return path


def shipped_sums(path: Path) -> Path:
    """The checksum file of a shipped encoder folder ``path``: ``<name>.sha256`` beside it."""
    return path.parent / f"{path.name}.sha256"


def write_shipped_sums(path: Path) -> None:
    """Write the sha256 of each file of checkpoint folder ``path`` to `shipped_sums`, as ``sha256sum`` does
    (paths relative to the folder's parent), for `verify_shipped` to check at every load by name."""
    lines = [f"{sha256sum(f)}  {path.name}/{f.name}\n" for f in sorted(path.iterdir()) if f.is_file()]
    write_file(shipped_sums(path), "".join(lines))


def trimmed(state: dict[str, torch.Tensor], rows: int) -> dict[str, torch.Tensor]:
    """A module's state with its channel-identity table cut to the first ``rows`` rows (ids are assigned in
    order, so these are every vocabulary channel's rows)."""
    return {k: v[:rows] if k == "channel_embedding.weight" else v for k, v in state.items()}
