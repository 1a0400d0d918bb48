"""Two processes (gloo on CPU) give the same SIGReg loss and averaged gradient as one process."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_MODEL

from tsjepa.sigreg import random_directions, sigreg

HERE = Path(__file__).resolve().parent


def torchrun(args: list[str], cwd: Path, timeout: int = 300) -> None:
    """Run ``torchrun --nproc_per_node=2 ARGS``; on a time-out kill the whole process group (no orphans)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
                             *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
        pytest.fail(f"torchrun timed out after {timeout} s:\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]


def test_sigreg_ddp_equals_single_process(tmp_path):
    torchrun([str(HERE / "ddp_sigreg_worker.py"), str(tmp_path)], cwd=HERE.parent)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    z = (torch.randn(301, 24, generator=torch.Generator().manual_seed(0)) * 1.5 + 0.3).requires_grad_()
    directions = random_directions(24, 64, seed=3, step=11)
    loss = sigreg(z, directions, knots=17)
    loss.backward()
    for r, got in enumerate(ranks):
        torch.testing.assert_close(got["directions"], directions, rtol=0, atol=0)
        torch.testing.assert_close(got["loss"], loss.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(got["grad"], z.grad[r::2], rtol=1e-5, atol=1e-6)


def test_two_process_training_writes_one_checkpoint(tmp_path, shared_data):
    run_dir = tmp_path / "run"
    torchrun(["-m", "tsjepa.train", "data=etth1", f"run_dir={run_dir}", "train.steps=2", "train.batch_size=4",
              "train.warmup=1", "train.log_every=1", "train.ckpt_every=2", *TINY_MODEL], cwd=HERE.parent)
    config = json.loads((run_dir / "checkpoints/last/config.json").read_text())
    assert config["step"] == 2
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]  # logged once, by rank 0
