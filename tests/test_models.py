import pytest
import torch
from conftest import random_batch
from einops import rearrange

from tsjepa.eval.latent_scores import patch_errors
from tsjepa.models import Encoder, EncoderConfig, Predictor, PredictorConfig
from tsjepa.models.tokenizer import PatchTokenizer

CFG = EncoderConfig(span=64.0, patch_duration=8.0, slots=8, d_model=32, depth=2, heads=4, channel_capacity=16)


@pytest.fixture
def encoder():
    torch.manual_seed(0)
    return Encoder(CFG).eval()


def test_tokenizer_is_linear_patch_embedding_on_regular_data():
    torch.manual_seed(0)
    tok = PatchTokenizer(span=64.0, patch_duration=8.0, slots=8, d_model=16)
    batch = random_batch(t=64)
    tokens, observed = tok(batch.values, batch.times, batch.observed)
    assert tokens.shape == (2, 3, 8, 16) and observed.all()
    patches = rearrange(batch.values, "b c (p s) -> b c p s", s=8)
    features = torch.cat([patches, torch.ones_like(patches), torch.zeros_like(patches)], dim=-1)
    torch.testing.assert_close(tokens, tok.proj(features))


def test_tokenizer_places_irregular_observations_by_time():
    tok = PatchTokenizer(span=64.0, patch_duration=8.0, slots=4, d_model=8)
    batch = random_batch(b=1, c=1, t=3)
    batch.times = torch.tensor([[[-63.5, -40.2, -0.1]]])
    _, observed = tok(batch.values, batch.times, batch.observed)
    # -63.5 -> patch 0, -40.2 -> patch 2, -0.1 -> patch 7; the rest hold no observation
    assert observed[0, 0].nonzero().flatten().tolist() == [0, 2, 7]


def test_output_shapes_and_any_number_of_channels(encoder):
    for channels in (1, 3, 7):
        out = encoder(random_batch(c=channels))
        assert out.embeddings.shape == (2, channels, 8, 32)
        assert out.patch_observed.shape == (2, channels, 8) and out.loc.shape == (2, channels)


def test_unobserved_values_do_not_change_the_output(encoder):
    batch = random_batch()
    batch.observed[0, 1, 10:30] = False
    batch.observed[1, 0, ::3] = False
    ref = encoder(batch).embeddings
    batch.values = torch.where(batch.observed, batch.values, torch.full_like(batch.values, 1e6))
    batch.values[~batch.observed] = float("nan")
    torch.testing.assert_close(encoder(batch).embeddings, ref)


def test_context_tokens_ignore_masked_tokens(encoder):
    batch = random_batch()
    context = torch.ones(2, 3, 8, dtype=torch.bool)
    context[:, :, 4:6] = False  # a masked time span on all channels
    ref = encoder(batch, context=context).embeddings
    batch.values[:, :, 32:48] += 5.0  # change only the masked span's values
    out = encoder(batch, context=context).embeddings
    torch.testing.assert_close(out[context], ref[context])
    assert not torch.allclose(out[~context], ref[~context])


def test_attention_mixes_channels(encoder):
    batch = random_batch()
    ref = encoder(batch).embeddings
    batch.values[:, 0] += torch.randn_like(batch.values[:, 0])
    out = encoder(batch).embeddings
    assert (out[:, 1] - ref[:, 1]).abs().max() > 1e-3  # channel 1 sees channel 0


def test_channel_permutation_is_equivariant(encoder):
    batch = random_batch(c=4)
    perm = torch.tensor([2, 0, 3, 1])
    ref = encoder(batch).embeddings
    out = encoder(batch.select_channels(perm)).embeddings
    torch.testing.assert_close(out, ref[:, perm], atol=1e-5, rtol=1e-5)


def test_channel_ids_outside_the_table_are_refused(encoder):
    batch = random_batch()
    batch.channel_ids[0, 0] = 99
    with pytest.raises(ValueError, match="channel ids must lie in"):
        encoder(batch)


def test_predictor_shapes(encoder):
    pred = Predictor(PredictorConfig(d_model=16, depth=1, heads=2), 32, 16)
    batch = random_batch()
    context = torch.rand(2, 3, 8) > 0.5
    out = pred(encoder(batch).embeddings, context, ~context, encoder.tokenizer.patch_starts(), batch.channel_ids)
    assert out.shape == (2, 3, 8, 32) and torch.isfinite(out).all()


def test_probe_layers_concatenate_intermediate_outputs(encoder):
    batch = random_batch(c=3)
    last = encoder(batch).embeddings
    both = encoder(batch, layers=(0, -1)).embeddings
    assert both.shape == (2, 3, 8, 64)
    torch.testing.assert_close(both[..., 32:], last)
    every = encoder(batch, layers=tuple(range(encoder.num_layers))).embeddings
    assert every.shape[-1] == 32 * encoder.num_layers == 32 * 5
    torch.testing.assert_close(every[..., -32:], last)
    for bad in ((), (5,), (-6,)):
        with pytest.raises(ValueError, match="layers"):
            encoder(batch, layers=bad)


def test_cropped_encoder_keeps_every_observed_patch_of_short_windows(encoder):
    batch = random_batch(t=24, span=24.0)  # 3 of the 8 patches observed
    batch.observed[0, 1, :9] = False  # a partly observed channel, and an unobserved patch inside the span
    torch.manual_seed(1)
    predictor = Predictor(PredictorConfig(d_model=16, depth=1, heads=2), 32, 16).eval()
    state = torch.random.get_rng_state()
    cropped = encoder.cropped(24.0)
    assert torch.equal(torch.random.get_rng_state(), state)  # draws nothing from the global generator
    full, short = encoder(batch), cropped(batch)
    assert short.embeddings.shape == (2, 3, 3, 32) and not full.patch_observed[..., :5].any()
    seen = short.patch_observed
    torch.testing.assert_close(short.embeddings[seen], full.embeddings[..., 5:, :][seen], atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        errors = [patch_errors(enc, predictor, batch)[0] for enc in (encoder, cropped)]
    torch.testing.assert_close(errors[1], errors[0], atol=1e-5, rtol=1e-5, equal_nan=True)
    for span in (20.0, 0.0, 72.0):
        with pytest.raises(ValueError, match="do not fit this encoder"):
            encoder.cropped(span)


def test_rotary_attention_depends_on_positions_only_through_their_differences():
    from tsjepa.models.blocks import Attention, rotary

    torch.manual_seed(0)
    attention = Attention(32, heads=4).eval()
    x, keys = torch.randn(3, 8, 32), torch.ones(3, 8, dtype=torch.bool)
    positions = torch.arange(-8, 0, dtype=torch.float32) * 0.7
    out = attention(x, keys, rotary(positions, 8))
    torch.testing.assert_close(attention(x, keys, rotary(positions + 11.3, 8)), out, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(attention(x, keys, rotary(positions * 2, 8)), out, atol=1e-3)  # other distances
    assert not torch.allclose(attention(x, keys), out, atol=1e-3)  # the rotation takes part


def test_a_rotary_encoder_puts_no_absolute_time_in_its_tokens():
    """With position=rotary a window whose patches all hold the same values gives the same input token at every
    patch (time enters only through relative attention); with absolute time encoding the tokens differ."""
    torch.manual_seed(0)
    batch = random_batch(b=2, c=3, t=64)
    batch.values = batch.values[..., :8].repeat(1, 1, 8)  # every patch the same 8 values
    for position, same in (("rotary", True), ("absolute", False)):
        encoder = Encoder(EncoderConfig(**{**CFG.to_dict(), "position": position})).eval()
        tokens = encoder(batch, layers=(0,)).embeddings  # [B, C, P, D]
        assert torch.allclose(tokens, tokens[:, :, :1].expand_as(tokens), atol=1e-5) == same
        assert (encoder.time_encoding is None) == same
        out = encoder(batch).embeddings
        assert out.shape == (2, 3, 8, 32) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="position must be one of"):
        EncoderConfig(**{**CFG.to_dict(), "position": "learned"})
