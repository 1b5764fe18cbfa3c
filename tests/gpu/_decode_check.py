"""What the GPU decode tests share: tiny priors with random weights, inputs, decoders, and the check that two
greedy sequences agree (equal, or first differing at a near tie).

Both paths run the same model on the same inputs. The fast paths reduce in another order (a fixed-size,
masked key range; fused or captured kernels), so a step whose two best logits are nearly tied may go either
way. Two sequences are accepted if they are equal, or if they agree up to their first difference and that
difference is a near tie in the model's own float32 teacher-forced logits: within 0.1% of the logits' spread
in float32, 5% in bfloat16. A wiring bug diverges at once, by a wide margin.

``JUKEBOX_GPU_TEST_DEVICE=cpu`` runs the tests on the CPU (where the CUDA graph modes are skipped), to check
the tests themselves without a GPU.
"""

from __future__ import annotations

import os

import pytest
import torch

DEVICE = os.environ.get("JUKEBOX_GPU_TEST_DEVICE", "cuda")
NEEDS_DEVICE = pytest.mark.skipif(
    DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"
)

PRESETS = ["tiny_upsampler_level_0", "tiny_1b_lyrics", "tiny_5b", "tiny_5b_lyrics"]
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
# A difference is a near tie if the two tokens' float32 logits differ by at most this fraction of the
# logits' standard deviation at that step.
TIE = {"bf16": 0.05, "fp32": 1e-3}
KNOWN, NEW, BATCH = 24, 64, 2


def _decoder(prior, mode: str, dtype: torch.dtype):
    """A decoder in ``mode`` that serves every window of a test, as ``sample_level`` keeps one per level."""
    import inspect

    from jukebox_cli.engine.errors import ConfigError
    from jukebox_cli.engine.sampling.level import sample_window

    if "decoder" not in inspect.signature(sample_window).parameters:
        pytest.skip("sample_window takes no decoder in this code")
    from jukebox_cli.engine.sampling import decode

    if mode == "static-graph":  # the uncompiled fixed-shape step captured as a CUDA graph: no compile time
        if DEVICE != "cuda":
            pytest.skip("CUDA graphs need a CUDA device")
        return decode.StaticDecoder(prior, BATCH, dtype=dtype, device=DEVICE, compile=False, graph=True)
    try:
        return decode.make_decoder(prior, BATCH, dtype=dtype, device=DEVICE, mode=mode)
    except ConfigError as err:  # a mode this device does not offer
        pytest.skip(f"decode mode {mode!r}: {err}")


def _prior(preset: str, dtype_name: str):
    from jukebox_cli.engine.models.builders import build_prior
    from jukebox_cli.engine.models.transformer import linear_weight_keys
    from tests.oracle_priors import randomise_weights

    prior = build_prior(preset, seed=4)
    randomise_weights(prior, seed=5)  # non-trivial weights: greedy decoding visits many different tokens
    if dtype_name != "fp32":  # as `jukebox generate` loads them for half-precision sampling on a GPU
        weights = dict(prior.named_parameters())
        for key in linear_weight_keys(prior):
            weights[key].data = weights[key].data.to(DTYPES[dtype_name])
    return prior.to(DEVICE).eval()


def _inputs(prior, seed: int = 0):
    c = prior.config
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(c.codebook_size, (BATCH, c.n_ctx), generator=gen)
    upper = torch.randint(c.codebook_size, (BATCH, c.n_ctx // 4), generator=gen) if c.is_upsampler else None
    labels = torch.full((BATCH, c.label_length), -1, dtype=torch.long)
    labels[:, 0], labels[:, 1], labels[:, 2] = c.sample_rate * 30, 0, c.window_samples
    labels[:, 3] = torch.arange(BATCH) % c.n_artists
    labels[:, 4] = 1
    if c.n_tokens:
        labels[:, 4 + c.max_genres :] = torch.randint(1, c.n_vocab, (BATCH, c.n_tokens), generator=gen)
    move = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    return move(codes), move(labels), move(upper)


@torch.no_grad()
def _teacher_logits(prior, row, codes, labels, upper) -> torch.Tensor:
    """float32 teacher-forced logits [L, bins] along one sampled row [1, K + n] (music positions only).

    1b_lyrics returns a lyric id sampled in a music slot as code 0; such a slot is given back the id the
    greedy step must have taken (the best of the ids that map to 0), left to right, so that the context is
    the one the sampler saw.
    """
    c = prior.config
    window = torch.cat([row, codes[:, row.shape[1] :]], dim=1)  # (1, n_ctx): the row, then filler
    if not c.single_enc_dec:
        return prior.logits(window, labels, upper)[0].float()
    x_cond, y_cond, lyrics = prior.conditioning(labels, upper)
    tokens = torch.cat([lyrics, window + c.n_vocab], dim=1)  # (1, n_tokens + n_ctx)
    for position in (row[0, KNOWN:] == 0).nonzero()[:, 0].tolist():
        slot = c.n_tokens + KNOWN + position
        logits = prior.prior(tokens, x_cond, y_cond)
        tokens[0, slot] = logits[0, slot, : c.n_vocab + 1].argmax()
    return prior.prior(tokens, x_cond, y_cond)[0, c.n_tokens :].float()


def _check_same_or_near_tie(prior, eager, fast, codes, labels, upper, tie: float) -> None:
    """``fast`` equals ``eager``, or first differs from it where ``eager``'s own logits nearly tie."""
    assert fast.shape == eager.shape and torch.equal(fast[:, :KNOWN], eager[:, :KNOWN])
    if torch.equal(fast, eager):
        return
    c = prior.config
    differs = (fast != eager).nonzero()
    first = int(differs[:, 1].min())
    row = int(differs[differs[:, 1] == first][0, 0])
    pick = slice(row, row + 1)
    step = _teacher_logits(
        prior, eager[pick], codes[pick], labels[pick], None if upper is None else upper[pick]
    )
    step = step[first]

    def logit(token: int) -> torch.Tensor:
        if c.single_enc_dec:  # music ids follow the lyric ids; code 0 also stands for any lyric id
            return step[: c.n_vocab + 1].max() if token == 0 else step[token + c.n_vocab]
        return step[token]

    e, f = int(eager[row, first]), int(fast[row, first])
    gap = (logit(e) - logit(f)).abs()
    assert gap <= tie * step.std(), (
        f"first difference at position {first} (row {row}): eager {e}, fast {f}, logit gap {float(gap):.4g} > "
        f"{tie} x std {float(step.std()):.4g}"
    )


def check_mode(preset: str, mode: str, dtype_name: str) -> None:
    """Greedy tokens of ``mode`` == eager's (or a near tie), over two windows served by one decoder."""
    from jukebox_cli.engine.sampling.level import SamplingSettings, sample_window

    prior = _prior(preset, dtype_name)
    dtype = DTYPES[dtype_name]
    decoder = _decoder(prior, mode, dtype)
    codes, labels, upper = _inputs(prior)

    def sample(**how):
        generator = torch.Generator(device=DEVICE).manual_seed(0)
        return sample_window(prior, codes[:, :KNOWN], NEW, labels, upper_codes=upper, dtype=dtype,
                             generator=generator, **how)  # fmt: skip

    eager = sample(settings=SamplingSettings(greedy=True, decode="eager"))
    greedy = SamplingSettings(greedy=True)
    fast = sample(settings=greedy, decoder=decoder)  # compiles and captures, if the mode does
    again = sample(settings=greedy, decoder=decoder)  # the next window replays what the first one made
    assert eager.shape == (BATCH, KNOWN + NEW)
    _check_same_or_near_tie(prior, eager, fast, codes, labels, upper, TIE[dtype_name])
    _check_same_or_near_tie(prior, fast, again, codes, labels, upper, TIE[dtype_name])
