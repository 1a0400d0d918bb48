"""A real package: the wheel runs outside the checkout, the main job takes the user's own files, and
`tsjepa.pretrain` is the CLI's training from Python. The README's commands of these sections are run here."""

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import xarray as xr

import tsjepa
from tsjepa.data.files import FileError, read_file
from tsjepa.data.timeseries import TimeSeriesError

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TINY = ["train.steps=2", "train.batch_size=8", "train.warmup=1", "model.encoder.d_model=32",
        "model.encoder.depth=1", "model.encoder.heads=2", "model.predictor.d_model=16", "model.predictor.depth=1",
        "model.predictor.heads=2", "model.objective.num_slices=32"]


def readme_commands(section: str) -> list[str]:
    body = README.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```bash\n(.*?)```", body, flags=re.S)[0]
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def run(command: str, cwd: Path, python: str = sys.executable, extra: list[str] = ()) -> str:
    """A README command line, with ``python`` as the interpreter and ``extra`` arguments appended."""
    args = command.split()
    assert args[0] in ("python", "pip"), command
    argv = [python, *args[1:]] if args[0] == "python" else [python, "-m", "pip", *args[1:]]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("TSJEPA_DATA_DIR", None)
    result = subprocess.run([*argv, *extra], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def environment_beside(interpreter: str, venv: Path) -> str:
    """A new virtual environment at ``venv`` that sees the site-packages of the environment running
    ``interpreter`` (system Python, a venv or conda alike), and returns its Python.

    ``--system-site-packages`` would expose the *base* interpreter's packages, which inside a virtual environment
    lack the stack. The running environment's directories are listed, one a line, in a ``.pth`` file placed after
    the new environment's own site-packages; plain lines add a path without running that directory's ``.pth``
    files, so an editable install of tsjepa there stays invisible and ``tsjepa`` comes only from what is
    installed into ``venv``."""
    subprocess.run([interpreter, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    listed = subprocess.run([interpreter, "-c", "import site, sys; print(*[p for p in site.getsitepackages() + "
                             "[site.getusersitepackages()] if p in sys.path], sep=chr(10))"],
                            capture_output=True, text=True, check=True).stdout
    own = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"],
                         capture_output=True, text=True, check=True).stdout.strip()
    (Path(own) / "zz-running-environment.pth").write_text(listed)
    return python


@pytest.fixture(scope="module")
def plant(tmp_path_factory, shared_data) -> Path:
    """A folder with ETTh1's first 4000 hours as a wide CSV and as a long Parquet file."""
    folder = tmp_path_factory.mktemp("own-data")
    frame = pd.read_csv(shared_data / "ETT-small" / "ETTh1.csv").iloc[:4000]
    frame.to_csv(folder / "plant.csv", index=False)
    long = frame.melt(id_vars="date", var_name="channel", value_name="value").rename(columns={"date": "timestamp"})
    long.to_parquet(folder / "plant_long.parquet", index=False)
    return folder


def test_wheel_installs_and_runs_outside_the_checkout(tmp_path, shared_data):
    commands = readme_commands("Install from a wheel")
    assert commands[0].startswith("pip wheel . --no-deps -w dist/")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    "-q"], cwd=ROOT, check=True, timeout=300)
    (wheel,) = dist.glob("tsjepa-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "tsjepa/configs/train.yaml" in names and "tsjepa/configs/data/file.yaml" in names
    assert "tsjepa/datasets/etth1.yaml" in names and "tsjepa/heads.py" in names
    assert "tsjepa/pretrained/tsjepa-base-corpus/model.safetensors" in names
    assert "tsjepa/pretrained/tsjepa-base-corpus.sha256" in names  # from_pretrained verifies the weights
    assert "tsjepa/datasets/corpus/m4_hourly_train.yaml" in names
    venv = tmp_path / "venv"
    python = environment_beside(sys.executable, venv)
    subprocess.run([python, "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, timeout=300)
    work = tmp_path / "work"
    work.mkdir()
    located = subprocess.run([python, "-c", "import tsjepa.resources as r; print(r.resource_dir('configs'))"],
                             cwd=work, capture_output=True, text=True, check=True).stdout.strip()
    assert located.startswith(str(venv)) and located.endswith("tsjepa/configs")
    shipped = subprocess.run([python, "-c", "import tsjepa; m = tsjepa.from_pretrained('tsjepa-base-corpus'); "
                              "print(m.step, tsjepa.checkpoint.PRETRAINED_DIR)"],
                             cwd=work, capture_output=True, text=True, check=True).stdout.split()
    assert shipped[0] == "2000" and shipped[1].startswith(str(venv))  # by name, from the wheel
    train, evaluate = [c.replace("/path/to/datasets", str(shared_data)) for c in commands[-2:]]
    run(train, work, python, TINY)
    run(evaluate, work, python, ["eval.horizons=[96]", "eval.plot_windows=1"])
    assert (work / "runs" / "etth1-base-cpu-s0" / "checkpoints" / "last" / "model.safetensors").exists()
    assert (work / "eval" / "results" / "forecast" / "etth1.json").exists()


def test_own_files_from_the_command_line(plant):
    train, evaluate, long = readme_commands("Your own data")
    run(train, plant, extra=TINY)
    out = run(evaluate, plant, extra=["eval.horizons=[24]", "eval.plot_windows=1"])
    assert "tsjepa" in out and (plant / "eval" / "results" / "forecast" / "plant.json").exists()
    run(long, plant, extra=TINY)
    config = (plant / "runs" / "plant_long-base-cpu-s0" / "checkpoints" / "last" / "config.json").read_text()
    assert '"plant_long/OT"' in config


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".parquet", ".nc", ".zarr"])
def test_every_file_type_reads_the_same_series(plant, tmp_path, suffix):
    frame = pd.read_csv(plant / "plant.csv", parse_dates=["date"])
    path = tmp_path / f"plant{suffix}"
    if suffix in (".csv", ".csv.gz"):
        frame.to_csv(path, index=False)
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        ds = xr.Dataset({c: ("time", frame[c].to_numpy()) for c in frame.columns[1:]},
                        coords={"time": frame["date"].to_numpy()})
        if suffix == ".nc":
            ds.to_netcdf(path)
        else:
            ds.to_zarr(path)
    series = read_file(path)
    assert series.name == "plant" and len(series) == 4000 and series.interval == 1.0
    assert sorted(series.channels) == sorted(frame.columns[1:])
    ot = series.channels.index("OT")
    assert series.values[:3, ot].tolist() == pytest.approx(frame["OT"][:3].tolist())
    long = read_file(plant / "plant_long.parquet")  # auto: timestamp, channel, value columns
    assert long.values[:3, long.channels.index("OT")].tolist() == pytest.approx(frame["OT"][:3].tolist())


def test_bad_files_are_named(tmp_path):
    with pytest.raises(FileError, match="does not exist"):
        read_file(tmp_path / "none.csv")
    (tmp_path / "x.xlsx").write_text("a")
    with pytest.raises(FileError, match="unknown file type .xlsx"):
        read_file(tmp_path / "x.xlsx")
    pd.DataFrame({"t": [1, 2], "a": [1.0, 2.0]}).to_csv(tmp_path / "long.csv", index=False)
    with pytest.raises(FileError, match=r"missing \['timestamp', 'channel', 'value'\]"):
        read_file(tmp_path / "long.csv", format="long")
    pd.DataFrame({"t": [2, 1, 3], "a": [1.0, 2.0, 3.0]}).to_csv(tmp_path / "unsorted.csv", index=False)
    with pytest.raises(TimeSeriesError, match="increasing|sorted"):
        read_file(tmp_path / "unsorted.csv")
    pd.DataFrame({"t": [1, 2, 3], "a": ["x", "y", "z"]}).to_csv(tmp_path / "text.csv", index=False)
    with pytest.raises(TimeSeriesError, match="non-numeric columns \\['a'\\]"):
        read_file(tmp_path / "text.csv")


def test_pretrain_from_python_is_the_cli_run(tmp_path, shared_data, monkeypatch):
    code = re.findall(r"```python\n(.*?)```", README.split("## Your own data\n", 1)[1].split("\n## ", 1)[0],
                      flags=re.S)[0]
    frame = pd.read_csv(shared_data / "ETT-small" / "ETTh1.csv").iloc[:3000]
    frame.to_csv(tmp_path / "plant.csv", index=False)
    tiny = ('train={"steps": 2, "batch_size": 8, "warmup": 1}, model={"encoder": {"d_model": 32, "depth": 1}, '
            '"predictor": {"d_model": 16, "depth": 1}}')
    assert code.count('train={"steps": 300}') == 1
    code = code.replace('train={"steps": 300}', tiny).replace('"/tmp/', f'"{tmp_path}/')
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    encoder = scope["encoder"]
    assert encoder.step == 2 and encoder.vocab.to_dict()["names"][:2] == ["plant/HUFL", "plant/HULL"]
    assert (tmp_path / "runs" / "plant" / "checkpoints" / "last" / "config.json").exists()
    assert scope["emb"]["embedding"].sizes["channel"] == 7
    named = tsjepa.pretrain("etth1", run_dir=str(tmp_path / "card"), data_options={"dir": str(shared_data)},
                            train={"steps": 2, "batch_size": 8, "warmup": 1})
    assert named.vocab.to_dict()["names"][0] == "ett/HUFL"
    with pytest.raises(TimeSeriesError, match="cannot make a time series from int"):
        tsjepa.pretrain(42)
