"""Transfer of the corpus encoder to datasets it never saw (issue "A foundation checkpoint"):
``python eval/transfer.py [stage] [--targets etth1 ...]``.

For each target dataset the same forecast protocol (``python -m tsjepa.eval forecast``: frozen encoder +
ridge probe per horizon, every val and test window, heads fit on the last 5%, 10% or 100% of the train
windows) scores:

- ``tsjepa`` / ``corpus``: the shipped ``tsjepa-base-corpus`` encoder (fp16 weights, pretrained on
  ``data=corpus``, none of the targets in it); the target's channels get its shared ``<unknown>`` identity;
- ``tsjepa`` / ``<target>``: the same recipe (proj-axes objective) pretrained on the target's own train split
  (300 steps, the base schedule), into ``runs/transfer/<target>/own-s0``;
- ``random-init``: the corpus architecture with random weights, drawn with seeds ``TWIN_SEEDS`` (one
  evaluation per draw, ``seed=k eval.random_baseline=true``, into ``eval-corpus-s<k>``; mean and std over the
  draws), and the raw baselines (linear, dlinear, seasonal-naive), from the shipped encoder's evaluation
  (``eval-shipped``). A draw depends only on the architecture, so it is kept while the architecture it scored
  (``scored_architecture``) is the shipped one's, also when the shipped weights change; its baselines must equal
  the shipped evaluation's (same windows, same heads).

Stages: ``own`` pretrains the same-dataset encoders, ``score`` runs the evaluations (resumable: a result newer
than its checkpoint is kept; a twin draw, while it scored the shipped architecture), ``collect`` writes
``eval/results/transfer/<target>.{json,md,png}``; ``steps``
scores the corpus run's step snapshots on ``--targets`` at full labels and writes
``eval/results/transfer/scaling.{json,md,png}``; ``share`` pretrains the corpus recipe on every 4th corpus file
(8 of 29, same steps) with each seed of ``SHARE_SEEDS`` and writes ``eval/results/transfer/share.{json,md,png}``:
those encoders against the encoders of all 29 files (``CORPUS_SEEDS``, the ``seeds`` stage's evaluations) on
``--targets`` at full labels, mean and std over seeds, with the random-init twin and the raw-window ridge;
``seeds`` pretrains the shipped encoder's command again with each seed of ``CORPUS_SEEDS`` past 0, exports it
the same way (fp16) and writes ``eval/results/transfer/seeds.{json,md,png}``: the corpus encoder's mean and std
over its pretraining seeds on ``--targets`` at each label share, beside the per-target tables' references;
``harnesses`` links those seeds' encoders as ``runs/transfer/corpus-seeds/s<k>`` and scores them on the anomaly
(NAB, UCR, SMD) and PhysioNet 2012 harnesses into ``eval/results/transfer/{rare,classify}/``, mean and std over
the seeds, each with its own random-init twin.
The per-target tables use a single pretraining seed (0) for the encoders; their random-init twin is drawn
``len(TWIN_SEEDS)`` times, because one draw moved the avg MSE by as much as the encoders differ.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from tsjepa.checkpoint import read_config, resolve_checkpoint  # noqa: E402
from tsjepa.results import aggregate_seeds, save_figure, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs" / "transfer"
CORPUS = "tsjepa-base-corpus"
CORPUS_RUN = ROOT / "runs" / "corpus-base-cpu-s0" / "checkpoints"
# the shipped corpus encoder's objective (proj-axes: the base preset's from c9902be to 2b06c78, recon since)
# and the study's 300 steps of 64 windows, so own-dataset encoders keep matching the committed table as the presets change
RECIPE = ["model/objective=proj-axes", "train.steps=300", "train.batch_size=64"]
# the forecast probe's fit rows of the committed tables (the default until 2026-12-07)
PROBE = ("eval.max_fit_rows=100000",)
TARGETS = ("etth1", "ettm1", "weather", "exchange_rate", "illness")
FRACTIONS = "[0.05,0.1,1.0]"
# own-dataset encoders the objective study trains with this recipe (same steps, seed 0); pretrained here when
# missing
STUDY = {t: ROOT / "runs" / "objective-study" / t / "proj-axes-s0" for t in ("etth1", "weather")}
# the corpus-share arm: every 4th file of the corpus (sorted as in the data config), a fixed spread over domains
CORPUS_FILES = list(OmegaConf.load(ROOT / "configs" / "data" / "corpus.yaml").data.datasets)
SHARE_FILES = CORPUS_FILES[::4]
# its pretraining seeds
SHARE_SEEDS = (0, 1)
# random-init draws of the per-target tables (the corpus encoder and the baselines are deterministic)
TWIN_SEEDS = (0, 1, 2)
# what identifies one row of a forecast evaluation
ROW_KEYS = ("model", "mode", "horizon", "train_fraction")
# pretraining seeds of the corpus encoder for the seed-spread table; 0 is the shipped encoder
CORPUS_SEEDS = (0, 1, 2)
# the corpus encoders of `CORPUS_SEEDS` as one checkpoint glob, for the harnesses that score seeds from a glob
SEED_LINKS = RUNS / "corpus-seeds"
# the non-forecast harnesses scored over `CORPUS_SEEDS`: each one's `python -m tsjepa.eval` arguments
HARNESSES = {
    "nab": ["rare", "data=nab"],
    "ucr": ["rare", "data=ucr"],
    "smd": ["rare", "data=smd"],
    "physionet2012": ["classify", "data=physionet2012", "eval.folds=[0,1,2]", "eval.modes=[probe]",
                      "eval.train_fractions=[0.1,1.0]"],
}


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})


def own_run(target: str) -> Path:
    return STUDY.get(target, RUNS / target / "own-s0")


def pretrained(run_dir: Path, overrides: list[str]) -> Path:
    """``run_dir``'s last checkpoint, after pretraining it with ``overrides`` when it is missing or unfinished
    (``tsjepa.train`` resumes an unfinished run)."""
    last = run_dir / "checkpoints" / "last"
    config = read_config(last) if last.exists() else None
    if config is None or config["step"] < config["train"]["steps"]:
        run([sys.executable, "-m", "tsjepa.train", *overrides, f"run_dir={run_dir}"])
    return last


def pretrain_own(target: str) -> None:
    pretrained(own_run(target), [f"data={target}", *RECIPE])


def result(target: str, which: str) -> Path:
    return RUNS / target / f"eval-{which}" / "forecast" / f"{target}.json"


def fresh(result: Path, ckpt: Path) -> bool:
    """Whether evaluation ``result`` exists and is newer than checkpoint ``ckpt`` (so it scored that one)."""
    return result.exists() and result.stat().st_mtime > (ckpt / "config.json").stat().st_mtime


def twin_draws() -> dict[str, int]:
    """Name -> seed of each random-init draw's evaluation."""
    return {f"corpus-s{k}": k for k in TWIN_SEEDS}


def evaluations(target: str) -> dict[str, tuple[Path, str, int]]:
    """Name -> (checkpoint, random baseline on, seed) of each evaluation of ``target``'s table: the shipped
    encoder (``shipped``), one per twin draw (`twin_draws`) and the own-dataset encoder (``own``)."""
    shipped = resolve_checkpoint(CORPUS)
    return {"shipped": (shipped, "false", 0), **{w: (shipped, "true", k) for w, k in twin_draws().items()},
            "own": (own_run(target) / "checkpoints" / "last", "false", 0)}


def current(target: str, which: str, ckpt: Path) -> bool:
    """Whether evaluation ``which`` of ``target`` holds what the table needs: a twin draw, one that scored the
    shipped architecture; any other, one newer than its checkpoint."""
    path = result(target, which)
    if which not in twin_draws():
        return fresh(path, ckpt)
    return path.exists() and scored_architecture(json.loads(path.read_text())) == read_config(ckpt)["encoder"]


def scored_architecture(record: dict) -> dict | None:
    """The encoder architecture a forecast evaluation ``record`` scored (its random-init twin's): recorded in
    the result (``encoder``); for an evaluation from before results recorded it, the shipped file's config at
    the clean commit that ran it, when it scored the shipped file; otherwise unknown (None)."""
    if "encoder" in record:
        return record["encoder"]
    shipped = resolve_checkpoint(CORPUS)
    if (Path(record["ckpt"]).resolve() != shipped.resolve() or not shipped.resolve().is_relative_to(ROOT)
            or record["commit"].endswith("-dirty")):
        return None
    config = subprocess.run(["git", "show", f"{record['commit']}:{(shipped / 'config.json').relative_to(ROOT)}"],
                            cwd=ROOT, capture_output=True, text=True)
    return json.loads(config.stdout)["encoder"] if config.returncode == 0 else None


def score(target: str) -> None:
    for which, (ckpt, twin, seed) in evaluations(target).items():
        path = result(target, which)
        if current(target, which, ckpt):
            continue
        run([sys.executable, "-m", "tsjepa.eval", "forecast", *PROBE, f"data={target}", f"ckpt={ckpt}", f"seed={seed}",
             f"eval.train_fractions={FRACTIONS}", f"eval.random_baseline={twin}", f"out_dir={path.parents[1]}"])


def twin_rows(shipped: dict, draws: dict[str, dict]) -> list[dict]:
    """Random-init rows averaged over the twin draws' evaluations ``draws`` (mean, ``mse_std``, ``mae_std``,
    ``val_mse_std``, ``n_seeds``). Each draw's baseline rows must equal those of the shipped encoder's
    evaluation ``shipped``: the baselines are deterministic, so a difference means different windows or heads."""
    fixed = mse_by_row(baselines(shipped["rows"]))
    for name, record in draws.items():
        mine = mse_by_row(baselines(record["rows"]))
        if mine.keys() != fixed.keys() or any(abs(mine[k] - v) > 1e-6 for k, v in fixed.items()):
            raise ValueError(f"evaluation {name} differs from the shipped encoder's in its baselines; re-score it")
    return aggregate_seeds({record["seed"]: [r for r in record["rows"] if r["model"] == "random-init"]
                            for record in draws.values()}, ROW_KEYS, ("mse", "mae", "val_mse"))


def baselines(rows: Iterable[dict]) -> list[dict]:
    """The raw baselines' rows among a forecast evaluation's ``rows`` (neither encoder's)."""
    return [r for r in rows if r["model"] not in ("tsjepa", "random-init")]


def mse_by_row(rows: Iterable[dict]) -> dict[tuple, float]:
    """Each row's test MSE under its `ROW_KEYS` values."""
    return {tuple(r[k] for k in ROW_KEYS): r["mse"] for r in rows}


def collect(target: str, out_dir: str) -> Path | None:
    """The target's table: corpus and own encoders, the random-init twin (mean over draws) and baselines, at each
    label share."""
    names = evaluations(target)
    if not all(result(target, w).exists() for w in names):
        return None
    stale = [w for w, (ckpt, _, _) in names.items() if not current(target, w, ckpt)]
    if stale:
        raise ValueError(f"{target}: evaluations {stale} did not score the current checkpoints; re-score them "
                         f"(python eval/transfer.py score --targets {target})")
    records = {w: json.loads(result(target, w).read_text()) for w in names}
    twins = twin_rows(records["shipped"], {w: records[w] for w in twin_draws()})
    rows = []
    for which, record in (("shipped", records["shipped"]), ("own", records["own"])):
        for r in record["rows"]:
            if r["model"] == "random-init" or (which == "own" and r["model"] != "tsjepa"):
                continue  # the twin is averaged over draws; baselines come from the shipped encoder's evaluation
            pretraining = {"tsjepa": CORPUS if which == "shipped" else f"{target} (own)"}.get(r["model"], "-")
            rows.append({"model": r["model"], "pretraining": pretraining, **{k: v for k, v in r.items() if k != "model"}})
    rows += [{"model": r["model"], "pretraining": "-", **{k: v for k, v in r.items() if k != "model"}} for r in twins]
    rows.sort(key=lambda r: (r["train_fraction"], str(r["horizon"]) != "avg", str(r["horizon"])))
    device = records["shipped"]["device"]
    out = write_results(
        out_dir, "transfer", target, rows, seed=0, device=device,
        wall_s=sum(r["wall_s"] for r in records.values()),
        extra={"evaluations": {w: {"command": r["command"], "commit": r["commit"], "wall_s": r["wall_s"]}
                               for w, r in records.items()}},
        notes=(f"`tsjepa` / `{CORPUS}`: the shipped corpus encoder (never saw {target}; its channels take the "
               "shared `<unknown>` identity). `tsjepa` / `(own)`: the same objective pretrained on the target's "
               "train split (300 steps). `random-init`: the corpus architecture with random weights, mean and std "
               f"over {len(TWIN_SEEDS)} draws (seeds {', '.join(map(str, TWIN_SEEDS))}; `n_seeds`), each from its "
               "own evaluation (`evaluations` in the JSON; a draw depends only on the architecture, so it may come "
               "from an evaluation of an earlier shipped file of the same architecture, with the same baselines). Frozen "
               "encoder + ridge probe per horizon (penalty chosen on val), all val and test windows; "
               "`train_fraction`: heads and baselines fit on the most recent share of the train windows. "
               "Single pretraining seed (0) for both tsjepa encoders."))
    plot(rows, out.with_suffix(".png"), target, device)
    return out


def plot(rows: list[dict], path: Path, target: str, device: str) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
    label_share_curves(ax, rows, [("tsjepa", CORPUS), ("tsjepa", f"{target} (own)"), ("random-init", "-"),
                                  ("linear", "-")])
    ax.set_title(f"Transfer to {target}\n(encoders: seed 0; random-init: {len(TWIN_SEEDS)} draws, ± std)", fontsize=9)
    ax.legend(fontsize=8)
    save_figure(fig, path, device)


def label_share_curves(ax: plt.Axes, rows: list[dict], curves: Iterable[tuple[str, str]]) -> None:
    """On ``ax``: the avg-over-horizons test MSE (± ``mse_std``) along the label share for each (model,
    pretraining) of ``curves``; rows without ``pretraining`` count as ``-``."""
    for model, pretraining in curves:
        mine = sorted((r for r in rows if r["model"] == model and r.get("pretraining", "-") == pretraining
                       and r["horizon"] == "avg"), key=lambda r: r["train_fraction"])
        ax.errorbar([r["train_fraction"] for r in mine], [r["mse"] for r in mine],
                    yerr=[r.get("mse_std") or 0.0 for r in mine], marker="o", capsize=3,
                    label=model if pretraining == "-" else f"{model} ({pretraining})")
    ax.set_xscale("log")
    ax.set_xlabel("share of train windows the heads are fit on")
    ax.set_ylabel("test MSE, avg over horizons")


def snapshots() -> dict[int, Path]:
    """Step -> corpus snapshot (``checkpoints/step-<N>``; the final one is the run's ``last``)."""
    found = {int(p.name.removeprefix("step-")): p for p in CORPUS_RUN.glob("step-*")}
    return dict(sorted(found.items()))


def scaling(targets: list[str], out_dir: str) -> Path:
    """Transfer MSE (full labels, probe) of each corpus snapshot on ``targets``; ``wall_s``: the snapshots'
    evaluations."""
    rows, device, wall = [], "none", 0.0
    for target in targets:
        for step, ckpt in snapshots().items():
            path = RUNS / target / f"eval-step-{step}" / "forecast" / f"{target}.json"
            if not fresh(path, ckpt):
                run([sys.executable, "-m", "tsjepa.eval", "forecast", *PROBE, f"data={target}", f"ckpt={ckpt}",
                     "eval.random_baseline=false", f"out_dir={path.parents[1]}"])
            record = json.loads(path.read_text())
            device, wall = record["device"], wall + record["wall_s"]
            avg = next(r for r in record["rows"] if r["model"] == "tsjepa" and r["horizon"] == "avg")
            rows.append({"model": "tsjepa", "mode": "probe", "horizon": "avg", "dataset": target, "steps": step,
                         "corpus_share": 1.0, "val_mse": avg["val_mse"], "mse": avg["mse"], "mae": avg["mae"],
                         "n_seeds": 1, "n_windows": avg["n_windows"]})
        rows += references(target, out_dir)
    out = write_results(out_dir, "transfer", "scaling", rows, seed=0, device=device, wall_s=wall,
                        notes=("Snapshots of one corpus run (`train.keep_every`, one cosine schedule over all "
                               "steps), each probed at full labels; for reference, `random-init` (mean and std "
                               "over the draws of `transfer/<target>.json`, the same windows) and `linear`."))
    plot_curve(rows, targets, "steps", "corpus pretraining steps",
               "Transfer vs corpus pretraining steps (single seed)", out.with_suffix(".png"), device)
    return out


def references(target: str, out_dir: str) -> list[dict]:
    """The full-label avg rows of random-init (mean and std over its draws) and the raw-window ridge from
    ``target``'s committed table, as reference rows of a curve (``steps`` and ``corpus_share`` 0)."""
    table = json.loads((Path(out_dir) / "transfer" / f"{target}.json").read_text())
    return [{"model": r["model"], "mode": r["mode"], "horizon": "avg", "dataset": target, "steps": 0,
             "corpus_share": 0.0, **{k: r[k] for k in ("val_mse", "mse", "mae", "mse_std", "n_seeds", "n_windows") if k in r}}
            for r in table["rows"] if r["model"] in ("random-init", "linear") and r["horizon"] == "avg"
            and r["train_fraction"] == 1.0]


def corpus_encoder(seed: int) -> Path:
    """The corpus encoder of pretraining seed ``seed``: the shipped one for 0; otherwise the shipped command
    with ``seed=<seed>`` (``runs/corpus-base-cpu-s<seed>``, pretrained when missing or unfinished), exported
    like the shipped file (fp16) to ``runs/transfer/corpus-s<seed>``."""
    if seed == 0:
        return resolve_checkpoint(CORPUS)
    last = pretrained(ROOT / "runs" / f"corpus-base-cpu-s{seed}", ["data=corpus", f"seed={seed}"])
    exported = RUNS / f"corpus-s{seed}"
    if not fresh(exported / "model.safetensors", last):
        run([sys.executable, "-m", "tsjepa.export", str(last), str(exported)])
    return exported


def corpus_seed_evaluation(target: str, seed: int) -> Path:
    """The forecast evaluation of the corpus encoder of pretraining seed ``seed`` (`corpus_encoder`) on ``target``
    at each label share, scored when missing or older than the encoder (seed 0 reuses its table's evaluation
    when that is in ``runs/``)."""
    ckpt = corpus_encoder(seed)
    path = result(target, "shipped")
    if seed > 0 or not fresh(path, ckpt):
        path = result(target, f"corpus-seed{seed}")
    if not fresh(path, ckpt):
        run([sys.executable, "-m", "tsjepa.eval", "forecast", *PROBE, f"data={target}", f"ckpt={ckpt}", "seed=0",
             f"eval.train_fractions={FRACTIONS}", "eval.random_baseline=false", f"out_dir={path.parents[1]}"])
    return path


def seeds(targets: list[str], out_dir: str) -> Path:
    """The corpus encoder over its pretraining seeds `CORPUS_SEEDS` on ``targets`` (`seed_rows`), each seed's
    evaluation scored here when missing (`corpus_seed_evaluation`)."""
    rows, device, wall = [], "none", 0.0
    for target in targets:
        table = json.loads((Path(out_dir) / "transfer" / f"{target}.json").read_text())
        per_seed, device, seconds = encoder_rows({k: corpus_seed_evaluation(target, k) for k in CORPUS_SEEDS})
        rows += seed_rows(target, per_seed, table)
        wall += seconds
    out = write_results(out_dir, "transfer", "seeds", rows, seed=0, device=device, wall_s=wall,
                        extra={"corpus_seeds": list(CORPUS_SEEDS)},
                        notes=(f"`tsjepa` / corpus: the shipped `{CORPUS}` command (2000 steps) pretrained with each "
                               f"seed {', '.join(map(str, CORPUS_SEEDS))}, fp16 like the shipped file (seed 0 is "
                               "the shipped file); mean, `mse_std` and each seed's MSE (`mse_seed<k>`). The other "
                               "rows are read from the per-target tables `transfer/<target>.json` (random-init: "
                               "mean over its draws; own: the target's own pretraining, seed 0; linear: raw-window "
                               "ridge); the shipped encoder reproduces those tables' corpus rows here (checked). "
                               "Frozen encoder + ridge probe, all val and test windows; `train_fraction`: the heads' "
                               "share of the train windows."))
    plot_seeds(rows, targets, out.with_suffix(".png"), device)
    return out


def encoder_rows(evaluations: dict[int, Path]) -> tuple[dict[int, list[dict]], str, float]:
    """Seed -> the ``tsjepa`` rows of each forecast evaluation of ``evaluations`` (seed -> result file), with the
    last one's device and the evaluations' summed wall time."""
    per_seed, device, wall = {}, "none", 0.0
    for k, path in evaluations.items():
        record = json.loads(path.read_text())
        per_seed[k] = [r for r in record["rows"] if r["model"] == "tsjepa"]
        device, wall = record["device"], wall + record["wall_s"]
    return per_seed, device, wall


def seed_rows(target: str, per_seed: dict[int, list[dict]], table: dict) -> list[dict]:
    """Avg-over-horizons rows of ``target`` at each label share: the corpus encoder's mean, std and each seed's
    MSE (``mse_seed<k>``) from its ``tsjepa`` rows per pretraining seed ``per_seed``, and the per-target
    ``table``'s references (random-init over its draws, the own-dataset encoder, the raw-window ridge). Seed 0
    is the shipped encoder and must reproduce the table's corpus rows (to 1e-4), so the references were
    measured on the same windows by the same code."""
    shipped = mse_by_row(r for r in table["rows"] if r.get("pretraining") == CORPUS)
    if any(abs(shipped.get(k, float("inf")) - v) > 1e-4 for k, v in mse_by_row(per_seed[0]).items()):
        raise ValueError(f"the shipped encoder no longer reproduces eval/results/transfer/{target}.json; "
                         f"regenerate that table first (python eval/transfer.py --targets {target})")
    rows = [{"dataset": target, "pretraining": f"corpus, seeds {'+'.join(map(str, per_seed))}", **r}
            for r in spread_rows(per_seed)]
    rows += [{"dataset": target, **r} for r in table["rows"] if r["horizon"] == "avg" and (
        r["model"] in ("random-init", "linear") or r.get("pretraining") == f"{target} (own)")]
    return sorted(rows, key=lambda r: r["train_fraction"])


def spread_rows(per_seed: dict[int, list[dict]]) -> list[dict]:
    """Avg-over-horizons rows of one encoder over its pretraining seeds (``per_seed``: seed -> its forecast
    rows) at each label share: mean, ``<metric>_std``, ``n_seeds`` and each seed's MSE (``mse_seed<k>``)."""
    spread = {k: {r["train_fraction"]: r["mse"] for r in rows if r["horizon"] == "avg"} for k, rows in per_seed.items()}
    return [{**r, **{f"mse_seed{k}": spread[k][r["train_fraction"]] for k in per_seed}}
            for r in aggregate_seeds(per_seed, ROW_KEYS, ("mse", "mae", "val_mse")) if r["horizon"] == "avg"]


def plot_seeds(rows: list[dict], targets: list[str], path: Path, device: str) -> None:
    """One panel per target: avg test MSE along the label share, the corpus encoder's seed mean ± std beside
    the random-init twin (± std over its draws), the own-dataset encoder and the raw-window ridge."""
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 3.8), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        mine = [r for r in rows if r["dataset"] == target]
        label_share_curves(ax, mine, dict.fromkeys((r["model"], r.get("pretraining", "-")) for r in mine))
        ax.set_title(target, fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(f"Corpus encoder over pretraining seeds {list(CORPUS_SEEDS)}", fontsize=10)
    save_figure(fig, path, device)


def plot_curve(rows: list[dict], targets: list[str], x: str, xlabel: str, title: str, path: Path, device: str) -> None:
    """One panel per target: the corpus encoder's test MSE along row key ``x``, random-init and the raw linear
    ridge as horizontal references."""
    fig, axes = plt.subplots(1, len(targets), figsize=(5 * len(targets), 3.6), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        mine = sorted((r for r in rows if r["dataset"] == target and r["model"] == "tsjepa"), key=lambda r: r[x])
        ax.errorbar([r[x] for r in mine], [r["mse"] for r in mine], yerr=[r.get("mse_std") or 0.0 for r in mine],
                    marker="o", capsize=3, label="tsjepa (corpus)")
        for r in rows:
            if r["dataset"] == target and r["model"] in ("random-init", "linear"):
                std = r.get("mse_std") or 0.0
                ax.axhline(r["mse"], ls="--" if r["model"] == "random-init" else ":", color="black", lw=1,
                           label=f"{r['model']} {r['mse']:.3f}" + (f" ± {std:.3f}" if std else ""))
                if std:
                    ax.axhspan(r["mse"] - std, r["mse"] + std, color="black", alpha=0.08)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test MSE, avg over horizons")
        ax.set_title(target, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path, device)


def share(targets: list[str], out_dir: str) -> Path:
    """Transfer MSE (full labels, probe) of the corpus recipe pretrained on `SHARE_FILES` with each seed of
    `SHARE_SEEDS` against the corpus encoders of every file (`CORPUS_SEEDS`, `corpus_seed_evaluation`), mean and
    std over seeds, with the random-init twin and the raw-window ridge of the per-target tables (`references`)."""
    fraction = len(SHARE_FILES) / len(CORPUS_FILES)
    share_encoders = {k: pretrained(RUNS / f"corpus-share-s{k}",
                                    ["data=corpus", f"data.datasets=[{','.join(SHARE_FILES)}]", f"seed={k}"])
                      for k in SHARE_SEEDS}
    rows, device, wall = [], "none", 0.0
    for target in targets:
        evaluations = {fraction: {}, 1.0: {k: corpus_seed_evaluation(target, k) for k in CORPUS_SEEDS}}
        for k, last in share_encoders.items():
            path = RUNS / target / f"eval-share-s{k}-full" / "forecast" / f"{target}.json"
            if not fresh(path, last):
                run([sys.executable, "-m", "tsjepa.eval", "forecast", *PROBE, f"data={target}", f"ckpt={last}",
                     "eval.random_baseline=false", f"out_dir={path.parents[1]}"])
            evaluations[fraction][k] = path
        for corpus_share, paths in evaluations.items():
            per_seed, device, seconds = encoder_rows(paths)
            rows += [{"dataset": target, "corpus_share": corpus_share, **r} for r in spread_rows(per_seed)
                     if r["train_fraction"] == 1.0]
            wall += seconds
        rows += references(target, out_dir)
    seeds_of = (f"{len(SHARE_FILES)} files: seeds {'+'.join(map(str, SHARE_SEEDS))}; all {len(CORPUS_FILES)}: seeds "
                f"{'+'.join(map(str, CORPUS_SEEDS))}")
    out = write_results(out_dir, "transfer", "share", rows, seed=list(SHARE_SEEDS), device=device, wall_s=wall,
                        extra={"share_files": SHARE_FILES, "share_seeds": list(SHARE_SEEDS),
                               "corpus_seeds": list(CORPUS_SEEDS)},
                        notes=(f"`corpus_share`: the share of the corpus' {len(CORPUS_FILES)} files the encoder was "
                               f"pretrained on: {len(SHARE_FILES)} (every 4th, `share_files` in the JSON; "
                               f"pretraining seeds {', '.join(map(str, SHARE_SEEDS))}) or all (the shipped command, "
                               f"seeds {', '.join(map(str, CORPUS_SEEDS))}, fp16; seed 0 is the shipped file); same "
                               "recipe, 2000 steps. Mean, `mse_std` (sample std over pretraining seeds) and each "
                               "seed's MSE (`mse_seed<k>`). Frozen encoder + ridge probe at full labels, all val and "
                               "test windows; `random-init` (mean and std over its draws) and `linear` (raw-window "
                               "ridge) from the per-target tables `transfer/<target>.json` (same windows)."))
    plot_curve(rows, targets, "corpus_share", "share of corpus files pretrained on",
               f"Transfer vs corpus share, 2000 steps ({seeds_of}, ± std)", out.with_suffix(".png"), device)
    return out


def harnesses(out_dir: str) -> Path:
    """The corpus encoder over `CORPUS_SEEDS` on the anomaly and PhysioNet harnesses (`HARNESSES`): links each
    seed's encoder (`corpus_encoder`) as ``SEED_LINKS/s<k>`` and scores the glob over them, each seed with its
    own random-init twin, into ``<out_dir>/transfer/{rare,classify}/``."""
    SEED_LINKS.mkdir(parents=True, exist_ok=True)
    for k in CORPUS_SEEDS:
        link, target = SEED_LINKS / f"s{k}", corpus_encoder(k).resolve()
        if link.is_symlink() and link.resolve() != target:
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(target, target_is_directory=True)
    ckpt, out = (SEED_LINKS / "s*").relative_to(ROOT), Path(os.path.relpath(Path(out_dir) / "transfer", ROOT))
    for args in HARNESSES.values():
        run([sys.executable, "-m", "tsjepa.eval", *args, f"ckpt={ckpt}", f"out_dir={out}"])
    return ROOT / out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", nargs="?", default="all",
                        choices=["all", "own", "score", "collect", "steps", "share", "seeds", "harnesses"])
    parser.add_argument("--targets", nargs="*", default=list(TARGETS), choices=list(TARGETS))
    parser.add_argument("--out-dir", default=str(ROOT / "eval" / "results"))
    args = parser.parse_args()
    start = time.time()
    if args.stage == "harnesses":
        print(f"results: {harnesses(args.out_dir)}")
        return
    if args.stage in ("steps", "share", "seeds"):
        print(f"results: {dict(steps=scaling, share=share, seeds=seeds)[args.stage](args.targets, args.out_dir)}")
        return
    for target in args.targets:
        if args.stage in ("all", "own"):
            pretrain_own(target)
        if args.stage in ("all", "score"):
            score(target)
        if args.stage in ("all", "collect"):
            out = collect(target, args.out_dir)
            print(f"{target}: {out or 'not scored yet'}")
    print(f"{time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
