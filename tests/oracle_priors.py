"""Build reference priors from ``jukebox-infer`` (module ``jukebox_infer``) to use as a test oracle.

``jukebox_infer`` is a faithful inference-only port of OpenAI's original Jukebox code. It is used here ONLY to
check our re-implementation (tests and ``bench/``); nothing in ``jukebox_cli`` imports it and none of its code
is copied into the package. Nothing is downloaded: every reference prior is built from the released
*hyperparameters*, reduced in size, with random (seeded) weights.

How a reference prior is built (:func:`build_pair`):

* **Hyperparameters.** ``jukebox_infer.hparams.setup_hparams(name, overrides)`` gives the released values of
  ``upsampler_level_0``, ``upsampler_level_1``, ``prior_5b``, ``prior_5b_lyrics`` or ``prior_1b_lyrics``.
  The overrides only *reduce sizes* (width, depth, heads, n_ctx, blocks, label-table sizes, n_tokens, the
  conditioner's width/depth and the lyric encoder's width/depth/heads/blocks) and set ``restore_prior=""``
  (nothing is looked up or downloaded). Everything else (attn_order, init_scale, t_bins, genre slots,
  n_vocab, durations, merged_decoder, single_enc_dec, the conditioner's dilation rule and res_scale,
  fp16_params, ...) is the reference's own released value. Our config is built independently from our
  released preset with the *same* reductions (:class:`Reduction`), so a wrong released value on either
  side shows up as a shape mismatch or a numerical difference.
* **Factory.** ``jukebox_infer.make_models.make_prior(hps, vqvae, device)`` is the library's own factory
  (it builds ``SimplePrior``, converts Conv1D weights to half when ``fp16_params``, skips ``restore_model``
  because ``restore_prior`` is empty, and calls ``eval()`` + ``freeze_model``). It needs only four things
  from a VQ-VAE: ``l_bins`` (here the reduced codebook size), ``z_shapes``, ``downs_t`` (3, 2, 2) and
  ``strides_t`` (2, 2, 2), plus encode/decode callables it never calls while sampling; a stand-in object
  (:class:`_VQVAEShapes`) provides them, so no VQ-VAE is built.
* **CPU.** The reference asserts ``isinstance(x, torch.cuda.LongTensor)`` on token tensors (CUDA-only
  legacy types). :func:`_allow_cpu_long_tensors` replaces the ``torch`` name *inside the three reference
  modules that assert this* (``prior.prior``, ``prior.autoregressive``, ``prior.conditioners``) by a proxy
  whose ``cuda.LongTensor`` accepts an int64 tensor on any device; torch itself is untouched.
* **Weights.** :func:`randomise_weights` redraws every parameter from a seeded generator: Conv1D and
  Linear weights N(0, gain^2 / fan_in), biases and LayerNorm affine parameters non-trivial, embedding
  tables N(0, emb_std^2). This matters because the released init zeroes the cross-attention layers'
  ``c_proj`` (zero_out) and all biases, and its tiny scales make attention nearly uniform; a comparison
  on such weights would not show that cross attention or the biases are wired correctly.
* **Copying.** The reference's ``state_dict()`` uses the original key names, so
  ``import_state_dict(ours, ref.state_dict(), "original")`` loads it (tied ``x_out`` included; half
  Conv1D weights are cast to float32, the same values the reference computes with in float32).

Greedy sampling in the reference (:func:`reference_sample`): its own ``SimplePrior.sample`` with ``temp=1``
and **top_k=1**. Its ``filter_logits`` sets every logit below the largest to -inf, so the categorical draw
that follows has a one-hot distribution and always returns the argmax (an exact tie would keep both, which
random weights make practically impossible); its RNG is still consumed, so it is seeded anyway. No
monkeypatching of the draw is needed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

#: Our preset name -> the reference's hparam-set name.
REFERENCE_NAMES = {
    "upsampler_level_0": "upsampler_level_0",
    "upsampler_level_1": "upsampler_level_1",
    "5b": "prior_5b",
    "5b_lyrics": "prior_5b_lyrics",
    "1b_lyrics": "prior_1b_lyrics",
}

_VQVAE_DOWNS_T, _VQVAE_STRIDES_T = (3, 2, 2), (2, 2, 2)


# -- running the reference on the CPU ----------------------------------------------------------------------


class _AnyDeviceLongTensorMeta(type):
    def __instancecheck__(cls, obj) -> bool:
        return isinstance(obj, torch.Tensor) and obj.dtype == torch.int64


class _AnyDeviceLongTensor(metaclass=_AnyDeviceLongTensorMeta):
    """Stands in for ``torch.cuda.LongTensor`` in ``isinstance`` checks: any int64 tensor passes."""


class _CudaProxy:
    LongTensor = _AnyDeviceLongTensor

    def __getattr__(self, name: str):
        return getattr(torch.cuda, name)


class _TorchProxy:
    """``torch`` as seen by the reference's prior modules, except ``torch.cuda.LongTensor``."""

    cuda = _CudaProxy()

    def __getattr__(self, name: str):
        return getattr(torch, name)


_PATCHED_MODULES = ("jukebox_infer.prior.prior", "jukebox_infer.prior.autoregressive",
                    "jukebox_infer.prior.conditioners")  # fmt: skip


def _allow_cpu_long_tensors() -> None:
    """Let the reference's token-type assertions accept CPU tensors (idempotent; see the module docstring)."""
    for name in _PATCHED_MODULES:
        module = importlib.import_module(name)
        if not isinstance(module.t, _TorchProxy):
            module.t = _TorchProxy()


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Swallow the reference's prints and tqdm bars (both go to stdout)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


# -- reduced configurations --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reduction:
    """Sizes shrunk for a fast comparison; every other hyperparameter keeps its released value.

    ``None`` keeps the released value. Conditioner and lyric-encoder fields only apply to priors that have
    one.
    """

    width: int
    depth: int
    n_ctx: int
    blocks: int
    heads: int | None = None
    codebook_size: int = 256
    n_genres: int = 12
    n_artists: int = 20
    n_tokens: int | None = None
    cond_width: int = 32
    cond_depth: int = 9  # > the dilation cycle (8), so the cycle restarts
    enc_width: int = 32
    enc_depth: int = 3
    enc_heads: int = 4
    enc_blocks: int = 4


def our_config(preset: str, r: Reduction):
    """Our released preset ``preset`` with the sizes of ``r``."""
    from jukebox_cli.engine.models.presets import prior_config

    base = prior_config(preset)
    changes = dict(width=r.width, depth=r.depth, n_ctx=r.n_ctx, blocks=r.blocks, codebook_size=r.codebook_size,
                   n_genres=r.n_genres, n_artists=r.n_artists)  # fmt: skip
    if r.heads is not None:
        changes["heads"] = r.heads
    if r.n_tokens is not None:
        changes["n_tokens"] = r.n_tokens
    if base.conditioner is not None:
        changes["conditioner"] = dataclasses.replace(base.conditioner, width=r.cond_width, depth=r.cond_depth)
    if base.lyric_encoder is not None:
        changes["lyric_encoder"] = dataclasses.replace(
            base.lyric_encoder, width=r.enc_width, depth=r.enc_depth, heads=r.enc_heads, blocks=r.enc_blocks
        )
    return dataclasses.replace(base, **changes)


def reference_hparams(preset: str, r: Reduction):
    """The reference's released hparams of ``preset`` with the sizes of ``r`` (and no checkpoint)."""
    from jukebox_infer.hparams import setup_hparams

    name = REFERENCE_NAMES[preset]
    released = setup_hparams(name, {})
    changes = dict(restore_prior="", prior_width=r.width, prior_depth=r.depth, n_ctx=r.n_ctx, blocks=r.blocks,
                   y_bins=(r.n_genres, r.n_artists))  # fmt: skip
    if r.heads is not None:
        changes["heads"] = r.heads
    if r.n_tokens is not None:
        changes["n_tokens"] = r.n_tokens
    if released.level != 2:  # upsamplers: the conditioner
        changes.update(cond_width=r.cond_width, cond_depth=r.cond_depth)
    if released.use_tokens and not released.single_enc_dec:  # 5b_lyrics: the lyric encoder
        changes.update(prime_width=r.enc_width, prime_depth=r.enc_depth, prime_heads=r.enc_heads,
                       prime_blocks=r.enc_blocks)  # fmt: skip
    return setup_hparams(name, changes)


class _VQVAEShapes:
    """What ``make_prior`` reads from a VQ-VAE (sizes only; encode/decode are never called here)."""

    def __init__(self, codebook_size: int, level: int, n_ctx: int) -> None:
        hops = [math.prod(s**d for s, d in zip(_VQVAE_STRIDES_T[: i + 1], _VQVAE_DOWNS_T[: i + 1], strict=True))
                for i in range(3)]  # fmt: skip
        sample_length = n_ctx * hops[level]
        self.l_bins = codebook_size
        self.downs_t, self.strides_t = _VQVAE_DOWNS_T, _VQVAE_STRIDES_T
        self.z_shapes = [(sample_length // hop,) for hop in hops]

    def encode(self, *args, **kwargs):
        raise NotImplementedError

    def decode(self, *args, **kwargs):
        raise NotImplementedError


def build_reference_prior(
    preset: str, r: Reduction, *, seed: int = 0, device: str = "cpu"
) -> torch.nn.Module:
    """jukebox-infer's ``SimplePrior`` for ``preset`` reduced by ``r``, in eval mode, weights randomised."""
    from jukebox_infer.make_models import make_prior

    _allow_cpu_long_tensors()
    hps = reference_hparams(preset, r)
    shapes = _VQVAEShapes(r.codebook_size, hps.level, hps.n_ctx)
    with torch.random.fork_rng(devices=[]), _quiet():
        torch.manual_seed(seed)
        model = make_prior(hps, shapes, device=device, auto_download=False)
    randomise_weights(model, seed=seed)
    return model


# -- weights -----------------------------------------------------------------------------------------------


@torch.no_grad()
def randomise_weights(model: torch.nn.Module, *, seed: int = 0, gain: float = 0.6, qkv_gain: float = 1.5,
                      bias_std: float = 0.02,
                      ln_std: float = 0.1, emb_std: float = 0.25, token_std: float = 0.15,
                      pos_std: float = 1.0) -> None:  # fmt: skip
    """Redraw every parameter (seeded, independent of the global RNG), so nothing is zero or trivial.

    * Conv1D (the original's dense layer, ``w`` [in, out]) and Linear weights: N(0, gain^2 / fan_in), so
      activations keep their scale through the stack; the attention input projections (``c_attn``,
      ``c_enc_kv``) use the larger ``qkv_gain`` so that attention is far from uniform (with gain 0.6 the
      scores have std ~0.4 and cross attention averages the lyrics away: changing every lyric token moved
      the 5b_lyrics logits by only 0.05; with 1.5, by ~0.9). Conv1D biases: N(0, bias_std^2) (small: two
      per layer accumulate in the residual stream).
    * LayerNorm: weight 1 + N(0, ln_std^2), bias N(0, ln_std^2).
    * Label and timing tables, conditioner embedding, start token: N(0, emb_std^2).
    * Token tables (``x_emb`` of the autoregressive cores): N(0, token_std^2), smaller because tied heads
      (upsamplers, 1b_lyrics) compute logits h . x_emb[j] where h holds x_emb[previous token]: with a large
      table the previous token always wins and greedy decoding repeats one token.
    * Position tables: N(0, pos_std^2), larger: a position-dependent input keeps greedy decoding from
      settling into a short loop, so the greedy comparison covers many different tokens.
    * The upsampler conditioner's convolutions keep PyTorch's default (random) initialisation.

    Works on the reference and on our model alike (modules are matched by class, names end the same); a tied
    output head is drawn once, as the embedding.
    """
    gen = torch.Generator().manual_seed(seed)
    done: set[int] = set()

    def draw(param: torch.Tensor, std: float, mean: float = 0.0) -> None:
        if id(param) in done:
            return
        done.add(id(param))
        values = mean + std * torch.randn(param.shape, generator=gen, dtype=torch.float32)
        param.copy_(values.to(param.dtype))

    for name, module in model.named_modules():
        kind = type(module).__name__
        if isinstance(module, torch.nn.Embedding):
            is_token_table = name in ("prior.x_emb", "prime_prior.x_emb")
            draw(module.weight, token_std if is_token_table else emb_std)
        elif kind == "Conv1D":
            is_qkv = name.endswith(("attn.c_attn", "attn.c_enc_kv"))
            draw(module.w, (qkv_gain if is_qkv else gain) / math.sqrt(module.w.shape[0]))
            draw(module.b, bias_std)
        elif isinstance(module, torch.nn.LayerNorm):
            draw(module.weight, ln_std, 1.0)
            draw(module.bias, ln_std)
    for module in model.modules():  # after the embeddings: a tied x_out is the embedding, already drawn
        if isinstance(module, torch.nn.Linear):
            draw(module.weight, gain / math.sqrt(module.weight.shape[1]))
    for name, param in model.named_parameters():
        if name.endswith("pos_emb.pos_emb"):
            draw(param, pos_std)
        elif name.endswith("start_token"):
            draw(param, emb_std)


def build_pair(preset: str, r: Reduction, *, seed: int = 0, device: str = "cpu"):
    """(ours, reference): the same reduced prior on both sides with the same random weights, eval mode."""
    from jukebox_cli.engine.checkpoints.layouts import import_state_dict
    from jukebox_cli.engine.models.prior import Prior

    reference = build_reference_prior(preset, r, seed=seed, device=device)
    with torch.random.fork_rng(devices=[]):
        ours = Prior(our_config(preset, r)).to(device).eval()
    import_state_dict(ours, reference.state_dict(), "original")
    return ours, reference


# -- inputs ------------------------------------------------------------------------------------------------


def make_inputs(config, batch: int = 2, *, seed: int = 0, device: str = "cpu"):
    """(codes [N, n_ctx], labels [N, label_length], upper codes [N, n_ctx / 4] or None) for ``config``.

    Labels use the original layout ``[total_length, offset, length, artist, genres..., lyrics...]`` and lie
    inside the reference's ranges: total_length between min_duration and max_duration, offsets chosen so the
    window crosses timing-bin edges, artists and genres from the reduced tables with -1 padding (the first
    row uses every genre slot, with an unknown id 0), lyric ids from the lyric vocabulary with some leading
    0 padding.
    """
    gen = torch.Generator().manual_seed(seed)
    sr, length = config.sample_rate, config.window_samples
    codes = torch.randint(config.codebook_size, (batch, config.n_ctx), generator=gen)
    upper = None
    if config.is_upsampler:
        upper = torch.randint(config.codebook_size, (batch, config.n_ctx // config.conditioner.upsampling),
                              generator=gen)  # fmt: skip
    rows = []
    for i in range(batch):
        min_s = config.min_duration or 30.0
        total = int((min_s + 40.0 + 70.0 * i) * sr)
        # A multiple of the absolute-position bin plus a bit less than the window: the window straddles an edge.
        bin_samples = (config.max_duration or 600.0) * sr / config.t_bins
        offset = int((3 + i) * bin_samples - 0.4 * length) if config.include_timing else 4096 * (i + 1)
        offset = max(0, min(offset, total - length))
        artist = int(torch.randint(config.n_artists, (1,), generator=gen))
        genres = [-1] * config.max_genres
        n_used = config.max_genres if i == 0 else max(1, config.max_genres // 2)
        for g in range(n_used):
            genres[g] = int(torch.randint(config.n_genres, (1,), generator=gen))
        if i == 0 and config.max_genres > 1:
            genres[1] = 0  # "unknown" is a real embedding, not padding
        lyrics = torch.randint(1, config.n_vocab, (config.n_tokens,), generator=gen).tolist()
        pad = config.n_tokens // 8 * i
        lyrics[:pad] = [0] * pad
        rows.append([total, offset, length, artist, *genres, *lyrics])
    labels = torch.tensor(rows, dtype=torch.long)
    return codes.to(device), labels.to(device), None if upper is None else upper.to(device)


# -- the reference's outputs -------------------------------------------------------------------------------


@torch.no_grad()
def reference_logits(reference, codes, labels, upper=None) -> tuple[torch.Tensor, dict]:
    """Teacher-forced logits from ``SimplePrior.z_forward(get_preds=True)`` and its losses.

    Returns:
        (logits [N, L, bins] over the music positions, or for 1b_lyrics over the merged lyrics + music
        sequence with music ids shifted by n_vocab; {"loss", "gen_loss", "prime_loss"} in bits).
    """
    preds, losses = [], []
    for i in range(codes.shape[0]):
        # One row at a time: the lyric-loss path views a slice of y that is only contiguous for one row (the
        # original trained with one sample per GPU). Equal-length rows: the batch loss is the mean of rows'.
        z_conds = None if upper is None else [upper[i : i + 1]]
        with _quiet():
            loss, metrics = reference.z_forward(z=codes[i : i + 1], z_conds=z_conds, y=labels[i : i + 1],
                                                get_preds=True)  # fmt: skip
        preds.append(metrics["preds"])
        losses.append(torch.stack([loss, metrics["gen_loss"], metrics["prime_loss"]]))
    mean = torch.stack(losses).mean(0)
    return torch.cat(preds), {"loss": mean[0], "gen_loss": mean[1], "prime_loss": mean[2]}


@torch.no_grad()
def reference_sample(reference, context, n_new, labels, upper=None, *, chunk_size=None, top_k=1,
                     temperature=1.0, fp16=False, seed=0) -> torch.Tensor:  # fmt: skip
    """The reference's own sampler for one window: [N, K + n_new] codes (greedy with the default top_k=1).

    ``SimplePrior.sample`` with ``z=context`` (ancestral when K == 0, else primed in chunks of
    ``chunk_size``) and ``sample_tokens = K + n_new`` (it adds the lyric tokens itself for 1b_lyrics);
    ``fp16`` is its half-precision sampling flag.
    """
    batch = labels.shape[0]
    z_conds = None if upper is None else [upper]
    z = context if context is not None and context.shape[1] > 0 else None
    n_known = 0 if z is None else z.shape[1]
    with torch.random.fork_rng(devices=[]), _quiet():
        torch.manual_seed(seed)
        out = reference.sample(batch, z=z, z_conds=z_conds, y=labels, fp16=fp16, temp=temperature, top_k=top_k,
                               top_p=0.0, chunk_size=chunk_size, sample_tokens=n_known + n_new)  # fmt: skip
    return out.view(batch, -1)
