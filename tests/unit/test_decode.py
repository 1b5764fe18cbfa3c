"""Decode modes: the fixed-shape step gives the eager path's logits and greedy tokens for every tiny layout."""

from __future__ import annotations

import pytest
import torch

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.models.builders import build_prior
from jukebox_cli.engine.models.packed import PackedWeights
from jukebox_cli.engine.models.transformer import Conv1D, LayerNorm, with_linear_dtype
from jukebox_cli.engine.progress import Advanced
from jukebox_cli.engine.sampling import decode
from jukebox_cli.engine.sampling.decode import Decoder, StaticDecoder, make_decoder, resolve_mode
from jukebox_cli.engine.sampling.filtering import draw
from jukebox_cli.engine.sampling.level import SamplingSettings, sample_level, sample_window
from tests.unit.test_prior import TINY, _inputs

# Windows that cross block boundaries (block_ctx is 16 or 32 in the tiny presets): from an empty window, and
# after 40 known codes (for 1b_lyrics the lyric prefix is primed first in both).
WINDOWS = {"ancestral": 0, "primed": 40}
N_NEW = 40


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=TINY)
def tiny(request):
    torch.manual_seed(0)
    prior = build_prior(request.param, seed=4)
    return prior, _inputs(prior)


def _greedy(prior, inputs, known: int, mode: str, dtype=torch.float32) -> torch.Tensor:
    codes, labels, upper = inputs
    settings = SamplingSettings(greedy=True, chunk_size=16, decode=mode)
    return sample_window(
        prior, codes[:, :known], N_NEW, labels, upper_codes=upper, settings=settings, dtype=dtype
    )


@pytest.mark.parametrize("window", list(WINDOWS))
def test_static_greedy_tokens_equal_eager(tiny, window: str) -> None:
    prior, inputs = tiny
    eager = _greedy(prior, inputs, WINDOWS[window], "eager")
    assert torch.equal(_greedy(prior, inputs, WINDOWS[window], "static"), eager)


@pytest.mark.slow
@pytest.mark.parametrize("window", list(WINDOWS))
def test_compiled_greedy_tokens_equal_eager(tiny, window: str) -> None:
    prior, inputs = tiny
    eager = _greedy(prior, inputs, WINDOWS[window], "eager")
    assert torch.equal(_greedy(prior, inputs, WINDOWS[window], "compiled"), eager)


def _step_logits(decoder: Decoder, prior, inputs, known: int, tokens: torch.Tensor | None) -> torch.Tensor:
    """Logits [B, N_NEW, bins] of the window's new positions, fed ``tokens`` (or the greedy ones if None)."""
    codes, labels, upper = inputs
    c = prior.config
    x_cond, y_cond, lyrics = decoder.prior.conditioning(labels, upper)
    encoder_kv = decoder.prior.encode_lyrics(lyrics, decoder.dtype) if c.lyric_encoder is not None else None
    prefix = (
        torch.cat([lyrics, codes[:, :known] + c.n_vocab], dim=1) if c.single_enc_dec else codes[:, :known]
    )
    decoder.start(x_cond, y_cond, encoder_kv)
    decoder.prime(prefix, 16)
    steps = []
    for i in range(N_NEW):
        steps.append(decoder.step().clone())
        decoder.advance(steps[-1].argmax(-1) if tokens is None else tokens[:, i])
    return torch.stack(steps, dim=1)


@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 0.05)], ids=["fp32", "bf16"]
)
@pytest.mark.parametrize("window", list(WINDOWS))
def test_static_step_logits_equal_eager(tiny, window: str, dtype: torch.dtype, tolerance: float) -> None:
    prior, inputs = tiny
    known, batch = WINDOWS[window], inputs[1].shape[0]
    with torch.no_grad():
        eager = _step_logits(Decoder(prior, batch, dtype=dtype, device="cpu"), prior, inputs, known, None)
        # Both are fed the eager path's greedy tokens, so every step sees the same context.
        static = StaticDecoder(prior, batch, dtype=dtype, device="cpu")
        got = _step_logits(static, prior, inputs, known, eager.argmax(-1))
    scale = eager.abs().max()
    torch.testing.assert_close(got, eager, atol=tolerance * scale, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("window", list(WINDOWS))
def test_compiled_bf16_logits_close_to_eager(tiny, window: str) -> None:
    """The compiled CPU step in bfloat16 stores the weights output-major and streams them as dot products."""
    prior, inputs = tiny
    known, batch = WINDOWS[window], inputs[1].shape[0]
    with torch.no_grad():
        eager = _step_logits(
            Decoder(prior, batch, dtype=torch.bfloat16, device="cpu"), prior, inputs, known, None
        )
        compiled = StaticDecoder(prior, batch, dtype=torch.bfloat16, device="cpu", compile=True)
        assert compiled.core.transformer._attn_mods[0].mlp.c_fc.w.t().is_contiguous()
        got = _step_logits(compiled, prior, inputs, known, eager.argmax(-1))
    torch.testing.assert_close(got, eager, atol=0.02 * eager.abs().max(), rtol=0)


def test_a_decoder_serves_many_windows(tiny) -> None:
    """One decoder per level is reused window after window: nothing of a window leaks into the next."""
    prior, (codes, labels, upper) = tiny
    c = prior.config
    total = c.n_ctx + c.n_ctx // 4

    def run(mode: str) -> torch.Tensor:
        settings = SamplingSettings(greedy=True, chunk_size=16, hop_fraction=0.125, decode=mode)
        upper_codes = None if upper is None else torch.cat([upper, upper], dim=1)  # covers `total` codes

        return sample_level(prior, codes[:, :24], total, lambda window: labels, upper_codes=upper_codes,
                            settings=settings)  # fmt: skip

    assert torch.equal(run("static"), run("eager"))


def test_seeded_draws_and_resumed_runs_agree_in_static_mode() -> None:
    prior = build_prior("tiny_5b", seed=4)
    codes, labels, _ = _inputs(prior)
    settings = SamplingSettings(hop_fraction=0.25, decode="static")
    total = prior.config.n_ctx + 64
    whole = sample_level(prior, codes[:, :0], total, lambda w: labels, settings=settings, seed=11)
    eager_settings = SamplingSettings(hop_fraction=0.25, decode="eager")
    eager = sample_level(prior, codes[:, :0], total, lambda w: labels, settings=eager_settings, seed=11)
    assert torch.equal(whole, eager), "equal logits up to rounding draw the same tokens from the same seeds"
    first = whole[:, : prior.config.n_ctx]
    resumed = sample_level(prior, first, total, lambda w: labels, settings=settings, seed=11, first_window=1)
    assert torch.equal(resumed, whole)


def test_progress_is_reported_in_steps() -> None:
    prior = build_prior("tiny_5b", seed=4)
    codes, labels, _ = _inputs(prior)
    events = []
    sample_window(prior, codes[:, :3], 70, labels, settings=SamplingSettings(greedy=True, decode="static"),
                  progress=events.append)  # fmt: skip
    assert [e.n for e in events if isinstance(e, Advanced)] == [32, 32, 6]


def test_sampling_in_another_dtype_leaves_the_prior_alone() -> None:
    prior = build_prior("tiny_5b", seed=4)
    before = {k: v.clone() for k, v in prior.state_dict().items()}
    codes, labels, _ = _inputs(prior)
    _greedy(prior, (codes, labels, None), 8, "static", dtype=torch.bfloat16)
    for key, value in prior.state_dict().items():
        assert value.dtype == before[key].dtype and torch.equal(value, before[key]), key


def test_packed_weights_are_views_of_one_flat_tensor_per_dtype() -> None:
    prior = build_prior("tiny_5b_lyrics", seed=4)
    half = with_linear_dtype(prior, torch.bfloat16, out_major=True)  # bf16 Conv1D weights, f32 LayerNorms
    packed = PackedWeights(half.prior.transformer)
    assert sorted(packed.flats, key=str) == [torch.bfloat16, torch.float32]
    for module in half.prior.transformer.modules():
        for name in {Conv1D: ("w", "b"), LayerNorm: ("weight", "bias")}.get(type(module), ()):
            original, view = getattr(module, name), packed(module, name)
            assert torch.equal(view, original) and view.stride() == original.stride(), name
            assert view.untyped_storage().data_ptr() == packed.flats[view.dtype].untyped_storage().data_ptr()


def test_draw_is_multinomials_single_sample() -> None:
    """draw() consumes the generator as torch.multinomial(probs, 1) does and picks the same tokens."""
    seeded = torch.Generator().manual_seed(0)
    for rows, vocab in [(1, 7), (3, 64), (2, 2127)]:
        probs = torch.softmax(torch.randn(rows, vocab, generator=seeded) * 3, dim=-1)
        probs[:, ::3] = 0.0  # filtered tokens
        ours, theirs = torch.Generator().manual_seed(vocab), torch.Generator().manual_seed(vocab)
        for _ in range(20):
            assert torch.equal(draw(probs, ours), torch.multinomial(probs, 1, generator=theirs)[:, 0])


def test_modes_are_resolved_and_checked(monkeypatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_mode("auto", cuda) == "graph"
    monkeypatch.setattr(decode, "_cpp_compiler", lambda: True)
    assert resolve_mode("auto", cpu, steps=100) == "eager", "a compile does not pay for a few tokens"
    assert resolve_mode("auto", cpu, steps=10**6) == "compiled"
    monkeypatch.setattr(decode, "_cpp_compiler", lambda: False)
    assert resolve_mode("auto", cpu, steps=10**6) == "eager", "no C++ compiler: nothing to compile with"
    assert resolve_mode("static", cpu) == "static"
    with pytest.raises(ConfigError, match="decode mode"):
        SamplingSettings(decode="fast")
    with pytest.raises(ConfigError, match="CUDA"):
        resolve_mode("graph", cpu)
    prior = build_prior("tiny_5b", seed=4)
    assert make_decoder(prior, 2, dtype=torch.float32, device="cpu", mode="eager").mode == "eager"
    assert make_decoder(prior, 2, dtype=torch.float32, device="cpu", mode="static").mode == "static"
