"""Fine-tuning for forecasting: encoder + linear head trained end to end, early stopping on val.

The head starts from a ridge probe solution (linear probing then fine-tuning, Kumar et al. 2022), so
fine-tuning begins where a probe ends. The budget is ``epochs`` passes over the train windows; the learning
rate, the layer-wise decay (each block below the top gets ``decay`` times the lr of the one above, the input
embeddings the lowest) and the starting head's smoothness are chosen on val from ``head_penalty_scales`` x
``lrs`` x ``layer_decays``. The ridge penalty that is best for the frozen probe gives a sharp head (ETTh1:
Frobenius norm 28) through which the encoder does not train; refit with 100 times the penalty, it does
(``eval/results/finetune/diagnosis.md``), so the starting head's penalty is a fine-tuning hyperparameter. The
same routine, with the same budget and grid, trains the randomly initialised architecture, which makes that
row the supervised, no-pretraining baseline.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import torch
from einops import rearrange
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm import tqdm

from tsjepa.data.batch import Batch
from tsjepa.data.windows import Windows
from tsjepa.heads import Ridge
from tsjepa.models import Encoder


class ForecastModel(nn.Module):
    """Encoder + a linear map from a channel's tokens ``[P * D]`` to its next ``H`` values (shared across
    channels); predicts in instance-normalised units and adds the window's loc/scale back."""

    def __init__(self, encoder: Encoder, head: Ridge) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(*head.weight.shape)
        with torch.no_grad():
            self.head.weight.copy_(head.weight.T.float())
            self.head.bias.copy_(head.bias.float())

    def forward(self, batch: Batch) -> Tensor:
        """Batch ``[B, C, L]`` -> forecasts ``[B, C, H]``."""
        out = self.encoder(batch)
        pred = self.head(rearrange(out.embeddings, "b c p d -> b c (p d)"))
        return pred * out.scale[..., None] + out.loc[..., None]


@torch.no_grad()
def predict(model: ForecastModel, windows: Windows, batch_size: int, device, index: Tensor | None = None) -> Tensor:
    """Forecasts ``[N, C, H]`` for the windows at ``index`` ``[N]`` (default: every window)."""
    model.eval()
    index = torch.arange(len(windows)) if index is None else index
    return torch.cat([model(windows.batch(i).to(device)).cpu() for i in index.split(batch_size)])


def val_mse(model: ForecastModel, windows: Windows, target: Tensor, observed: Tensor, batch_size: int,
            device, index: Tensor | None = None) -> float:
    """MSE of the forecasts of the windows at ``index`` (default: every window) against their ``target``
    ``[N, C, H]`` where ``observed``."""
    return float(((predict(model, windows, batch_size, device, index) - target)[observed] ** 2).mean())


def train_with_early_stopping(model: nn.Module, optimizer: torch.optim.Optimizer,
                              batch_loss: Callable[[torch.Generator], Tensor], validate: Callable[[], float],
                              cfg: DictConfig, seed: int, metric: str, maximize: bool = False,
                              desc: str = "finetune", monitor: Callable[[], float] | None = None) -> dict:
    """Optimise ``batch_loss(generator)`` (one training batch drawn with the seeded generator) for at most
    ``cfg.max_steps`` steps; ``validate()`` every ``cfg.eval_every`` steps, stop after ``cfg.patience``
    checks without improvement, and leave ``model`` with the weights of the best check (the initial weights
    count as the check at step 0). Returns a log: ``initial_val_<metric>``, ``best_val_<metric>``,
    ``best_step``, ``steps`` and ``trace``, one entry per check: its step, ``val_<metric>`` and, with
    ``monitor``, ``monitor()`` (e.g. the training loss on fixed windows) as ``monitor``."""
    gen = torch.Generator().manual_seed(seed)
    trace = []

    def check(step: int) -> float:
        trace.append({"step": step, f"val_{metric}": validate(),
                      **({"monitor": monitor()} if monitor is not None else {})})
        return trace[-1][f"val_{metric}"]

    initial = check(0)
    best, stale, step = (initial, copy.deepcopy(model.state_dict()), 0), 0, 0
    progress = tqdm(range(1, cfg.max_steps + 1), desc=desc, leave=False, dynamic_ncols=True)
    for step in progress:
        model.train()
        loss = batch_loss(gen)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % cfg.eval_every == 0:
            score = check(step)
            progress.set_postfix({f"val_{metric}": f"{score:.4f}", "best": f"{best[0]:.4f}"})
            if (score > best[0]) if maximize else (score < best[0]):
                best, stale = (score, copy.deepcopy(model.state_dict()), step), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
    model.load_state_dict(best[1])
    return {f"initial_val_{metric}": initial, f"best_val_{metric}": best[0], "best_step": best[2], "steps": step,
            "trace": trace}


def layerwise_groups(model: ForecastModel, lr: float, decay: float) -> list[dict]:
    """AdamW parameter groups: the head at ``lr``; the final norm at ``lr * decay``; block ``k`` of ``K``
    (counted from the input) at ``lr * decay ** (K + 1 - k)``, so the top block shares the norm's rate; the
    input embeddings (tokenizer, time and channel embeddings) at ``lr * decay ** (K + 1)``."""
    encoder = model.encoder
    depth = len(encoder.blocks)
    groups = [{"params": list(model.head.parameters()), "lr": lr},
              {"params": list(encoder.norm.parameters()), "lr": lr * decay}]
    groups += [{"params": list(block.parameters()), "lr": lr * decay ** (depth + 1 - k)}
               for k, block in enumerate(encoder.blocks, start=1)]
    placed = {id(p) for g in groups for p in g["params"]}
    groups.append({"params": [p for p in encoder.parameters() if id(p) not in placed], "lr": lr * decay ** (depth + 1)})
    return groups


def finetune(encoder: Encoder, heads: dict[float, Ridge], train: Windows, val: Windows, cfg: DictConfig,
             seed: int, device, desc: str = "finetune") -> tuple[ForecastModel, dict]:
    """Fine-tune ``encoder`` + a starting head for every point of the grid (starting head ``heads[k]``, the
    ridge probe refit with ``k`` times its val-chosen penalty, for ``k`` in ``cfg.head_penalty_scales``; lr;
    layer decay) and keep the one with the best val MSE; returns it and a log of the grid (`fit_once` per
    point, with its ``head_penalty_scale``)."""
    grid = [(float(k), float(lr), float(decay)) for k in cfg.head_penalty_scales for lr in cfg.lrs
            for decay in cfg.layer_decays]
    if not grid:
        raise ValueError("eval.finetune.head_penalty_scales, lrs and layer_decays must be non-empty")
    best, logs = None, []
    for scale, lr, decay in grid:
        tuned, log = fit_once(ForecastModel(copy.deepcopy(encoder), heads[scale]), train, val, cfg, lr, decay,
                              seed, device, desc=f"{desc} x{scale:g} lr={lr:g} decay={decay:g}")
        logs.append({"head_penalty_scale": scale, "lr": lr, "layer_decay": decay, **log})
        if best is None or log["best_val_mse"] < best[1]["best_val_mse"]:
            best = (tuned, logs[-1])
    return best[0], {**best[1], "grid": logs}


def fit_once(model: ForecastModel, train: Windows, val: Windows, cfg: DictConfig, lr: float, decay: float,
             seed: int, device, desc: str = "finetune", monitor: Callable[[], float] | None = None
             ) -> tuple[ForecastModel, dict]:
    """AdamW with layer-wise learning rates on the MSE of train windows (observed targets) for ``cfg.epochs``
    passes, early stopping on val MSE (`train_with_early_stopping`, which logs ``monitor()`` at each check).
    Parameters with ``requires_grad`` off stay where they are (AdamW skips them)."""
    model = model.to(device)
    optimizer = torch.optim.AdamW(layerwise_groups(model, lr, decay), weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    cfg = OmegaConf.create({**OmegaConf.to_container(cfg), "max_steps": max(1, int(cfg.epochs * steps_per_epoch)),
                            "eval_every": max(1, round(steps_per_epoch / cfg.evals_per_epoch))})
    val_batch = val.batch(torch.arange(len(val)))

    def batch_loss(gen: torch.Generator) -> Tensor:
        batch = train.batch(torch.randint(len(train), (cfg.batch_size,), generator=gen)).to(device)
        return ((model(batch) - batch.target)[batch.target_observed] ** 2).mean()

    def validate() -> float:
        return val_mse(model, val, val_batch.target, val_batch.target_observed, cfg.batch_size, device)

    log = train_with_early_stopping(model, optimizer, batch_loss, validate, cfg, seed, "mse", desc=desc,
                                   monitor=monitor)
    return model, log
