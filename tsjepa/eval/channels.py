"""Channel identity: ``python -m tsjepa.eval channels ckpt=... [data=etth1]``.

A ridge probe is fit once on the frozen encoder's tokens (all channels, in the dataset's order, horizon
``eval.horizon``); then the *test* windows are encoded again under changes a user may make at inference time,
with the same head, and scored on every test window:

- ``order-permuted``: channels shuffled, each keeping its id. The encoder is permutation-equivariant over
  channels, so after un-shuffling, forecasts must match the reference (``max_abs_diff``).
- ``ids-shuffled``: channels in place but ids deranged (each channel is told it is another sensor). If the
  channel embedding carries information, this hurts.
- ``drop <channel>``: that channel removed; the MSE on the remaining channels is set beside the reference
  MSE on the same channels (``mse_reference``), which shows how gracefully the model degrades.
- ``keep first k``: only the first k channels (a different number of channels than in pretraining).

The same architecture with random weights (``eval.random_baseline``) goes through the same changes. A checkpoint
glob over pretraining seeds scores each seed with its own twin; rows carry the mean, ``<metric>_std`` and
``n_seeds``.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from einops import rearrange  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from tsjepa.data.windows import Windows  # noqa: E402
from tsjepa.device import device_description, resolve_device  # noqa: E402
from tsjepa.encoding import encode_windows  # noqa: E402
from tsjepa.eval import SeedRows, frozen_encoders  # noqa: E402
from tsjepa.eval.forecast import check_span, seed_data  # noqa: E402
from tsjepa.heads import fit_probe, probe_predict  # noqa: E402
from tsjepa.models import Encoder  # noqa: E402
from tsjepa.results import save_figure, write_results  # noqa: E402


def derangement(n: int, gen: torch.Generator) -> torch.Tensor:
    """A permutation of ``n >= 2`` items that moves every item."""
    while True:
        perm = torch.randperm(n, generator=gen)
        if (perm != torch.arange(n)).all():
            return perm


def errors(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel MSE and MAE ``[C]`` of forecasts ``[N, C, H]``."""
    err = pred - target
    return (err**2).mean((0, 2)), err.abs().mean((0, 2))


def plot_channels(path: Path, rows: list[dict], device: str) -> None:
    drops = [r for r in rows if r["mode"].startswith("drop ")]
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(drops) + 2), 3.6))
    x = torch.arange(len(drops)).float()
    ax.bar(x - 0.2, [r["mse_reference"] for r in drops], 0.4, label="all channels (same channels scored)")
    ax.bar(x + 0.2, [r["mse"] for r in drops], 0.4, label="with the named channel dropped")
    ax.set_xticks(x.tolist(), [r["mode"].removeprefix("drop ") for r in drops], rotation=30, ha="right")
    ax.set_ylabel("test MSE on the other channels")
    ax.legend(fontsize=8)
    save_figure(fig, path, device)


def score_encoder(cfg: DictConfig, encoder: Encoder, model: str, windows: dict[str, Windows], channels: list[str],
                  device) -> list[dict]:
    """Rows of one frozen encoder: its ridge probe's test scores on the unchanged windows (``reference``) and
    under each change. The permutation and id derangement depend on ``cfg.seed`` only, so every encoder and
    pretraining seed sees the same changes."""
    horizon, n_channels, n_test = cfg.eval.horizon, len(channels), len(windows["test"])

    def encode(split: str, transform=None, desc: str = ""):
        w = windows[split]
        return encode_windows(encoder, w, torch.arange(len(w)), cfg.eval.batch_size, device,
                              desc=f"{model}/{desc or split}", transform=transform)

    encoded = {s: encode(s) for s in windows}
    full = {s: w.batch(torch.arange(len(w))) for s, w in windows.items()}
    keep = {s: rearrange(b.target_observed, "n c h -> (n c) h").all(-1) for s, b in full.items()}
    head = fit_probe(encoded, {s: b.target for s, b in full.items()}, keep, list(cfg.eval.alphas))
    target = full["test"].target
    reference = probe_predict(head, encoded["test"])
    ref_mse, ref_mae = errors(reference, target)
    rows = [{"model": model, "mode": "reference", "horizon": horizon, "mse": float(ref_mse.mean()),
             "mae": float(ref_mae.mean()), "n_windows": n_test}]
    gen = torch.Generator().manual_seed(cfg.seed)

    def variant(mode: str, transform, kept: torch.Tensor, reorder: torch.Tensor | None = None) -> None:
        pred = probe_predict(head, encode("test", transform, desc=mode))
        if reorder is not None:
            pred = pred[:, reorder]
        mse, mae = errors(pred, target[:, kept])
        row = {"model": model, "mode": mode, "horizon": horizon, "mse": float(mse.mean()),
               "mae": float(mae.mean()), "mse_reference": float(ref_mse[kept].mean()), "n_windows": n_test}
        if reorder is not None:
            row["max_abs_diff"] = float((pred - reference).abs().max())
        rows.append(row)
        print(f"{model:12s} {mode:24s} mse={row['mse']:.4f} (reference on these channels {row['mse_reference']:.4f})")

    every = torch.arange(n_channels)
    perm = derangement(n_channels, gen)
    variant("order-permuted", lambda b: b.select_channels(perm), every, reorder=perm.argsort())
    shuffled = derangement(n_channels, gen)
    variant("ids-shuffled", lambda b: replace(b, channel_ids=b.channel_ids[:, shuffled]), every)
    for c, channel in enumerate(channels):
        rest = every[every != c]
        variant(f"drop {channel}", lambda b, rest=rest: b.select_channels(rest), rest)
    first = every[: cfg.eval.keep_first]
    variant(f"keep first {len(first)}", lambda b: b.select_channels(first), first)
    return rows


def run(cfg: DictConfig) -> Path:
    start = time.time()
    device = resolve_device(cfg.device)
    scored = SeedRows()
    for seed, ckpt, pretrained, data in seed_data(cfg, "channels", device):
        if len(data.ids) < 2:
            raise ValueError(f"{data.card.name} has one channel; channel-identity checks need at least two")
        stride = data.strides(cfg.eval.horizon, cfg.eval.max_fit_rows)
        windows = {s: data.windows(s, cfg.eval.horizon, stride[s]) for s in stride}
        check_span(pretrained.encoder, windows["train"], ckpt)
        encoders = frozen_encoders(pretrained, seed, cfg.eval.random_baseline, device)
        scored.add(seed, ckpt, pretrained.step,
                   [row for model, encoder in encoders.items()
                    for row in score_encoder(cfg, encoder, model, windows, data.series.channels, device)])
    rows = scored.aggregate(keys=("model", "mode"), metrics=("mse", "mae", "max_abs_diff"))
    description = device_description(device)
    out = write_results(
        cfg.out_dir, "channels", data.card.name, rows, seed=scored.label,
        device=description, wall_s=time.time() - start,
        extra={"ckpt": str(cfg.ckpt), **scored.record(), "lookback": data.lookback},
        notes=(f"One ridge probe per encoder (horizon {cfg.eval.horizon}, fit on train windows with all channels), "
               "applied to test windows encoded under each change; MSE/MAE averaged over the channels scored, "
               "every test window. `mse_reference`: the unchanged model's MSE on the same channels. "
               "`order-permuted`: channels shuffled with their ids (`max_abs_diff` to the reference forecasts after "
               "un-shuffling); `ids-shuffled`: ids deranged, data in place; `drop X`: channel X removed; "
               "`keep first k`: only the first k channels. `random-init`: the same architecture with random "
               "weights (its channel embeddings are random vectors, so they too tell channels apart). The raw "
               "`linear` baseline reads each channel alone, so no change here moves it: its MSE is the forecast "
               f"table's. Rows: mean over the pretraining seed(s) {scored.seeds} (each with its own random-init twin; "
               f"the same permutation and derangement, seed {cfg.seed}), `<metric>_std` the sample std over seeds."),
    )
    plot_channels(out.with_suffix(".png"), [r for r in rows if r["model"] == "tsjepa"], description)
    print(f"results: {out} (+ .md, .png), {time.time() - start:.0f} s")
    return out
