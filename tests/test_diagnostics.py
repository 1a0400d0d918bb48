import pytest
import torch

from tsjepa.diagnostics import patch_recoverability, r_squared, recoverability, slot_share
from tsjepa.eval import SeedRows
from tsjepa.results import aggregate_seeds, save_figure


def test_r_squared():
    y = torch.randn(200, 3)
    assert r_squared(y, y) == pytest.approx(1.0)
    assert r_squared(y.mean(0).expand_as(y), y) == pytest.approx(0.0, abs=1e-12)
    observed = torch.ones_like(y, dtype=torch.bool)
    observed[:, 2] = False
    noisy = y.clone()
    noisy[:, 2] += 100  # an unobserved column cannot lower the score
    assert r_squared(noisy, y, observed) == pytest.approx(1.0)


def test_slot_share_is_the_variance_the_slot_alone_explains():
    gen = torch.Generator().manual_seed(0)
    slots = torch.arange(20).repeat(50)  # 50 windows x 20 (channel, patch) slots
    code, content = torch.randn(20, 4, generator=gen), torch.randn(1000, 4, generator=gen)
    assert slot_share(code[slots], slots) == pytest.approx(1.0)
    assert slot_share(content, slots) == pytest.approx(20 / 1000, abs=0.02)  # chance level: slots / tokens
    share = slot_share(3 * code[slots] + content, slots)  # code variance 9, content 1
    assert share == pytest.approx(0.9, abs=0.03)


def test_recoverability_tells_kept_from_discarded_detail():
    gen = torch.Generator().manual_seed(0)
    values = torch.randn(3000, 8, generator=gen)
    kept = values @ torch.randn(8, 32, generator=gen)  # a linear, invertible code of the values
    lost = values[:, :2] @ torch.randn(2, 32, generator=gen)  # keeps 2 of 8 values
    observed = torch.ones_like(values, dtype=torch.bool)
    assert patch_recoverability(kept, values, observed) > 0.99
    assert 0.15 < patch_recoverability(lost, values, observed) < 0.35
    split = {"train": slice(0, 2000), "val": slice(2000, 2500), "test": slice(2500, 3000)}
    r2 = recoverability({s: lost[i] for s, i in split.items()}, {s: values[i] for s, i in split.items()},
                        {s: observed[i] for s, i in split.items()}, [1e-3, 1e-1])
    assert 0.15 < r2 < 0.35


def test_aggregate_seeds_means_stds_and_counts():
    rows = {
        0: [{"model": "tsjepa", "horizon": 96, "mse": 0.40, "n_windows": 10, "folds": 3},
            {"model": "linear", "horizon": 96, "mse": 0.41, "n_windows": 10}],
        1: [{"model": "tsjepa", "horizon": 96, "mse": 0.42, "n_windows": 10, "folds": 3}],
    }
    out = aggregate_seeds(rows, keys=("model", "horizon"), metrics=("mse",))
    assert [r["model"] for r in out] == ["tsjepa", "linear"]
    assert out[0]["mse"] == pytest.approx(0.41) and out[0]["mse_std"] == pytest.approx(0.0141421, rel=1e-4)
    assert out[0]["n_seeds"] == 2 and out[0]["n_windows"] == 10
    assert out[0]["folds"] == 3 and isinstance(out[0]["folds"], int)  # an equal count keeps its type
    assert out[1]["n_seeds"] == 1 and "mse_std" not in out[1]
    rows[2] = [{"model": "tsjepa", "horizon": 96, "mse": 0.44, "n_windows": 10, "slot_share": 0.9}]
    rows[3] = [{"model": "tsjepa", "horizon": 96, "mse": 0.46, "n_windows": 10, "slot_share": 0.5}]
    out = aggregate_seeds(rows, keys=("model", "horizon"), metrics=("mse",))
    assert out[0]["slot_share"] == pytest.approx(0.7)  # an entry only some seeds have: their mean
    assert list(out[0]) == ["model", "horizon", "mse", "n_windows", "folds", "slot_share", "mse_std", "n_seeds"]


def test_figures_carry_the_device_they_were_measured_on(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = tmp_path / "sub" / "plot.png"
    save_figure(fig, path, "cuda: NVIDIA H200")
    assert [t.get_text() for t in fig.texts] == ["device: cuda: NVIDIA H200"]
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 1000


def test_seed_rows_record_what_each_seed_scored():
    one = SeedRows()
    one.add(3, "runs/a-s3/checkpoints/last", 250, [{"model": "tsjepa", "mse": 0.4}])
    assert one.label == 3
    assert one.record() == {"checkpoints": {"3": "runs/a-s3/checkpoints/last"}, "per_seed": {}, "pretrain_step": 250}
    several = SeedRows()
    for seed, step, mse in ((0, 250, 0.40), (1, 250, 0.42), (2, 300, 0.44)):
        several.add(seed, f"runs/a-s{seed}/checkpoints/last", step, [{"model": "tsjepa", "mse": mse}])
    assert several.label == [0, 1, 2]
    record = several.record()
    assert record["pretrain_step"] == {"0": 250, "1": 250, "2": 300}  # unequal: each seed's
    assert record["per_seed"]["1"] == [{"model": "tsjepa", "mse": 0.42}]
    (row,) = several.aggregate(keys=("model",), metrics=("mse",))
    assert row["mse"] == pytest.approx(0.42) and row["n_seeds"] == 3 and row["mse_std"] == pytest.approx(0.02)


def test_position_r2_is_one_for_slot_codes_near_zero_for_content_and_the_same_in_any_chunking():
    from tsjepa.diagnostics import position_r2

    torch.manual_seed(0)
    slots, windows = torch.arange(6000) % 30, torch.arange(6000) // 30
    codes = torch.randn(30, 16)[slots]
    assert position_r2(codes, slots, windows) == pytest.approx(1.0)
    noise = torch.randn(6000, 16)
    assert abs(position_r2(noise, slots, windows)) < 0.1
    mixed = codes + noise
    assert position_r2(mixed, slots, windows, chunk=777) == pytest.approx(position_r2(mixed, slots, windows), abs=1e-12)
