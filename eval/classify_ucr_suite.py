"""The UCR / UEA classification suite: ``python eval/classify_ucr_suite.py [all|pretrain|score|summary]``.

For every archive card (`DATASETS`): pretrain the default recipe on its train split for each seed
(``python -m tsjepa.train data=<name> seed=<s>``, 250 steps of 64 windows, into ``runs/classify-ucr/<name>-s<s>``),
score them with ``python -m tsjepa.eval classify-ucr`` (the seeds' encoders and random-init twins, the shipped corpus encoder
zero-shot, MiniRocket / DTW 1-NN / raw ridge, the card's published accuracies), then write the summary
``eval/results/classify-ucr/summary.{json,md,png}``: datasets x models, the average accuracy and the average
rank over the datasets every model has (rank 1 = best; ties share their mean rank). Resumable: finished
pretraining is not repeated and a result newer than its checkpoints is not re-scored.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tsjepa.results import markdown_table, save_figure, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ["arrowhead", "gunpoint", "italypowerdemand", "osuleaf", "acsf1", "plaid", "basicmotions",
            "japanesevowels"]
RESULTS = ROOT / "eval" / "results" / "classify-ucr"
RUNS = ROOT / "runs" / "classify-ucr"
# the schedule every committed encoder of this suite was pretrained with (the cpu preset's until 2026-12-07), so
# new seeds stay comparable with the committed ones as the preset changes
SCHEDULE = ("train.steps=250", "train.batch_size=64")
# the summary's columns: (label, model, pretrained_on, mode) of a result row
COLUMNS = [("tsjepa own", "tsjepa", None, "svm"), ("tsjepa corpus zero-shot", "tsjepa", "corpus (zero-shot)", "svm"),
           ("random-init", "random-init", "-", "svm"), ("minirocket", "minirocket", "-", "ridge"),
           ("dtw-1nn", "dtw-1nn", "-", "1-nn"), ("raw ridge", "raw", "-", "ridge"),
           ("ts2vec (published)", "ts2vec", "-", "published"), ("minirocket (published)", "minirocket", "-", "published"),
           ("rocket (published)", "rocket", "-", "published")]


def run(args: list[str]) -> None:
    print("+", " ".join(args), flush=True)
    subprocess.run(args, cwd=ROOT, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def pretrain(name: str, seeds: list[int]) -> None:
    for seed in seeds:
        run([sys.executable, "-m", "tsjepa.train", f"data={name}", f"seed={seed}", *SCHEDULE,
             f"run_dir={RUNS / f'{name}-s{seed}'}"])


def score(name: str, seeds: list[int]) -> None:
    result = RESULTS / f"{name}.json"
    ckpts = [RUNS / f"{name}-s{s}" / "checkpoints" / "last" / "model.safetensors" for s in seeds]
    if result.exists() and all(c.exists() and c.stat().st_mtime < result.stat().st_mtime for c in ckpts):
        print(f"{name}: scored after its checkpoints, skipped")
        return
    run([sys.executable, "-m", "tsjepa.eval", "classify-ucr", f"data={name}",
         f"ckpt=runs/classify-ucr/{name}-s*/checkpoints/last", f"eval.seeds=[{','.join(map(str, seeds))}]"])


def cell(rows: list[dict], model: str, pretrained_on: str | None, mode: str) -> dict | None:
    for row in rows:
        if (row["model"], row["mode"]) == (model, mode) and (
                row["pretrained_on"] == pretrained_on if pretrained_on else "zero-shot" not in row["pretrained_on"]):
            return row
    return None


def ranks(values: list[float]) -> list[float]:
    """Rank 1 = highest; ties share their mean rank."""
    order = sorted(values, reverse=True)
    return [float(np.mean([i + 1 for i, v in enumerate(order) if v == x])) for x in values]


def summary() -> None:
    start = time.time()
    table, scored, devices = [], {}, set()
    for name in DATASETS:
        path = RESULTS / f"{name}.json"
        if not path.exists():
            continue
        record = json.loads(path.read_text())
        devices.add(record["device"])
        line = {"dataset": name}
        for label, model, source, mode in COLUMNS:
            found = cell(record["rows"], model, source, mode)
            if found is not None:
                scored.setdefault(label, {})[name] = found["accuracy"]
                std = found.get("accuracy_std")
                line[label] = f"{found['accuracy']:.3f}" + (f" ± {std:.3f}" if std is not None else "")
            else:
                line[label] = "-"
        table.append(line)
    measured = [c[0] for c in COLUMNS if "published" not in c[0] and c[0] in scored]
    complete = [d["dataset"] for d in table if all(d["dataset"] in scored[m] for m in measured)]
    average = {m: float(np.mean([scored[m][d] for d in complete])) for m in measured}
    rank_sum = {m: 0.0 for m in measured}
    for d in complete:
        for m, r in zip(measured, ranks([scored[m][d] for m in measured]), strict=True):
            rank_sum[m] += r
    rows = [{"model": m, "mode": "summary", "horizon": None, "accuracy": average[m],
             "average_rank": rank_sum[m] / len(complete), "n_datasets": len(complete)} for m in measured]
    for label in (c[0] for c in COLUMNS if "published" in c[0] and c[0] in scored):
        shared = sorted(set(scored[label]) & set(complete))
        for m in ("tsjepa corpus zero-shot", "tsjepa own", "random-init"):
            if shared and m in scored:
                rows.append({"model": m, "mode": f"vs {label}", "horizon": None,
                             "accuracy": float(np.mean([scored[m][d] for d in shared])),
                             "reference": float(np.mean([scored[label][d] for d in shared])),
                             "n_datasets": len(shared), "datasets": ", ".join(shared)})
    notes = ("Per dataset: test accuracy (mean ± std over pretraining seeds; MiniRocket over its draws), SVM head "
             "for the encoders (TS2Vec's protocol). Summary rows: average accuracy and average rank (1 = best) over "
             f"the {len(complete)} datasets every measured model has; `vs ...` rows compare on the datasets the "
             "published model reports.\n\n" + markdown_table(table))
    out = write_results(RESULTS.parent, "classify-ucr", "summary", rows, seed=0, device=" / ".join(sorted(devices)),
                        wall_s=time.time() - start, extra={"per_dataset": table}, notes=notes)
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(measured)
    for i, m in enumerate(measured):
        ax.bar(np.arange(len(complete)) + i * width, [scored[m][d] for d in complete], width, label=m)
    ax.set_xticks(np.arange(len(complete)) + 0.4 - width / 2, complete, rotation=30, fontsize=8)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=3)
    ax.set_title("UCR / UEA frozen-embedding classification", fontsize=10)
    save_figure(fig, out.with_suffix(".png"), " / ".join(sorted(devices)))
    print(f"results: {out} (+ .md, .png)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", nargs="?", default="all", choices=["all", "pretrain", "score", "summary"])
    parser.add_argument("--datasets", nargs="+", default=DATASETS, choices=DATASETS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    for name in args.datasets:
        if args.stage in ("all", "pretrain"):
            pretrain(name, args.seeds)
        if args.stage in ("all", "score"):
            score(name, args.seeds)
    if args.stage in ("all", "summary"):
        summary()


if __name__ == "__main__":
    main()
