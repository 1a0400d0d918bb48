"""Nothing lost, nothing silently wrong: writes under kills, resumes under changed configs, bad checkpoints,
bad inputs and bad config keys. Each case asserts the specific error or the exact state left behind."""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY_MODEL, compose_config, random_batch, train_config

import tsjepa.train as train_module
from tsjepa import as_timeseries, from_pretrained, save_pretrained
from tsjepa.atomic import recover_dir
from tsjepa.checkpoint import ADDED_FIELDS, CheckpointError
from tsjepa.data.sources import DatasetCard, DatasetError, fetch, load_card, load_dataset
from tsjepa.data.timeseries import TimeSeriesError
from tsjepa.data.vocab import ChannelVocab
from tsjepa.models import Encoder, EncoderConfig
from tsjepa.objective import ObjectiveConfig

PHASES = ("written", "ready", "old-moved", "swapped", "cleaned")


def tiny_encoder(seed: int = 0) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(EncoderConfig(span=64.0, patch_duration=8.0, slots=8, d_model=16, depth=1, heads=2,
                                 channel_capacity=8))


def entries(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------ writes never destroy what was not asked
def test_save_refuses_a_folder_with_other_files(tmp_path):
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match=r"holds files that are not a tsjepa checkpoint's \(notes.txt\)"):
        save_pretrained(target, tiny_encoder(), ChannelVocab(["a"], 8))
    assert entries(target) == ["notes.txt"] and (target / "notes.txt").read_text() == "keep me"
    assert entries(tmp_path) == ["mine"]


def test_save_refuses_a_file(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"data")
    with pytest.raises(CheckpointError, match="is a file"):
        save_pretrained(target, tiny_encoder(), ChannelVocab(["a"], 8))
    assert target.read_bytes() == b"data" and entries(tmp_path) == ["file.bin"]


def test_save_refuses_a_checkpoint_with_extra_files_and_replaces_a_clean_one(tmp_path):
    path = save_pretrained(tmp_path / "ckpt", tiny_encoder(), ChannelVocab(["a"], 8), step=1)
    save_pretrained(path, tiny_encoder(1), ChannelVocab(["a"], 8), step=2)
    assert from_pretrained(path).step == 2 and entries(tmp_path) == ["ckpt"]
    (path / "README.md").write_text("my notes")
    with pytest.raises(CheckpointError, match="README.md"):
        save_pretrained(path, tiny_encoder(), ChannelVocab(["a"], 8), step=3)
    assert from_pretrained(path).step == 2


def test_written_files_and_folders_are_readable_by_others(tmp_path, pretrained):
    old = os.umask(0o022)
    try:
        path = save_pretrained(tmp_path / "ckpt", tiny_encoder(), ChannelVocab(["a"], 8))
        from tsjepa.results import write_results

        result = write_results(tmp_path / "results", "task", "data", [{"model": "m", "mse": 1.0}], seed=0,
                               device="cpu", wall_s=0.0)
    finally:
        os.umask(old)
    for item in (path, path / "model.safetensors", result, result.with_suffix(".md")):
        assert item.stat().st_mode & stat.S_IROTH, item


KILL = textwrap.dedent("""
    import os, sys, torch
    import tsjepa.atomic as atomic
    from tsjepa import save_pretrained
    from tsjepa.data.vocab import ChannelVocab
    from tsjepa.models import Encoder, EncoderConfig
    torch.manual_seed(1)
    enc = Encoder(EncoderConfig(span=64.0, patch_duration=8.0, slots=8, d_model=16, depth=1, heads=2,
                                channel_capacity=8))
    atomic.FAULT_HOOK = lambda phase: os._exit(9) if phase == sys.argv[2] else None
    save_pretrained(sys.argv[1], enc, ChannelVocab(["a"], 8), step=2)
""")


@pytest.mark.parametrize("phase", PHASES)
def test_a_kill_at_every_phase_of_a_save_leaves_the_old_or_the_new_checkpoint(tmp_path, phase):
    path = save_pretrained(tmp_path / "last", tiny_encoder(), ChannelVocab(["a"], 8), step=1)
    result = subprocess.run([sys.executable, "-c", KILL, str(path), phase], capture_output=True, text=True,
                            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, timeout=120)
    assert result.returncode == 9, result.stderr
    note = recover_dir(path)
    expected = 1 if phase == "written" else 2  # once the new copy is complete (.ready), it wins
    assert from_pretrained(path).step == expected
    assert entries(tmp_path) == ["last"]  # no .new / .ready / .old left behind
    assert (note is None) == (phase == "cleaned")  # every repair is reported


def test_recovery_removes_temporary_copies_of_older_versions(tmp_path):
    path = save_pretrained(tmp_path / "last", tiny_encoder(), ChannelVocab(["a"], 8), step=1)
    (tmp_path / ".last.k2j4x9q1").mkdir()  # what an older tsjepa's interrupted save left behind
    (tmp_path / ".last.k2j4x9q1" / "model.safetensors").write_bytes(b"x")
    other = save_pretrained(tmp_path / "last.v2", tiny_encoder(), ChannelVocab(["a"], 8), step=1)
    (tmp_path / ".last.v2.new").mkdir()  # another checkpoint's save in progress: not this folder's to touch
    assert "abandoned temporary copy .last.k2j4x9q1" in recover_dir(path)
    assert entries(tmp_path) == [".last.v2.new", "last", "last.v2"] and from_pretrained(path).step == 1
    assert from_pretrained(other).step == 1


def test_training_repairs_an_interrupted_save_and_resumes(tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(os.path.dirname(__file__))!r})
        import tsjepa.atomic as atomic
        import tsjepa.train as T
        from conftest import train_config
        saves = []
        def hook(phase):
            saves.append(phase)
            if saves.count("ready") == 2 and phase == "old-moved":
                os._exit(9)  # killed between the two renames of the second checkpoint (step 4)
        atomic.FAULT_HOOK = hook
        T.train(train_config(sys.argv[1], steps=6))
    """)
    run = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                         env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, timeout=300)
    assert run.returncode == 9, run.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [".last.old", ".last.ready"]
    resumed = subprocess.run([sys.executable, "-m", "tsjepa.train", "data=etth1", f"run_dir={tmp_path}",
                              "train.steps=6", "train.batch_size=8", "train.warmup=2", "train.log_every=2",
                              "train.ckpt_every=2", *TINY_MODEL], capture_output=True, text=True,
                             env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "interrupted checkpoint save was repaired" in resumed.stdout
    assert "resuming" in resumed.stdout and "from step 4" in resumed.stdout
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]  # each step logged once


# ------------------------------------------------------------------ a run folder belongs to one configuration
@pytest.mark.parametrize("overrides,named", [
    (["train.lr=0.5", "model.objective.lam=0.5"], ["objective.lam: 0.05 -> 0.5", "train.lr: 0.001 -> 0.5"]),
    (["data=exchange_rate", "seed=7"], ["data.datasets: ['etth1'] -> ['exchange_rate']", "seed: 0 -> 7"]),
    (["model.encoder.d_model=16"], ["encoder.d_model: 32 -> 16"]),
])
def test_resuming_with_another_configuration_is_refused(pretrained, tmp_path, overrides, named):
    run_dir = tmp_path / "run"
    shutil.copytree(pretrained.parents[1], run_dir)
    before = (run_dir / "checkpoints" / "last" / "config.json").read_text()
    cfg = compose_config("train", [
        "data=etth1", f"run_dir={run_dir}", "train.steps=4", "train.batch_size=8", "train.warmup=2",
        "train.log_every=2", "train.ckpt_every=2", *TINY_MODEL, *overrides,
    ])
    with pytest.raises(ValueError, match="another configuration") as err:
        train_module.train(cfg)
    for text in named:
        assert text in str(err.value)
    assert "run_dir=<new folder>" in str(err.value)
    assert (run_dir / "checkpoints" / "last" / "config.json").read_text() == before


@pytest.mark.parametrize("section,key,override,changed", [
    ("objective", "centre_slots", "model.objective.centre_slots=true", "objective.centre_slots: False -> True"),
    ("encoder", "position", "model.encoder.position=rotary", "encoder.position: 'absolute' -> 'rotary'"),
])
def test_a_run_saved_before_an_option_existed_resumes_with_its_default(pretrained, tmp_path, section, key, override,
                                                                       changed):
    run_dir = tmp_path / "run"
    shutil.copytree(pretrained.parents[1], run_dir)
    config_path = run_dir / "checkpoints" / "last" / "config.json"
    config = json.loads(config_path.read_text())
    del config[section][key]  # as written before the option existed
    config_path.write_text(json.dumps(config))
    assert from_pretrained(train_module.train(train_config(run_dir, steps=6))).step == 6
    with pytest.raises(ValueError, match=re.escape(changed)):
        train_module.train(compose_config("train", [
            "data=etth1", f"run_dir={run_dir}", "train.steps=8", "train.batch_size=8", "train.warmup=2",
            "train.log_every=2", "train.ckpt_every=2", *TINY_MODEL, override]))


def test_only_options_added_after_the_first_checkpoints_take_their_default_on_resume():
    """`ADDED_FIELDS` names real options; a saved run that lacks one of them had its default, one that lacks an
    option every checkpoint has always named is not the same run (resume refuses it, naming the key)."""
    for key, cls in (("encoder", EncoderConfig), ("objective", ObjectiveConfig)):
        assert set(ADDED_FIELDS[key]) <= {f.name for f in fields(cls)}, key
    saved = {"objective": {**ObjectiveConfig().to_dict()}, "encoder": EncoderConfig().to_dict()}
    del saved["objective"]["target_norm"], saved["objective"]["lam"], saved["encoder"]["position"]
    identity, current = train_module.run_identity(saved), train_module.run_identity(
        {"objective": ObjectiveConfig().to_dict(), "encoder": EncoderConfig().to_dict()})
    assert identity["objective.target_norm"] == "none" and identity["encoder.position"] == "absolute"
    assert "objective.lam" not in identity and {k for k in current if identity.get(k) != current[k]} == {
        "objective.lam"}


def test_a_longer_schedule_resumes_and_a_shorter_one_is_refused(pretrained, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(pretrained.parents[1], run_dir)
    longer = train_module.train(train_config(run_dir, steps=6))
    assert from_pretrained(longer).step == 6
    config = json.loads((longer / "config.json").read_text())
    assert config["train"]["steps"] == 6  # config.json describes the run that made the weights
    with pytest.raises(ValueError, match="already run 6 steps, more than train.steps=4"):
        train_module.train(train_config(run_dir, steps=4))
    with pytest.raises(ValueError, match="train.resume=false"):
        train_module.train(compose_config("train", [
            "data=etth1", f"run_dir={run_dir}", "train.steps=6", "train.resume=false", *TINY_MODEL]))


# ------------------------------------------------------------------ strict checkpoint configs
@pytest.mark.parametrize("edit,message", [
    (lambda c: c["encoder"].pop("span"), r"'encoder' misses \['span'\]"),
    (lambda c: c["encoder"].pop("instance_norm"), r"misses \['instance_norm'\]"),
    (lambda c: c["encoder"].update(colour="red"), r"unknown keys \['colour'\]"),
    (lambda c: c["encoder"].update(d_model="16"), "encoder.d_model must be int"),
    (lambda c: c["encoder"].update(instance_norm=1), "encoder.instance_norm must be bool"),
    (lambda c: c["encoder"].update(heads=3), "not divisible by heads=3"),
    (lambda c: c["encoder"].update(position="learned"), "position must be one of"),
    (lambda c: c["encoder"].update(patch_duration=-8.0), "must be > 0: patch_duration"),
    (lambda c: c.pop("encoder"), "has no 'encoder' section"),
    (lambda c: c.pop("channels"), "'channels' must hold the channel vocabulary"),
    (lambda c: c["channels"].update(names=["a", "a"]), "unique strings"),
    (lambda c: c.update(step=-1), "step must be a non-negative integer"),
])
def test_checkpoint_configs_are_validated_strictly(tmp_path, edit, message):
    path = save_pretrained(tmp_path / "ckpt", tiny_encoder(), ChannelVocab(["a", "b"], 8))
    config = json.loads((path / "config.json").read_text())
    edit(config)
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        from_pretrained(path)


def test_a_checkpoint_written_before_an_encoder_option_existed_loads_with_its_default(tmp_path):
    """The shipped encoder and older runs name no ``position``: they load as the absolute time encoding they had,
    with the same outputs."""
    encoder = tiny_encoder().eval()
    path = save_pretrained(tmp_path / "ckpt", encoder, ChannelVocab(["a", "b"], 8))
    config = json.loads((path / "config.json").read_text())
    del config["encoder"]["position"]
    (path / "config.json").write_text(json.dumps(config))
    loaded = from_pretrained(path).encoder
    assert loaded.config.position == "absolute"
    batch = random_batch(b=2, c=2, t=64)
    torch.testing.assert_close(loaded(batch).embeddings, encoder(batch).embeddings)


# ------------------------------------------------------------------ data folders and downloads
def test_folder_datasets_read_only_the_files_their_card_lists(shared_data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(shared_data / "UCR_Anomaly_subset", root / "UCR_Anomaly_subset")
    card = load_card("ucr")
    source = root / "UCR_Anomaly_subset" / card.files[0]
    shutil.copy(source, source.with_name("999_UCR_Anomaly_Extra_1200_4187_4199.txt"))
    data = load_dataset("ucr", root)
    assert [s.name for s in data.series] == [f.removesuffix(".txt") for f in card.files]


def test_a_bad_downloaded_archive_is_a_clear_error_and_leaves_nothing(tmp_path):
    archive = tmp_path / "remote" / "data.zip"
    archive.parent.mkdir()
    archive.write_bytes(b"not a zip file" * 10)
    card = DatasetCard(name="broken", file="broken", url=archive.as_uri(), sha256="0" * 64, license="-",
                       format="wide_csv", freq="1h", protocol={}, tree=True)
    root = tmp_path / "data"
    with pytest.raises(DatasetError, match="BadZipFile"):
        fetch(card, root)
    assert entries(root) == []


# ------------------------------------------------------------------ inputs: handled or named
HOURS = pd.date_range("2020-01-01", periods=48, freq="h")


@pytest.mark.parametrize("make,expected", [
    (lambda: pd.DataFrame({"a": np.arange(48.0)}, index=HOURS.tz_localize("Europe/Paris")), None),
    (lambda: pd.DataFrame({"a": np.arange(48.0)}, index=HOURS.strftime("%Y-%m-%d %H:%M")), None),
    (lambda: pd.DataFrame({"a": [1.0, 2.0]}, index=pd.to_datetime(["2020-01-01", None])), "missing timestamp"),
    (lambda: pd.DataFrame({"a": [1.0, 2.0]}, index=[0.0, np.nan]), "missing timestamp"),
    (lambda: pd.DataFrame({"a": [1.0, 2.0]}, index=["x", "y"]), "cannot parse"),
    (lambda: pd.DataFrame({"a": []}, index=pd.DatetimeIndex([])), "no data"),
    (lambda: pd.DataFrame({"timestamp": [], "channel": [], "value": []}), "no data"),
    (lambda: pd.DataFrame({"a": np.ones(48), "big": np.full(48, 1e20)}, index=HOURS), "channel 'big' has values up to 1e\\+20"),
    (lambda: pd.DataFrame({"a": [1.0, np.inf]}, index=[0.0, 1.0]), "channel 'a'"),
    (lambda: pd.DataFrame(np.ones((2, 2)), columns=["a", "a"], index=[0.0, 1.0]), "duplicate channel names"),
])
def test_input_forms_are_handled_or_named(make, expected):
    if expected is None:
        series = as_timeseries(make(), step="1h")
        assert len(series) == 48 and series.times[:3].tolist() == [0.0, 1.0, 2.0]
    else:
        with pytest.raises(TimeSeriesError, match=expected):
            as_timeseries(make(), step="1h")


@pytest.mark.parametrize("step,expected", [("0h", "positive duration"), ("-1h", "positive duration"),
                                           ("1ns", "time units long"), ("often", "not a duration")])
def test_steps_must_be_positive_and_plausible(step, expected):
    with pytest.raises(TimeSeriesError, match=expected):
        as_timeseries(pd.DataFrame({"a": np.arange(48.0)}, index=HOURS), step=step)


# ------------------------------------------------------------------ config keys checked before work starts
@pytest.mark.parametrize("override,key", [
    ("train.steps=0", "train.steps=0"), ("train.steps=-5", "train.steps=-5"),
    ("train.precision=fp8", "train.precision='fp8'"), ("train.ckpt_every=0", "train.ckpt_every=0"),
    ("train.log_every=0", "train.log_every=0"), ("train.batch_size=0", "train.batch_size=0"),
    ("train.lr=0", "train.lr=0"), ("model.objective.mask_ratio=1.5", "mask_ratio=1.5"),
    ("model.objective.sigreg_backend=fast", "sigreg_backend"),
])
def test_bad_config_keys_are_refused_before_anything_is_written(tmp_path, override, key):
    cfg = compose_config("train", ["data=etth1", f"run_dir={tmp_path / 'run'}", *TINY_MODEL, override])
    with pytest.raises(ValueError, match=key.replace("[", r"\[")):
        train_module.train(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("override,key", [
    ("eval.batch_size=0", "eval.batch_size=0"), ("eval.alphas=[]", "eval.alphas"),
    ("eval.horizons=[0]", "eval.horizons"), ("eval.modes=[probe,tune]", "eval.modes"),
    ("eval.train_fractions=[0]", "train_fractions"),
])
def test_bad_forecast_eval_keys_are_refused_before_any_work(pretrained, tmp_path, override, key):
    from tsjepa.eval import forecast

    cfg = compose_config("eval", ["eval=forecast", f"ckpt={pretrained}", f"out_dir={tmp_path}", override])
    with pytest.raises(ValueError, match=key.replace("[", r"\[")):
        forecast.run(cfg)
    assert not (tmp_path / "forecast").exists()


def test_gluonts_lengths_are_checked_at_construction(pretrained):
    from tsjepa.integrations.gluonts import TSJEPAEstimator

    with pytest.raises(ValueError, match="prediction_length must be >= 1"):
        TSJEPAEstimator(str(pretrained), prediction_length=0)
    with pytest.raises(ValueError, match="context_length must be >= 1"):
        TSJEPAEstimator(str(pretrained), prediction_length=4, context_length=0)


def test_sktime_refuses_an_all_nan_column(pretrained):
    from tsjepa.integrations.sktime import TSJEPAForecaster

    y = pd.DataFrame({"ett/OT": np.sin(np.arange(400.0)), "ett/HUFL": np.full(400, np.nan)})
    with pytest.raises(ValueError, match=r"column\(s\) \['ett/HUFL'\] hold no observed value"):
        TSJEPAForecaster(str(pretrained)).fit(y, fh=[1, 2])


def test_gluonts_refuses_to_forecast_a_series_with_nothing_observed():
    from tsjepa.integrations.gluonts import TSJEPAForecastModel

    config = EncoderConfig(span=32.0, patch_duration=8.0, slots=8, d_model=16, depth=1, heads=2, channel_capacity=8)
    net = TSJEPAForecastModel(config.to_dict(), prediction_length=4, context_length=32, num_parallel_samples=2)
    past = torch.randn(2, 32)
    observed = torch.ones(2, 32)
    assert net(past, observed, torch.zeros(2, 1, dtype=torch.long)).shape == (2, 2, 4)
    observed[1] = 0  # the second series is all NaN in its context
    with pytest.raises(ValueError, match="series 1 of the batch .* no observed value in its last 32 steps"):
        net(past, observed, torch.zeros(2, 1, dtype=torch.long))
