"""The encoder shipped in the package: the file its model card describes, loadable by name everywhere."""

import re

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import compose_config
from omegaconf import OmegaConf

import tsjepa
from tsjepa.checkpoint import PRETRAINED_DIR, shipped_names
from tsjepa.data.sources import sha256sum
from tsjepa.data.vocab import UNKNOWN

NAME = "tsjepa-base-corpus"
CARD = (PRETRAINED_DIR / f"{NAME}.md").read_text()


def test_shipped_weights_match_their_model_card():
    assert NAME in shipped_names()
    weights = PRETRAINED_DIR / NAME / "model.safetensors"
    assert sha256sum(weights) == re.search(r"sha256 `([0-9a-f]{64})`", CARD).group(1)
    assert weights.stat().st_size < 2 * 2**20  # the repository stays small
    model = tsjepa.from_pretrained(NAME)
    assert model.step == int(re.search(r"- steps: (\d+)", CARD).group(1))
    assert model.config["seed"] == int(re.search(r"seed (\d+)", CARD).group(1))
    assert model.config["data"]["name"] == "corpus" and model.config["dtype"] == "float16"
    assert model.config["objective"]["sigreg_on"] == "axes" and model.vocab.names[-1] == UNKNOWN
    assert sum(p.numel() for p in model.encoder.parameters()) == int(re.search(r"([\d,]+) parameters", CARD)
                                                                      .group(1).replace(",", ""))
    assert "python -m tsjepa.train data=corpus" in CARD


def test_the_model_cards_command_composes_the_shipped_recipe():
    """`python -m tsjepa.train data=corpus` must train what was shipped, even as the presets it builds on move."""
    shipped = tsjepa.from_pretrained(NAME).config
    cfg = compose_config("train", ["data=corpus"])
    model = OmegaConf.to_container(cfg.model)
    assert {k: model["objective"][k] for k in shipped["objective"]} == shipped["objective"]
    assert not model["objective"]["centre_slots"]  # added after the export; off, as it was
    shape = ("patch_duration", "slots", "d_model", "depth", "heads")
    assert {k: model["encoder"][k] for k in shape} == {k: shipped["encoder"][k] for k in shape}
    assert cfg.train.steps == shipped["step"] and cfg.seed == shipped["seed"]


def test_shipped_encoder_reads_unseen_data():
    model = tsjepa.from_pretrained(NAME)
    t = np.arange(800.0)
    series = np.stack([np.sin(2 * np.pi * t / 24), np.cos(2 * np.pi * t / 168) + 0.01 * t], 1)
    data = xr.DataArray(series, dims=("time", "channel"), coords={"time": t, "channel": ["plant/a", "plant/b"]})
    emb = tsjepa.embed(model, data)  # channels it never saw: the shared <unknown> identity
    values = torch.as_tensor(emb["embedding"].values)
    assert values.shape[1:] == (2, 21, 128) and torch.isfinite(values).all()
    assert not torch.allclose(values[:, 0], values[:, 1])  # told apart by their values


def test_harness_encoders_crop_to_shorter_windows():
    from tsjepa.eval import frozen_encoders

    model = tsjepa.from_pretrained(NAME)
    full = frozen_encoders(model, 3, True, "cpu")
    short = frozen_encoders(model, 3, True, "cpu", span=48.0)  # a 48-hour PhysioNet stay: 3 of its 21 patches
    assert {name: e.num_patches for name, e in full.items()} == {"tsjepa": 21, "random-init": 21}
    assert {name: e.num_patches for name, e in short.items()} == {"tsjepa": 3, "random-init": 3}
    for name, encoder in full.items():  # the same weights, twin included: cropping draws nothing
        cropped = short[name].state_dict()
        assert all(torch.equal(value, cropped[key]) for key, value in encoder.state_dict().items())
    with pytest.raises(ValueError, match="40 time units do not fit"):
        frozen_encoders(model, 3, False, "cpu", span=40.0)
