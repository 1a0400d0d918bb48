"""Benchmark results: ``eval/results/<task>/<dataset>.json`` plus a Markdown table beside it, written atomically."""

from __future__ import annotations

import functools
import io
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from tsjepa.atomic import write_file
from tsjepa.resources import CHECKOUT, in_checkout


@functools.cache
def git_commit() -> str:
    """HEAD's hash when this process first asked (it asks on import, so a commit made while a long eval runs is
    not recorded as the code that ran), suffixed ``-dirty`` when tracked files had uncommitted changes; for an
    installed package (no checkout) the tsjepa version."""
    if not in_checkout():
        from tsjepa import __version__

        return f"tsjepa {__version__} (installed package)"
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=CHECKOUT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=CHECKOUT,
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


git_commit()


def command_line() -> str:
    """The command as a user would type it (``python -m tsjepa.eval forecast ...``, ``python eval/x.py``)."""
    args = list(sys.argv[1:])
    if sys.argv[0].endswith(os.path.join("tsjepa", "eval", "__main__.py")):
        if args and args[0].startswith("eval="):
            args[0] = args[0].removeprefix("eval=")
        program = ["python", "-m", "tsjepa.eval"]
    else:
        program = ["python", os.path.relpath(sys.argv[0], CHECKOUT)]
    return shlex.join([*program, *args])


def markdown_table(rows: list[dict]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    fmt = {float: lambda v: f"{v:.4f}" if 1e-3 <= abs(v) < 1e4 else f"{v:.3g}"}
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [fmt.get(type(row.get(k)), str)(row.get(k, "")) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_figure(fig, path: Path, device: str) -> None:
    """Stamp the device the numbers were measured on in the figure's lower right corner, lay out, write (PNG,
    110 dpi) and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.text(0.995, 0.005, f"device: {device}", ha="right", va="bottom", fontsize=7, color="0.35")
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    plt.close(fig)
    write_file(path, buffer.getvalue())


def plot_label_efficiency(path: Path, rows: list[dict], curves: list[tuple[str, str]], metric: str, ylabel: str,
                          xlabel: str, title: str, device: str) -> None:
    """``metric`` (± ``<metric>_std``) against ``train_fraction`` for each (model, mode) of ``curves``, log x.
    Long axis labels wrap so they stay inside the figure."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for model, mode in curves:
        mine = sorted((r for r in rows if (r["model"], r["mode"]) == (model, mode)), key=lambda r: r["train_fraction"])
        if mine:
            ax.errorbar([r["train_fraction"] for r in mine], [r[metric] for r in mine],
                        yerr=[r.get(f"{metric}_std", 0.0) for r in mine], marker="o", capsize=3,
                        label=f"{model} ({mode})")
    ax.set_xscale("log")
    ax.set_xlabel("\n".join(textwrap.wrap(xlabel, 70)))
    ax.set_ylabel("\n".join(textwrap.wrap(ylabel, 40)))
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    save_figure(fig, path, device)


def write_results(out_dir: str | os.PathLike, task: str, dataset: str, rows: list[dict], *, seed: int,
                  device: str, wall_s: float, extra: dict | None = None, notes: str = "") -> Path:
    """Write ``<out_dir>/<task>/<dataset>.json`` and ``.md``; returns the JSON path."""
    record = {"task": task, "dataset": dataset, "command": command_line(), "commit": git_commit(),
              "seed": seed, "device": device, "wall_s": round(wall_s, 1), "rows": rows, **(extra or {})}
    path = Path(out_dir) / task / f"{dataset}.json"
    write_file(path, json.dumps(record, indent=2) + "\n")
    md = [f"# {task} / {dataset}", "", f"`{record['command']}`", "",
          f"commit `{record['commit']}` · seed {seed} · {device} · {record['wall_s']} s", "",
          markdown_table(rows), ""]
    if notes:
        md += [notes, ""]
    write_file(path.with_suffix(".md"), "\n".join(md))
    return path


def aggregate_seeds(rows_by_seed: dict[int, list[dict]], keys: tuple[str, ...], metrics: tuple[str, ...]
                    ) -> list[dict]:
    """One row per ``keys`` value over seeds: each metric's mean, ``<metric>_std`` (sample std, written when
    more than one seed has the row) and ``n_seeds``; other numeric entries that differ between seeds are
    averaged, the rest (equal ones, such as counts) taken from the first seed. An entry only some seeds have
    is averaged over those. Rows keep the first seed's order."""
    groups: dict[tuple, list[dict]] = {}
    for rows in rows_by_seed.values():
        for row in rows:
            groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    out = []
    for group in groups.values():
        row = dict(group[0])
        for other in group[1:]:
            row |= {k: v for k, v in other.items() if k not in row}
        for key in row:
            values = [r[key] for r in group if key in r]
            if (key not in keys and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
                    and len(set(values)) > 1):
                row[key] = sum(values) / len(values) if key != "n_windows" else values[0]
        for metric in metrics:
            values = torch.tensor([float(r[metric]) for r in group if metric in r], dtype=torch.float64)
            if len(values) > 1:
                row[f"{metric}_std"] = float(values.std())
        row["n_seeds"] = len(group)
        out.append(row)
    return out
