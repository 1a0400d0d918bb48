"""The transfer tables' bookkeeping (eval/transfer.py): the random-init twin is averaged over its draws, a draw
counts while it scored the shipped architecture, draws whose baselines disagree with the shipped encoder's
evaluation are refused, and the seeds and share tables average each encoder over its pretraining seeds."""

import importlib.util
import json
import os
import subprocess
import sys
import time
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
    rows = transfer.twin_rows(record(0, 0.0), {f"corpus-s{k}": record(k, mse) for k, mse in enumerate((0.40, 0.44, 0.48))})
    assert len(rows) == 1
    (row,) = rows
    assert row["model"] == "random-init" and row["n_seeds"] == 3
    assert row["mse"] == pytest.approx(0.44)
    assert row["mse_std"] == pytest.approx(0.04)
    assert row["effective_rank"] == pytest.approx(31.0)
    assert "mae_std" in row and row["mae_std"] == pytest.approx(0.0)


def test_twin_draws_of_an_earlier_shipped_file_count_while_their_baselines_agree():
    """A draw depends on the architecture only: its encoder rows may come from other weights."""
    rows = transfer.twin_rows(record(0, 0.0, encoder_mse=0.38), {"corpus-s0": record(0, 0.40, encoder_mse=0.41)})
    assert rows[0]["mse"] == pytest.approx(0.40)


def test_twin_rows_refuse_draws_whose_baselines_differ_from_the_shipped_evaluation():
    other_windows = record(1, 0.44)
    other_windows["rows"][0]["mse"] = 0.46
    with pytest.raises(ValueError, match="corpus-s1 differs"):
        transfer.twin_rows(record(0, 0.0), {"corpus-s0": record(0, 0.40), "corpus-s1": other_windows})


def test_a_twin_draw_is_current_only_when_it_scored_the_shipped_architecture(tmp_path, monkeypatch):
    monkeypatch.setattr(transfer, "RUNS", tmp_path)
    shipped = transfer.resolve_checkpoint(transfer.CORPUS)
    architecture = transfer.read_config(shipped)["encoder"]
    path = transfer.result("etth1", "corpus-s1")
    assert not transfer.current("etth1", "corpus-s1", shipped)  # missing
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({**record(1, 0.44), "ckpt": str(shipped), "encoder": architecture}))
    assert transfer.current("etth1", "corpus-s1", shipped)
    path.write_text(json.dumps({**record(1, 0.44), "ckpt": str(shipped), "encoder": {**architecture, "depth": 6}}))
    assert not transfer.current("etth1", "corpus-s1", shipped)
    path.write_text(json.dumps({**record(1, 0.44), "ckpt": str(tmp_path), "commit": "abc"}))  # not recorded
    assert not transfer.current("etth1", "corpus-s1", shipped)
    # scored before results recorded the architecture: the shipped file's config at the commit that ran it
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout.strip()
    path.write_text(json.dumps({**record(1, 0.44), "ckpt": str(shipped), "commit": head}))
    assert transfer.current("etth1", "corpus-s1", shipped)
    path.write_text(json.dumps({**record(1, 0.44), "ckpt": str(shipped), "commit": head + "-dirty"}))
    assert not transfer.current("etth1", "corpus-s1", shipped)


def table(corpus_mse: float) -> dict:
    """A per-target transfer table: the shipped encoder, the own-dataset encoder, the twin and a baseline."""
    common = {"mode": "probe", "horizon": "avg", "train_fraction": 1.0, "mae": 0.5, "val_mse": 0.6}
    return {"rows": [
        {"model": "tsjepa", "pretraining": transfer.CORPUS, **common, "mse": corpus_mse},
        {"model": "tsjepa", "pretraining": "etth1 (own)", **common, "mse": 0.39},
        {"model": "random-init", "pretraining": "-", **common, "mse": 0.41, "mse_std": 0.01, "n_seeds": 3},
        {"model": "linear", "pretraining": "-", **common, "mode": "supervised", "mse": 0.45},
        {"model": "tsjepa", "pretraining": transfer.CORPUS, **common, "horizon": 96, "mse": 0.3},
    ]}


def test_seed_rows_average_the_corpus_seeds_beside_the_table_references():
    probe = {"model": "tsjepa", "mode": "probe", "horizon": "avg", "train_fraction": 1.0, "mae": 0.5, "val_mse": 0.6}
    rows = transfer.seed_rows("etth1", {0: [{**probe, "mse": 0.40}], 1: [{**probe, "mse": 0.44}]}, table(0.40))
    corpus = [r for r in rows if r["pretraining"].startswith("corpus")]
    assert len(corpus) == 1
    assert corpus[0]["mse"] == pytest.approx(0.42) and corpus[0]["n_seeds"] == 2
    assert corpus[0]["mse_std"] == pytest.approx(0.04 / 2 ** 0.5)
    assert (corpus[0]["mse_seed0"], corpus[0]["mse_seed1"]) == (0.40, 0.44)
    others = {(r["model"], r["pretraining"]): r["mse"] for r in rows if r not in corpus}
    assert others == {("tsjepa", "etth1 (own)"): 0.39, ("random-init", "-"): 0.41, ("linear", "-"): 0.45}
    assert {r["dataset"] for r in rows} == {"etth1"} and all(r["horizon"] == "avg" for r in rows)


def test_seed_rows_refuse_a_shipped_encoder_that_no_longer_reproduces_its_table():
    probe = {"model": "tsjepa", "mode": "probe", "horizon": "avg", "train_fraction": 1.0, "mae": 0.5, "val_mse": 0.6}
    with pytest.raises(ValueError, match="no longer reproduces"):
        transfer.seed_rows("etth1", {0: [{**probe, "mse": 0.40}], 1: [{**probe, "mse": 0.44}]}, table(0.41))


def test_curve_references_are_the_tables_twin_mean_and_linear_at_full_labels(tmp_path):
    (tmp_path / "transfer").mkdir()
    (tmp_path / "transfer" / "etth1.json").write_text(json.dumps(table(0.40)))
    rows = transfer.references("etth1", str(tmp_path))
    assert {r["model"]: (r["mse"], r.get("mse_std"), r.get("n_seeds")) for r in rows} == {
        "random-init": (0.41, 0.01, 3), "linear": (0.45, None, None)}
    assert "mse_std" not in next(r for r in rows if r["model"] == "linear")  # absent, not None
    assert all(r["steps"] == 0 and r["corpus_share"] == 0.0 and r["dataset"] == "etth1" for r in rows)


def test_share_averages_each_arm_over_its_pretraining_seeds(tmp_path, monkeypatch):
    """The share table: the 8-file arm over `SHARE_SEEDS` and the all-file arm over `CORPUS_SEEDS`, each a mean
    and sample std of its seeds' full-label probe MSE, beside the per-target table's references."""
    monkeypatch.setattr(transfer, "RUNS", tmp_path / "runs")
    (tmp_path / "transfer").mkdir()
    (tmp_path / "transfer" / "etth1.json").write_text(json.dumps(table(0.40)))
    probe = {"model": "tsjepa", "mode": "probe", "horizon": "avg", "mae": 0.5, "val_mse": 0.6, "n_windows": 10}

    def evaluation(path: Path, mse: float) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{**probe, "train_fraction": 1.0, "mse": mse}, {**probe, "train_fraction": 0.1, "mse": 9.0},
                {**probe, "model": "random-init", "train_fraction": 1.0, "mse": 9.0}]
        path.write_text(json.dumps({"rows": rows, "device": "cpu", "wall_s": 1.0}))
        os.utime(path, (time.time() + 1, time.time() + 1))  # newer than its checkpoint: not scored again
        return path

    def pretrained(run_dir: Path, overrides: list[str]) -> Path:
        assert overrides[-1] == f"seed={run_dir.name[-1]}"  # each share seed pretrained with its own seed
        (run_dir / "checkpoints" / "last").mkdir(parents=True)
        (run_dir / "checkpoints" / "last" / "config.json").write_text("{}")
        share_mse = {"0": 0.38, "1": 0.42}[run_dir.name[-1]]
        evaluation(tmp_path / "runs" / "etth1" / f"eval-share-s{run_dir.name[-1]}-full" / "forecast" / "etth1.json",
                   share_mse)
        return run_dir / "checkpoints" / "last"

    all_files = {k: evaluation(tmp_path / f"all-s{k}.json", mse) for k, mse in enumerate((0.40, 0.41, 0.45))}
    monkeypatch.setattr(transfer, "pretrained", pretrained)
    monkeypatch.setattr(transfer, "corpus_seed_evaluation", lambda target, k: all_files[k])
    monkeypatch.setattr(transfer, "SHARE_SEEDS", (0, 1))
    monkeypatch.setattr(transfer, "CORPUS_SEEDS", (0, 1, 2))
    rows = json.loads(transfer.share(["etth1"], str(tmp_path)).read_text())["rows"]
    arms = {r["corpus_share"]: r for r in rows if r["model"] == "tsjepa"}
    fraction = len(transfer.SHARE_FILES) / len(transfer.CORPUS_FILES)
    assert set(arms) == {fraction, 1.0}
    assert arms[fraction]["mse"] == pytest.approx(0.40) and arms[fraction]["n_seeds"] == 2
    assert arms[fraction]["mse_std"] == pytest.approx(0.04 / 2 ** 0.5)
    assert (arms[fraction]["mse_seed0"], arms[fraction]["mse_seed1"]) == (0.38, 0.42)
    assert arms[1.0]["mse"] == pytest.approx(0.42) and arms[1.0]["n_seeds"] == 3 and arms[1.0]["mse_seed2"] == 0.45
    assert {r["model"]: r["mse"] for r in rows if r["model"] != "tsjepa"} == {"random-init": 0.41, "linear": 0.45}
