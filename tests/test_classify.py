"""PhysioNet 2012 end to end: per-fold pretraining on irregular stays, then the classify protocol."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, compose_config
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import tsjepa.train as train_module
from tsjepa.encoding import channel_pool
from tsjepa.eval import classify
from tsjepa.models import Encoder, EncoderConfig


@pytest.fixture(scope="module")
def fold0_checkpoint(tmp_path_factory, shared_data):
    run_dir = tmp_path_factory.mktemp("physionet")
    cfg = compose_config("train", [
        "data=physionet2012", f"run_dir={run_dir}", "train.steps=2", "train.batch_size=8", "train.warmup=1",
        "train.log_every=1", "train.ckpt_every=2", *TINY_MODEL,
    ])
    assert cfg.model.name == "clinical" and cfg.model.encoder.instance_norm is False  # preset picked by data
    return train_module.train(cfg)


def test_pretraining_reads_only_the_training_folds(fold0_checkpoint, monkeypatch):
    config = json.loads((fold0_checkpoint / "config.json").read_text())
    assert config["encoder"]["span"] == 48.0 and len(config["channels"]["names"]) == 37
    assert config["channels"]["names"][0] == "physionet2012/Albumin"
    assert (config["data"]["fold"], config["data"]["folds"], config["data"]["fold_seed"]) == (0, 5, 0)
    cfg = compose_config("train", ["data=physionet2012", *TINY_MODEL])
    windows, _ = train_module.pretraining_windows(cfg)
    records = windows[0].records
    from tsjepa.data.sources import load_dataset

    everything = load_dataset("physionet2012")
    _, test = everything.split(0, 5, 0)
    assert len(records) == len(everything) - len(test)
    assert not set(records.ids) & set(everything.ids[test])


def test_classify_protocol_and_leak_guard(fold0_checkpoint, tmp_path):
    overrides = ["eval=classify", "data=physionet2012", f"out_dir={tmp_path}", "eval.cs=[0.01]",
                 "eval.finetune.max_steps=2", "eval.finetune.eval_every=1", "eval.finetune.batch_size=8"]
    with pytest.raises(ValueError, match="has seen the records of fold 1"):
        classify.run(compose_config("eval", [*overrides, f"ckpt={fold0_checkpoint}", "eval.folds=[1]"]))
    run_dir = fold0_checkpoint.parents[1]  # pytest's tmp folder "physionet0": its last digit as the fold
    assert run_dir.name.endswith("0")
    template = f"{run_dir.parent / run_dir.name[:-1]}*/checkpoints/last"  # each match's config names its fold
    path = classify.run(compose_config("eval", [*overrides, f"ckpt={template}", "eval.folds=[0]",
                                                "eval.train_fractions=[0.1,1.0]"]))
    record = json.loads(path.read_text())
    assert record["task"] == "classify" and record["dataset"] == "physionet2012"
    rows = {(r["model"], r["mode"], r["train_fraction"]): r for r in record["rows"]}
    heads = {("summary-stats", "logistic"), ("summary-stats", "gradient-boosting"), ("tsjepa", "probe"),
             ("random-init", "probe")}
    assert set(rows) == {(*h, f) for h in heads for f in (0.1, 1.0)} | {("tsjepa", "finetune", 1.0)}
    for row in rows.values():
        assert 0.5 < row["auroc"] <= 1 and 0.1 < row["auc_pr"] <= 1 and row["folds"] == 1
        assert row["n_windows"] in (799, 800)  # the stays of the one fold scored (3997 / 5), not all of them
    assert rows["summary-stats", "gradient-boosting", 1.0]["auroc"] > 0.8  # a known-strong classical baseline
    # logistic heads carry their inner-CV AUROC on the training stays (the study's selection score)
    for head in (("summary-stats", "logistic"), ("tsjepa", "probe"), ("random-init", "probe")):
        assert 0.5 < rows[(*head, 1.0)]["val_auroc"] <= 1
    assert "val_auroc" not in rows["summary-stats", "gradient-boosting", 1.0]
    assert rows["summary-stats", "gradient-boosting", 0.1]["auroc"] < rows["summary-stats", "gradient-boosting", 1.0]["auroc"]
    assert record["finetune"][0]["steps"] == 2
    assert path.with_suffix(".png").exists() and path.with_name("physionet2012-label-efficiency.png").exists()


def test_classify_over_pretraining_seeds(fold0_checkpoint, tmp_path):
    """A glob over seeds and folds: each seed scored with its own heads, rows = mean and std over seeds."""
    import shutil

    root = tmp_path / "runs"
    shutil.copytree(fold0_checkpoint, root / "s0" / "fold0" / "checkpoints" / "last")
    train_module.train(compose_config("train", [
        "data=physionet2012", f"run_dir={root / 's1' / 'fold0'}", "seed=1", "train.steps=2", "train.batch_size=8",
        "train.warmup=1", "train.ckpt_every=2", *TINY_MODEL,
    ]))
    overrides = ["eval=classify", "data=physionet2012", f"out_dir={tmp_path / 'out'}", "eval.cs=[0.01]",
                 "eval.modes=[probe]", "eval.random_baseline=false", f"ckpt={root}/s*/fold*/checkpoints/last"]
    with pytest.raises(ValueError, match=r"no checkpoint for \(seed, held-out fold\) \[\(0, 1\), \(1, 1\)\]"):
        classify.run(compose_config("eval", [*overrides, "eval.folds=[0,1]"]))
    record = json.loads(classify.run(compose_config("eval", [*overrides, "eval.folds=[0]"])).read_text())
    assert record["seed"] == [0, 1] and set(record["per_seed"]) == {"0", "1"}
    assert record["checkpoints"]["1"] == {"0": f"{root}/s1/fold0/checkpoints/last"}
    assert record["pretrain_step"] == 2  # every (seed, fold) checkpoint was pretrained 2 steps
    row = next(r for r in record["rows"] if r["model"] == "tsjepa")
    per_seed = [f["auroc"] for f in record["folds"]["tsjepa/probe@1"]]
    assert [f["seed"] for f in record["folds"]["tsjepa/probe@1"]] == [0, 1]
    assert row["n_seeds"] == 2 and row["auroc"] == pytest.approx(np.mean(per_seed))
    assert row["auroc_std"] == pytest.approx(np.std(per_seed, ddof=1))
    one = json.loads(classify.run(compose_config("eval", [*overrides, "eval.folds=[0]", "eval.seeds=[1]"])
                                  ).read_text())
    assert one["seed"] == 1 and next(r for r in one["rows"] if r["model"] == "tsjepa")["auroc"] == per_seed[1]


def test_checkpoints_pretrained_elsewhere_serve_every_fold(fold0_checkpoint, tmp_path):
    """A glob over checkpoints pretrained without a held-out fold (another corpus): each serves every fold of
    its seed; one that read PhysioNet without a held-out fold is refused at scoring."""
    import shutil

    for seed, datasets in ((0, ["corpus/sunspots_monthly"]), (1, ["corpus/sunspots_monthly"]),
                           (2, ["physionet2012"])):
        copy = shutil.copytree(fold0_checkpoint, tmp_path / f"s{seed}")
        config = json.loads((copy / "config.json").read_text())
        config["seed"], config["data"] = seed, {"name": "corpus", "datasets": datasets}
        (copy / "config.json").write_text(json.dumps(config))
    cfg = compose_config("eval", ["eval=classify", "data=physionet2012", f"ckpt={tmp_path}/s*", "eval.seeds=[0,1]"])
    assert classify.fold_checkpoints(cfg, [0, 2]) == {s: {0: f"{tmp_path}/s{s}", 2: f"{tmp_path}/s{s}"} for s in (0, 1)}
    assert classify.checked_checkpoint(f"{tmp_path}/s1", 2, cfg, torch.device("cpu")).config["seed"] == 1
    with pytest.raises(ValueError, match="has seen the records of fold 2"):
        classify.checked_checkpoint(f"{tmp_path}/s2", 2, cfg, torch.device("cpu"))


def test_channel_pool_statistics_of_observed_tokens():
    emb = torch.arange(2 * 3 * 4 * 2, dtype=torch.float32).reshape(2, 3, 4, 2)  # [N, C, P, D]
    observed = torch.tensor([[[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 1, 1]]] * 2, dtype=torch.bool)
    pooled = channel_pool(emb, observed, ["mean", "max", "last"]).reshape(2, 3, 7)
    ch0 = emb[0, 0, [0, 2]]
    assert torch.equal(pooled[0, 0], torch.cat([ch0.mean(0), ch0.amax(0), emb[0, 0, 2], torch.ones(1)]))
    assert torch.equal(pooled[1, 2, 4:6], emb[1, 2, 3])  # the last observed patch
    assert torch.equal(pooled[0, 1], torch.zeros(7))  # a never-observed channel: zeros and flag 0
    with pytest.raises(ValueError, match="pool must be a non-empty list"):
        channel_pool(emb, observed, ["median"])


def test_finetuning_head_starts_at_the_logistic_probe():
    rng = np.random.default_rng(0)
    encoder = Encoder(EncoderConfig(span=8.0, patch_duration=4.0, slots=2, d_model=8, depth=1, heads=2))
    model = classify.Classifier(encoder, n_channels=2, n_static=3, pool=["mean"])
    features = rng.normal(2.0, 3.0, (200, model.head.in_features))
    labels = (features[:, 0] + rng.normal(size=200) > 2).astype(int)
    model.init_head(features, labels, c=0.1, seed=0)
    scaler = StandardScaler().fit(features)
    probe = LogisticRegression(C=0.1, class_weight="balanced", max_iter=3000, random_state=0)
    probe.fit(scaler.transform(features), labels)
    logits = model.head(torch.as_tensor(features, dtype=torch.float32))[:, 0].detach().numpy()
    np.testing.assert_allclose(logits, probe.decision_function(scaler.transform(features)), atol=1e-4)
