import json

import pytest
import torch
from conftest import random_batch

from tsjepa import from_pretrained, save_pretrained
from tsjepa.checkpoint import CheckpointError
from tsjepa.data.vocab import ChannelVocab
from tsjepa.models import Encoder, EncoderConfig, Predictor, PredictorConfig


def models():
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(span=64.0, patch_duration=8.0, slots=8, d_model=16, depth=1, heads=2,
                                channel_capacity=8)).eval()
    return enc, Predictor(PredictorConfig(d_model=8, depth=1, heads=2), 16, 8)


def test_roundtrip(tmp_path):
    enc, pred = models()
    save_pretrained(tmp_path / "ckpt", enc, ChannelVocab(["a", "b", "c"], 8), pred, step=7)
    loaded = from_pretrained(tmp_path / "ckpt")
    batch = random_batch()
    torch.testing.assert_close(loaded.encoder.eval()(batch).embeddings, enc(batch).embeddings)
    assert loaded.vocab.names == ["a", "b", "c"] and loaded.step == 7
    assert loaded.predictor is not None
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]


def test_missing_foreign_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no config.json"):
        from_pretrained(tmp_path / "empty")
    enc, _ = models()
    path = save_pretrained(tmp_path / "ckpt", enc, ChannelVocab(["a"], 8))
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "format": "someone-else"}))
    with pytest.raises(CheckpointError, match="not a tsjepa checkpoint"):
        from_pretrained(path)
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError, match="model.safetensors is corrupt"):
        from_pretrained(path)
    save_pretrained(path, enc, ChannelVocab(["a"], 8))
    (path / "config.json").write_text(json.dumps({**config, "encoder": {**config["encoder"], "d_model": 32}}))
    with pytest.raises(CheckpointError, match="encoder weights do not match"):
        from_pretrained(path)


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    enc, _ = models()
    path = save_pretrained(tmp_path / "ckpt", enc, ChannelVocab(["a"], 8), step=1)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("tsjepa.checkpoint.save_file", broken)
    with pytest.raises(OSError, match="disk full"):
        save_pretrained(path, enc, ChannelVocab(["a"], 8), step=2)
    assert from_pretrained(path).step == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
