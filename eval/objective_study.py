"""The objective study (issue "Make pretraining pay"): which pretraining objective makes a frozen encoder worth
more than the same architecture with random weights? ``python eval/objective_study.py [--data etth1]``.

Each variant is the dataset's default recipe (``python -m tsjepa.train data=<data> seed=<s>``, with the
arm's preset) with the objective keys the study varies pinned to the original recipe (``REFERENCE``) and then a
few of them overridden (``variant_overrides``), pretrained into ``runs/objective-study/<data>/<variant>-s<seed>``
and scored by the dataset's harnesses (`ARMS`). The default variant's evaluation also scores the random-init
twin of each seed; every evaluation carries the raw baselines. Variants are **selected on validation
scores only**, test scores are reported beside them and never used to choose:

- ``etth1``, ``weather``: the forecast probe's val MSE (average over horizons on the val windows);
- ``physionet2012``: one encoder per held-out fold (folds 0-2 of 5), the logistic probe's inner-CV AUROC on
  the training stays (``val_auroc``); test = AUROC on each held-out fold;
- ``smd``: rare and cross-channel detection with the ``chi2`` score; SMD has no labelled validation split,
  so 3 of its 8 machines (`SMD_VALIDATION`) select and the other 5 report;
- ``ucr``: rare detection on the 4 UCR anomaly series with ``chi2``; 2 of them (`UCR_VALIDATION`) select;
- ``classify-ucr``: one encoder per archive of the classification suite (`CLASSIFY_ARCHIVES`), the SVM's 5-fold
  CV accuracy on each train split (``val_accuracy``, mean over archives); test = accuracy on their test splits.

The suite is resumable: finished pretraining is not repeated and an evaluation newer than its checkpoints is
not re-scored.

    python eval/objective_study.py                                  # every variant, seed 0
    python eval/objective_study.py --variants default proj-axes --seeds 0 1 2
    python eval/objective_study.py collect                          # only rebuild the table
    python eval/objective_study.py summary                          # every objective on every arm, one table
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tsjepa.results import aggregate_seeds, markdown_table, save_figure, write_results  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling suite, also when this file is loaded by path
import classify_ucr_suite  # noqa: E402
from results_summary import compare  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OBJ = "model.objective"
PROJECTOR = f"{OBJ}.projector=[512,512,64]"
# The study's reference: the original recipe, with every objective (and encoder) key a variant or a preset changes pinned, so a
# variant means the same run whatever the presets select later (the presets adopt the study's picks)
REFERENCE = {f"{OBJ}.projector": "[]", f"{OBJ}.sigreg_on": "tokens", f"{OBJ}.views": "0",
             f"{OBJ}.reconstruction_weight": "0.0", f"{OBJ}.ema": "0.0", f"{OBJ}.centre_slots": "false",
             f"{OBJ}.kind": "jepa", f"{OBJ}.content_targets": "false", f"{OBJ}.position_noise": "0.0",
             f"{OBJ}.target_norm": "none", "model.encoder.position": "absolute"}
AXES = [PROJECTOR, f"{OBJ}.sigreg_on=axes"]  # the ETTh1 screen's pick, base of its ablations
RECON = f"{OBJ}.reconstruction_weight=1.0"
EMA = f"{OBJ}.ema=0.996"

# name -> (what it tests, overrides of the study's reference)
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "default": ("the original default: SIGReg on every token (N ~ 9.4k), no projector", []),
    "lam0": ("no SIGReg (lambda = 0): the reference that earlier probed best", [f"{OBJ}.lam=0.0"]),
    "proj-tokens": ("projector 512-512-64; prediction and SIGReg on its output, over tokens", [PROJECTOR]),
    "proj-pooled": ("projector; SIGReg over (window, channel) means (N = B*C)",
                    [PROJECTOR, f"{OBJ}.sigreg_on=pooled"]),
    "proj-window": ("projector; SIGReg over window means (N = B)", [PROJECTOR, f"{OBJ}.sigreg_on=window"]),
    "proj-axes": ("projector; SIGReg over window means and within each window over its tokens",
                  AXES),
    "multiview": ("projector; LeJEPA multi-view loss over 4 time crops (2 global 70%, 2 local 30%) beside the "
                  "span predictor; SIGReg over window means and each view", [PROJECTOR, f"{OBJ}.sigreg_on=window",
                                                                             f"{OBJ}.views=4"]),
    "recon": ("projector + axes, and a linear head reconstructing masked patch values from the predicted "
              "latents (weight 1)", [*AXES, RECON]),
    "proj-axes-ema": ("proj-axes with an EMA target encoder (0.996)", [*AXES, EMA]),
    "default-recon": ("the original default with the reconstruction head (weight 1): the dense-detail auxiliary "
                      "without the projector", [RECON]),
    "recon-ema": ("recon with an EMA target encoder (0.996): EMA on the PhysioNet screen's best",
                  [*AXES, RECON, EMA]),
    "proj-axes-tail": ("proj-axes; half the target blocks at the window's end (forecast-shaped targets)",
                       [*AXES, f"{OBJ}.mask_tail_prob=0.5"]),
    "proj-axes-250": ("proj-axes pretrained for 250 steps instead of 300 (the 10-minute budget of the default "
                      "ETTh1 run)", [*AXES, "train.steps=250"]),
    "proj-axes-long": ("proj-axes pretrained 3x longer (900 steps)",
                       [*AXES, "train.steps=900", "train.warmup=100"]),
    "proj-axes-centred": ("proj-axes with SIGReg on slot-centred tokens (each token minus its (channel, patch) "
                          "batch mean), so position and channel codes alone cannot pass it",
                          [*AXES, f"{OBJ}.centre_slots=true"]),
    "proj-tokens-centred": ("projector; SIGReg over every slot-centred token (N = observed B*C*P)",
                            [PROJECTOR, f"{OBJ}.sigreg_on=tokens", f"{OBJ}.centre_slots=true"]),
    # the peers, on the same encoder, data, steps and batch
    "mae": ("peer: masked patch reconstruction (PatchTST self-supervised / MOMENT): 40% of each channel's patches "
            "-> a learned mask token, linear head, MSE on the masked patches; no predictor or SIGReg",
            [f"{OBJ}.kind=mae", f"{OBJ}.mask_ratio=0.4"]),
    "contrastive": ("peer: TS2Vec on this encoder: two overlapping crops, timestamp masking (50%), hierarchical "
                    "instance + temporal contrastive loss; no predictor or SIGReg",
                    [f"{OBJ}.kind=contrastive", f"{OBJ}.mask_ratio=0.5"]),
    "ijepa": ("peer: I-JEPA's heuristics instead of SIGReg: EMA target (0.996) + stop-gradient, layer-normed "
              "targets, no projector, lambda = 0", [f"{OBJ}.lam=0.0", EMA, f"{OBJ}.stop_grad=true",
                                                    f"{OBJ}.target_norm=layer"]),
    # positional-shortcut remedies on the base preset's recipe (recon)
    "recon-content": ("recon; prediction loss on each projected target minus its (channel, patch) slot's batch "
                      "mean (content targets)", [*AXES, RECON, f"{OBJ}.content_targets=true"]),
    "recon-stop": ("recon; StoP: Gaussian noise (std 0.25) on the predictor's masked positions through its context "
                   "projection", [*AXES, RECON, f"{OBJ}.position_noise=0.25"]),
    "recon-instnorm": ("recon; data2vec targets: each (window, channel) target sequence instance-normalised over "
                       "its patches before the projector", [*AXES, RECON, f"{OBJ}.target_norm=instance"]),
    "recon-slots": ("recon; per-slot SIGReg: each (channel, patch) slot tested across the batch's windows",
                    [PROJECTOR, RECON, f"{OBJ}.sigreg_on=slots"]),
    "recon-within": ("recon; SIGReg across time within each window only, at LeNEPA's strong weight (lambda 0.95: "
                     "19x the prediction loss)", [PROJECTOR, RECON, f"{OBJ}.sigreg_on=within", f"{OBJ}.lam=0.95"]),
    "recon-rope": ("recon; relative positions only (LeNEPA): no absolute time encoding in the encoder's tokens, RoPE in "
                   "its time attention (the predictor keeps its own time encoding)",
                   [*AXES, RECON, "model.encoder.position=rotary"]),
}


def variant_overrides(name: str) -> list[str]:
    """The Hydra overrides that pretrain variant ``name``: the study's ``REFERENCE`` with the variant's own
    overrides in place of the keys they set (each key once)."""
    merged = dict(REFERENCE)
    for override in VARIANTS[name][1]:
        key, value = override.split("=", 1)
        merged[key] = value
    return [f"{key}={value}" for key, value in merged.items()]


@dataclass(frozen=True)
class Arm:
    """How one dataset enters the study: the harnesses that score each checkpoint, the validation keys that
    select (their mean; ``val_<key>`` selects and ``<key>`` is its test counterpart), and extra overrides."""

    tasks: tuple[str, ...]
    select: tuple[str, ...]
    lower_is_better: bool
    mode: str  # the encoder score the study reads
    reference: str  # the raw baseline drawn beside the random-init twin
    train: tuple[str, ...] = ()
    evals: tuple[str, ...] = ()
    folds: tuple[int, ...] = ()  # one encoder per held-out fold (record datasets)
    datasets: tuple[str, ...] = ()  # one encoder per dataset of a suite (the arm is named after the suite)
    validation_series: tuple[str, ...] = ()  # detection arms: the series that select (``val_*``); the rest report


# the study's schedule for the window arms (the cpu preset's steps and batch when it started), and the forecast
# probe's fit rows then, pinned so later seeds stay comparable with its rows as the defaults change
STUDY_STEPS = ("train.steps=300", "train.batch_size=64")
STUDY_FORECAST = ("eval.max_fit_rows=100000",)
SMD_VALIDATION = ("machine-1-2", "machine-1-3", "machine-1-4")  # select; the other 5 machines report
UCR_VALIDATION = ("135_UCR_Anomaly_InternalBleeding16_1200_4187_4199",
                  "136_UCR_Anomaly_InternalBleeding17_1600_3198_3309")  # select; the other 2 series report
# the classification suite's archives but its two long ones (ACSF1: 1460 steps, PLAID: up to 1344), whose
# pretraining costs ~5x each of the others'; the suite's own table scores all of them
CLASSIFY_ARCHIVES = tuple(d for d in classify_ucr_suite.DATASETS if d not in ("acsf1", "plaid"))
ARMS: dict[str, Arm] = {
    "etth1": Arm(("forecast",), ("val_mse",), True, "probe", "linear", train=STUDY_STEPS, evals=STUDY_FORECAST),
    "weather": Arm(("forecast",), ("val_mse",), True, "probe", "linear", train=STUDY_STEPS, evals=STUDY_FORECAST),
    "physionet2012": Arm(("classify",), ("val_auroc",), False, "probe", "summary-stats/logistic",
                         train=("train.batch_size=32", "train.steps=150", "train.warmup=20"),
                         evals=("eval.folds=[0,1,2]", "eval.modes=[probe]"), folds=(0, 1, 2)),
    "smd": Arm(("rare", "crosschannel"), ("val_auc_pr", "val_hitrate@150"), False, "chi2", "pca",
               train=STUDY_STEPS, validation_series=SMD_VALIDATION),
    "ucr": Arm(("rare",), ("val_auc_pr",), False, "chi2", "pca", train=STUDY_STEPS,
               validation_series=UCR_VALIDATION),
    "classify-ucr": Arm(("classify-ucr",), ("val_accuracy",), False, "svm", "minirocket",
                        train=classify_ucr_suite.SCHEDULE, evals=("eval.zero_shot=[]",),
                        datasets=CLASSIFY_ARCHIVES),
}
# the positional-shortcut diagnostics at the end of pretraining, on its own batches (every arm; from the logs)
PRETRAIN_DIAGNOSTICS = ("pretrain_slot_share", "pretrain_position_r2")
EVAL_DIAGNOSTICS = ("lookback_r2", "effective_rank", "isotropy", "slot_share", "position_r2")  # on test tokens
DIAGNOSTICS = (*EVAL_DIAGNOSTICS, *PRETRAIN_DIAGNOSTICS)  # reported as means only
FORECAST_KEYS = ("val_mse", "mse", "mae", *EVAL_DIAGNOSTICS)
DETECTION_KEYS = {"rare": ("auc_pr", "vus_pr", "vus_roc", "ucr_hit"), "crosschannel": ("hitrate@150", "ndcg@150")}


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})


def run_dir(data: str, name: str, seed: int) -> Path:
    return ROOT / "runs" / "objective-study" / data / f"{name}-s{seed}"


def parts(data: str) -> list[tuple[str | None, list[str]]]:
    """The encoders a variant of arm ``data`` pretrains: (sub-folder or None, data overrides) of each, one per
    held-out fold, one per dataset of a suite, or a single one."""
    arm = ARMS[data]
    if arm.folds:
        return [(f"fold{k}", [f"data={data}", f"data.fold={k}"]) for k in arm.folds]
    if arm.datasets:
        return [(name, [f"data={name}"]) for name in arm.datasets]
    return [(None, [f"data={data}"])]


def checkpoints(data: str, name: str, seed: int) -> list[Path]:
    """The variant's checkpoint folders, one per `parts` entry (``<run>/[<part>/]checkpoints/last``)."""
    base = run_dir(data, name, seed)
    return [(base / part if part else base) / "checkpoints" / "last" for part, _ in parts(data)]


def evaluations(data: str, name: str, seed: int) -> list[tuple[str, str, str, Path]]:
    """(task, dataset, checkpoint argument, result path) of each harness run that scores the variant: per task,
    one run over every fold's encoder (a ``fold*`` glob), one per dataset of a suite, or one."""
    arm, ckpts = ARMS[data], checkpoints(data, name, seed)
    out = run_dir(data, name, seed) / "eval"
    if arm.datasets:
        return [(task, dataset, str(ckpt), out / task / f"{dataset}.json")
                for task in arm.tasks for dataset, ckpt in zip(arm.datasets, ckpts, strict=True)]
    ckpt = str(ckpts[0]).replace("fold0", "fold*") if arm.folds else str(ckpts[0])
    return [(task, data, ckpt, out / task / f"{data}.json") for task in arm.tasks]


def pretrain(data: str, name: str, seed: int) -> None:
    arm = ARMS[data]
    for (_, overrides), ckpt in zip(parts(data), checkpoints(data, name, seed), strict=True):
        run([sys.executable, "-m", "tsjepa.train", *overrides, f"seed={seed}", f"run_dir={ckpt.parents[1]}",
             *arm.train, *variant_overrides(name)])


def score(data: str, name: str, seed: int, twin: bool = False) -> bool:
    """Run each harness on the variant's checkpoints (with the random-init twin for the default variant, or
    when ``twin``), unless its result is newer than every checkpoint. Returns whether any harness ran."""
    arm = ARMS[data]
    newest = max((c / "config.json").stat().st_mtime for c in checkpoints(data, name, seed))
    ran = False
    for task, dataset, ckpt, result in evaluations(data, name, seed):
        if result.exists() and result.stat().st_mtime > newest:
            continue
        ran = True
        run([sys.executable, "-m", "tsjepa.eval", task, f"data={dataset}", f"ckpt={ckpt}", f"seed={seed}",
             f"out_dir={result.parents[1]}", f"eval.random_baseline={'true' if twin or name == 'default' else 'false'}",
             *arm.evals])
    return ran


def task_metrics(task: str, record: dict, arm: Arm) -> dict[str, dict[str, float]]:
    """model -> the study's metrics of one evaluation: full-label averages for probes; the SVM's accuracy of
    each seed's own encoders (its 5-fold CV accuracy on train as ``val_accuracy``) and the baselines' for
    classify-ucr; ``val_*`` on the arm's validation series and test values on the others for detection (the
    encoders' ``arm.mode`` score, baselines' own)."""
    rows = [r for r in record["rows"] if r.get("train_fraction", 1.0) == 1.0]
    if task == "forecast":
        return {r["model"]: {k: r[k] for k in FORECAST_KEYS if k in r} for r in rows if r["horizon"] == "avg"}
    if task == "classify":
        return {r["model"] if r["mode"] == "probe" else f"{r['model']}/{r['mode']}":
                {k: r[k] for k in ("val_auroc", "auroc", "auc_pr") if k in r} for r in rows if r["mode"] != "finetune"}
    if task == "classify-ucr":
        encoders = ("tsjepa", "random-init")
        own = [r for r in rows if r["model"] in encoders and r["mode"] == arm.mode
               and "zero-shot" not in r["pretrained_on"]]
        baselines = [r for r in rows if r["model"] not in encoders and r["mode"] != "published"]
        return {r["model"]: {k: r[k] for k in ("val_accuracy", "accuracy") if k in r} for r in own + baselines}
    split: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        if r["series"] == "mean" or r["mode"] not in (arm.mode, "baseline"):
            continue
        prefix = "val_" if r["series"] in arm.validation_series else ""
        for key in (k for k in DETECTION_KEYS[task] if k in r):
            split.setdefault(r["model"], {}).setdefault(prefix + key, []).append(r[key])
    return {model: {k: sum(v) / len(v) for k, v in sorted(keys.items())} for model, keys in split.items()}


def metrics_of(data: str, name: str, seed: int) -> tuple[dict[str, dict[str, float]], dict] | None:
    """model -> its metrics over every evaluation of the arm (a metric several evaluations report, as the
    datasets of a suite do, is their mean), and the evaluations' records by ``<task>/<dataset>``; None until
    every evaluation has scored this run."""
    arm, values, records = ARMS[data], {}, {}
    for task, dataset, _, path in evaluations(data, name, seed):
        if not path.exists():
            return None
        records[f"{task}/{dataset}"] = record = json.loads(path.read_text())
        for model, metrics in task_metrics(task, record, arm).items():
            for key, value in metrics.items():
                values.setdefault(model, {}).setdefault(key, []).append(value)
    return {model: {k: sum(v) / len(v) for k, v in keys.items()} for model, keys in values.items()}, records


def over_seeds(rows: dict[int, dict], labels: dict) -> dict:
    """One study row: ``labels``, then each metric's mean over seeds (with its sample std when there are
    several seeds) and ``n_seeds``."""
    keys = tuple(dict.fromkeys(k for r in rows.values() for k, v in r.items() if isinstance(v, float)))
    (row,) = aggregate_seeds({seed: [{"model": labels["model"], **r}] for seed, r in rows.items()},
                             keys=("model",), metrics=tuple(k for k in keys if k not in DIAGNOSTICS))
    return labels | {k: row[k] for key in keys for k in (key, f"{key}_std") if k in row} | {"n_seeds": row["n_seeds"]}


def selection_score(arm: Arm, row: dict) -> float:
    score = sum(row[k] for k in arm.select) / len(arm.select)
    return -score if arm.lower_is_better else score


def collect(data: str, prior: dict | None = None) -> tuple[list[dict], dict, dict, str]:
    """One row per variant (mean ± std over its scored seeds), the random-init twin and the raw baselines;
    the variant with the best validation score is marked ``selected``. A seed's metrics come from its
    evaluation under ``runs/`` or, when that is gone, from the ``per_seed`` record of the committed table
    (``prior``), so a study grows across machines that do not keep ``runs/``. Returns the rows, the variants'
    provenance, the per-seed metrics and the device."""
    arm = ARMS[data]
    prior = prior or {}
    per_seed = {name: dict(seeds) for name, seeds in prior.get("per_seed", {}).items()}
    runs = {name: dict(info) for name, info in prior.get("variants", {}).items()}
    device = prior.get("device", "none")
    for name, (what, _) in VARIANTS.items():
        for folder in sorted(run_dir(data, name, 0).parent.glob(f"{name}-s*")):
            seed = int(folder.name.rsplit("-s", 1)[1])
            found = metrics_of(data, name, seed)
            if found is None:
                continue
            if name in runs and name not in per_seed:
                raise SystemExit(f"{data}/{name}: the committed row averages seeds whose per-seed metrics were not "
                                 f"recorded; re-score all of its seeds under runs/ before adding seed {seed}")
            metrics, records = found
            cost = pretrain_log(data, name, seed)
            metrics["tsjepa"] |= {k: cost[k] for k in PRETRAIN_DIAGNOSTICS if cost[k] is not None}
            device = next(iter(records.values()))["device"]
            per_seed.setdefault(name, {})[str(seed)] = metrics
            info = runs.setdefault(name, {})
            info |= {"what": what, "overrides": variant_overrides(name)}
            for key, value in (("eval_commands", [r["command"] for r in records.values()]),
                               ("eval_commits", [r["commit"] for r in records.values()]),
                               ("eval_wall_s", round(sum(r["wall_s"] for r in records.values()), 1)),
                               ("pretrain_wall_s", cost["pretrain_wall_s"]),
                               ("s_per_step", cost["s_per_step"]), ("peak_memory_gb", cost["peak_memory_gb"])):
                info[key] = {**info.get(key, {}), str(seed): value}
            info["seeds"] = sorted(int(s) for s in per_seed[name])
    labels = {"mode": arm.mode, "horizon": "avg" if arm.tasks == ("forecast",) else None}
    carried = {(r["model"], r["variant"]): r for r in prior.get("rows", [])}  # rows without per-seed metrics
    rows = []
    for name in VARIANTS:
        if name in per_seed:
            rows.append(over_seeds({s: m["tsjepa"] for s, m in per_seed[name].items()},
                                   {"model": "tsjepa", "variant": name, **labels}))
        elif ("tsjepa", name) in carried:
            rows.append(dict(carried["tsjepa", name]))
    if rows:
        best = max(rows, key=lambda r: selection_score(arm, r))
        for row in rows:
            row["selected"] = row is best
    default = per_seed.get("default", {})
    # one twin per seed: the default's, else one scored beside another variant (``--twin``); the encoder's
    # architecture does not depend on the objective, so a seed draws the same random weights in every variant
    twins = {}
    for name in dict.fromkeys(("default", *VARIANTS)):
        for seed, metrics in per_seed.get(name, {}).items():
            if "random-init" in metrics:
                twins.setdefault(seed, metrics["random-init"])
    if twins:
        rows.append(over_seeds(twins, {"model": "random-init", "variant": "-", **labels}))
    baselines = {k: v for k, v in next(iter(default.values()), {}).items() if k not in ("tsjepa", "random-init")}
    for model, values in baselines.items():
        rows.append({"model": model, "variant": "-", "mode": "baseline", "horizon": labels["horizon"], **values,
                     "n_seeds": 1})
    if not default:
        rows += [dict(r) for (model, _), r in carried.items() if model != "tsjepa"]
    return rows, runs, per_seed, device


def pretrain_log(data: str, name: str, seed: int) -> dict[str, float | None]:
    """Cost and end state of a finished pretraining run from its logs (``metrics.jsonl`` of each part): wall
    time between the first and last metric lines summed over parts (``pretrain_wall_s``), seconds per step
    between the first and the last logged step (``s_per_step``, mean over parts), the peak memory logged
    (``peak_memory_gb``: RSS on CPU, CUDA allocator peak on GPU), and the last logged ``slot_share`` and
    ``position_r2`` (`PRETRAIN_DIAGNOSTICS`, mean over parts); None where a log is gone or too short."""
    logs = []
    for ckpt in checkpoints(data, name, seed):
        path = ckpt.parents[1] / "metrics.jsonl"
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        lines = [line for line in lines if line.get("time") is not None]
        if len(lines) < 2:
            return dict.fromkeys(("pretrain_wall_s", "s_per_step", "peak_memory_gb", *PRETRAIN_DIAGNOSTICS))
        logs.append(lines)

    def mean(values: list) -> float | None:
        return None if None in values else sum(values) / len(values)

    spans = [(lines[-1]["time"] - lines[0]["time"], lines[-1]["step"] - lines[0]["step"]) for lines in logs]
    return {"pretrain_wall_s": round(sum(t for t, _ in spans), 1),
            "s_per_step": round(sum(t / n for t, n in spans) / len(spans), 3),
            "peak_memory_gb": max(line.get("peak_memory_gb", 0.0) for lines in logs for line in lines),
            **{f"pretrain_{k}": mean([lines[-1].get(k) for lines in logs]) for k in ("slot_share", "position_r2")}}


def plot_shortcut(rows: list[dict], path: Path, data: str, device: str) -> None:
    """The arm's selection score against ``slot_share`` (and ``position_r2``) of every variant that logged
    them, with the random-init twin: does closing the positional shortcut buy probe quality?"""
    arm = ARMS[data]
    key = arm.select[0]
    points = [r for r in rows if r["model"] in ("tsjepa", "random-init") and r.get("slot_share") is not None]
    if not points:
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), sharey=True)
    for axis, diag in zip(axes, ("slot_share", "position_r2"), strict=True):
        for r in points:
            if r.get(diag) is None:
                continue
            label = r["variant"] if r["model"] == "tsjepa" else "random-init"
            axis.errorbar(r[diag], r[key], yerr=r.get(f"{key}_std", 0), fmt="s" if label == "random-init" else "o",
                          color="black" if label == "random-init" else None, capsize=3)
            axis.annotate(label, (r[diag], r[key]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axis.set_xlabel(f"{diag} (test tokens)")
    axes[0].set_ylabel(f"{key} ({'lower' if arm.lower_is_better else 'higher'} is better)")
    fig.suptitle(f"{data}: probe score against the positional shortcut, one point per objective", fontsize=10)
    save_figure(fig, path, device)


def plot(rows: list[dict], path: Path, data: str, device: str) -> None:
    arm = ARMS[data]
    ours = [r for r in rows if r["model"] == "tsjepa"]
    refs = {r["model"]: r for r in rows if r["model"] != "tsjepa"}
    keys = [k for val in arm.select for k in (val, val.removeprefix("val_"))]
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 0.45 * len(ours) + 2.2), sharey=True)
    names = [r["variant"] + (" (selected)" if r["selected"] else "") for r in ours]
    for axis, key in zip(axes, keys, strict=True):
        axis.barh(names, [r[key] for r in ours], xerr=[r.get(f"{key}_std", 0) for r in ours],
                  color=["tab:green" if r["selected"] else "tab:blue" for r in ours], capsize=3)
        for model, style in (("random-init", "--"), (arm.reference, ":")):
            if model in refs and key in refs[model]:
                axis.axvline(refs[model][key], color="black", ls=style, lw=1, label=f"{model} {refs[model][key]:.3f}")
        values = [r[key] for r in ours] + [refs[m][key] for m in ("random-init", arm.reference)
                                           if m in refs and key in refs[m]]
        axis.set_xlim(min(values) * 0.97, max(values) * 1.02)
        axis.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
        axis.set_xlabel(f"{key} ({'selection' if key in arm.select else 'test, reported'})")
    axes[0].invert_yaxis()
    fig.suptitle(f"Objective study on {data}: frozen encoder, mean ± std over seeds", fontsize=10)
    save_figure(fig, path, device)


NOTES = {
    "forecast": ("frozen encoder + ridge probe per horizon (penalty chosen on val), every val and test window. "
                 "`val_mse` (selection) and `mse` (test, reported only) are averages over the protocol horizons. "
                 "`lookback_r2`: test R² of a ridge map from a channel's tokens back to its instance-normalised "
                 "lookback window. `linear`/`dlinear`: raw-window ridge."),
    "classify": ("one encoder per held-out fold (folds 0-2 of the stratified 5-fold split), each pretrained without "
                 "its fold's stays (150 steps, batch 32); frozen encoder + logistic probe on channel-pooled "
                 "embeddings and statics. `val_auroc` (selection): the probe's inner 3-fold CV AUROC on the "
                 "training stays; `auroc`/`auc_pr`: the held-out folds (reported only); means over folds. "
                 "`summary-stats/*`: per-channel statistics + statics."),
    "smd": ("`chi2` scores (squared norm of the whitened window embedding) on every test row. SMD has no labelled "
            f"validation split: machines {', '.join(SMD_VALIDATION)} select (`val_*`, mean over them) and the other "
            "5 report (`auc_pr`, `vus_pr`, `vus_roc` of the rare harness; `hitrate@150`, `ndcg@150` of the "
            "cross-channel harness); selection = the mean of `val_auc_pr` and `val_hitrate@150`. Baselines: robust "
            "z-score, PCA, IsolationForest, on the same rows."),
    "ucr": ("`chi2` scores on every test row of the 4 UCR anomaly series (one encoder pretrained on their normal "
            f"train rows). No labelled validation split: series {', '.join(s.split('_')[0] for s in UCR_VALIDATION)} "
            "select (`val_auc_pr`, their mean) and the other 2 report (`auc_pr`, `vus_pr`, `vus_roc`, `ucr_hit`: "
            "the top-scored row inside the labelled anomaly). Baselines: robust z-score, PCA, IsolationForest."),
    "classify-ucr": (f"one encoder per archive ({', '.join(CLASSIFY_ARCHIVES)}; not the long ACSF1 and PLAID, for "
                     "budget), each pretrained on its train split (250 steps, batch 64, the classification suite's "
                     "schedule); frozen embeddings + "
                     "RBF SVM (TS2Vec's protocol). `val_accuracy` (selection): the SVM's 5-fold CV accuracy on "
                     "train, mean over the archives large enough to search C; `accuracy`: the test split, mean "
                     "over every archive (reported only). Baselines: MiniRocket, DTW 1-NN, raw-value ridge."),
}


PRESETS = {"base": ("etth1", "weather"), "clinical": ("physionet2012",), "monitor": ("smd",)}
# a preset adopts only a recipe scored with this many pretraining seeds on each of its arms: a one-seed screen
# makes a finalist, not a pick (the arm's ``default`` is the reference whatever its seeds)
PRESET_SEEDS = 3


def select_presets(tables: dict[str, dict], presets: dict[str, tuple[str, ...]] = PRESETS,
                   allowed: tuple[str, ...] = tuple(VARIANTS)) -> list[dict]:
    """One row per model preset of ``presets`` (name -> its arms): the variant of ``allowed`` with the best
    validation score over the preset's arms, among the variants every one of its arms has scored with
    `PRESET_SEEDS` seeds. A variant's score is the mean over the arms of its validation gain over the arm's
    ``default``, relative to the default's score (so arms on different scales weigh the same). ``tables`` maps
    an arm to its committed study record (arms without one are left out)."""
    rows = []
    for preset, arms in presets.items():
        scored = {arm: {r["variant"] if r["model"] == "tsjepa" else r["model"]: selection_score(ARMS[arm], r)
                        for r in tables[arm]["rows"] if r["model"] == "random-init" or r["model"] == "tsjepa" and (
                            r["variant"] == "default" or r.get("n_seeds", 1) >= PRESET_SEEDS)}
                  for arm in arms if arm in tables}
        common = [v for v in (*allowed, "random-init") if scored and all(v in s for s in scored.values())]
        missing = "+".join(a for a in arms if a not in scored) or "-"
        if "default" not in common:
            rows.append({"preset": preset, "selected": None, "arms": "-", "missing_arms": missing})
            continue
        gains = {v: [(s[v] - s["default"]) / abs(s["default"]) for s in scored.values()] for v in common}
        mean = {v: sum(g) / len(g) for v, g in gains.items()}
        best = max((v for v in common if v != "random-init"), key=mean.get)
        rows.append({"preset": preset, "selected": best, "arms": "+".join(scored), "missing_arms": missing,
                     "candidates": len(common) - ("random-init" in common), "val_gain": mean[best],
                     "val_gain_per_arm": " / ".join(f"{g:+.2%}" for g in gains[best]),
                     "random_init_val_gain": mean.get("random-init")})
    return rows


# the cross-harness summary: its objectives (the peers, then the recipes the presets have used) and its columns
# (arm, test metric, lower is better); cells are test scores, reported beside the validation-selected recipes
SUMMARY_VARIANTS = ("mae", "contrastive", "ijepa", "default", "proj-axes", "recon", "recon-ema")
SUMMARY_COLUMNS = (("etth1", "mse", True), ("weather", "mse", True), ("physionet2012", "auroc", False),
                   ("smd", "auc_pr", False), ("smd", "hitrate@150", False), ("ucr", "auc_pr", False),
                   ("classify-ucr", "accuracy", False))


def best_cells(cells: dict[str, dict], lower_is_better: bool) -> str | None:
    """The row whose value in one column beats the runner-up by more than both their stds, or None. ``cells``:
    row -> {"value", "std", "n_seeds"}; rows of one seed from a seeded run have no std and take no part (a
    deterministic baseline, ``std`` 0, does)."""
    ranked = sorted(((row, c) for row, c in cells.items() if c["std"] is not None),
                    key=lambda item: item[1]["value"], reverse=not lower_is_better)
    if len(ranked) < 2:
        return None
    (row, best), (_, second) = ranked[:2]
    return row if abs(best["value"] - second["value"]) > max(best["std"], second["std"]) else None


def summary_rows(tables: dict[str, dict]) -> tuple[list[dict], dict[str, str | None]]:
    """One row per objective of `SUMMARY_VARIANTS`, the random-init twin and each arm's reference baseline;
    a cell per `SUMMARY_COLUMNS` entry (``<arm>:<metric>``, with ``_std`` and ``_n_seeds``); and per column the
    row marked best (`best_cells`). ``tables``: arm -> its committed study record."""
    labels = [*SUMMARY_VARIANTS, "random-init", *dict.fromkeys(ARMS[a].reference for a, _, _ in SUMMARY_COLUMNS)]
    rows = {label: {"model": "tsjepa" if label in VARIANTS else label,
                    "variant": label if label in VARIANTS else "-", "mode": "summary", "horizon": None}
            for label in labels}
    best = {}
    for arm, metric, lower in SUMMARY_COLUMNS:
        column, cells = f"{arm}:{metric}", {}
        for r in tables.get(arm, {}).get("rows", []):
            label = r["variant"] if r["model"] == "tsjepa" else r["model"]
            if label not in rows or metric not in r:
                continue
            baseline = r["mode"] == "baseline"
            std = 0.0 if baseline else r.get(f"{metric}_std")
            cells[label] = {"value": r[metric], "std": std, "n_seeds": r.get("n_seeds", 1)}
            rows[label] |= {column: r[metric], f"{column}_std": std, f"{column}_n_seeds": r.get("n_seeds", 1)}
        best[column] = best_cells(cells, lower)
    return [r for r in rows.values() if any(":" in k for k in r)], best


# the heuristic SSL objectives JEPA + SIGReg is compared with, head to head, beside random weights, and the
# JEPA + SIGReg recipes of the summary the head-to-head picks from
PEERS = ("mae", "contrastive", "ijepa")
JEPA_RECIPES = tuple(v for v in SUMMARY_VARIANTS if v not in PEERS)


def verdict(ours: dict | None, theirs: dict | None, lower_is_better: bool) -> str:
    """``beats`` / ``loses`` when the gap between two cells ({"value", "std"}) exceeds both their stds, else
    ``level``; ``1 seed`` when either has no std (one seed of a seeded run), ``-`` when either is missing."""
    if ours is None or theirs is None:
        return "-"
    if ours["std"] is None or theirs["std"] is None:
        return "1 seed"
    return compare(ours["value"], theirs["value"], max(ours["std"], theirs["std"]), lower_is_better)


def head_to_head(rows: list[dict], recipe: str) -> list[dict]:
    """Variant ``recipe`` against each of `PEERS` and the random-init twin, per `SUMMARY_COLUMNS` column
    (`verdict` of its test cell against theirs, from `summary_rows`' rows), with the count of columns it beats;
    then one row for all of them at once (``beats`` only where it beats every one)."""
    cells = {(r["variant"] if r["model"] == "tsjepa" else r["model"]): r for r in rows}

    def cell(label: str, column: str) -> dict | None:
        r = cells.get(label, {})
        return {"value": r[column], "std": r[f"{column}_std"]} if column in r else None

    columns = [(f"{arm}:{metric}", lower) for arm, metric, lower in SUMMARY_COLUMNS]
    out = []
    for opponent in (*PEERS, "random-init"):
        line = {"recipe": recipe, "against": opponent}
        line |= {c: verdict(cell(recipe, c), cell(opponent, c), lower) for c, lower in columns}
        out.append(line | {"columns_beaten": sum(line[c] == "beats" for c, _ in columns)})
    every = {c: "beats" if all(o[c] == "beats" for o in out) else "-" for c, _ in columns}
    out.append({"recipe": recipe, "against": "every peer and random-init", **every,
                "columns_beaten": sum(v == "beats" for v in every.values())})
    return out


def cost_rows(tables: dict[str, dict]) -> list[dict]:
    """One row per objective of `SUMMARY_VARIANTS`: per arm of `SUMMARY_COLUMNS`, its pretraining cost from the
    arm table's provenance, ``"<s per step> s, <peak> GB"`` (seconds per step: mean over the seeds that logged
    it; peak memory: their max), ``-`` where no seed logged it."""
    rows = []
    for label in SUMMARY_VARIANTS:
        line = {"objective": label}
        for arm in dict.fromkeys(a for a, _, _ in SUMMARY_COLUMNS):
            info = tables.get(arm, {}).get("variants", {}).get(label, {})
            steps = [v for v in info.get("s_per_step", {}).values() if v is not None]
            peaks = [v for v in info.get("peak_memory_gb", {}).values() if v is not None]
            line[arm] = f"{sum(steps) / len(steps):.3f} s, {max(peaks):.1f} GB" if steps and peaks else "-"
        rows.append(line)
    return rows


def plot_summary_shortcut(tables: dict[str, dict], path: Path, device: str) -> None:
    """Every scored run of every arm: its selection score's gain over the arm's random-init twin (as a fraction
    of the twin's score, positive = better) against its ``slot_share``: on test tokens (forecast arms' evals) and
    at the end of pretraining on its own batches (every arm, runs with their logs)."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    for axis, key in zip(axes, ("slot_share", "pretrain_slot_share"), strict=True):
        for arm, table in tables.items():
            rows = [r for r in table["rows"] if r["model"] in ("tsjepa", "random-init")]
            twin = next((selection_score(ARMS[arm], r) for r in rows if r["model"] == "random-init"), None)
            points = [(r[key], (selection_score(ARMS[arm], r) - twin) / abs(twin), r.get("variant", "-"))
                      for r in rows if twin is not None and r.get(key) is not None]
            if not points:
                continue
            axis.scatter([p[0] for p in points], [p[1] for p in points], label=arm, s=22)
            for x, y, name in points:
                if name in SUMMARY_VARIANTS:
                    axis.annotate(name, (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
        axis.axhline(0, color="black", lw=0.8, ls="--")
        axis.set_xlabel(f"{key} ({'test tokens' if key == 'slot_share' else 'last pretraining batches'})")
        axis.legend(fontsize=8)
    axes[0].set_ylabel("validation gain over random-init")
    fig.suptitle("Probe quality against the positional shortcut (share of token variance explained by the "
                 "(channel, patch) slot), every objective of every arm", fontsize=10)
    save_figure(fig, path, device)


def write_summary(out_dir: Path, wall_s: float) -> None:
    tables = {arm: json.loads(path.read_text()) for arm in ARMS
              if (path := out_dir / "objective-study" / f"{arm}.json").exists()}
    if not tables:
        raise SystemExit(f"no arm table under {out_dir / 'objective-study'}: score an arm first")
    rows, best = summary_rows(tables)
    columns = [f"{arm}:{metric}" for arm, metric, _ in SUMMARY_COLUMNS]
    shown = []
    for r in rows:
        line = {"objective": r["variant"] if r["model"] == "tsjepa" else r["model"]}
        for c in columns:
            if c not in r:
                line[c] = "-"
                continue
            std, n = r[f"{c}_std"], r[f"{c}_n_seeds"]
            cell = f"{r[c]:.4f}" + (f" ± {std:.4f}" if std else "") + (f" ({n} seed)" if std is None else "")
            line[c] = f"**{cell}**" if best[c] == line["objective"] else cell
        shown.append(line)
    (pick,) = select_presets(tables, {"base": PRESETS["base"]}, JEPA_RECIPES)
    versus = head_to_head(rows, pick["selected"]) if pick["selected"] else []
    device = " / ".join(sorted({t["device"] for t in tables.values()}))
    notes = ("Test scores of each objective on every arm of the study (mean ± std over pretraining seeds; `(1 seed)`: "
             "one seed, no std, never marked), from the committed arm tables. **Bold**: the cell beats the "
             "runner-up by more than both their stds (single-seed cells take no part; the raw baselines are "
             "deterministic, std 0). Lower is better for `mse`, higher for `auroc`, `auc_pr`, `hitrate@150` and "
             "`accuracy`. "
             "The recipes themselves were chosen on the validation splits (each arm's table); this table only "
             "reports.\n\n" + markdown_table(shown))
    if versus:
        notes += (f"\n\nHead to head: `{pick['selected']}`, the JEPA + SIGReg recipe the `base` preset's rule picks "
                  f"on validation ({' + '.join(PRESETS['base'])}) among {', '.join(JEPA_RECIPES)}, "
                  "against each peer and the random-init twin on every column's test score: `beats` / `loses` when "
                  "the gap exceeds both stds, else `level`; `1 seed` where either side has one seed (no verdict).\n\n"
                  + markdown_table(versus))
    notes += ("\n\nPretraining cost per objective and arm: seconds per step (mean over the seeds whose logs were "
              "kept) and peak memory (RSS on CPU, the max over those seeds), from each arm table's `variants`. "
              "Measured on 2-core CPUs at one thread, mostly beside another one-thread job (the arm tables' "
              "devices), so compare within a column.\n\n" + markdown_table(cost_rows(tables)))
    out = write_results(out_dir, "objective-study", "summary", rows, seed=sorted(
        {s for t in tables.values() for v in t["variants"].values() for s in v["seeds"]}), device=device,
        wall_s=wall_s, extra={"best": best, "head_to_head": versus}, notes=notes)
    plot_summary_shortcut(tables, out.with_suffix(".png"), device)
    print(f"results: {out} (+ .md, .png)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", nargs="?", default="all", choices=["all", "pretrain", "score", "collect", "presets", "summary"])
    parser.add_argument("--data", default="etth1", choices=list(ARMS))
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--twin", action="store_true",
                        help="score the random-init twin beside a variant other than default (for seeds whose "
                             "default was not pretrained)")
    parser.add_argument("--out-dir", default=str(ROOT / "eval" / "results"))
    args = parser.parse_args()
    start = time.time()
    if args.stage in ("presets", "summary"):
        (write_presets if args.stage == "presets" else write_summary)(Path(args.out_dir), time.time() - start)
        return
    scored = False
    for name in args.variants:
        for seed in args.seeds:
            if args.stage in ("all", "pretrain"):
                pretrain(args.data, name, seed)
            if args.stage in ("all", "score"):
                scored |= score(args.data, name, seed, args.twin)
    if args.stage == "pretrain":
        return
    committed = Path(args.out_dir) / "objective-study" / f"{args.data}.json"
    prior = json.loads(committed.read_text()) if committed.exists() else None
    rows, runs, per_seed, device = collect(args.data, prior)
    if not rows:
        raise SystemExit("no scored variant to collect")
    if args.stage != "collect" and not scored and prior and (rows, runs) == (prior["rows"], prior["variants"]):
        # a re-run whose evaluations were all done: the table (its command, commit and wall time) stays as made
        print(f"{committed}: nothing new to score, table unchanged")
        return
    arm = ARMS[args.data]
    out = write_results(
        args.out_dir, "objective-study", args.data, rows, seed=sorted({s for v in runs.values() for s in v["seeds"]}),
        device=device, wall_s=time.time() - start,
        extra={"variants": runs, "select": list(arm.select), "per_seed": per_seed},
        notes=("Each variant = the dataset's default recipe with the objective overrides in the JSON (`variants`: "
               "the study's reference, the original recipe, then the variant's changes), "
               + NOTES[args.data if args.data in NOTES else arm.tasks[0]] + " Metrics: mean over the variant's "
               "seeds (`*_std`: sample std, present with more than one seed). `selected`: the best validation "
               "score. `random-init`: the default's architecture with random weights, one twin per seed."),
    )
    plot(rows, out.with_suffix(".png"), args.data, device)
    plot_shortcut(rows, out.with_name(f"{args.data}-shortcut.png"), args.data, device)
    print(f"results: {out} (+ .md, .png)")


def write_presets(out_dir: Path, wall_s: float) -> None:
    tables = {arm: json.loads(path.read_text()) for arm in ARMS
              if (path := out_dir / "objective-study" / f"{arm}.json").exists()}
    if not tables:
        raise SystemExit(f"no arm table under {out_dir / 'objective-study'}: score an arm first")
    rows = select_presets(tables)
    out = write_results(out_dir, "objective-study", "presets", rows, seed=sorted(
        {s for t in tables.values() for v in t["variants"].values() for s in v["seeds"]}),
        device=next(iter(tables.values()))["device"],
        wall_s=wall_s, notes=(
            "The recipe each model preset selects from the study's committed tables, on validation scores only "
            "(`select` of each arm). `val_gain`: the selected variant's validation improvement over the arm's "
            "`default`, as a fraction of the default's score, averaged over the preset's arms (0: the default "
            "itself); `val_gain_per_arm` lists it per arm; `random_init_val_gain`: the same for the default's "
            "random-init twin (the selected recipe adds value over random weights only where its gain is larger). "
            "`candidates`: the variants every arm of the preset has scored. `missing_arms`: arms not yet run."))
    print(f"results: {out} (+ .md)")


if __name__ == "__main__":
    main()
