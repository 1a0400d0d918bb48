"""Real ETTh1: pretrain a tiny model for a few steps, crash and resume, evaluate a frozen encoder."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, compose_config, seed_copies, train_config
from safetensors.torch import load_file

import tsjepa.train as train_module
from tsjepa.checkpoint import CheckpointError, from_pretrained, read_config
from tsjepa.data.sources import load_dataset
from tsjepa.data.windows import Windows
from tsjepa.encoding import encode_windows
from tsjepa.eval import forecast


def test_pretraining_writes_checkpoint_and_diagnostics(pretrained):
    config = json.loads((pretrained / "config.json").read_text())
    assert config["step"] == 4 and config["channels"]["names"][-1] == "ett/OT"
    assert config["encoder"]["span"] == 336.0
    metrics = [json.loads(line) for line in (pretrained.parents[1] / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [2, 4]
    for m in metrics:
        assert m["prediction"] > 0 and m["sigreg"] > 0 and 1 <= m["effective_rank"] <= 32
        assert 0 <= m["slot_share"] <= 1
    peaks = [m["peak_memory_gb"] for m in metrics]  # the process' peak resident set, never falling
    assert 0.05 < peaks[0] <= peaks[1] < 64


def test_resume_after_crash_reproduces_the_uninterrupted_run(pretrained, tmp_path, monkeypatch):
    original = train_module.sample_batch
    calls = {"n": 0}

    def crash_at_step_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(train_module, "sample_batch", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(train_config(tmp_path))
    assert json.loads((tmp_path / "checkpoints/last/config.json").read_text())["step"] == 2
    monkeypatch.setattr(train_module, "sample_batch", original)
    resumed = train_module.train(train_config(tmp_path))
    a, b = load_file(str(pretrained / "model.safetensors")), load_file(str(resumed / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_frozen_encoder_forecast_eval(pretrained, tmp_path):
    cfg = compose_config("eval", [
        "eval=forecast", f"ckpt={pretrained}", f"out_dir={tmp_path}", "eval.horizons=[96]", "eval.plot_windows=2",
    ])
    path = forecast.run(cfg)
    record = json.loads(path.read_text())
    assert record["finetune"] == {}
    assert record["task"] == "forecast" and record["dataset"] == "etth1"
    assert set(record) >= {"command", "commit", "seed", "device", "wall_s", "rows"}
    assert record["encoder"] == read_config(pretrained)["encoder"]  # the architecture its random-init twin drew
    rows = {(r["model"], r["horizon"]): r for r in record["rows"]}
    models = ("linear", "dlinear", "seasonal-naive", "tsjepa", "random-init")
    assert set(rows) == {(m, h) for m in models for h in (96, "avg")}
    assert {r["mode"] for r in record["rows"]} == {"supervised", "naive", "probe"}
    for row in rows.values():
        assert row["n_windows"] == 2785
        assert 0.2 < row["mse"] < 1.0 and 0.2 < row["mae"] < 1.0
    assert 1 < rows[("tsjepa", "avg")]["effective_rank"] <= 32 and rows[("tsjepa", "avg")]["isotropy"] > 0
    assert 0 < rows[("tsjepa", "avg")]["slot_share"] < 1
    assert rows[("linear", 96)]["mse"] == pytest.approx(0.370, abs=0.01)  # ridge on raw windows, known value
    assert path.with_suffix(".md").read_text().count("| tsjepa | probe |") == 2
    assert path.with_suffix(".png").stat().st_size > 10_000


def test_eval_refuses_too_long_lookback_and_missing_checkpoint(pretrained, tmp_path):
    cfg = compose_config("eval", ["eval=forecast", f"ckpt={pretrained}", "data.lookback=512", f"out_dir={tmp_path}"])
    with pytest.raises(ValueError, match="span up to 336.0.*data.lookback=512.*at most 336"):
        forecast.run(cfg)
    encoder = from_pretrained(pretrained).encoder  # a shorter window is read with its first patches unobserved
    series = load_dataset("etth1")
    short = Windows(series, (0, 2000), 104, 24, np.arange(7))
    forecast.check_span(encoder, short, str(pretrained))
    out = encode_windows(encoder, short, torch.arange(4), 4, torch.device("cpu"))
    assert out.patch_observed[:, :, :14].sum() == 0 and out.patch_observed[:, :, 15:].all()
    cfg = compose_config("eval", ["eval=forecast", f"ckpt={tmp_path / 'none'}", f"out_dir={tmp_path}"])
    with pytest.raises(CheckpointError, match="does not exist"):
        forecast.run(cfg)


@pytest.mark.parametrize("argv,message", [
    (["-m", "tsjepa.train", "data=etth1", "train.stpes=3"], "Key 'stpes' is not in struct"),
    (["-m", "tsjepa.train", "data=nosuch"], "Could not find 'data/nosuch'"),
    (["-m", "tsjepa.eval", "forcast", "ckpt=x"], "task is one of ['channels', 'classify', 'classify-ucr', 'crosschannel', 'forecast', 'irregular', 'rare'], got 'forcast'"),
])
def test_cli_names_bad_arguments(argv, message):
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert message in result.stderr


def test_finetune_mode_trains_encoder_and_head_with_early_stopping(pretrained, tmp_path):
    cfg = compose_config("eval", [
        "eval=forecast", f"ckpt={pretrained}", f"out_dir={tmp_path}", "eval.horizons=[96]", "eval.plot_windows=1",
        "eval.modes=[probe,finetune]", "eval.finetune.epochs=0.006", "eval.finetune.evals_per_epoch=515",
        "eval.finetune.batch_size=8", "eval.finetune.val_stride=64", "eval.finetune.lrs=[1e-4]",
        "eval.finetune.layer_decays=[1.0,0.5]", "eval.finetune.head_penalty_scales=[1,100]",
    ])  # 8,246 train windows / 8 = 1,031 steps an epoch: 6 steps, a val check every 2
    record = json.loads(forecast.run(cfg).read_text())
    rows = {(r["model"], r["mode"], r["horizon"]): r for r in record["rows"]}
    for key in [("tsjepa", "finetune", 96), ("random-init", "supervised", 96), ("tsjepa", "probe", 96)]:
        assert rows[key]["n_windows"] == 2785 and 0.2 < rows[key]["mse"] < 1.0
    assert set(record["finetune"]) == {"tsjepa/96", "random-init/96"}
    for log in record["finetune"].values():
        assert log["best_step"] in (0, 2, 4, 6) and log["steps"] <= 6
        assert log["best_val_mse"] <= log["initial_val_mse"]  # never worse on val than the probe it starts from
        assert [(g["head_penalty_scale"], g["lr"], g["layer_decay"]) for g in log["grid"]] == [
            (1.0, 1e-4, 1.0), (1.0, 1e-4, 0.5), (100.0, 1e-4, 1.0), (100.0, 1e-4, 0.5)]
        # each grid point starts from its own head: the x100 refit is a different function from the probe's
        start = {g["head_penalty_scale"]: g["initial_val_mse"] for g in log["grid"]}
        assert start[100.0] != start[1.0]
        assert log["best_val_mse"] == min(g["best_val_mse"] for g in log["grid"])  # chosen on val
        for point in log["grid"]:  # every check is traced, the probe's at step 0
            steps = [t["step"] for t in point["trace"]]
            assert steps[0] == 0 and steps == sorted(steps) and steps[-1] <= point["steps"]
            assert point["trace"][0]["val_mse"] == point["initial_val_mse"]
            assert min(t["val_mse"] for t in point["trace"]) == point["best_val_mse"]


def test_layerwise_learning_rates_decay_from_the_head_down(pretrained):
    from tsjepa import from_pretrained
    from tsjepa.eval.finetune import ForecastModel, layerwise_groups
    from tsjepa.heads import Ridge

    encoder = from_pretrained(pretrained).encoder
    head = Ridge(torch.zeros(encoder.num_patches * encoder.config.d_model, 4), torch.zeros(4), 1.0)
    model = ForecastModel(encoder, head)
    groups = layerwise_groups(model, lr=1.0, decay=0.5)
    # head; final norm; the 2 blocks of depth 1 from the input (the top one beside the norm); input embeddings
    assert [g["lr"] for g in groups] == [1.0, 0.5, 0.25, 0.5, 0.125]
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_fit_once_keeps_frozen_parameters_and_traces_the_monitor(pretrained):
    """What eval/finetune_diagnosis.py relies on: a frozen head stays the probe's, the encoder moves, and every
    check records ``monitor()`` beside the val MSE."""
    from omegaconf import OmegaConf

    from tsjepa import from_pretrained
    from tsjepa.eval.finetune import ForecastModel, fit_once
    from tsjepa.heads import Ridge

    cfg = compose_config("eval", ["eval=forecast", f"ckpt={pretrained}"])
    loaded = from_pretrained(pretrained)
    data = forecast.ForecastData.load(cfg, "forecast", loaded)
    train, val = data.windows("train", 24), data.windows("val", 24, 256)
    encoder = loaded.encoder
    head = Ridge(0.01 * torch.randn(encoder.num_patches * encoder.config.d_model, 24), torch.zeros(24), 1.0)
    model = ForecastModel(encoder, head)
    model.head.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def moved(prefix: str) -> float:
        now = model.state_dict()
        return float(sum((now[k] - v).abs().sum() for k, v in before.items() if k.startswith(prefix)))

    encoder_moved = []
    finetune_cfg = OmegaConf.merge(cfg.eval.finetune, {"epochs": 4 / len(train), "batch_size": 1,
                                                       "evals_per_epoch": len(train) / 2, "patience": 100})
    _, log = fit_once(model, train, val, finetune_cfg, 1e-3, 1.0, 0, torch.device("cpu"),
                      monitor=lambda: encoder_moved.append(moved("encoder.")) or moved("head."))
    assert log["steps"] == 4 and [t["step"] for t in log["trace"]] == [0, 2, 4]
    assert [t["monitor"] for t in log["trace"]] == [0.0, 0.0, 0.0]  # the frozen head never moves
    assert encoder_moved[0] == 0.0 and encoder_moved[1] > 0.0 and encoder_moved[2] > 0.0


def test_joint_pretraining_then_forecast_on_a_seventy_ten_twenty_dataset(tmp_path):
    """Two datasets with different channels in one run; then the standard protocol on exchange rate."""
    ckpt = train_module.train(compose_config("train", [
        "data=etth1", "data.datasets=[etth1,exchange_rate]", f"run_dir={tmp_path / 'run'}", "train.steps=2",
        "train.batch_size=8", "train.warmup=1", "train.log_every=1", *TINY_MODEL,
    ]))
    names = json.loads((ckpt / "config.json").read_text())["channels"]["names"]
    assert names[:7] == [f"ett/{c}" for c in ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")]
    assert names[7:] == [f"exchange_rate/{c}" for c in ("0", "1", "2", "3", "4", "5", "6", "OT")]
    cfg = compose_config("eval", [
        "eval=forecast", "data=exchange_rate", f"ckpt={ckpt}", f"out_dir={tmp_path}", "eval.horizons=[96]",
        "eval.random_baseline=false", "eval.max_fit_rows=10000", "eval.plot_windows=1",
    ])
    record = json.loads(forecast.run(cfg).read_text())
    assert record["dataset"] == "exchange_rate" and record["fit_stride"] == {"train": 4, "val": 1}
    rows = {(r["model"], r["horizon"]): r for r in record["rows"]}
    assert rows[("tsjepa", 96)]["n_windows"] == 1517 - 96 + 1  # every test window of the last 20% (1517 rows)
    # seasonal naive with period 1 is the random walk, hard to beat on exchange rates
    assert rows[("seasonal-naive", 96)]["mse"] < rows[("tsjepa", 96)]["mse"]


def test_forecast_metrics_skip_unobserved_targets():
    pred, target = torch.zeros(2, 3), torch.tensor([[1.0, 2.0, 99.0], [1.0, 1.0, 1.0]])
    observed = torch.tensor([[True, True, False], [True, True, True]])
    assert forecast.metrics(pred, target, observed) == {"mse": pytest.approx(8 / 5), "mae": pytest.approx(6 / 5)}
    assert forecast.fit_stride(1000, 7, 7000) == 1 and forecast.fit_stride(1001, 7, 7000) == 2


def test_irregular_eval_drops_lookback_observations_only(pretrained, tmp_path):
    from tsjepa.eval import irregular

    cfg = compose_config("eval", [
        "eval=irregular", f"ckpt={seed_copies(pretrained, tmp_path)}", f"out_dir={tmp_path}", "eval.horizons=[96]",
        "eval.fractions=[0.0,0.7]",
    ])
    record = json.loads(irregular.run(cfg).read_text())
    rows = {(r["model"], r["mode"], r["drop"]): r for r in record["rows"]}
    assert set(rows) == {(m, mode, p) for m, mode in [("tsjepa", "probe"), ("random-init", "probe"),
                                                     ("linear", "ffill-filled"), ("linear", "linear-filled")]
                         for p in (0.0, 0.7)}
    assert all(r["n_windows"] == 2785 for r in rows.values())  # targets are never dropped: every window scored
    # nothing dropped: both fills are the raw window, the known linear reference
    assert rows["linear", "ffill-filled", 0.0]["mse"] == pytest.approx(0.370, abs=0.01)
    assert rows["linear", "linear-filled", 0.0]["mse"] == rows["linear", "ffill-filled", 0.0]["mse"]
    for mode in ("ffill-filled", "linear-filled"):
        assert rows["linear", mode, 0.7]["mse"] > rows["linear", mode, 0.0]["mse"]
    # two seeds of the same weights: the same drops, so tsjepa's spread is 0; each seed draws its own twin
    assert record["seed"] == [0, 1] and set(record["per_seed"]) == {"0", "1"}
    for p in (0.0, 0.7):
        assert rows["tsjepa", "probe", p]["n_seeds"] == 2 and rows["tsjepa", "probe", p]["mse_std"] == 0.0
        assert rows["random-init", "probe", p]["mse_std"] > 0
        assert rows["linear", "ffill-filled", p]["n_seeds"] == 1
    assert tmp_path.joinpath("irregular", "etth1.png").exists()


def test_channel_identity_eval(pretrained, tmp_path):
    from tsjepa.eval import channels

    cfg = compose_config("eval", ["eval=channels", f"ckpt={pretrained}", f"out_dir={tmp_path}"])
    record = json.loads(channels.run(cfg).read_text())
    rows = {(r["model"], r["mode"]): r for r in record["rows"]}
    for model in ("tsjepa", "random-init"):  # the twin goes through the same changes
        reference = rows[model, "reference"]
        # ids travel with the data: permuting channels permutes the forecasts and nothing else
        assert rows[model, "order-permuted"]["max_abs_diff"] < 1e-4
        assert rows[model, "order-permuted"]["mse"] == pytest.approx(reference["mse"], rel=1e-5)
        # the same values told they come from other sensors give other forecasts
        assert rows[model, "ids-shuffled"]["mse"] != pytest.approx(reference["mse"], rel=1e-6)
        drops = [mode for m, mode in rows if m == model and mode.startswith("drop ")]
        assert len(drops) == 7 and rows[model, "keep first 3"]["n_windows"] == 2785
        for mode in drops:  # fewer channels than in pretraining still encode and forecast
            assert 0.1 < rows[model, mode]["mse"] < 2.0 and rows[model, mode]["mse_reference"] > 0
    assert rows["tsjepa", "reference"]["mse"] != rows["random-init", "reference"]["mse"]


def test_projector_is_kept_for_resuming_and_left_out_of_the_pretrained_encoder(tmp_path):
    options = ["model.objective.projector=[32,8]", "model.objective.sigreg_on=axes"]
    ckpt = train_module.train(compose_config("train", [
        "data=etth1", f"run_dir={tmp_path}", "train.steps=2", "train.batch_size=8", "train.warmup=1",
        "train.log_every=1", *TINY_MODEL, *options,
    ]))
    weights = load_file(str(ckpt / "model.safetensors"))
    assert any(k.startswith("projector.") for k in weights)
    from tsjepa import from_pretrained

    pretrained = from_pretrained(ckpt)
    assert not hasattr(pretrained.encoder, "projector")
    metrics = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 < metrics["share_sigreg"] < 1 and -1 < metrics["patch_r2"] <= 1
    longer = train_module.train(compose_config("train", [
        "data=etth1", f"run_dir={tmp_path}", "train.steps=3", "train.batch_size=8", "train.warmup=1",
        "train.log_every=1", *TINY_MODEL, *options,
    ]))
    assert json.loads((longer / "config.json").read_text())["step"] == 3


def test_forecast_over_seeds_and_label_fractions(pretrained, tmp_path):
    """Two pretraining seeds found by a glob; heads fit on 10% and 100% of the train windows."""
    other = train_module.train(compose_config("train", [
        "data=etth1", f"run_dir={tmp_path / 's1'}", "seed=1", "train.steps=2", "train.batch_size=8",
        "train.warmup=1", *TINY_MODEL,
    ]))
    link = tmp_path / "s0"
    link.mkdir()
    (link / "checkpoints").symlink_to(pretrained.parent)
    cfg = compose_config("eval", [
        "eval=forecast", f"ckpt={tmp_path}/s*/checkpoints/last", f"out_dir={tmp_path}", "eval.horizons=[96]",
        "eval.plot_windows=1", "eval.train_fractions=[0.1,1.0]",
    ])
    path = forecast.run(cfg)
    record = json.loads(path.read_text())
    assert record["seed"] == [0, 1] and set(record["checkpoints"]) == {"0", "1"}
    assert record["checkpoints"]["1"] == str(other)
    rows = {(r["model"], r["horizon"], r["train_fraction"]): r for r in record["rows"]}
    for fraction in (0.1, 1.0):
        for model in ("tsjepa", "random-init"):
            row = rows[(model, 96, fraction)]
            assert row["n_seeds"] == 2 and row["mse_std"] > 0 and 0.2 < row["val_mse"] < 2
        assert rows[("linear", 96, fraction)]["n_seeds"] == 1
    assert rows[("linear", 96, 0.1)]["mse"] > rows[("linear", 96, 1.0)]["mse"]  # fewer labels, worse head
    assert 0.5 < rows[("tsjepa", "avg", 1.0)]["lookback_r2"] <= 1
    assert path.with_name("etth1-label-efficiency.png").stat().st_size > 10_000
    bad = compose_config("eval", ["eval=forecast", f"ckpt={pretrained}", "eval.seeds=[0,1]"])
    with pytest.raises(ValueError, match="glob"):
        forecast.run(bad)


def test_checkpoints_record_the_machine_that_ran_each_stretch_of_steps(tmp_path, monkeypatch):
    """A seeded run repeats bit for bit only on the same CPU model, instruction set, thread count and torch
    build, so the checkpoint names the machine of each stretch of steps; a resume elsewhere adds an entry."""
    from tsjepa.device import device_description

    def run(steps: int) -> dict:
        ckpt = train_module.train(compose_config("train", [
            "data=etth1", f"run_dir={tmp_path}", f"train.steps={steps}", "train.batch_size=8", "train.warmup=1",
            *TINY_MODEL]))
        return json.loads((ckpt / "config.json").read_text())

    here = device_description(torch.device("cpu"))
    assert f"{torch.get_num_threads()} threads" in here and torch.__version__ in here
    assert run(2)["machines"] == [{"from_step": 0, "device": here}]
    assert run(3)["machines"] == [{"from_step": 0, "device": here}]  # resumed on the same machine
    monkeypatch.setattr(train_module, "device_description", lambda device: "cpu: another machine")
    assert run(4)["machines"] == [{"from_step": 0, "device": here}, {"from_step": 3, "device": "cpu: another machine"}]
