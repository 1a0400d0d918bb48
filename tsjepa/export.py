"""Export a training checkpoint for shipping: ``python -m tsjepa.export <checkpoint> <folder> [--dtype float16]``.

Keeps the encoder and predictor (what `from_pretrained` and every harness read) in half precision by default,
drops the optimizer, projector and EMA state, writes the files' sha256 sums to ``<folder>.sha256`` beside it
(checked at every load by name once the folder ships in ``tsjepa/pretrained/``), and prints the sha256 of the
weights file (the model card records it)."""

from __future__ import annotations

import argparse

import torch

from tsjepa.checkpoint import export_pretrained
from tsjepa.data.sources import sha256sum

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("folder")
    parser.add_argument("--dtype", default="float16", choices=list(DTYPES))
    args = parser.parse_args(argv)
    path = export_pretrained(args.checkpoint, args.folder, DTYPES[args.dtype])
    weights = path / "model.safetensors"
    print(f"{path}: {weights.stat().st_size / 2**20:.2f} MiB, sha256 {sha256sum(weights)}")


if __name__ == "__main__":
    main()
