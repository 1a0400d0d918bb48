"""Run under ``torchrun --nproc_per_node=2``: SIGReg of the global batch from per-rank shards.

Rank r holds rows r::world of a fixed batch. Writes the loss, this rank's shard gradient (scaled as DDP
would average it) and its directions to ``<out>/rank<r>.pt``.
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from tsjepa.sigreg import random_directions, sigreg  # noqa: E402


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    z = torch.randn(301, 24, generator=torch.Generator().manual_seed(0)) * 1.5 + 0.3
    shard = z[rank::world].clone().requires_grad_()
    directions = random_directions(24, 64, seed=3, step=11)
    loss = sigreg(shard, directions, knots=17)
    loss.backward()
    grad = shard.grad.clone()
    dist.all_reduce(grad.new_zeros(1))  # barrier
    torch.save({"loss": loss.detach(), "grad": grad / world, "directions": directions}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
