"""Our VQ-VAE against the jukebox-infer reference (a faithful port of OpenAI's code), released architecture.

Both models get the same random weights: the reference is built from the released hyperparameters, its
encoders' output scale and its codebooks are set from its own latents on the test audio (see tests/oracle.py
for why), and its ``state_dict()`` is imported into ours with the "original" layout. Then codes must be
identical at every level and decoded audio must agree to 1e-5.

Skipped when ``jukebox_infer`` is not installed. Nothing is downloaded.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("jukebox_infer")

from jukebox_cli.engine import build_vqvae  # noqa: E402
from jukebox_cli.engine.checkpoints.layouts import import_state_dict  # noqa: E402
from tests import oracle  # noqa: E402

pytestmark = pytest.mark.oracle

DECODE_ATOL = 1e-5
# Chunking changes float32 rounding of the latents (by ~1e-4 std at most); a code may then legitimately
# differ only where the reference's two nearest codes are within this squared distance (std² units).
CHUNK_TIE_TOLERANCE = 1e-3
MIN_DISTINCT_CODES = 200  # per level; with a useless codebook every latent maps to a handful of codes


@pytest.fixture(scope="module")
def models():
    """(reference, ours, 3 s audio, 6 s audio), sharing weights and useful codebooks."""
    audio_3s = oracle.make_test_audio(3.0, seed=0)
    audio_6s = oracle.make_test_audio(6.0, seed=1)
    ref = oracle.build_reference_vqvae(seed=0)
    oracle.normalise_reference_latents(ref, audio_3s)
    oracle.seed_reference_codebooks(ref, (audio_3s, audio_6s))
    ours = build_vqvae("jukebox", seed=1)  # different seed: every weight must come from the import
    import_state_dict(ours, ref.state_dict(), "original")
    return ref, ours, audio_3s, audio_6s


def _explain_code_mismatch(ref, ours, audio, level, expected, actual, tolerance) -> str:
    """Where codes differ: near-ties, encoder latents, or the first diverging layer."""
    distances = oracle.code_distances(ref, audio)[level]
    total, unexplained, examples = oracle.near_tie_report(distances, expected, actual, tolerance)
    with torch.inference_mode():
        ours_latent = ours.encoders[level](audio.unsqueeze(1))
    ref_latent = oracle.reference_latents(ref, audio)[level]
    latent_diff = (ours_latent - ref_latent).abs().max().item()
    layer = oracle.first_divergence(
        ours.encoders[level],
        ref.encoders[level],
        lambda: ours.encoders[level](audio.unsqueeze(1)),
        lambda: ref.encoders[level](audio.unsqueeze(1)),
        atol=1e-5,
    )
    return (
        f"level {level}: {total} of {expected.numel()} codes differ, {unexplained} not explained by a "
        f"near-tie (tolerance {tolerance}); one-pass encoder latents differ by up to {latent_diff:.3g}"
        f"{'; first diverging encoder layer: ' + layer if layer else ''}\n{examples}"
    )


def _check_decode(ref, ours, codes, level, chunk_samples, errors) -> None:
    ref_audio = oracle.reference_decode(ref, codes, level)
    our_audio = ours.decode(codes, level, chunk_samples=chunk_samples)
    if our_audio.shape != ref_audio.shape:
        errors.append(f"decode level {level}: shape {tuple(our_audio.shape)} vs {tuple(ref_audio.shape)}")
        return
    diff = (our_audio - ref_audio).abs().max().item()
    if diff > DECODE_ATOL:
        with torch.inference_mode():
            latent = ref.bottleneck.level_blocks[level].decode(codes)
        layer = oracle.first_divergence(
            ours.decoders[level],
            ref.decoders[level],
            lambda: ours.decoders[level](latent),
            lambda: ref.decoders[level]([latent], all_levels=False),
            atol=DECODE_ATOL,
        )
        errors.append(
            f"decode level {level} (chunk_samples={chunk_samples}): max abs difference {diff:.3g} > "
            f"{DECODE_ATOL} (reference peak {ref_audio.abs().max().item():.3g})"
            f"{'; first diverging decoder layer (one pass): ' + layer if layer else ''}"
        )


def test_import_of_reference_weights_is_exact(models):
    ref, ours, _, _ = models
    ref_state, our_state = ref.state_dict(), ours.state_dict()
    assert sorted(our_state) == sorted(ref_state)
    assert len(ref_state) == 669
    different = [k for k in ref_state if not torch.equal(our_state[k], ref_state[k])]
    assert not different, f"weights differ after import: {different[:5]}"


def test_codes_and_decoded_audio_match_reference(models):
    ref, ours, audio, _ = models
    ref_codes = oracle.reference_encode(ref, audio)
    our_codes = ours.encode(audio)
    errors = []
    for level, hop in enumerate(oracle.HOP_LENGTHS):
        expected, actual = ref_codes[level], our_codes[level]
        assert expected.shape == (1, audio.shape[-1] // hop)
        distinct = expected.unique().numel()
        assert distinct >= MIN_DISTINCT_CODES, f"level {level}: only {distinct} distinct codes; useless test"
        if actual.shape != expected.shape:
            errors.append(f"level {level}: codes shape {tuple(actual.shape)} vs {tuple(expected.shape)}")
        elif not torch.equal(actual, expected):
            errors.append(_explain_code_mismatch(ref, ours, audio, level, expected, actual, tolerance=0.0))
    for level in range(3):
        _check_decode(ref, ours, ref_codes[level], level, 2**19, errors)
    assert not errors, "\n".join(errors)


def test_chunked_path_matches_reference_one_pass(models):
    ref, ours, _, audio = models
    chunk = 2**16
    assert audio.shape[-1] > 4 * chunk  # several chunks, plus a short last one
    ref_codes = oracle.reference_encode(ref, audio)
    our_codes = ours.encode(audio, chunk_samples=chunk)
    errors = []
    for level in range(3):
        expected, actual = ref_codes[level], our_codes[level]
        distinct = expected.unique().numel()
        assert distinct >= MIN_DISTINCT_CODES, f"level {level}: only {distinct} distinct codes; useless test"
        if actual.shape != expected.shape:
            errors.append(f"level {level}: codes shape {tuple(actual.shape)} vs {tuple(expected.shape)}")
            continue
        if torch.equal(actual, expected):
            continue
        distances = oracle.code_distances(ref, audio)[level]
        total, unexplained, _ = oracle.near_tie_report(distances, expected, actual, CHUNK_TIE_TOLERANCE)
        if unexplained or total > expected.numel() // 1000:
            errors.append(
                "chunked "
                + _explain_code_mismatch(ref, ours, audio, level, expected, actual, CHUNK_TIE_TOLERANCE)
            )
    for level in range(3):
        _check_decode(ref, ours, ref_codes[level], level, chunk, errors)
    assert not errors, "\n".join(errors)
