"""Fine-tuning for forecasting: encoder + linear head trained end to end, early stopping on val.

The head starts from the ridge probe solution (linear probing then fine-tuning, Kumar et al. 2022), so
fine-tuning begins where the probe ends. The same routine trains the randomly initialised architecture,
which makes that row the supervised, no-pretraining baseline.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from einops import rearrange
from omegaconf import DictConfig
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
def predict(model: ForecastModel, windows: Windows, batch_size: int, device) -> Tensor:
    """Forecasts ``[N, C, H]`` for every window."""
    model.eval()
    return torch.cat([model(windows.batch(i).to(device)).cpu()
                      for i in torch.arange(len(windows)).split(batch_size)])


def val_mse(model: ForecastModel, windows: Windows, target: Tensor, observed: Tensor, batch_size: int,
            device) -> float:
    """MSE of the forecasts of ``windows`` against their ``target`` ``[N, C, H]`` where ``observed``."""
    return float(((predict(model, windows, batch_size, device) - target)[observed] ** 2).mean())


def train_with_early_stopping(model: nn.Module, optimizer: torch.optim.Optimizer,
                              batch_loss: Callable[[torch.Generator], Tensor], validate: Callable[[], float],
                              cfg: DictConfig, seed: int, metric: str, maximize: bool = False,
                              desc: str = "finetune") -> dict:
    """Optimise ``batch_loss(generator)`` (one training batch drawn with the seeded generator) for at most
    ``cfg.max_steps`` steps; ``validate()`` every ``cfg.eval_every`` steps, stop after ``cfg.patience``
    checks without improvement, and leave ``model`` with the weights of the best check (the initial weights
    count as the check at step 0). Returns a log: ``initial_val_<metric>``, ``best_val_<metric>``,
    ``best_step``, ``steps``."""
    gen = torch.Generator().manual_seed(seed)
    initial = validate()
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
            score = validate()
            progress.set_postfix({f"val_{metric}": f"{score:.4f}", "best": f"{best[0]:.4f}"})
            if (score > best[0]) if maximize else (score < best[0]):
                best, stale = (score, copy.deepcopy(model.state_dict()), step), 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
    model.load_state_dict(best[1])
    return {f"initial_val_{metric}": initial, f"best_val_{metric}": best[0], "best_step": best[2], "steps": step}


def finetune(model: ForecastModel, train: Windows, val: Windows, cfg: DictConfig, seed: int, device,
             desc: str = "finetune") -> tuple[ForecastModel, dict]:
    """AdamW on the MSE of train windows (observed targets), early stopping on val MSE
    (`train_with_early_stopping`)."""
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    val_batch = val.batch(torch.arange(len(val)))

    def batch_loss(gen: torch.Generator) -> Tensor:
        batch = train.batch(torch.randint(len(train), (cfg.batch_size,), generator=gen)).to(device)
        return ((model(batch) - batch.target)[batch.target_observed] ** 2).mean()

    def validate() -> float:
        return val_mse(model, val, val_batch.target, val_batch.target_observed, cfg.batch_size, device)

    log = train_with_early_stopping(model, optimizer, batch_loss, validate, cfg, seed, "mse", desc=desc)
    return model, log
