"""The current numbers of every harness, read from the committed result JSON: ``python eval/results_summary.py``
rewrites the block between the markers in ``eval/results/README.md`` (``--check`` only compares, exit 1 when
it differs), so the summary always agrees with the tables it quotes.

Each line: the pretrained encoder and its random-init twin under the same score, the best raw or classical
baseline, seeds, and a verdict by the project's rule: "beats" / "loses" only when the gap exceeds the larger
std, else "level"; the command and commit are those the JSON records.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "eval" / "results"
README = RESULTS / "README.md"
BEGIN, END = "<!-- summary:begin (python eval/results_summary.py) -->", "<!-- summary:end -->"


@dataclass(frozen=True)
class Line:
    """One summary line: ``path``'s rows where ``where`` holds, ``metric`` of ``ours`` vs ``twin`` (model,
    mode) and the best of ``baselines``."""

    harness: str
    path: str
    metric: str
    lower_is_better: bool
    where: dict
    ours: tuple[str, str]
    twin: tuple[str, str]
    baselines: tuple[tuple[str, str], ...]


def forecast(name: str, fraction: float) -> Line:
    return Line(f"{name} forecast, {fraction:.0%} labels (probe, avg over horizons)", f"forecast/{name}.json", "mse",
                True, {"horizon": "avg", "train_fraction": fraction}, ("tsjepa", "probe"), ("random-init", "probe"),
                (("linear", "supervised"), ("dlinear", "supervised"), ("seasonal-naive", "naive")))


def anomaly(task: str, name: str, metric: str, label: str) -> Line:
    return Line(label, f"{task}/{name}.json", metric, False, {"series": "mean"}, ("tsjepa", "chi2"),
                ("random-init", "chi2"), (("zscore", "baseline"), ("pca", "baseline"), ("iforest", "baseline")))


LINES = [
    *(forecast(name, f) for name in ("etth1", "ettm1", "weather", "exchange_rate", "illness") for f in (1.0, 0.1)),
    *(Line(f"PhysioNet 2012 mortality, {f:.0%} labels (probe, 3 folds)", "classify/physionet2012.json", "auroc",
           False, {"train_fraction": f}, ("tsjepa", "probe"), ("random-init", "probe"),
           (("summary-stats", "gradient-boosting"), ("summary-stats", "logistic"))) for f in (1.0, 0.1)),
    anomaly("rare", "smd", "auc_pr", "SMD rare regimes (chi2 score, 8 machines)"),
    anomaly("rare", "smd", "vus_pr", "SMD rare regimes, VUS-PR (chi2 score)"),
    anomaly("crosschannel", "smd", "hitrate@150", "SMD cross-channel localisation (chi2 score)"),
    anomaly("rare", "nab", "auc_pr", "NAB rare regimes (chi2 score)"),
    anomaly("rare", "ucr", "auc_pr", "UCR anomaly subset (chi2 score)"),
]


def pick(rows: list[dict], where: dict, model: tuple[str, str]) -> dict | None:
    for row in rows:
        if (row["model"], row["mode"]) == model and all(row.get(k) == v for k, v in where.items()):
            return row
    return None


def fmt(row: dict | None, metric: str) -> str:
    if row is None:
        return "-"
    std = row.get(f"{metric}_std")
    return f"{row[metric]:.4f}" + (f" ± {std:.4f}" if std is not None else "")


def compare(ours: float, theirs: float, spread: float, lower_is_better: bool) -> str:
    """The project's rule for two multi-seed scores: "beats" / "loses" only when the gap exceeds ``spread``
    (the larger of their stds), else "level"."""
    gap = (theirs - ours) * (1 if lower_is_better else -1)  # > 0: ours better
    return "beats" if gap > spread else ("loses" if -gap > spread else "level")


def verdict(ours: dict, twin: dict, metric: str, lower: bool) -> str:
    if ours.get("n_seeds", 1) < 2 or twin.get("n_seeds", 1) < 2:
        return "single seed"
    spread = max(ours.get(f"{metric}_std", 0.0), twin.get(f"{metric}_std", 0.0))
    return compare(ours[metric], twin[metric], spread, lower)


def summary_lines() -> list[str]:
    out = ["| harness | metric | tsjepa | random-init | verdict | best baseline | seeds | commit |",
           "|---|---|---|---|---|---|---|---|"]
    commands = []
    for line in LINES:
        record = json.loads((RESULTS / line.path).read_text())
        rows = record["rows"]
        ours, twin = pick(rows, line.where, line.ours), pick(rows, line.where, line.twin)
        found = [(b, pick(rows, line.where, b)) for b in line.baselines]
        found = [(b, r) for b, r in found if r is not None]
        best = min(found, key=lambda f: f[1][line.metric] * (1 if line.lower_is_better else -1)) if found else None
        base = "-"
        if best:
            (model, mode), row = best
            base = f"{model} ({mode}) " if model == "summary-stats" else f"{model} "  # its modes are two models
            base += fmt(row, line.metric)
        arrow = "↓" if line.lower_is_better else "↑"
        out.append(f"| {line.harness} | {line.metric} {arrow} | {fmt(ours, line.metric)} | {fmt(twin, line.metric)} | "
                   f"{verdict(ours, twin, line.metric, line.lower_is_better)} | {base} | {ours.get('n_seeds', 1)} | "
                   f"{record['commit'][:7]} |")
        if (line.path, record["command"]) not in commands:
            commands.append((line.path, record["command"]))
    out += ["", "Commands (each JSON records its own):", ""]
    out += [f"- [`{path}`]({path.replace('.json', '.md')}): `{command}`" for path, command in commands]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when the README differs")
    args = parser.parse_args()
    text = README.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + BEGIN + "\n" + "\n".join(summary_lines()) + "\n" + END + tail
    if args.check:
        sys.exit(0 if new == text else f"{README} disagrees with the result JSON: run python eval/results_summary.py")
    README.write_text(new)
    print(f"wrote {README}")


if __name__ == "__main__":
    main()
