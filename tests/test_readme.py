"""The README's library examples run as written (with the test checkpoint and a temporary directory)."""

import re
from pathlib import Path

import pandas as pd
import xarray as xr

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Pretrained encoders in xarray, GluonTS and sktime"


def section_code() -> str:
    section = README.read_text().split(SECTION, 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


def test_readme_library_examples_run(tmp_path, shared_data, monkeypatch):
    code = section_code()
    assert 'ckpt = "tsjepa-base-corpus"' in code and "/tmp/" in code  # the shipped encoder, as written
    code = code.replace('"/tmp/', f'"{tmp_path}/')
    monkeypatch.setenv("TSJEPA_DATA_DIR", str(shared_data))
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    assert isinstance(scope["emb"], xr.Dataset) and scope["per_window"].dims == ("time", "feature")
    assert {"MASE", "mean_wQuantileLoss", "MSE"} <= set(scope["metrics"])
    assert scope["y_pred"].shape == (48, 7) and isinstance(scope["y_pred"], pd.DataFrame)
    assert scope["features"].shape == (1, 128)
    assert (tmp_path / "etth1-encoder" / "model.safetensors").exists()
    assert (tmp_path / "etth1-predictor" / "prediction-net-state.pt").exists()


def test_readme_classification_example_runs():
    section = README.read_text().split("## Frozen-embedding classification (UCR / UEA)", 1)[1].split("\n## ", 1)[0]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    assert tuple(scope["features"].shape) == (50, 257)
