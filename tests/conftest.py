import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported (see README)

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from tsjepa.data.batch import Batch  # noqa: E402
from tsjepa.data.sources import data_dir  # noqa: E402

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "configs")
TINY_MODEL = [
    "model.encoder.d_model=32", "model.encoder.depth=1", "model.encoder.heads=2",
    "model.predictor.d_model=16", "model.predictor.depth=1", "model.predictor.heads=2",
    "model.objective.num_slices=32",
]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = data_dir()
    if not (root / "ETT-small" / "ETTh1.csv").exists():
        pytest.fail(f"real datasets not found under {root}; set TSJEPA_DATA_DIR or place ../shared beside the repo")
    return root


def compose_config(name: str, overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


def seed_copies(ckpt: Path, folder: Path, seeds=(0, 1)) -> str:
    """A checkpoint glob over copies of ``ckpt`` relabelled as pretraining seeds ``seeds``: the same weights, so
    only their random-init twins differ."""
    import json
    import shutil

    for seed in seeds:
        copy = shutil.copytree(ckpt, folder / f"run-s{seed}" / "checkpoints" / "last")
        config = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps({**config, "seed": seed}))
    return f"{folder}/run-s*/checkpoints/last"


def train_config(run_dir, steps=4):
    """A tiny model pretrained on real ETTh1 for a few steps."""
    return compose_config("train", [
        "data=etth1", f"run_dir={run_dir}", f"train.steps={steps}", "train.batch_size=8",
        "train.warmup=2", "train.log_every=2", "train.ckpt_every=2", *TINY_MODEL,
    ])


@pytest.fixture(scope="session")
def pretrained(tmp_path_factory, shared_data) -> Path:
    """Checkpoint directory of `train_config` (ETTh1 channels ``ett/HUFL`` ... ``ett/OT``, span 336)."""
    import tsjepa.train

    return tsjepa.train.train(train_config(tmp_path_factory.mktemp("run")))


def random_batch(b: int = 2, c: int = 3, t: int = 64, span: float = 64.0, seed: int = 0) -> Batch:
    """Regular windows: one observation per time unit in [-span, 0)."""
    gen = torch.Generator().manual_seed(seed)
    times = (torch.arange(t, dtype=torch.float32) * span / t - span).expand(b, c, t).contiguous()
    return Batch(
        values=torch.randn(b, c, t, generator=gen),
        times=times,
        observed=torch.ones(b, c, t, dtype=torch.bool),
        channel_ids=torch.arange(c).expand(b, c).contiguous(),
    )
