"""VQ-VAE architecture and inference invariants, with the released model's counts and shapes."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from jukebox_cli.engine import build_vqvae
from jukebox_cli.engine.errors import ConfigError, InvalidAudio
from jukebox_cli.engine.models.vqvae import VQVAEConfig


def test_released_architecture_counts() -> None:
    model = build_vqvae("jukebox", device="meta")
    state = model.state_dict()
    assert len(state) == 669
    assert sum(t.numel() for t in state.values()) == 1_878_979
    assert sum(p.numel() for p in model.parameters()) == 1_485_763
    assert model.hop_lengths == (8, 32, 128)


def test_released_encode_shapes_on_meta() -> None:
    model = build_vqvae("jukebox", device="meta")
    x = torch.empty(2, 881_920, device="meta")
    codes = model.encode(x, chunk_samples=None)
    assert [tuple(c.shape) for c in codes] == [(2, 110_240), (2, 27_560), (2, 6_890)]
    for level, hop in enumerate(model.hop_lengths):
        assert tuple(model.decode(codes[level][:, :100], level, chunk_samples=None).shape) == (2, 100 * hop)


def _dilations(resnet: nn.Module) -> list[int]:
    return [m.dilation[0] for m in resnet.modules() if isinstance(m, nn.Conv1d) and m.kernel_size[0] == 3]


def test_dilations_and_widths_per_level() -> None:
    model = build_vqvae("jukebox", device="meta")
    enc0 = model.encoders[0].level_blocks[0].model[0][1]
    dec0 = model.decoders[0].level_blocks[0].model[1][0]
    assert _dilations(enc0) == [1, 3, 9, 27, 81, 243, 729, 2187]
    assert _dilations(dec0) == [2187, 729, 243, 81, 27, 9, 3, 1]
    assert _dilations(model.decoders[2].level_blocks[2].model[1][0]) == [27, 9, 3, 1]
    # Level 0 has width 64 / depth 8, levels 1 and 2 width 32 / depth 4, even in their first 8x block.
    assert model.encoders[0].level_blocks[0].model[0][0].out_channels == 64
    assert model.encoders[1].level_blocks[0].model[0][0].out_channels == 32
    assert len(model.encoders[2].level_blocks) == 3


@pytest.mark.parametrize("length", [22050 * 3, 22050 * 3 + 77])
def test_chunked_equals_one_pass(tiny_vqvae, length: int) -> None:
    torch.manual_seed(1)
    x = 0.2 * torch.randn(2, length)
    for level in range(3):
        full = tiny_vqvae.encode_level(x, level, chunk_samples=None)
        chunked = tiny_vqvae.encode_level(x, level, chunk_samples=4096)
        assert full.shape == (2, length // tiny_vqvae.hop_lengths[level])
        assert full.unique().numel() > 8, "an informative test needs many codes in use"
        assert torch.equal(full, chunked)
        audio = tiny_vqvae.decode(full, level, chunk_samples=None)
        audio_chunked = tiny_vqvae.decode(full, level, chunk_samples=2048)
        torch.testing.assert_close(audio_chunked, audio, atol=1e-5, rtol=0)


def test_chunking_without_context_would_differ(tiny_vqvae, monkeypatch) -> None:
    """Proves the chunking test can fail: with no context, chunk seams change the output."""
    torch.manual_seed(2)
    x = 0.2 * torch.randn(1, 22050 * 2)
    full = tiny_vqvae.decode(tiny_vqvae.encode_level(x, 0, chunk_samples=None), 0, chunk_samples=None)
    monkeypatch.setattr(type(tiny_vqvae), "decoder_context", lambda self, level: 0)
    codes = tiny_vqvae.encode_level(x, 0, chunk_samples=None)
    seams = tiny_vqvae.decode(codes, 0, chunk_samples=2048)
    assert (seams - full).abs().max() > 1e-4


def test_encode_accepts_both_layouts(tiny_vqvae) -> None:
    x = 0.1 * torch.randn(1, 4096)
    assert torch.equal(tiny_vqvae.encode_level(x, 1), tiny_vqvae.encode_level(x.unsqueeze(1), 1))
    with pytest.raises(ConfigError):
        tiny_vqvae.encode_level(torch.randn(1, 2, 4096), 1)


def test_too_short_and_bad_codes(tiny_vqvae) -> None:
    with pytest.raises(InvalidAudio, match="shorter than one level-2 code"):
        tiny_vqvae.encode_level(torch.zeros(1, 100), 2)
    with pytest.raises(ConfigError, match="lie in"):
        tiny_vqvae.decode(torch.full((1, 4), 10_000), 0)
    with pytest.raises(ConfigError, match="do not exist"):
        tiny_vqvae.decode(torch.zeros(1, 4, dtype=torch.long), 3)
    assert tiny_vqvae.decode(torch.zeros(1, 0, dtype=torch.long), 0).shape == (1, 0)


def test_dequantised_codes_match_forward(tiny_vqvae) -> None:
    x = 0.2 * torch.randn(1, 8192)
    out = tiny_vqvae(x)
    for level in range(3):
        codes = tiny_vqvae.encode_level(x, level, chunk_samples=None)
        assert torch.equal(out.quantized[level].codes, codes)
        torch.testing.assert_close(tiny_vqvae.bottleneck[level].dequantise(codes), out.quantized[level].x_q)
        assert out.recons[level].shape == x.shape


def test_decode_takes_a_per_level_list(tiny_vqvae) -> None:
    x = 0.2 * torch.randn(1, 4096)
    codes = tiny_vqvae.encode(x)
    assert torch.equal(tiny_vqvae.decode(codes, 1), tiny_vqvae.decode(codes[1], 1))


def test_config_validation_and_round_trip() -> None:
    with pytest.raises(ConfigError, match="one entry per level"):
        VQVAEConfig(levels=2)
    with pytest.raises(ConfigError, match="ema_decay"):
        VQVAEConfig(ema_decay=1.5)
    config = dataclasses.replace(VQVAEConfig(), width=16)
    assert VQVAEConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="Unknown VQ-VAE config keys: bogus"):
        VQVAEConfig.from_dict({**config.to_dict(), "bogus": 1})


def test_build_is_seeded() -> None:
    a, b, c = build_vqvae("tiny", seed=3), build_vqvae("tiny", seed=3), build_vqvae("tiny", seed=4)
    assert all(
        torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert not torch.equal(a.state_dict()["decoders.0.out.weight"], c.state_dict()["decoders.0.out.weight"])


def test_codebook_notes_flag_levels_whose_entries_cannot_stay_alive() -> None:
    from jukebox_cli.engine.train.vqvae import codebook_notes

    model = build_vqvae("small", seed=0)  # 512 entries, hops 8 / 32 / 128
    notes = codebook_notes(model, batch_size=4, sample_length=64 * 128)
    # Level 2 gets 4 x 64 = 256 codes per step for 512 entries; levels 1 and 0 get 1024 and 4096.
    assert len(notes) == 1 and notes[0].startswith("level 2: 256 codes per step for 512 codebook entries")
    assert "--revival-threshold 0.1" in notes[0]
    assert codebook_notes(model, batch_size=8, sample_length=64 * 128) == []
    model.set_revival_threshold(0.1)
    assert codebook_notes(model, batch_size=4, sample_length=64 * 128) == []
    assert model.config.revival_threshold == 0.1
    assert all(model.bottleneck[level].threshold == 0.1 for level in range(3))
    with pytest.raises(ConfigError):
        model.set_revival_threshold(-1.0)
