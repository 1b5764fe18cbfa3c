"""Build reference models from ``jukebox-infer`` (module ``jukebox_infer``) to use as a test oracle.

``jukebox_infer`` is a faithful inference-only port of OpenAI's original Jukebox code. It is used here ONLY
to check our re-implementation (tests and ``bench/``); nothing in ``jukebox_cli`` imports it, and none of
its code is copied into the package. Nothing is downloaded: every reference model is built from the
released *hyperparameters* with random weights.

How the reference VQ-VAE is built (see :func:`build_reference_vqvae`):

* ``jukebox_infer.hparams.setup_hparams("vqvae", {...})`` gives the released VQ-VAE hyperparameters (the
  "vqvae" registry entry layered on the library defaults: levels 3, downs_t (3, 2, 2), strides_t (2, 2, 2),
  emb_width 64, l_bins 2048, l_mu 0.99, commit 0.02, width 32, depth 4, hvqvae_multipliers (2, 1, 1),
  m_conv 1.0, dilation_growth_rate 3, reversed decoder dilation, multispectral 1, spectral 0, sr 44100).
  We override ``restore_vqvae=""`` so that no checkpoint is looked up or downloaded, and set
  ``sample_length`` (only used for ``z_shapes`` / unconditional sampling, never by encode/decode).
* ``jukebox_infer.make_models.make_vqvae(hps, device)`` is the library's own factory: it builds
  ``VQVAE(...)``, moves it to ``device``, skips ``restore_model`` because ``restore_vqvae`` is empty, and
  calls ``eval()`` + ``freeze_model``. Its distributed helpers (``dist_adapter``) fall back to
  single-process behaviour when ``torch.distributed`` is not initialised, and nothing in the VQ-VAE path
  touches CUDA, so no monkeypatching is needed on CPU. Its chatter on stdout is swallowed.
* Weights come from PyTorch's default initialisation under ``torch.manual_seed(seed)``. The codebooks
  (buffers ``bottleneck.level_blocks.L.k``) start at zero, which maps every latent to code 0; call
  :func:`normalise_reference_latents` then :func:`seed_reference_codebooks` to give them useful values
  before comparing anything.

The reference's ``state_dict()`` uses the original OpenAI key names, so it loads into our model
with ``import_state_dict(ours, ref.state_dict(), "original")``.

Comparing codes: a code is an argmin over distances, so two correct float32 implementations can only
disagree where the two nearest codes are (nearly) tied. :func:`normalise_reference_latents` and
:func:`seed_reference_codebooks` make such ties rare and :func:`near_tie_report` tells a tie from a real
disagreement; :func:`first_divergence` finds the first layer at which two models part ways.

Priors: add ``build_reference_prior``-style helpers here when the priors get oracle tests (they are built
by ``jukebox_infer.make_models.make_prior(hps, vqvae, device)`` with ``restore_prior=""``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io

import torch

#: The released VQ-VAE's hop length per level (level 0 = bottom).
HOP_LENGTHS = (8, 32, 128)


def jukebox_infer_available() -> bool:
    """Whether the reference package ``jukebox_infer`` can be imported (without importing it)."""
    return importlib.util.find_spec("jukebox_infer") is not None


def build_reference_vqvae(
    device: str | torch.device = "cpu", seed: int = 0, sample_length: int = 2**20
) -> torch.nn.Module:
    """jukebox-infer's VQ-VAE with the released hyperparameters and random (seeded) weights, in eval mode.

    Args:
        device: where to build it; CPU works without any patching.
        seed: ``torch.manual_seed`` used for the weight initialisation (the global RNG state is restored).
        sample_length: the reference's nominal window (only affects its ``z_shapes``/``sample``).

    Returns:
        ``jukebox_infer.vqvae.vqvae.VQVAE`` with all-zero codebooks (see :func:`seed_reference_codebooks`).
        Its encode/decode conventions are described in :func:`reference_encode` / :func:`reference_decode`.
    """
    from jukebox_infer.hparams import setup_hparams
    from jukebox_infer.make_models import make_vqvae

    hps = setup_hparams("vqvae", {"restore_vqvae": "", "sample_length": sample_length})
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()):
        torch.manual_seed(seed)
        model = make_vqvae(hps, device=str(device), auto_download=False)
    return model


def reference_hparams() -> dict:
    """The released VQ-VAE hyperparameters as jukebox-infer resolves them (for reports and sanity checks)."""
    from jukebox_infer.hparams import setup_hparams

    hps = setup_hparams("vqvae", {"restore_vqvae": ""})
    keys = [
        "sr",
        "levels",
        "downs_t",
        "strides_t",
        "emb_width",
        "l_bins",
        "l_mu",
        "commit",
        "width",
        "depth",
        "hvqvae_multipliers",
        "m_conv",
        "dilation_growth_rate",
        "dilation_cycle",
        "vqvae_reverse_decoder_dilation",
        "spectral",
        "multispectral",
    ]
    return {k: hps[k] for k in keys}


def _as_ntc(x: torch.Tensor) -> torch.Tensor:
    """Our audio layout ([B, T] or [B, 1, T]) -> the reference's [N, T, 1]."""
    if x.dim() == 3:
        x = x[:, 0]
    return x.float().unsqueeze(-1)


@torch.inference_mode()
def reference_latents(ref: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Pre-quantisation latents of every level, each [B, 64, T // hop] (the output of encoder L's last block).

    ``x`` is [B, T] or [B, 1, T]; this is what ``ref._encode`` feeds to the bottleneck.
    """
    x_in = ref.preprocess(_as_ntc(x))  # [N, T, 1] -> [N, 1, T]
    return [encoder(x_in)[-1] for encoder in ref.encoders]


@torch.inference_mode()
def reference_encode(ref: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Codes of every level from the reference, list index = level, each LongTensor [B, T // hop].

    The reference's ``encode(x, start_level=0, end_level=levels, bs_chunks=1)`` expects audio as
    **[N, T, 1]** (it permutes to [N, 1, T] and casts to float32), always runs all encoders in one pass over
    the whole signal, and returns the codes of levels start_level..end_level-1. This helper accepts our
    layout ([B, T] or [B, 1, T]) and converts.
    """
    return list(ref.encode(_as_ntc(x)))


@torch.inference_mode()
def reference_decode(ref: torch.nn.Module, codes: torch.Tensor, level: int) -> torch.Tensor:
    """Audio [B, N * hop] decoded by the reference from level-``level`` codes [B, N].

    The reference's ``decode(zs, start_level, end_level)`` takes ``zs`` ordered from ``start_level`` upward
    (``len(zs) == end_level - start_level``), dequantises them all but decodes **only** ``zs[0]`` with decoder
    ``start_level``, and returns [N, T, 1]. We pass ``[codes]`` with
    ``start_level=level, end_level=level + 1`` and drop the channel axis.
    """
    out = ref.decode([codes], start_level=level, end_level=level + 1)
    return out[..., 0]


@torch.inference_mode()
def normalise_reference_latents(ref: torch.nn.Module, x: torch.Tensor) -> None:
    """Rescale each encoder's output projection so its latents on ``x`` have zero mean and unit std per channel.

    Why: with PyTorch's default initialisation the encoders' latents barely move over time (per-channel std
    ~0.005-0.02 around a mean of ~0.15), so the distances between a latent and its two nearest codes differ
    by ~1e-6, the size of float32 rounding. Code decisions would then depend on the exact order of
    floating-point operations, and an exact comparison would be flaky rather than informative. This only
    changes the weight and bias of the last conv of every encoder (still "random weights", now with a
    data-dependent scale, like the original's data-dependent codebook init).
    """
    for encoder, latent in zip(ref.encoders, reference_latents(ref, x), strict=True):
        proj = encoder.level_blocks[-1].model[-1]  # Conv1d(width -> emb_width, 3, 1, 1)
        mean, std = latent.mean(dim=(0, 2)), latent.std(dim=(0, 2)).clamp_min(1e-12)
        proj.weight.div_(std[:, None, None])
        proj.bias.sub_(mean).div_(std)


def _squared_distances(rows: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """[..., N, C] x [K, C] -> [..., N, K], the bottleneck's expansion ``||x||^2 - 2 x.k + ||k||^2``."""
    return (rows**2).sum(-1, keepdim=True) - 2 * rows @ k.T + (k**2).sum(-1)


@torch.inference_mode()
def seed_reference_codebooks(
    ref: torch.nn.Module, signals: tuple[torch.Tensor, ...], *, min_separation: float = 0.1, seed: int = 0
) -> list[int]:
    """Give every level's codebook useful values: distinct rows of its latents on ``signals``.

    Call :func:`normalise_reference_latents` first (``min_separation`` is in units of the latents' std²).

    Up to ``4 * l_bins`` latent rows of all the signals are drawn at random (seeded) and visited in that
    order; a row becomes a code when its squared distance to every code chosen so far is at least
    ``min_separation``, until ``l_bins`` codes are chosen. Unfilled codes are parked 100 std away from the
    data, so they are never chosen. Unlike the original's training init (random rows tiled with tiny noise)
    this creates no near-duplicate codes: neighbouring top-level frames are nearly identical, and codes that
    close would be ties that float32 rounding decides. Encoding the signals then uses several hundred to
    a couple of thousand distinct codes per level. Codes are taken from every signal that will be encoded:
    a latent far from all codes sees many codes at almost the same distance (more near-ties).

    Returns:
        Number of codes taken from the data (the rest are parked) per level.
    """
    gen = torch.Generator().manual_seed(seed)
    per_signal = [reference_latents(ref, s) for s in signals]
    taken = []
    for level, block in enumerate(ref.bottleneck.level_blocks):
        rows = torch.cat([lat[level].permute(0, 2, 1).reshape(-1, lat[level].shape[1]) for lat in per_signal])
        rows = rows.float().cpu()
        bins, width = block.k.shape
        k = rows.mean(0) + 100 * rows.std(0) * torch.randn(bins, width, generator=gen)
        candidates = rows[torch.randperm(rows.shape[0], generator=gen)[: 4 * bins]]
        chosen: list[int] = []
        available = torch.ones(candidates.shape[0], dtype=torch.bool)
        for i in range(candidates.shape[0]):
            if available[i]:
                chosen.append(i)
                available &= ((candidates - candidates[i]) ** 2).sum(-1) >= min_separation
                if len(chosen) == bins:
                    break
        k[: len(chosen)] = candidates[chosen]
        block.k.copy_(k.to(block.k.device))
        taken.append(len(chosen))
    return taken


@torch.inference_mode()
def code_distances(ref: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Per level, [B, T // hop, l_bins]: squared distance (float64) from each reference latent to each code."""
    return [
        _squared_distances(latent.permute(0, 2, 1).double(), block.k.double())
        for block, latent in zip(ref.bottleneck.level_blocks, reference_latents(ref, x), strict=True)
    ]


def near_tie_report(
    distances: torch.Tensor, expected: torch.Tensor, actual: torch.Tensor, tolerance: float
) -> tuple[int, int, str]:
    """Classify code mismatches against exact (float64) distances from the reference latents.

    A mismatch is *explained* when the reference's choice was a near-tie (second-best distance within
    ``tolerance`` of the best) and the other code is within ``tolerance`` of the best too: two correct
    implementations whose float32 latents differ by rounding may legitimately pick either there.

    Args:
        distances: [B, N, K] from :func:`code_distances`.
        expected, actual: codes [B, N] (reference, ours).

    Returns:
        (number of mismatches, number of them *not* explained by a near-tie, a description of the first few
        unexplained ones with their distances).
    """
    best = distances.min(-1).values
    second = distances.topk(2, dim=-1, largest=False).values[..., 1]
    chosen = distances.gather(-1, actual.unsqueeze(-1)).squeeze(-1)
    mismatch = expected != actual
    explained = mismatch & (second - best < tolerance) & (chosen - best < tolerance)
    unexplained = mismatch & ~explained
    lines = []
    for b, n in unexplained.nonzero().tolist()[:5]:
        lines.append(
            f"[{b}, {n}]: reference {int(expected[b, n])} (d={best[b, n]:.6g}), ours {int(actual[b, n])} "
            f"(d={chosen[b, n]:.6g}), runner-up gap {second[b, n] - best[b, n]:.3g}"
        )
    return int(mismatch.sum()), int(unexplained.sum()), "\n".join(lines)


def make_test_audio(
    seconds: float, seed: int = 0, sample_rate: int = 44100, align: int = 128
) -> torch.Tensor:
    """A deterministic, non-stationary test signal [1, T] at 44.1 kHz, peak 0.3.

    Six sines with random (seeded) base frequencies between 60 Hz and 3.8 kHz, slow vibrato and slow
    amplitude envelopes, plus white noise with periodic louder bursts. Non-stationary so that the latents
    move around and many codes get used. ``T`` is ``seconds * sample_rate`` rounded down to a multiple of
    ``align`` (the top level's hop), the lengths for which every level's code count is exact.
    """
    n = int(seconds * sample_rate) // align * align
    gen = torch.Generator().manual_seed(seed)

    def uniform(lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=gen, dtype=torch.float64))

    t = torch.arange(n, dtype=torch.float64) / sample_rate
    y = torch.zeros(n, dtype=torch.float64)
    for _ in range(6):
        f0, vib_rate, vib_depth = 60 * 2 ** uniform(0, 6), uniform(0.2, 3.2), uniform(0, 0.3)
        freq = f0 * (1 + vib_depth * torch.sin(2 * torch.pi * vib_rate * t))
        phase = torch.cumsum(2 * torch.pi * freq / sample_rate, 0)
        envelope = 0.5 + 0.5 * torch.sin(2 * torch.pi * uniform(0.3, 2.3) * t + uniform(0, 6.3))
        y += envelope * torch.sin(phase)
    bursts = (torch.sin(2 * torch.pi * 1.3 * t) > 0.6).double()
    y += (0.15 + 0.8 * bursts) * torch.randn(n, generator=gen, dtype=torch.float64)
    return (0.3 * y / y.abs().max()).float().unsqueeze(0)


def first_divergence(
    ours: torch.nn.Module,
    ref: torch.nn.Module,
    run_ours,
    run_ref,
    atol: float = 1e-5,
) -> str:
    """Localise a disagreement: the first leaf module, in the reference's call order, whose output differs.

    Both models use the original module names (e.g. ``level_blocks.0.model.1.1.model.3.3``), so leaf modules
    are matched by qualified name. ``run_ours()`` / ``run_ref()`` run the two models on the same input
    (e.g. ``lambda: ours.encoders[0](x)``). Returns a one-line description, or "" if every output agrees.
    """
    captured: dict[str, dict[str, torch.Tensor]] = {"ours": {}, "ref": {}}
    order: list[str] = []
    handles = []

    def hook_for(which: str, name: str):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                captured[which][name] = output.detach().clone()
                if which == "ref":
                    order.append(name)

        return hook

    for which, model in (("ours", ours), ("ref", ref)):
        for name, module in model.named_modules():
            if name and not any(True for _ in module.children()):
                handles.append(module.register_forward_hook(hook_for(which, name)))
    try:
        with torch.inference_mode():
            run_ours()
            run_ref()
    finally:
        for handle in handles:
            handle.remove()
    for position, name in enumerate(order, start=1):
        theirs, mine = captured["ref"][name], captured["ours"].get(name)
        if mine is None:
            return f"{name}: no module of that name ran in ours"
        if mine.shape != theirs.shape:
            return f"{name}: shape {tuple(mine.shape)} in ours vs {tuple(theirs.shape)} in the reference"
        diff = (mine.float() - theirs.float()).abs().max().item()
        if diff > atol:
            return f"{name}: max abs difference {diff:.3g} > {atol} (layer {position} of {len(order)} in call order)"
    return ""
