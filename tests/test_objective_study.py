"""The objective study's bookkeeping (eval/objective_study.py): which numbers select a variant and which
are only reported, per dataset arm."""

import importlib.util
import itertools
import json
import shutil
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("objective_study", ROOT / "eval" / "objective_study.py")
study = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = study  # its dataclass looks its module up
spec.loader.exec_module(study)


def detection_record(metric: str, values: dict[str, float]) -> dict:
    rows = [{"model": "tsjepa", "mode": "chi2", "series": s, metric: v} for s, v in values.items()]
    rows += [{"model": "tsjepa", "mode": "prediction", "series": s, metric: 0.0} for s in values]  # not read
    rows += [{"model": "pca", "mode": "baseline", "series": s, metric: v / 2} for s, v in values.items()]
    rows.append({"model": "tsjepa", "mode": "chi2", "series": "mean", metric: -1.0})  # the harness' own mean
    return {"rows": rows}


def test_smd_selects_on_validation_machines_and_reports_the_others():
    validation = dict(zip(study.SMD_VALIDATION, (0.2, 0.4, 0.6), strict=True))
    values = validation | {"machine-2-1": 0.9, "machine-1-8": 0.7}
    metrics = study.task_metrics("rare", detection_record("auc_pr", values), study.ARMS["smd"])
    assert metrics["tsjepa"] == pytest.approx({"auc_pr": 0.8, "val_auc_pr": 0.4})
    assert metrics["pca"] == pytest.approx({"auc_pr": 0.4, "val_auc_pr": 0.2})
    arm = study.ARMS["smd"]
    assert study.selection_score(arm, {"val_auc_pr": 0.4, "val_hitrate@150": 0.6}) == pytest.approx(0.5)


def test_forecast_and_classify_arms_read_their_validation_scores():
    forecast = {"rows": [
        {"model": "tsjepa", "horizon": "avg", "val_mse": 1.05, "mse": 0.42, "mae": 0.43, "lookback_r2": 0.99},
        {"model": "tsjepa", "horizon": 96, "val_mse": 0.9, "mse": 0.37, "mae": 0.4},
        {"model": "tsjepa", "horizon": "avg", "train_fraction": 0.1, "val_mse": 2.0, "mse": 2.0, "mae": 2.0}]}
    assert study.task_metrics("forecast", forecast, study.ARMS["etth1"]) == {
        "tsjepa": {"val_mse": 1.05, "mse": 0.42, "mae": 0.43, "lookback_r2": 0.99}}
    assert study.selection_score(study.ARMS["etth1"], {"val_mse": 1.05}) > study.selection_score(
        study.ARMS["etth1"], {"val_mse": 1.06})  # lower MSE selects
    classify = {"rows": [
        {"model": "tsjepa", "mode": "probe", "train_fraction": 1.0, "val_auroc": 0.8, "auroc": 0.81, "auc_pr": 0.4},
        {"model": "tsjepa", "mode": "finetune", "train_fraction": 1.0, "auroc": 0.9, "auc_pr": 0.5},
        {"model": "summary-stats", "mode": "logistic", "train_fraction": 1.0, "val_auroc": 0.83, "auroc": 0.84,
         "auc_pr": 0.48}]}
    assert study.task_metrics("classify", classify, study.ARMS["physionet2012"]) == {
        "tsjepa": {"val_auroc": 0.8, "auroc": 0.81, "auc_pr": 0.4},
        "summary-stats/logistic": {"val_auroc": 0.83, "auroc": 0.84, "auc_pr": 0.48}}
    assert study.ARMS["physionet2012"].folds == (0, 1, 2)
    paths = study.checkpoints("physionet2012", "default", 1)
    assert [p.parts[-3] for p in paths] == ["fold0", "fold1", "fold2"]


def test_ucr_anomaly_arm_selects_on_its_validation_series_and_reports_the_others():
    validation = dict(zip(study.UCR_VALIDATION, (0.2, 0.4), strict=True))
    values = validation | {"137_UCR_Anomaly_InternalBleeding18_2300_4485_4587": 0.9,
                           "138_UCR_Anomaly_InternalBleeding19_3000_4187_4197": 0.7}
    metrics = study.task_metrics("rare", detection_record("auc_pr", values), study.ARMS["ucr"])
    assert metrics["tsjepa"] == pytest.approx({"auc_pr": 0.8, "val_auc_pr": 0.3})
    assert study.selection_score(study.ARMS["ucr"], metrics["tsjepa"]) == pytest.approx(0.3)


def classify_ucr_record(name: str, own: float, cv: float | None) -> dict:
    svm = {"model": "tsjepa", "pretrained_on": name, "mode": "svm", "accuracy": own}
    rows = [svm | ({"val_accuracy": cv} if cv is not None else {}),
            {"model": "tsjepa", "pretrained_on": name, "mode": "ridge", "accuracy": 0.0},  # not read: svm selects
            {"model": "random-init", "pretrained_on": "-", "mode": "svm", "accuracy": own / 2},
            {"model": "tsjepa", "pretrained_on": "corpus (zero-shot)", "mode": "svm", "accuracy": 0.0},
            {"model": "minirocket", "pretrained_on": "-", "mode": "ridge", "accuracy": 0.9},
            {"model": "rocket", "pretrained_on": "-", "mode": "published", "accuracy": 0.0}]
    return {"rows": rows, "device": "cpu", "command": f"eval {name}", "commit": "x", "wall_s": 1.0}


def test_classify_ucr_arm_pretrains_one_encoder_per_archive_and_averages_over_them(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "ROOT", tmp_path)
    arm = study.ARMS["classify-ucr"]
    commands = []
    monkeypatch.setattr(study, "run", commands.append)
    study.pretrain("classify-ucr", "mae", 1)
    assert [c[c.index("-m") + 2] for c in commands] == [f"data={name}" for name in arm.datasets]
    assert all("seed=1" in c and "train.steps=250" in c and "model.objective.kind=mae" in c for c in commands)
    runs = [c for c in commands[0] if c.startswith("run_dir=")]
    assert runs == [f"run_dir={tmp_path}/runs/objective-study/classify-ucr/mae-s1/{arm.datasets[0]}"]
    evaluations = study.evaluations("classify-ucr", "mae", 1)
    assert [(task, dataset) for task, dataset, _, _ in evaluations] == [("classify-ucr", d) for d in arm.datasets]
    assert study.metrics_of("classify-ucr", "mae", 1) is None  # until every archive is scored
    accuracies = {name: (0.5 + i / 20, 0.6 if i % 2 else None) for i, name in enumerate(arm.datasets)}
    for (_, name, _, path) in evaluations:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(classify_ucr_record(name, *accuracies[name])))
    metrics, records = study.metrics_of("classify-ucr", "mae", 1)
    mean = sum(a for a, _ in accuracies.values()) / len(arm.datasets)
    assert metrics["tsjepa"] == pytest.approx({"accuracy": mean, "val_accuracy": 0.6})
    assert metrics["random-init"] == pytest.approx({"accuracy": mean / 2})
    assert metrics["minirocket"] == pytest.approx({"accuracy": 0.9})
    assert set(metrics) == {"tsjepa", "random-init", "minirocket"} and len(records) == len(arm.datasets)


def test_pretraining_logs_give_cost_and_the_shortcut_diagnostics_of_every_part(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "ROOT", tmp_path)
    folds = study.checkpoints("physionet2012", "ijepa", 0)
    for k, ckpt in enumerate(folds):
        ckpt.mkdir(parents=True)
        lines = [{"step": 10, "time": 100.0, "peak_memory_gb": 1.0 + k},
                 {"step": 110, "time": 100.0 + 50 * (k + 1), "slot_share": 0.2 + k / 10, "position_r2": 0.1}]
        (ckpt.parents[1] / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    log = study.pretrain_log("physionet2012", "ijepa", 0)
    assert log["pretrain_wall_s"] == 300.0 and log["s_per_step"] == 1.0 and log["peak_memory_gb"] == 3.0
    assert log["pretrain_slot_share"] == pytest.approx(0.3) and log["pretrain_position_r2"] == pytest.approx(0.1)
    (folds[1].parents[1] / "metrics.jsonl").unlink()  # a part's log is gone: nothing is made up
    assert set(study.pretrain_log("physionet2012", "ijepa", 0).values()) == {None}


def forecast_eval(tmp_path: Path, name: str, seed: int, models: dict[str, float]) -> None:
    path = tmp_path / "runs" / "objective-study" / "etth1" / f"{name}-s{seed}" / "eval" / "forecast" / "etth1.json"
    path.parent.mkdir(parents=True)
    rows = [{"model": m, "horizon": "avg", "val_mse": v, "mse": v / 2, "mae": v / 3} for m, v in models.items()]
    path.write_text(json.dumps({"rows": rows, "device": "cpu", "command": "c", "commit": "x", "wall_s": 1.0}))


def test_study_grows_from_committed_per_seed_metrics_when_runs_are_gone(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "ROOT", tmp_path)
    forecast_eval(tmp_path, "default", 0, {"tsjepa": 1.06, "random-init": 1.05, "linear": 1.04})
    forecast_eval(tmp_path, "proj-axes", 0, {"tsjepa": 1.04})
    rows, runs, per_seed, _ = study.collect("etth1")
    committed = {"rows": rows, "variants": runs, "per_seed": json.loads(json.dumps(per_seed)), "device": "cpu"}
    shutil.rmtree(tmp_path / "runs")  # a new machine: only the committed table is left
    forecast_eval(tmp_path, "proj-axes", 1, {"tsjepa": 1.02})
    rows, runs, per_seed, _ = study.collect("etth1", committed)
    by_model = {(r["model"], r["variant"]): r for r in rows}
    assert by_model["tsjepa", "proj-axes"]["n_seeds"] == 2 and runs["proj-axes"]["seeds"] == [0, 1]
    assert by_model["tsjepa", "proj-axes"]["val_mse"] == pytest.approx(1.03)
    assert by_model["tsjepa", "proj-axes"]["val_mse_std"] == pytest.approx(0.02 ** 0.5 / 10)
    assert by_model["tsjepa", "proj-axes"]["selected"] and not by_model["tsjepa", "default"]["selected"]
    assert by_model["random-init", "-"]["val_mse"] == 1.05 and by_model["linear", "-"]["val_mse"] == 1.04


def test_random_init_twin_comes_from_the_default_or_from_a_variant_scored_with_it(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "ROOT", tmp_path)
    forecast_eval(tmp_path, "default", 0, {"tsjepa": 1.06, "random-init": 1.05, "linear": 1.04})
    forecast_eval(tmp_path, "proj-axes", 0, {"tsjepa": 1.04, "random-init": 9.0})  # the default's twin wins
    forecast_eval(tmp_path, "proj-axes", 1, {"tsjepa": 1.02, "random-init": 1.07})  # seed 1 has no default
    forecast_eval(tmp_path, "proj-axes", 2, {"tsjepa": 1.03})  # scored without a twin: no twin for seed 2
    rows, _, _, _ = study.collect("etth1")
    twin = next(r for r in rows if r["model"] == "random-init")
    assert twin["n_seeds"] == 2 and twin["val_mse"] == pytest.approx(1.06)
    assert twin["val_mse_std"] == pytest.approx(0.02 / 2 ** 0.5)


def test_study_refuses_to_mix_new_seeds_into_a_row_without_per_seed_metrics(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "ROOT", tmp_path)
    forecast_eval(tmp_path, "default", 3, {"tsjepa": 1.06})
    legacy = {"rows": [{"model": "tsjepa", "variant": "default", "val_mse": 1.0, "n_seeds": 3}],
              "variants": {"default": {"seeds": [0, 1, 2]}}}
    with pytest.raises(SystemExit, match="etth1/default: the committed row averages seeds"):
        study.collect("etth1", legacy)


def test_rescoring_finished_runs_leaves_the_table_as_made(tmp_path, monkeypatch):
    monkeypatch.setattr(study, "ROOT", tmp_path)
    for name in ("default", "proj-axes"):  # checkpoints older than their evaluations: nothing to re-run
        ckpt = study.checkpoints("etth1", name, 0)[0]
        ckpt.mkdir(parents=True)
        (ckpt / "config.json").write_text("{}")
    forecast_eval(tmp_path, "default", 0, {"tsjepa": 1.06, "random-init": 1.05, "linear": 1.04})
    out = tmp_path / "results"

    def score(variant: str) -> None:
        argv = ["objective_study.py", "score", "--data", "etth1", "--variants", variant, "--out-dir", str(out)]
        monkeypatch.setattr(sys, "argv", argv)
        study.main()

    score("default")  # the first score writes the table
    table = out / "objective-study" / "etth1.json"
    made = table.stat()
    monkeypatch.setattr(study, "run", lambda cmd: pytest.fail(f"re-ran {cmd}"))
    score("default")
    # not rewritten: its command, commit and wall time stay those of the run that made it
    assert (table.stat().st_ino, table.stat().st_mtime_ns) == (made.st_ino, made.st_mtime_ns)
    forecast_eval(tmp_path, "proj-axes", 0, {"tsjepa": 1.04})  # a new evaluation does rewrite it
    score("proj-axes")
    assert "proj-axes" in json.loads(table.read_text())["variants"]


def test_presets_select_on_validation_gain_over_default_across_their_arms_among_three_seed_recipes():
    def table(**val_mse):
        return {"rows": [{"model": "random-init" if v == "random-init" else "tsjepa", "variant": v, "val_mse": m,
                          "mse": 0.0, "n_seeds": 1 if v in ("mae", "default") else 3} for v, m in val_mse.items()]}
    # proj-axes gains 10% on etth1 and loses 1% on weather; recon is only scored on etth1 so cannot be chosen,
    # and mae, better on both, has one seed: a finalist, not a pick
    tables = {"etth1": table(default=1.0, **{"proj-axes": 0.9, "recon": 0.5, "mae": 0.8, "random-init": 1.0}),
              "weather": table(default=0.5, **{"proj-axes": 0.505, "mae": 0.4, "random-init": 0.49})}
    base, clinical, monitor = study.select_presets(tables)
    assert base["selected"] == "proj-axes" and base["candidates"] == 2 and base["missing_arms"] == "-"
    assert base["val_gain"] == pytest.approx((0.1 - 0.01) / 2)
    assert base["random_init_val_gain"] == pytest.approx(0.01)
    assert clinical == {"preset": "clinical", "selected": None, "arms": "-", "missing_arms": "physionet2012"}
    assert monitor["missing_arms"] == "smd"


def test_presets_without_any_arm_table_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no arm table under .*objective-study: score an arm first"):
        study.write_presets(tmp_path, 0.0)
    assert not any(tmp_path.iterdir())  # nothing half-written


@pytest.mark.parametrize("data", list(study.ARMS))
def test_a_variant_is_the_same_objective_on_every_preset(data):
    """The presets adopt the study's picks (clinical: recon-ema), so a variant pins every key the study varies:
    ``proj-tokens`` regularises tokens and ``default`` has no reconstruction head or EMA on every arm."""
    from conftest import compose_config

    configs = {part[0]: part for _, part in study.parts(data)}  # each data config the arm's encoders train on
    for part, name in itertools.product(configs.values(), study.VARIANTS):
        overrides = study.variant_overrides(name)
        objective = compose_config("train", [*part, *study.ARMS[data].train, *overrides]).model.objective
        expected = {k.removeprefix(f"{study.OBJ}."): v for k, v in (o.split("=", 1) for o in overrides)
                    if k.startswith(study.OBJ)}
        assert {k: str(objective[k]).replace(" ", "").lower() for k in expected} == {
            k: v.lower() for k, v in expected.items()}, (part, name)
    part = study.parts(data)[0][1]
    tokens = compose_config("train", [*part, *study.variant_overrides("proj-tokens")]).model.objective
    assert (tokens.sigreg_on, tokens.reconstruction_weight, tokens.ema) == ("tokens", 0.0, 0.0)
    assert list(tokens.projector) == [512, 512, 64]


def composed_objective(overrides: list[str]) -> dict:
    from conftest import compose_config

    return OmegaConf.to_container(compose_config("train", ["data=etth1", *overrides]).model.objective)


@pytest.mark.parametrize("option", sorted(p.stem for p in (ROOT / "configs" / "model" / "objective").glob("*.yaml")))
def test_each_objective_option_is_the_study_variant_it_is_named_after(option):
    """``configs/model/objective/<name>`` composes exactly the study's variant ``<name>``: every key, on the base
    preset, those the objective leaves unused included."""
    assert composed_objective([f"model/objective={option}"]) == composed_objective(study.variant_overrides(option))


@pytest.mark.parametrize("preset, option", [("base", "recon"), ("monitor", "mae"), ("clinical", "mae")])
def test_each_model_preset_selects_the_option_the_study_picked(preset, option):
    """Each model preset's objective is the option the study picked for it (``presets.json``)."""
    assert composed_objective([f"model={preset}"]) == composed_objective([f"model={preset}", f"model/objective={option}"])
    presets = json.loads((ROOT / "eval" / "results" / "objective-study" / "presets.json").read_text())["rows"]
    assert {row["preset"]: row["selected"] for row in presets}[preset] == option


def test_the_command_lines_objective_wins_over_the_data_configs():
    """``data=corpus`` selects ``proj-axes`` (the shipped encoder's recipe); ``model/objective=recon`` on the
    command line still trains ``recon`` on the corpus, keeping the corpus' encoder and schedule."""
    from conftest import compose_config

    corpus = compose_config("train", ["data=corpus"])
    recon = compose_config("train", ["data=corpus", "model/objective=recon"])
    assert (corpus.model.objective.reconstruction_weight, recon.model.objective.reconstruction_weight) == (0.0, 1.0)
    assert recon.model.encoder == corpus.model.encoder and recon.train == corpus.train


def test_summary_marks_a_cell_best_only_beyond_both_stds_and_never_from_one_seed(tmp_path):
    def row(variant, mse, std, n):
        return {"model": "tsjepa", "variant": variant, "mode": "probe", "val_mse": 2 * mse, "mse": mse, "mse_std": std,
                "n_seeds": n, "slot_share": 0.9}

    etth1 = {"device": "cpu", "variants": {"ijepa": {"seeds": [0, 1, 2]}}, "rows": [
        row("ijepa", 0.40, 0.002, 3), row("mae", 0.43, 0.003, 3),
        {**row("contrastive", 0.30, None, 1), "mse_std": None},  # one seed: shown, never best
        {"model": "random-init", "variant": "-", "mode": "probe", "val_mse": 0.8, "mse": 0.401, "mse_std": 0.002,
         "n_seeds": 3},
        {"model": "linear", "variant": "-", "mode": "baseline", "mse": 0.45, "n_seeds": 1}]}
    rows, best = study.summary_rows({"etth1": etth1})
    assert best["etth1:mse"] is None  # ijepa .400 ± .002 against random-init .401 ± .002: within the std
    etth1["rows"][0]["mse"] = 0.39
    rows, best = study.summary_rows({"etth1": etth1})
    assert best["etth1:mse"] == "ijepa"
    by_name = {r["variant"] if r["model"] == "tsjepa" else r["model"]: r for r in rows}
    assert by_name["linear"]["etth1:mse_std"] == 0.0 and by_name["contrastive"]["etth1:mse_n_seeds"] == 1
    assert "weather:mse" not in by_name["ijepa"]  # an arm without a table leaves its cells empty
    (tmp_path / "objective-study").mkdir()
    (tmp_path / "objective-study" / "etth1.json").write_text(json.dumps(etth1))
    study.write_summary(tmp_path, 0.0)
    table = (tmp_path / "objective-study" / "summary.md").read_text()
    assert "**0.3900 ± 0.0020**" in table and "0.3000 (1 seed)" in table
    assert (tmp_path / "objective-study" / "summary.png").stat().st_size > 0


def test_head_to_head_gives_a_verdict_only_beyond_both_stds_and_counts_the_columns_beaten():
    def row(variant, **cells):
        return {"model": "random-init" if variant == "random-init" else "tsjepa", "variant": variant, **cells}

    rows = [row("recon", **{"etth1:mse": 0.40, "etth1:mse_std": 0.001, "weather:mse": 0.29, "weather:mse_std": None,
                            "ucr:auc_pr": 0.90, "ucr:auc_pr_std": 0.01}),
            row("mae", **{"etth1:mse": 0.42, "etth1:mse_std": 0.002, "weather:mse": 0.30, "weather:mse_std": 0.001,
                          "ucr:auc_pr": 0.95, "ucr:auc_pr_std": 0.01}),
            row("ijepa", **{"etth1:mse": 0.401, "etth1:mse_std": 0.002}),
            row("random-init", **{"etth1:mse": 0.43, "etth1:mse_std": 0.001, "ucr:auc_pr": 0.85, "ucr:auc_pr_std": 0.0})]
    versus = {r["against"]: r for r in study.head_to_head(rows, "recon")}
    assert (versus["mae"]["etth1:mse"], versus["mae"]["weather:mse"], versus["mae"]["ucr:auc_pr"]) == (
        "beats", "1 seed", "loses")  # lower mse wins, higher auc_pr wins; one seed gives no verdict
    assert versus["ijepa"]["etth1:mse"] == "level" and versus["ijepa"]["ucr:auc_pr"] == "-"
    assert versus["contrastive"]["etth1:mse"] == "-"  # a peer without cells
    assert versus["random-init"]["ucr:auc_pr"] == "beats" and versus["random-init"]["columns_beaten"] == 2
    assert versus["every peer and random-init"]["columns_beaten"] == 0  # ijepa is level on etth1


def test_cost_rows_average_seconds_per_step_over_logged_seeds_and_keep_the_peak_memory():
    tables = {"etth1": {"variants": {"mae": {"s_per_step": {"0": 1.0, "1": 2.0, "2": None},
                                             "peak_memory_gb": {"0": 1.2, "1": 1.5, "2": None}},
                                     "ijepa": {"s_per_step": {"0": None}, "peak_memory_gb": {"0": None}}}}}
    rows = {r["objective"]: r for r in study.cost_rows(tables)}
    assert rows["mae"]["etth1"] == "1.500 s, 1.5 GB"
    assert rows["ijepa"]["etth1"] == "-" and rows["recon"]["etth1"] == "-" and rows["mae"]["weather"] == "-"
