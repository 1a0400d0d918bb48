"""``python -m tsjepa.eval <task> ckpt=PATH [data=NAME] [key=value ...]``; tasks: see `TASKS`."""

from __future__ import annotations

import importlib
import sys

import hydra
from omegaconf import DictConfig

from tsjepa.resources import resource_dir

TASKS = {"forecast": "tsjepa.eval.forecast", "classify": "tsjepa.eval.classify",
         "classify-ucr": "tsjepa.eval.classify_ucr",
         "irregular": "tsjepa.eval.irregular", "channels": "tsjepa.eval.channels",
         "rare": "tsjepa.eval.rare", "crosschannel": "tsjepa.eval.crosschannel"}
CONFIG_DIR = str(resource_dir("configs"))


@hydra.main(config_path=CONFIG_DIR, config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    importlib.import_module(TASKS[cfg.eval.task]).run(cfg)


def cli() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TASKS:
        got = sys.argv[1] if len(sys.argv) > 1 else "nothing"
        sys.exit(f"usage: python -m tsjepa.eval <task> ckpt=PATH [key=value ...]; task is one of "
                 f"{sorted(TASKS)}, got {got!r}")
    sys.argv[1] = f"eval={sys.argv[1]}"
    main()


if __name__ == "__main__":
    cli()
