"""The transfer tables' bookkeeping (eval/transfer.py): the random-init twin is averaged over its draws, and
evaluations that disagree outside the twin are refused."""

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("transfer", ROOT / "eval" / "transfer.py")
transfer = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = transfer
spec.loader.exec_module(transfer)


def record(seed: int, twin_mse: float, encoder_mse: float = 0.4) -> dict:
    common = {"horizon": "avg", "train_fraction": 1.0, "mae": 0.5, "val_mse": 0.6, "n_windows": 10}
    return {"seed": seed, "rows": [
        {"model": "linear", "mode": "supervised", **common, "mse": 0.45},
        {"model": "tsjepa", "mode": "probe", **common, "mse": encoder_mse},
        {"model": "random-init", "mode": "probe", **common, "mse": twin_mse, "effective_rank": 30.0 + seed},
    ]}


def test_twin_rows_average_the_draws_with_their_std():
    rows = transfer.twin_rows({f"corpus-s{k}": record(k, mse) for k, mse in enumerate((0.40, 0.44, 0.48))})
    assert len(rows) == 1
    (row,) = rows
    assert row["model"] == "random-init" and row["n_seeds"] == 3
    assert row["mse"] == pytest.approx(0.44)
    assert row["mse_std"] == pytest.approx(0.04)
    assert row["effective_rank"] == pytest.approx(31.0)
    assert "mae_std" in row and row["mae_std"] == pytest.approx(0.0)


def test_twin_rows_refuse_evaluations_that_scored_different_encoders():
    with pytest.raises(ValueError, match="corpus-s1 differs"):
        transfer.twin_rows({"corpus-s0": record(0, 0.40), "corpus-s1": record(1, 0.44, encoder_mse=0.41)})
