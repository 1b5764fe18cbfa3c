"""Our priors against jukebox-infer's (the reference port of OpenAI's code), layer layout by layer layout.

Each released attention layout is built on both sides with reduced sizes but the released layer pattern
and context structure, random seeded weights copied from the reference into ours (see tests/oracle_priors.py):

* upsampler (attn_order 2, conditioner on the upper level's codes; level 1 with the conditioner's res_scale),
* 5b (attn_order 2, merged decoder, untied head, timing embedding, 8 heads),
* 5b_lyrics (attn_order 10 with two cross-attention layers at d = 18 and 28 reading a separate lyric encoder),
* 1b_lyrics (attn_order 12 over lyrics + music in one sequence: prime attention at d = 15 and 31, dense at
  d = 47; 48 lyric tokens, blocks 16, so block_ctx = 240 / 16 = 15 divides neither part and prime attention
  reads P = (48 // 16 + 1) * 16 = 64 positions, as 448 for the released 384 / 64).

and compared on (a) teacher-forced logits and losses, (b) greedy sampling of a window (the reference's own
sampler with top_k=1), (c) our key/value-cache path against our full forward pass.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("jukebox_infer")

from jukebox_cli.engine.models.presets import prior_config  # noqa: E402
from jukebox_cli.engine.models.transformer import CROSS, DENSE, PRIME  # noqa: E402
from jukebox_cli.engine.sampling.level import SamplingSettings, sample_window  # noqa: E402
from tests.oracle_priors import (  # noqa: E402
    REFERENCE_NAMES,
    Reduction,
    build_pair,
    make_inputs,
    reference_logits,
    reference_sample,
)

pytestmark = [
    pytest.mark.oracle,
    # jukebox_infer.transformer.ops decorates with torch.jit.script at import (not our code).
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning"),
]

LOGIT_TOLERANCE = 1e-4

LAYOUTS = {
    "upsampler_level_0": Reduction(width=64, depth=6, n_ctx=256, blocks=16),
    "upsampler_level_1": Reduction(width=64, depth=6, n_ctx=256, blocks=16),
    "5b": Reduction(width=128, depth=6, n_ctx=256, blocks=16),
    "5b_lyrics": Reduction(width=128, depth=29, n_ctx=256, blocks=16, n_tokens=64),
    "1b_lyrics": Reduction(width=64, depth=48, n_ctx=192, blocks=16, n_tokens=48),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """These models are tiny: one thread is faster, and much faster when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=list(LAYOUTS))
def pair(request):
    preset = request.param
    ours, reference = build_pair(preset, LAYOUTS[preset], seed=1)
    codes, labels, upper = make_inputs(ours.config, batch=2, seed=2)
    return preset, ours, reference, (codes, labels, upper)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


# -- structure -------------------------------------------------------------------------------------------


def test_released_hyperparameters_agree() -> None:
    """Our released presets carry the reference's released hyperparameters (the reductions start from them)."""
    from jukebox_infer.hparams import setup_hparams

    for preset, name in REFERENCE_NAMES.items():
        c, h = prior_config(preset), setup_hparams(name, {})
        assert (c.level, c.n_ctx, c.width, c.depth, c.heads) == (h.level, h.n_ctx, h.prior_width, h.prior_depth,
                                                                   h.heads), preset  # fmt: skip
        assert (c.attn_order, c.blocks, c.init_scale) == (h.attn_order, h.blocks, h.init_scale), preset
        assert ((c.n_genres, c.n_artists), c.t_bins, c.max_genres) == (tuple(h.y_bins), h.t_bins,
                                                                       h.max_bow_genre_size), preset  # fmt: skip
        assert c.merged_decoder == h.merged_decoder and c.single_enc_dec == h.single_enc_dec, preset
        assert c.fp16_params == h.fp16_params and c.prime_loss_fraction == h.prime_loss_fraction, preset
        assert c.label_set == ("v3" if h.labels_v3 else "v2"), preset
        if c.include_timing:
            assert (c.min_duration, c.max_duration) == (h.min_duration, h.max_duration), preset
        if c.has_lyrics:
            assert (c.n_tokens, c.n_vocab) == (h.n_tokens, h.n_vocab), preset
            assert (c.alignment_layer, c.alignment_head) == (h.alignment_layer, h.alignment_head), preset
        else:
            assert not h.use_tokens, preset
        if c.is_upsampler:
            k = c.conditioner
            assert (k.width, k.depth, k.m_conv) == (h.cond_width, h.cond_depth, 1.0), preset
            assert (k.dilation_growth_rate, k.dilation_cycle) == (h.cond_dilation_growth_rate,
                                                                  h.cond_dilation_cycle), preset  # fmt: skip
            assert k.res_scale == bool(h.get("cond_res_scale", False)), preset
        if c.lyric_encoder is not None:
            e = c.lyric_encoder
            assert (e.width, e.depth, e.heads, e.attn_order, e.blocks, e.init_scale) == (
                h.prime_width, h.prime_depth, h.prime_heads, h.prime_attn_order, h.prime_blocks,
                h.prime_init_scale,
            ), preset  # fmt: skip


def test_layer_patterns_match(pair) -> None:
    preset, ours, reference, _ = pair
    ref_funcs = [block.attn_func for block in reference.prior.transformer._attn_mods]
    assert ours.prior.transformer.attn_funcs == ref_funcs
    if preset == "5b_lyrics":  # the reduced model reaches two cross-attention layers
        assert [d for d, f in enumerate(ref_funcs) if f == CROSS] == [18, 28]
        enc_funcs = [block.attn_func for block in reference.prime_prior.transformer._attn_mods]
        assert ours.prime_prior.transformer.attn_funcs == enc_funcs == [1, 2, 3]
    if preset == "1b_lyrics":
        assert [d for d, f in enumerate(ref_funcs) if f == PRIME] == [15, 31]
        assert [d for d, f in enumerate(ref_funcs) if f == DENSE] == [47]
        c = ours.config
        block_ctx = c.sequence_length // c.blocks
        assert block_ctx == 15 and c.n_ctx % block_ctx and c.n_tokens % block_ctx  # like 102 for 384 + 6144
        prime_keys = reference.prior.transformer._attn_mods[15].attn._prime_len
        assert prime_keys == ours.prior.transformer._attn_mods[15].attn.prime_keys == 64 > c.n_tokens


def test_weights_are_nontrivial(pair) -> None:
    """Every reference tensor was redrawn (zero-initialised cross-attention projections and biases included)
    and ours holds the same values (half-precision Conv1D weights of the 5B priors cast to float32)."""
    _, ours, reference, _ = pair
    ours_state = ours.state_dict()
    for name, tensor in reference.state_dict().items():
        assert tensor.float().abs().max() > 0, name
        assert tensor.float().std() > 0 or tensor.numel() == 1, name
        assert torch.equal(ours_state[name], tensor.to(ours_state[name].dtype)), name


# -- (a) teacher forcing ---------------------------------------------------------------------------------


def test_teacher_forced_logits_match(pair) -> None:
    preset, ours, reference, (codes, labels, upper) = pair
    expected, ref_losses = reference_logits(reference, codes, labels, upper)
    with torch.no_grad():
        got = ours.logits(codes, labels, upper)
        out = ours(codes, labels, upper)
    assert got.shape == expected.shape
    diff = _max_diff(got, expected)
    print(f"{preset}: teacher-forced logits max |diff| = {diff:.3g} (logit std {expected.std():.3g})")
    assert diff <= LOGIT_TOLERANCE
    for key, value in (("loss", out.loss), ("gen_loss", out.gen_loss), ("prime_loss", out.prime_loss)):
        assert float(value) == pytest.approx(float(ref_losses[key]), rel=1e-5, abs=1e-6), key


def _changed_inputs(preset, ours, codes, labels, upper):
    """The same window with the conditioning that this layout adds changed (lyrics, upper codes, artist)."""
    c = ours.config
    labels, upper = labels.clone(), None if upper is None else upper.clone()
    gen = torch.Generator().manual_seed(7)
    if c.has_lyrics:
        lyrics = labels[:, 4 + c.max_genres :]
        lyrics.copy_(torch.randint(1, c.n_vocab, lyrics.shape, generator=gen))
    elif c.is_upsampler:
        upper[:, ::3] = torch.randint(c.codebook_size, upper[:, ::3].shape, generator=gen)
    else:
        labels[:, 3] = (labels[:, 3] + 1) % c.n_artists
    return codes, labels, upper


def test_conditioning_is_exercised(pair) -> None:
    """Changing the layout's own conditioning moves the logits far more than the tolerance; both sides agree.

    Guards against a vacuous comparison (e.g. cross-attention layers whose zero-initialised projections
    were left at zero).
    """
    preset, ours, reference, inputs = pair
    changed = _changed_inputs(preset, ours, *inputs)
    with torch.no_grad():
        before = ours.logits(*inputs)
        after = ours.logits(*changed)
    expected, _ = reference_logits(reference, *changed)
    assert _max_diff(after, expected) <= LOGIT_TOLERANCE
    music = slice(ours.config.n_tokens, None) if ours.config.single_enc_dec else slice(None)
    moved = _max_diff(after[:, music], before[:, music])
    print(f"{preset}: changing the conditioning moves the music logits by up to {moved:.3g}")
    assert moved > 100 * LOGIT_TOLERANCE  # a wrongly wired conditioning path could not hide in the tolerance


# -- (b) greedy sampling ---------------------------------------------------------------------------------


@pytest.mark.parametrize("known, n_new", [(0, 40), (77, 40)], ids=["ancestral", "primed"])
def test_greedy_window_matches_reference_sampler(pair, known, n_new) -> None:
    """Our greedy sampler and the reference's (temp 1, top_k 1: its argmax) produce the same tokens.

    Different priming chunk sizes on the two sides (ours 32, the reference 13, neither aligned to a block)
    must not matter; 77 context codes end mid-block.
    """
    preset, ours, reference, (codes, labels, upper) = pair
    context = codes[:, :known]
    expected = reference_sample(reference, context, n_new, labels, upper, chunk_size=13)
    got = sample_window(ours, context, n_new, labels, upper_codes=upper,
                        settings=SamplingSettings(greedy=True, chunk_size=32))  # fmt: skip
    assert got.shape == expected.shape == (2, known + n_new)
    assert torch.equal(got[:, :known], context)
    mismatch = (got != expected).nonzero().tolist()
    assert not mismatch, f"{preset}: first differing (row, position): {mismatch[:5]}"
    assert all(len(set(row.tolist())) >= 4 for row in got[:, known:]), (
        "greedy output too repetitive to be a useful comparison"
    )


# -- (c) our cache against our full forward --------------------------------------------------------------


def test_cache_path_matches_full_forward(pair) -> None:
    """Teacher-forced logits through the key/value cache, fed in uneven chunks, equal the full pass."""
    preset, ours, _, (codes, labels, upper) = pair
    c, core = ours.config, ours.prior
    with torch.no_grad():
        full = ours.logits(codes, labels, upper)
        x_cond, y_cond, lyrics = ours.conditioning(labels, upper)
        encoder_kv = ours.encode_lyrics(lyrics) if c.lyric_encoder is not None else None
        tokens = torch.cat([lyrics, codes + c.n_vocab], dim=1) if c.single_enc_dec else codes
        prev = torch.nn.functional.pad(tokens[:, :-1], (1, 0))
        cache = core.transformer.new_cache(tokens.shape[0], dtype=torch.float32, device=tokens.device)
        pieces, start = [], 0
        for n in [1, 1, 5, 16, 3, 40, 1, 7] + [13] * 100:
            n = min(n, tokens.shape[1] - start)
            if n == 0:
                break
            cond = x_cond[:, start : start + n] if x_cond.shape[1] > 1 else x_cond
            pieces.append(core.step(prev[:, start : start + n], cond, y_cond, cache, encoder_kv))
            start += n
    cached = torch.cat(pieces, dim=1)
    diff = _max_diff(cached, full)
    print(f"{preset}: cache vs full forward max |diff| = {diff:.3g}")
    assert diff <= LOGIT_TOLERANCE


# -- (d) lyric alignment ---------------------------------------------------------------------------------

# A lyric-attention layer of each reduced lyrics layout (the released alignment layers are deeper) and a
# head other than 0, so that a wrong layer, head or sub-block shows.
ALIGNMENT = {"5b_lyrics": (28, 1), "1b_lyrics": (31, 1)}


@pytest.mark.parametrize("preset", list(ALIGNMENT))
def test_window_alignment_matches_reference_attention(preset, monkeypatch) -> None:
    import dataclasses

    from jukebox_cli.engine.sampling.alignment import window_alignment

    ours, reference = build_pair(preset, LAYOUTS[preset], seed=3)
    codes, labels, _ = make_inputs(ours.config, batch=2, seed=4)
    layer, head = ALIGNMENT[preset]
    monkeypatch.setattr(
        ours, "config", dataclasses.replace(ours.config, alignment_layer=layer, alignment_head=head)
    )
    got = window_alignment(ours, codes, labels)
    c = ours.config
    assert got.shape == (2, c.n_ctx, c.n_tokens)
    expected = []
    for i in range(2):  # the reference's lyric path takes one row at a time (see reference_logits)
        with torch.no_grad():
            weights = reference.z_forward(z=codes[i : i + 1], y=labels[i : i + 1], get_attn_weights={layer})
        expected.append(weights[0][:, head].float())
    expected = torch.cat(expected)
    diff = _max_diff(got, expected)
    print(f"{preset}: alignment layer {layer} head {head}: max |diff| = {diff:.3g}")
    assert diff <= 1e-5
    # Not a trivially uniform matrix: the rows differ from each other and from 1 / n_tokens.
    assert (got - 1.0 / c.n_tokens).abs().max() > 0.05
