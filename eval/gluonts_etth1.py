"""A pretrained tsjepa encoder in a GluonTS pipeline on ETTh1, beside GluonTS's own DeepAR and PatchTST.

    python eval/gluonts_etth1.py --ckpt 'runs/etth1-base-cpu-s*/checkpoints/last'

ETTh1 (standard 12/4/4-month borders, standardised with train statistics) becomes a GluonTS `PandasDataset`
of 7 univariate series whose ``item_id`` is the channel's name in the checkpoint (``ett/HUFL``, ...). Every
trained model sees the train months only, with the same budget (``--epochs`` x ``--batches-per-epoch``
batches of ``--batch-size`` windows, context 336, Student's t output where the model has one) and is scored by
``gluonts.model.evaluate_model`` on rolling test windows (forecast starts every ``--distance`` hours over the
test months, horizon 96): MASE (season 24), mean weighted quantile loss (quantiles 0.1..0.9) and MSE of the
mean forecast. Rows:

- ``tsjepa`` / ``probe``: the pretrained encoder frozen, a distribution head trained (`TSJEPAEstimator`);
- ``tsjepa`` / ``finetune``: the same, encoder fine-tuned;
- ``random-init`` / ``supervised``: the same architecture trained from random weights (what pretraining adds);
- ``deepar``, ``patchtst`` / ``supervised``: ``DeepAREstimator``, ``PatchTSTEstimator`` (GluonTS defaults
  otherwise; PatchTST patch 16, stride 8);
- ``seasonal-naive`` / ``naive``: ``SeasonalNaivePredictor`` (season 24).

The pretrained rows also had the checkpoint's pretraining (self-supervised, same train months): the budget
is equal for the supervised stage only. A ``--ckpt`` glob over pretraining seeds trains the three tsjepa rows once
per seed (Lightning seeded with that seed); rows carry the mean over seeds, ``<metric>_std`` and ``n_seeds``, and
the GluonTS baselines run once with ``--seed``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import lightning.pytorch as pl  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from gluonts.dataset.pandas import PandasDataset  # noqa: E402
from gluonts.dataset.split import split  # noqa: E402
from gluonts.ev.metrics import MASE, MSE, MeanWeightedSumQuantileLoss  # noqa: E402
from gluonts.model import evaluate_model  # noqa: E402
from gluonts.model.seasonal_naive import SeasonalNaivePredictor  # noqa: E402
from gluonts.torch import DeepAREstimator, PatchTSTEstimator  # noqa: E402

from tsjepa.checkpoint import read_config  # noqa: E402
from tsjepa.data.sources import load_card, load_dataset  # noqa: E402
from tsjepa.data.windows import fit_scaler  # noqa: E402
from tsjepa.device import device_description  # noqa: E402
from tsjepa.eval import SeedRows, checkpoints_by_seed  # noqa: E402
from tsjepa.integrations.gluonts import TSJEPAEstimator  # noqa: E402
from tsjepa.results import save_figure, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HORIZON, CONTEXT, SEASON = 96, 336, 24
QUANTILES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
PLOT_SERIES = "ett/OT"
PRETRAINED = ("tsjepa-probe", "tsjepa-finetune", "random-init")  # trained once per pretraining seed
METRICS = ("mase", "mean_wql", "mse")


def plot(path: Path, rows: list[dict], examples: dict, history: np.ndarray, truth: np.ndarray, device: str) -> None:
    """Left: the three metrics per model. Right: each model's median and 10-90% band for one test window of
    oil temperature (``examples``: label -> forecast), after its last two days of history."""
    fig, (bars, fan) = plt.subplots(1, 2, figsize=(14, 4.2), gridspec_kw={"width_ratios": [1, 1.4]})
    labels = [f"{r['model']}\n{r['mode']}" for r in rows]
    x = np.arange(len(rows))
    for k, metric in enumerate(("mase", "mean_wql", "mse")):
        bars.bar(x + (k - 1) * 0.27, [r[metric] for r in rows], 0.27, label=metric)
    bars.set_xticks(x, labels, fontsize=7)
    bars.legend(fontsize=8)
    bars.set_title(f"ETTh1, horizon {HORIZON}: lower is better", fontsize=9)
    fan.plot(np.arange(-len(history), 0), history, color="0.4", lw=1, label="history")
    fan.plot(np.arange(HORIZON), truth, color="black", lw=1.2, label="truth")
    for label, forecast in examples.items():
        line = fan.plot(np.arange(HORIZON), forecast.quantile(0.5), lw=1.1, label=label)[0]
        fan.fill_between(np.arange(HORIZON), forecast.quantile(0.1), forecast.quantile(0.9), alpha=0.15,
                         color=line.get_color())
    fan.axvline(0, color="0.7", ls="--", lw=0.8)
    fan.legend(fontsize=7, ncol=3)
    fan.set_title(f"{PLOT_SERIES}, one test window: median and 10-90% band", fontsize=9)
    save_figure(fig, path, device)


def etth1_datasets(data_dir: str | None) -> tuple[PandasDataset, PandasDataset]:
    """(train months, train + val + test months) as univariate `PandasDataset`s, ``item_id`` = channel key."""
    series, card = load_dataset("etth1", data_dir), load_card("etth1")
    train_end, _, test_end = card.protocol["borders"]
    frame = pd.DataFrame(fit_scaler(series, (0, train_end)).transform(series.values)[:test_end],
                         index=pd.DatetimeIndex(series.data["time"].values[:test_end]),
                         columns=card.channel_keys(series.channels))

    def dataset(rows: int) -> PandasDataset:
        return PandasDataset({key: frame.iloc[:rows][key].rename("target").to_frame() for key in frame.columns},
                             target="target", freq="h")

    return dataset(train_end), dataset(test_end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default="runs/etth1-base-cpu-s0/checkpoints/last")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batches-per-epoch", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--distance", type=int, default=48, help="hours between test forecast starts")
    parser.add_argument("--test-hours", type=int, default=2880, help="test months, counted back from the end")
    parser.add_argument("--models", nargs="+",
                        default=["tsjepa-probe", "tsjepa-finetune", "random-init", "deepar", "patchtst",
                                 "seasonal-naive"])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out-dir", default=str(ROOT / "eval" / "results"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    train, full = etth1_datasets(args.data_dir)
    _, test_template = split(full, offset=-args.test_hours)
    windows = (args.test_hours - HORIZON) // args.distance + 1
    test_data = test_template.generate_instances(prediction_length=HORIZON, windows=windows, distance=args.distance)
    metrics = [MASE(), MeanWeightedSumQuantileLoss(quantile_levels=QUANTILES), MSE()]
    budget = {"batch_size": args.batch_size, "num_batches_per_epoch": args.batches_per_epoch}
    ckpts = checkpoints_by_seed(args.ckpt, args.seed)
    inputs, labels = zip(*test_data, strict=True)
    pick = [i for i, entry in enumerate(inputs) if entry["item_id"] == PLOT_SERIES][windows // 2]
    scored = SeedRows()
    examples = {}
    with tempfile.TemporaryDirectory(prefix="gluonts-etth1-") as root:
        trainer = {"max_epochs": args.epochs, "default_root_dir": root, "enable_progress_bar": True}
        for i, (seed, ckpt) in enumerate(ckpts.items()):

            def tsjepa(ckpt: str = ckpt, **kwargs) -> TSJEPAEstimator:
                return TSJEPAEstimator(ckpt, HORIZON, CONTEXT, channel_field="item_id", trainer_kwargs=trainer,
                                       **budget, **kwargs)

            models = {
                "tsjepa-probe": (("tsjepa", "probe"), lambda: tsjepa()),
                "tsjepa-finetune": (("tsjepa", "finetune"), lambda: tsjepa(finetune_encoder=True)),
                "random-init": (("random-init", "supervised"),
                                lambda: tsjepa(finetune_encoder=True, init="random")),
                "deepar": (("deepar", "supervised"), lambda: DeepAREstimator(
                    freq="h", prediction_length=HORIZON, context_length=CONTEXT, trainer_kwargs=trainer, **budget)),
                "patchtst": (("patchtst", "supervised"), lambda: PatchTSTEstimator(
                    prediction_length=HORIZON, context_length=CONTEXT, patch_len=16, stride=8,
                    trainer_kwargs=trainer, **budget)),
                "seasonal-naive": (("seasonal-naive", "naive"), None),
            }
            rows: list[dict] = []
            for name in args.models:
                if i > 0 and name not in PRETRAINED:
                    continue  # baselines once
                (model, mode), make = models[name]
                pl.seed_everything(seed if name in PRETRAINED else args.seed, verbose=False)
                tic = time.time()
                predictor = (SeasonalNaivePredictor(prediction_length=HORIZON, season_length=SEASON) if make is None
                             else make().train(train))
                train_s = time.time() - tic
                scores = evaluate_model(predictor, test_data=test_data, metrics=metrics, seasonality=SEASON)
                rows.append({"model": model, "mode": mode, "horizon": HORIZON,
                             "mase": float(scores["MASE[0.5]"].iloc[0]),
                             "mean_wql": float(scores["mean_weighted_sum_quantile_loss"].iloc[0]),
                             "mse": float(scores["MSE[mean]"].iloc[0]),
                             "n_windows": len(test_data), "train_s": round(train_s, 1)})
                if i == 0:
                    examples[f"{model} ({mode})"] = next(iter(predictor.predict([inputs[pick]])))
                print(f"seed {seed}", {k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()},
                      flush=True)
            scored.add(seed, ckpt, read_config(ckpt)["step"], rows)
    rows = scored.aggregate(keys=("model", "mode", "horizon"), metrics=METRICS)
    seeds = scored.seeds
    description = device_description(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    out = write_results(
        args.out_dir, "gluonts", "etth1", rows, seed=scored.label, device=description, wall_s=time.time() - start,
        extra={"ckpt": args.ckpt, **scored.record(), "context_length": CONTEXT,
               "budget": {**budget, "epochs": args.epochs},
               "test": {"forecast_starts": windows, "distance_h": args.distance, "series": 7}},
        notes=(f"GluonTS pipeline on ETTh1 (train-standardised, 7 univariate series, item_id = channel). "
               f"Each trained model: {args.epochs} epochs x {args.batches_per_epoch} batches of {args.batch_size} "
               f"windows on the 12 train months, context {CONTEXT}, horizon {HORIZON}. Scored by "
               f"`gluonts.model.evaluate_model` on {windows} forecast starts x 7 series over the last "
               f"{args.test_hours} h (every {args.distance} h): MASE (season {SEASON}), mean weighted quantile "
               "loss (0.1..0.9), MSE of the mean forecast (standardised units). tsjepa rows start from the "
               f"pretrained checkpoint(s) `{args.ckpt}` (self-supervised on the same train months); `random-init` "
               "is the same architecture trained from scratch. tsjepa and random-init rows: mean over the "
               f"pretraining seed(s) {seeds}, each trained with Lightning seeded by it; `<metric>_std` the sample "
               f"std over seeds (absent for one seed); the GluonTS baselines trained once (seed {args.seed}). "
               "`train_s`: training wall time."),
    )
    plot(out.with_suffix(".png"), rows, examples, inputs[pick]["target"][-48:], labels[pick]["target"], description)
    print(f"results: {out} (+ .md, .png), {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
