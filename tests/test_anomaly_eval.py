"""Anomaly metrics, latent scores, and the rare / crosschannel evals on real SMD and UCR with tiny encoders."""

import json

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL, compose_config, seed_copies
from scipy.stats import chi2

import tsjepa.train as train_module
from tsjepa.data.anomaly import Segment
from tsjepa.eval.detection import detection_metrics, localisation_metrics, point_adjusted, ucr_hit
from tsjepa.eval.latent_scores import Whitener


def test_detection_metrics_with_and_without_point_adjustment():
    labels = np.array([0, 0, 1, 1, 1, 1] + [0] * 14)
    scores = np.array([0.5, 0.5, 0.9, 0.0, 0.0, 0.0] + [0.5] * 14)
    m = detection_metrics(labels, scores)
    # flagging only the 0.9 step: precision 1, recall 1/4 -> F1 0.4; flagging all: 0.2 / 1 -> F1 1/3
    assert m["best_f1"] == pytest.approx(0.4)
    # point adjustment credits the whole segment for that one step: F1 = 1
    assert m["pa_f1"] == pytest.approx(1.0) and point_adjusted(labels, scores)[2:6].tolist() == [0.9] * 4
    assert 0 < m["auc_pr"] < 1 and 0 < m["auroc"] < 1
    with pytest.raises(ValueError, match="both normal and anomalous"):
        detection_metrics(np.zeros(4, dtype=int), np.arange(4.0))


def test_ucr_hit_and_localisation():
    scores = np.zeros(1000)
    scores[615] = 1.0
    assert ucr_hit(Segment(500, 520), scores) == 1.0  # within max(20, 100) = 100 steps of the last step, 519
    scores[615], scores[620] = 0.0, 1.0
    assert ucr_hit(Segment(500, 520), scores) == 0.0
    ranked = np.array([0.9, 0.1, 0.8, 0.7, 0.0])  # ranking: 0, 2, 3, 1, 4
    m = localisation_metrics(ranked, (0, 3))
    assert m["hitrate@100"] == 0.5  # top 2 = {0, 2}: one of two labelled channels
    assert m["hitrate@150"] == 1.0  # top 3 = {0, 2, 3}
    assert 0 < m["ndcg@100"] < 1 and localisation_metrics(ranked, (0, 2))["ndcg@100"] == pytest.approx(1.0)


def test_whitened_norms_of_gaussian_embeddings_are_calibrated():
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(16, 16, generator=gen)
    fit, held_out = torch.randn(20000, 16, generator=gen) @ mix + 3.0, torch.randn(20000, 16, generator=gen) @ mix + 3.0
    whitener = Whitener.fit(fit, ridge=0.0)
    p = whitener.p_values(held_out)
    assert abs((p < 0.01).mean() - 0.01) < 0.004 and abs((p < 0.1).mean() - 0.1) < 0.01
    assert whitener.squared_norm(held_out).mean().item() == pytest.approx(chi2.mean(16), rel=0.03)
    assert np.array_equal(whitener.tail(whitener.squared_norm(held_out)), p)  # p-values of norms already computed


def test_per_channel_whitening_is_calibrated_and_localises():
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(5, 8, 8, generator=gen)  # 5 channels, each its own 8-D Gaussian

    def sample(n):
        return torch.einsum("ngd,gde->nge", torch.randn(n, 5, 8, generator=gen), mix) + torch.arange(5.0)[:, None]

    fit, held_out = sample(20000), sample(20000)
    fit[:100, 3] = float("nan")  # channel 3 unobserved in some windows: left out of its fit only
    whitener = Whitener.fit(fit, ridge=0.0)
    assert whitener.dof == 40 and whitener.group_norms(held_out).shape == (20000, 5)
    p = whitener.p_values(held_out)  # the channels are independent, so the sum is chi-square with 40 dof
    assert abs((p < 0.01).mean() - 0.01) < 0.004
    assert whitener.group_norms(held_out).mean(0).numpy() == pytest.approx(np.full(5, 8.0), rel=0.03)
    shifted = held_out[:50].clone()
    shifted[:, 2] += 6 * mix[2, 0]  # six standard deviations along one of channel 2's directions
    assert (whitener.group_norms(shifted).argmax(1) == 2).float().mean() > 0.9
    gap = held_out[:1].clone()
    gap[0, 4] = float("nan")  # an unobserved channel adds nothing
    assert whitener.group_norms(gap)[0, 4] == 0.0
    constant = Whitener.fit(torch.zeros(100, 2, 4))  # an embedding that never moves still gets a Gaussian
    assert torch.isfinite(constant.squared_norm(torch.ones(3, 2, 4))).all()
    with pytest.raises(ValueError, match=r"\[N, D\] or \[N, G, D\]"):
        whitener.squared_norm(torch.zeros(4))
    never_seen = torch.randn(10, 3, 4)
    never_seen[1:, 1] = float("nan")  # channel 1 observed in one fit window only
    with pytest.raises(ValueError, match=r"groups \(channels\) \[1\] have fewer than 2"):
        Whitener.fit(never_seen)


@pytest.fixture(scope="module")
def smd_checkpoint(tmp_path_factory, shared_data):
    """A JEPA encoder on SMD (``proj-axes``: the monitor preset's ``mae`` has no predictor, so no prediction
    score to test)."""
    cfg = compose_config("train", ["data=smd", f"run_dir={tmp_path_factory.mktemp('smd')}", "train.steps=2",
                                   "train.batch_size=4", "train.warmup=1", "train.log_every=1", *TINY_MODEL,
                                   "model/objective=proj-axes"])
    return train_module.train(cfg)


def test_smd_pretraining_reads_train_rows_only(smd_checkpoint, monkeypatch):
    config = json.loads((smd_checkpoint / "config.json").read_text())
    assert config["encoder"]["span"] == 64.0 and config["channels"]["names"][0] == "smd/m1"
    cfg = compose_config("train", ["data=smd", *TINY_MODEL])
    windows, _ = train_module.pretraining_windows(cfg)
    from tsjepa.data.sources import load_dataset

    smd = load_dataset("smd")
    assert len(windows) == 8
    for w, item in zip(windows, smd.series, strict=True):
        assert int(w.origins.max()) == item.test_start  # the last window ends at the last train row


def test_rare_eval_scores_every_test_row(smd_checkpoint, tmp_path):
    from tsjepa.eval import rare

    cfg = compose_config("eval", ["eval=rare", "data=smd", f"ckpt={smd_checkpoint}", f"out_dir={tmp_path}",
                                  "eval.series=[machine-1-2]", "eval.max_train_windows=200"])
    record = json.loads(rare.run(cfg).read_text())
    rows = [r for r in record["rows"] if r["series"] == "machine-1-2"]
    assert {(r["model"], r["mode"]) for r in rows} == {
        ("zscore", "baseline"), ("pca", "baseline"), ("iforest", "baseline"),
        *((model, mode) for model in ("tsjepa", "random-init")
          for mode in ("prediction", "chi2", "chi2-channels", "combined"))}
    test_rows = 23694  # machine-1-2 test rows, each scored once
    for r in rows:
        assert r["n_windows"] == -(-test_rows // 8)
        assert 0 < r["auc_pr"] <= 1 and 0 < r["auroc"] < 1 and r["pa_f1"] >= r["best_f1"]
        assert 0 < r["vus_pr"] <= 1 and 0 < r["vus_roc"] <= 1 and r["vus_window"] == 30  # machine-1-2's period
    for mode in ("chi2", "chi2-channels"):
        chi2_row = next(r for r in rows if r["model"] == "tsjepa" and r["mode"] == mode)
        assert 0 <= chi2_row["false_alarm@0.01"] <= 1
    assert any(r["series"] == "mean" for r in record["rows"])


@pytest.fixture
def two_seeds(smd_checkpoint, tmp_path) -> str:
    """A checkpoint glob over seeds 0 and 1 holding the same weights: only their random-init twins differ."""
    return seed_copies(smd_checkpoint, tmp_path)


def test_rare_eval_scores_several_pretraining_seeds_each_with_its_twin(two_seeds, tmp_path):
    from tsjepa.eval import rare

    cfg = compose_config("eval", ["eval=rare", "data=smd", f"ckpt={two_seeds}", f"out_dir={tmp_path}",
                                  "eval.series=[machine-1-2]", "eval.max_train_windows=200"])
    record = json.loads(rare.run(cfg).read_text())
    assert record["seed"] == [0, 1] and set(record["per_seed"]) == {"0", "1"}
    rows = {(r["model"], r["mode"], r["series"]): r for r in record["rows"]}
    ours, twin = rows["tsjepa", "chi2", "mean"], rows["random-init", "chi2", "mean"]
    assert ours["n_seeds"] == 2 and ours["auc_pr_std"] == 0.0
    assert twin["n_seeds"] == 2 and twin["auc_pr_std"] > 0
    seed_twins = [next(r for r in record["per_seed"][s] if (r["model"], r["mode"], r["series"]) ==
                       ("random-init", "chi2", "mean"))["auc_pr"] for s in ("0", "1")]
    assert twin["auc_pr"] == pytest.approx(sum(seed_twins) / 2)
    assert rows["pca", "baseline", "mean"]["n_seeds"] == 1 and "auc_pr_std" not in rows["pca", "baseline", "mean"]
    with pytest.raises(ValueError, match=r"no checkpoint of seed\(s\) \[7\]"):
        rare.run(compose_config("eval", ["eval=rare", "data=smd", f"ckpt={two_seeds}", f"out_dir={tmp_path}",
                                         "eval.seeds=[7]"]))


def test_rare_eval_reads_windows_shorter_than_the_encoder_span(smd_checkpoint, tmp_path):
    """A window shorter than the encoder's span (as 64-row NAB windows under the 336-unit corpus encoder) is
    read with its earlier patches unobserved; a longer or patch-misaligned one is refused."""
    from tsjepa.eval import rare

    def config(lookback: int):
        return compose_config("eval", ["eval=rare", "data=smd", f"ckpt={smd_checkpoint}", f"out_dir={tmp_path}",
                                       "eval.series=[machine-1-2]", "eval.max_train_windows=200",
                                       "eval.random_baseline=false", f"data.lookback={lookback}"])
    record = json.loads(rare.run(config(32)).read_text())
    assert record["lookback"] == 32
    ours = next(r for r in record["rows"] if r["series"] == "machine-1-2" and r["mode"] == "chi2")
    assert ours["n_windows"] == -(-23694 // 8) and 0 < ours["auc_pr"] <= 1
    for bad in (72, 60):
        with pytest.raises(ValueError, match=f"at most 64 rows in patches of 8, but data.lookback={bad}"):
            rare.run(config(bad))


def test_crosschannel_eval_ranks_channels(smd_checkpoint, tmp_path):
    from tsjepa.eval import crosschannel

    cfg = compose_config("eval", ["eval=crosschannel", "data=smd", f"ckpt={smd_checkpoint}", f"out_dir={tmp_path}",
                                  "eval.series=[machine-1-2]", "eval.windows_per_segment=1", "eval.injections=6",
                                  "eval.normal_windows=20", "eval.random_baseline=false"])
    record = json.loads(crosschannel.run(cfg).read_text())
    rows = {(r["model"], r["mode"], r["series"]): r for r in record["rows"]}
    models = (("zscore", "baseline"), ("pca", "baseline"), ("iforest", "baseline"), ("tsjepa", "prediction"),
              ("tsjepa", "chi2"), ("tsjepa", "combined"))
    assert set(rows) == {(m, mode, s) for m, mode in models for s in ("machine-1-2", "mean")}
    for r in rows.values():
        assert 0 <= r["hitrate@100"] <= r["hitrate@150"] <= 1 and 0 <= r["top1"] <= 1 and 0 < r["mrr"] <= 1
        assert r["n_segments"] == 10 and r["n_injected"] == 6
    assert record["chance_top1"] == pytest.approx(1 / 38)


def test_crosschannel_eval_scores_several_pretraining_seeds_on_the_same_windows(two_seeds, tmp_path):
    from tsjepa.eval import crosschannel

    cfg = compose_config("eval", ["eval=crosschannel", "data=smd", f"ckpt={two_seeds}", f"out_dir={tmp_path}",
                                  "eval.series=[machine-1-2]", "eval.windows_per_segment=1", "eval.injections=6",
                                  "eval.normal_windows=20"])
    record = json.loads(crosschannel.run(cfg).read_text())
    assert record["seed"] == [0, 1] and set(record["per_seed"]) == {"0", "1"}
    rows = {(r["model"], r["mode"], r["series"]): r for r in record["rows"]}
    ours, twin = rows["tsjepa", "chi2", "mean"], rows["random-init", "chi2", "mean"]
    assert ours["n_seeds"] == twin["n_seeds"] == 2
    assert ours["hitrate@150_std"] == 0.0 and ours["top1_std"] == 0.0  # same weights, same injected windows
    assert rows["zscore", "baseline", "mean"]["n_seeds"] == 1


def test_encoders_pretrained_without_a_predictor_are_scored_by_their_embeddings_only(tmp_path):
    """The peers of the objective study (masked reconstruction here) have no predictor: both anomaly harnesses
    score them and their twins with the chi-square scores, and no latent-prediction row is made up."""
    from tsjepa.eval import crosschannel, rare

    ckpt = train_module.train(compose_config("train", [
        "data=smd", f"run_dir={tmp_path / 'mae'}", "train.steps=2", "train.batch_size=4", "train.warmup=1",
        "train.log_every=1", *TINY_MODEL, "model.objective.kind=mae"]))
    assert not (ckpt / "config.json").read_text().count('"predictor": {')
    common = ["data=smd", f"ckpt={ckpt}", f"out_dir={tmp_path}", "eval.series=[machine-1-2]"]
    record = json.loads(rare.run(compose_config("eval", ["eval=rare", *common, "eval.max_train_windows=200"])
                                 ).read_text())
    assert {(r["model"], r["mode"]) for r in record["rows"] if r["model"] in ("tsjepa", "random-init")} == {
        (model, mode) for model in ("tsjepa", "random-init") for mode in ("chi2", "chi2-channels")}
    record = json.loads(crosschannel.run(compose_config("eval", [
        "eval=crosschannel", *common, "eval.windows_per_segment=1", "eval.injections=6", "eval.normal_windows=20",
        "eval.random_baseline=false"])).read_text())
    assert {(r["model"], r["mode"]) for r in record["rows"] if r["model"] == "tsjepa"} == {("tsjepa", "chi2")}


def test_rank_of_counts_ties_against_the_true_channel():
    from tsjepa.eval.crosschannel import rank_of

    scores = np.array([[0.1, 0.9, 0.5], [1.0, 1.0, 1.0]])
    assert rank_of(scores, np.array([1, 0])).tolist() == [1, 3]


def test_channel_baselines_rank_a_shifted_channel_first():
    from tsjepa.eval.crosschannel import ChannelBaselines

    rng = np.random.default_rng(0)
    def correlated(*shape):  # four channels driven by one factor, so PCA keeps a single component
        return rng.normal(size=(*shape, 1)) + 0.1 * rng.normal(size=(*shape, 4))

    train, rows = correlated(2000), correlated(3, 20)
    rows[:, :, 2] += 6.0  # channel 2 leaves its normal range and its relation to the others
    scores = ChannelBaselines(train, seed=0)(rows)
    assert set(scores) == {"zscore", "pca", "iforest"}
    for name, s in scores.items():
        assert s.shape == (3, 4) and (s.argmax(1) == 2).all(), name


def test_a_series_name_the_benchmark_does_not_hold_is_an_error_naming_the_ones_it_holds():
    from tsjepa.data.anomaly import AnomalySet, LabelledSeries
    from tsjepa.data.timeseries import TimeSeries
    from tsjepa.eval.rare import AnomalyBench

    series = [LabelledSeries(name, TimeSeries(np.arange(20.0)[:, None], np.arange(20.0), ["x"]), 10,
                             np.zeros(10, dtype=int)) for name in ("machine-1-2", "machine-1-3")]
    bench = AnomalyBench("smd", AnomalySet("smd", series), np.zeros(1, dtype=int), 8, 64, {}, 0)
    assert [item.name for _, item in bench.selected(["machine-1-3"])] == ["machine-1-3"]
    assert len(bench.selected(None)) == 2
    with pytest.raises(ValueError, match=r"\['machine-1-1'\].*machine-1-2, machine-1-3"):
        bench.selected(["machine-1-1", "machine-1-2"])
