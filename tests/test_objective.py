import json

import pytest
import torch
from conftest import TINY_MODEL, compose_config, random_batch

import tsjepa
import tsjepa.train as train_module
from tsjepa.contrastive import Contrastive
from tsjepa.masks import sample_crops, sample_span_mask
from tsjepa.models import Encoder, EncoderConfig, Predictor, PredictorConfig
from tsjepa.objective import JEPA, ObjectiveConfig, sigreg_inputs, slot_centred, within_window_inputs


def test_span_mask_is_contiguous_observed_and_leaves_context():
    observed = torch.ones(64, 5, 20, dtype=torch.bool)
    observed[0, :, :3] = False
    target = sample_span_mask(observed, ratio=0.3, spans=1, channel_subset_prob=0.5,
                              generator=torch.Generator().manual_seed(0))
    assert not (target & ~observed).any()
    assert (observed & ~target).flatten(1).any(1).all()
    per_channel = target.any(-1)  # [B, C]
    subset = per_channel.sum(1) < 5
    assert 10 < int(subset.sum()) < 54  # about half the windows mask a channel subset
    assert (per_channel.sum(1) >= 1).all()
    for b in range(64):
        c = int(per_channel[b].nonzero()[0])
        idx = target[b, c].nonzero().flatten()
        assert idx.max() - idx.min() + 1 == len(idx)  # one contiguous span
        assert len(idx) <= 6
    same = sample_span_mask(observed, 0.3, 1, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(target, same)


def test_tail_mask_targets_the_end_of_the_window():
    observed = torch.ones(200, 3, 20, dtype=torch.bool)
    gen = torch.Generator().manual_seed(1)
    target = sample_span_mask(observed, ratio=0.3, spans=2, channel_subset_prob=0.0, generator=gen, tail_prob=0.5)
    tail = target[:, 0, -6:].all(-1) & ~target[:, 0, :-6].any(-1)  # exactly the last round(0.3 * 20) patches
    assert 70 < int(tail.sum()) < 130
    always = sample_span_mask(observed, 0.3, 2, 0.0, torch.Generator().manual_seed(1), tail_prob=1.0)
    assert always[:, :, -6:].all() and not always[:, :, :-6].any()


def test_sigreg_inputs():
    emb = torch.randn(2, 3, 4, 8)
    observed = torch.ones(2, 3, 4, dtype=torch.bool)
    observed[1, 2] = False
    tokens, pooled = sigreg_inputs(emb, observed, "both")
    assert tokens.shape == (20, 8) and pooled.shape == (5, 8)
    torch.testing.assert_close(pooled[0], emb[0, 0].mean(0))


def make_jepa(**objective):
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(span=64.0, patch_duration=8.0, slots=8, d_model=16, depth=1, heads=2,
                                channel_capacity=8))
    pred = Predictor(PredictorConfig(d_model=8, depth=1, heads=2), 16, 8)
    return JEPA(enc, pred, ObjectiveConfig(num_slices=16, **objective))


def test_loss_mixes_prediction_and_sigreg():
    batch = random_batch(b=4)
    for lam in (0.0, 0.05, 1.0):
        out = make_jepa(lam=lam)(batch, step=0, generator=torch.Generator().manual_seed(1))
        assert ("sigreg" in out) == (lam > 0)  # lambda = 0: SIGReg is not computed
        expected = (1 - lam) * out["prediction"] + lam * out.get("sigreg", 0.0)
        torch.testing.assert_close(out["loss"].detach(), expected)
        assert out["embeddings"].shape[1] == 16


def test_gradient_flows_through_targets_unless_stopped():
    batch = random_batch(b=4)
    grads = {}
    for stop in (False, True):
        jepa = make_jepa(lam=0.0, stop_grad=stop)
        jepa(batch, 0, torch.Generator().manual_seed(1))["loss"].backward()
        grads[stop] = jepa.encoder.tokenizer.proj.weight.grad.clone()
    assert not torch.allclose(grads[False], grads[True])


def test_ema_target_encoder():
    jepa = make_jepa(ema=0.9)
    assert jepa.target_encoder is not None
    assert not any(p.requires_grad for p in jepa.target_encoder.parameters())
    with torch.no_grad():
        for p in jepa.encoder.parameters():
            p.add_(1.0)
    before = jepa.target_encoder.tokenizer.proj.bias.clone()
    jepa.update_target()
    online = jepa.encoder.tokenizer.proj.bias
    torch.testing.assert_close(jepa.target_encoder.tokenizer.proj.bias, 0.9 * before + 0.1 * online)


def test_bad_objective_config():
    with pytest.raises(ValueError, match="sigreg_on"):
        ObjectiveConfig(sigreg_on="everything")
    with pytest.raises(ValueError, match="views"):
        ObjectiveConfig(views=-1)
    with pytest.raises(ValueError, match="ema"):
        ObjectiveConfig(ema=1.0)


def test_sigreg_sample_units_count_their_samples():
    emb = torch.randn(2, 3, 4, 8)
    observed = torch.ones(2, 3, 4, dtype=torch.bool)
    observed[1, 2] = False
    (window,) = sigreg_inputs(emb, observed, "window")
    assert window.shape == (2, 8)
    torch.testing.assert_close(window[1], emb[1, :2].mean((0, 1)))
    within = within_window_inputs(emb, observed)
    assert [tuple(z.shape) for z in within] == [(1, 8, 8), (1, 12, 8)]  # each window's own tokens, by count
    torch.testing.assert_close(within[0][0], emb[1, :2].reshape(8, 8))
    (axes,) = sigreg_inputs(emb, observed, "axes")
    torch.testing.assert_close(axes, window)


def test_slot_centring_leaves_only_what_differs_between_windows_at_a_slot():
    torch.manual_seed(0)
    observed = torch.ones(64, 6, 16, dtype=torch.bool)
    observed[0, 1, 2] = False
    code = torch.randn(1, 6, 16, 8).expand(64, 6, 16, 8)  # tokens carrying nothing but their slot's code
    content = 0.1 * torch.randn(64, 6, 16, 8)
    centred = slot_centred(code + content, observed)
    seen = observed[..., None]
    torch.testing.assert_close((centred * seen).sum(0), torch.zeros(6, 16, 8), atol=1e-4, rtol=0)
    torch.testing.assert_close(centred[1:, 1, 2], content[1:, 1, 2] - content[1:, 1, 2].mean(0))
    assert torch.equal(centred[0, 1, 2], (code + content)[0, 1, 2])  # unobserved: untouched
    # a slot code is N(0, I) across slots, so SIGReg over raw tokens passes it; centred, it cannot
    jepa = make_jepa(lam=1.0)
    raw = jepa.sigreg(code[observed], step=0)
    assert jepa.sigreg(centred[observed], step=0) > 10 * raw
    assert jepa.sigreg(slot_centred(code + content / 0.1, observed)[observed], step=0) < raw / 10


def test_crops_are_contiguous_blocks_of_the_configured_length():
    observed = torch.ones(32, 2, 20, dtype=torch.bool)
    crops = sample_crops(observed, views=4, global_views=2, global_keep=0.7, local_keep=0.3,
                         generator=torch.Generator().manual_seed(0))
    assert crops.shape == (4, 32, 2, 20)
    lengths = crops[:, :, 0].sum(-1)
    assert (lengths[:2] == 14).all() and (lengths[2:] == 6).all()
    for view in crops[:, :, 0].reshape(-1, 20):
        idx = view.nonzero().flatten()
        assert idx.max() - idx.min() + 1 == len(idx)
    assert torch.equal(crops[:, :, 0], crops[:, :, 1])  # one crop over all channels
    with pytest.raises(ValueError, match="global_views"):
        sample_crops(observed, views=2, global_views=3, global_keep=0.7, local_keep=0.3)


@pytest.mark.parametrize("options,terms", [
    ({"projector": [32, 8], "sigreg_on": "axes"}, {"prediction", "sigreg"}),
    ({"projector": [32, 8], "sigreg_on": "window", "views": 3}, {"prediction", "multiview", "sigreg"}),
    ({"reconstruction_weight": 0.5}, {"prediction", "sigreg", "reconstruction"}),
    ({"projector": [32, 8], "sigreg_on": "axes", "centre_slots": True}, {"prediction", "sigreg"}),
])
@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16-autocast"])  # bf16: the GPU preset's precision
def test_every_objective_option_trains_and_reports_its_terms(options, terms, bf16):
    jepa = make_jepa(lam=0.1, **options)
    batch = random_batch(b=6)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = jepa(batch, step=0, generator=torch.Generator().manual_seed(1))
    assert {k for k in out if k in ("prediction", "multiview", "sigreg", "reconstruction")} == terms
    assert out["sigreg"].dtype == torch.float32 and torch.isfinite(out["loss"])
    torch.testing.assert_close(sum(out[f"share_{t}"].float() for t in terms), torch.tensor(1.0))
    out["loss"].backward()
    assert jepa.encoder.tokenizer.proj.weight.grad.abs().sum() > 0
    for name, module in jepa.training_modules().items():
        assert all(p.grad is not None for p in module.parameters()), name
    slots = jepa.patch_values(batch)  # [B, C, P, 2, S]; its observed patches line up with the embeddings
    assert slots[slots[:, :, :, 1].amax(-1) > 0].shape == (len(out["embeddings"]), 2, 8)


def test_projector_output_is_what_sigreg_tests():
    jepa = make_jepa(lam=1.0, projector=[32, 4])
    batch = random_batch(b=4)
    out = jepa(batch, step=3, generator=torch.Generator().manual_seed(1))
    full = jepa.encoder(batch)
    (tokens,) = sigreg_inputs(jepa.projector(full.embeddings), full.patch_observed, "tokens")
    assert tokens.shape[1] == 4
    torch.testing.assert_close(out["sigreg"], jepa.sigreg(tokens, step=3))


def test_prediction_loss_reads_only_the_target_tokens():
    """Predictions at context positions never enter the loss: poisoning them changes nothing."""
    batch = random_batch(b=4)
    clean = make_jepa(lam=0.05, projector=[32, 4])(batch, 0, torch.Generator().manual_seed(1))
    jepa = make_jepa(lam=0.05, projector=[32, 4])

    def poison(module, inputs, output):
        target_mask = inputs[2]  # [B, C, P]
        return output.masked_fill(~target_mask[..., None], float("nan"))

    jepa.predictor.register_forward_hook(poison)
    out = jepa(batch, 0, torch.Generator().manual_seed(1))
    torch.testing.assert_close(out["prediction"], clean["prediction"])
    assert torch.isfinite(out["loss"])


@pytest.mark.parametrize("overrides", [
    ["model/objective=mae"], ["model/objective=contrastive"], ["model/objective=ijepa"],
    ["model.objective.content_targets=true"], ["model.objective.position_noise=0.25"],
    ["model.objective.target_norm=instance"], ["model.objective.sigreg_on=slots"],
    ["model.objective.sigreg_on=within", "model.objective.lam=0.95"], ["model.encoder.position=rotary"],
])
def test_peers_and_shortcut_remedies_train_on_real_data(tmp_path, shared_data, overrides):
    """Each peer objective and remedy trains on ETTh1: its loss falls and the shortcut diagnostics are logged."""
    cfg = compose_config("train", ["data=etth1", f"run_dir={tmp_path}", "train.steps=8", "train.batch_size=16",
                                   "train.warmup=1", "train.log_every=1", *TINY_MODEL, *overrides])
    last = train_module.train(cfg)
    logs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logs[-1]["loss"] < logs[0]["loss"]
    assert all(0 <= log["slot_share"] <= 1 and log["position_r2"] <= 1 for log in logs)
    shipped = tsjepa.from_pretrained(last)
    assert (shipped.predictor is None) == (overrides[0] in ("model/objective=mae", "model/objective=contrastive"))


def test_contrastive_redraws_crops_for_short_end_aligned_series():
    """Series observed only in their window's last 2 patches (UEA-style, end-aligned) still train: crop pairs
    whose overlap they do not observe are drawn again; a batch nobody observes over 2 patches is refused."""
    torch.manual_seed(0)
    enc = Encoder(EncoderConfig(span=64.0, patch_duration=8.0, slots=8, d_model=16, depth=1, heads=2,
                                channel_capacity=8))
    objective = Contrastive(enc, ObjectiveConfig(kind="contrastive", mask_ratio=0.5, min_crop=2, num_slices=16))
    batch = random_batch(b=8)
    batch.observed[:, :, :48] = False  # 6 of the 8 patches unobserved
    out = objective(batch, step=0, generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(out["loss"])
    out["loss"].backward()
    assert enc.tokenizer.proj.weight.grad.abs().sum() > 0
    batch.observed[:, :, :56] = False  # one patch left: no overlap of 2 patches is observed
    with pytest.raises(ValueError, match="too short or too sparse for min_crop=2"):
        objective(batch, step=0, generator=torch.Generator().manual_seed(3))
