"""The hierarchical VQ-VAE: audio -> codes at three levels -> audio (see docs/ARCHITECTURE.md).

Level convention (used everywhere in jukebox-cli): level 0 is the bottom (finest, hop 8 in the released
model), level 2 the top (coarsest, hop 128). Each level has its own encoder from raw audio, its own codebook
and its own decoder; nothing is shared between levels.

Audio at this API is ``[B, T]`` (or ``[B, 1, T]``) float32 at ``config.sample_rate``; codes are
``[B, T // hop]``.
Long inputs are processed in overlapping chunks wider than the receptive field, so memory is bounded and the
result is the same as one pass over the whole signal.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from jukebox_cli.engine.configs import DictConfig
from jukebox_cli.engine.errors import ConfigError, InvalidAudio
from jukebox_cli.engine.models.bottleneck import Bottleneck, QuantizeOutput
from jukebox_cli.engine.models.encdec import Decoder, Encoder, receptive_reach
from jukebox_cli.engine.progress import Advanced, ProgressCallback, StageFinished, StageStarted, noop


@dataclass(frozen=True)
class VQVAEConfig(DictConfig):
    """Hyperparameters of a VQ-VAE; defaults are the released model's (original names noted)."""

    config_name = "VQ-VAE config"

    sample_rate: int = 44100  # sr
    levels: int = 3
    downs_t: tuple[int, ...] = (3, 2, 2)
    strides_t: tuple[int, ...] = (2, 2, 2)
    emb_width: int = 64
    codebook_size: int = 2048  # l_bins
    ema_decay: float = 0.99  # l_mu
    revival_threshold: float = 1.0
    width: int = 32
    depth: int = 4
    multipliers: tuple[int, ...] = (2, 1, 1)  # hvqvae_multipliers: width and depth per level
    m_conv: float = 1.0
    dilation_growth_rate: int = 3
    dilation_cycle: int | None = None
    reverse_decoder_dilation: bool = True  # vqvae_reverse_decoder_dilation
    res_scale: bool = False
    input_channels: int = 1
    # Training losses (see `audio.metrics`); they do not change the architecture.
    commit: float = 0.02
    spectral: float = 0.0
    multispectral: float = 1.0
    lmix_l1: float = 0.0
    lmix_l2: float = 1.0
    lmix_linf: float = 0.02
    linf_k: int = 2048

    def __post_init__(self) -> None:
        for name in ("downs_t", "strides_t", "multipliers"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
            if len(getattr(self, name)) != self.levels:
                raise ConfigError(
                    f"VQ-VAE config: {name} needs one entry per level ({self.levels}), got {value}."
                )
        positive = ("sample_rate", "levels", "emb_width", "codebook_size", "width", "depth")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(f"VQ-VAE config: {name} must be positive, got {getattr(self, name)}.")
        if any(s < 2 for s in self.strides_t) or any(d < 1 for d in self.downs_t):
            raise ConfigError("VQ-VAE config: every stride must be >= 2 and every downs_t >= 1.")
        if not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"VQ-VAE config: ema_decay must be in (0, 1), got {self.ema_decay}.")

    @property
    def hop_lengths(self) -> tuple[int, ...]:
        """Audio samples per code at each level (8, 32, 128 for the released model)."""
        hops, hop = [], 1
        for down, stride in zip(self.downs_t, self.strides_t, strict=True):
            hop *= stride**down
            hops.append(hop)
        return tuple(hops)


@dataclass
class VQVAEOutput:
    """Training forward result: one reconstruction per level and the bottleneck outputs."""

    recons: list[torch.Tensor]  # per level, [B, T]
    quantized: list[QuantizeOutput] = field(default_factory=list)

    @property
    def commit_loss(self) -> torch.Tensor:
        return sum(q.commit_loss for q in self.quantized)


def _as_batch(x: torch.Tensor) -> torch.Tensor:
    """Accept [B, T] or [B, 1, T]; return float32 [B, 1, T]."""
    if x.dim() == 2:
        x = x.unsqueeze(1)  # (B, 1, T)
    if x.dim() != 3 or x.shape[1] != 1:
        raise ConfigError(f"Audio must be [B, T] or [B, 1, T] (mono); got shape {tuple(x.shape)}.")
    return x.float()


class VQVAE(nn.Module):
    """Three (or ``levels``) independent encoder/codebook/decoder stacks over the same audio."""

    def __init__(self, config: VQVAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for level in range(config.levels):
            mult = config.multipliers[level]
            width, depth = config.width * mult, config.depth * mult
            resnet = {
                "m_conv": config.m_conv,
                "growth_rate": config.dilation_growth_rate,
                "cycle": config.dilation_cycle,
                "res_scale": config.res_scale,
            }
            blocks = (config.downs_t[: level + 1], config.strides_t[: level + 1])
            self.encoders.append(
                Encoder(config.input_channels, config.emb_width, *blocks, width, depth, **resnet)
            )
            self.decoders.append(
                Decoder(
                    config.input_channels,
                    config.emb_width,
                    *blocks,
                    width,
                    depth,
                    reverse_dilation=config.reverse_decoder_dilation,
                    **resnet,
                )
            )
        self.bottleneck = Bottleneck(
            config.levels, config.codebook_size, config.emb_width, config.ema_decay, config.revival_threshold
        )

    def set_revival_threshold(self, threshold: float) -> None:
        """Change the dead-code threshold of every codebook (fine-tuning or small-batch training)."""
        if not threshold >= 0:
            raise ConfigError(f"The revival threshold must be at least 0, got {threshold}.")
        self.config = replace(self.config, revival_threshold=threshold)
        for level in range(self.levels):
            self.bottleneck[level].threshold = threshold

    # -- geometry ------------------------------------------------------------------------------------

    @property
    def levels(self) -> int:
        return self.config.levels

    @property
    def hop_lengths(self) -> tuple[int, ...]:
        return self.config.hop_lengths

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def encoder_context(self, level: int) -> int:
        """Samples of context a chunk needs on each side, a multiple of the top hop (keeps chunks aligned)."""
        align = self.hop_lengths[-1]
        return math.ceil(receptive_reach(self.encoders[level].convolutions()) / align) * align

    def decoder_context(self, level: int) -> int:
        """Codes of context a chunk of level-``level`` codes needs on each side."""
        hop = self.hop_lengths[level]
        return math.ceil(receptive_reach(self.decoders[level].convolutions(), input_step=hop) / hop)

    def _check_levels(self, levels: Sequence[int]) -> None:
        bad = [lv for lv in levels if not 0 <= lv < self.levels]
        if bad:
            raise ConfigError(f"Level(s) {bad} do not exist; this VQ-VAE has levels 0..{self.levels - 1}.")

    # -- inference -----------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_level(
        self,
        x: torch.Tensor,
        level: int,
        *,
        chunk_samples: int | None = 2**19,
        progress: ProgressCallback = noop,
    ) -> torch.Tensor:
        """Codes of one level for audio ``x`` [B, T] or [B, 1, T].

        Args:
            x: float audio at ``sample_rate``.
            level: which level's encoder and codebook to use.
            chunk_samples: process at most this many samples (plus context) at a time; None for one pass.
            progress: receives a ``"encode level L"`` stage counted in chunks.

        Returns:
            LongTensor [B, T // hop_lengths[level]].

        Raises:
            InvalidAudio: if ``x`` is shorter than one code of this level.
        """
        self._check_levels([level])
        x = _as_batch(x).to(self.bottleneck[level].k.device)
        total, hop = x.shape[-1], self.hop_lengths[level]
        if total < hop:
            raise InvalidAudio(
                f"Audio of {total} samples is shorter than one level-{level} code ({hop} samples)."
            )
        stage = f"encode level {level}"
        stream = self.level_encoder(level, chunk_samples=chunk_samples, progress=progress, stage=stage)
        progress(
            StageStarted(stage, len(_chunk_spans(total, stream.spans.chunk, stream.spans.context)), "chunk")
        )
        pieces = [stream.push(x[:, 0]), stream.finish()]
        progress(StageFinished(stage))
        return torch.cat(pieces, dim=1)

    def level_encoder(
        self,
        level: int,
        *,
        chunk_samples: int | None = 2**19,
        progress: ProgressCallback = noop,
        stage: str = "",
    ) -> LevelEncoder:
        """A streaming encoder of one level: audio pushed piece by piece, codes out as soon as they are known.

        Its codes equal :meth:`encode_level`'s on the whole signal; memory holds one chunk plus context.
        ``progress`` gets ``Advanced(stage)`` per chunk encoded.
        """
        self._check_levels([level])
        return LevelEncoder(self, level, _aligned(chunk_samples, self.hop_lengths[-1]), progress, stage)

    def level_decoder(
        self,
        level: int,
        *,
        chunk_samples: int | None = 2**19,
        progress: ProgressCallback = noop,
        stage: str = "",
    ) -> LevelDecoder:
        """A streaming decoder of one level: codes pushed piece by piece, audio out as soon as it is known.

        Its audio equals :meth:`decode`'s on the whole code sequence; memory holds one chunk plus context.
        ``progress`` gets ``Advanced(stage)`` per chunk decoded.
        """
        self._check_levels([level])
        hop = self.hop_lengths[level]
        chunk = None if chunk_samples is None else max(1, chunk_samples // hop)
        return LevelDecoder(self, level, chunk, progress, stage)

    def encode(
        self,
        x: torch.Tensor,
        *,
        chunk_samples: int | None = 2**19,
        progress: ProgressCallback = noop,
    ) -> list[torch.Tensor]:
        """Codes of every level (list index = level), each [B, T // hop]. See :meth:`encode_level`."""
        return [
            self.encode_level(x, level, chunk_samples=chunk_samples, progress=progress)
            for level in range(self.levels)
        ]

    @torch.no_grad()
    def decode(
        self,
        codes: torch.Tensor | Sequence[torch.Tensor],
        level: int,
        *,
        chunk_samples: int | None = 2**19,
        progress: ProgressCallback = noop,
    ) -> torch.Tensor:
        """Audio [B, N * hop] from level-``level`` codes, using only that level's decoder, as the original.

        Args:
            codes: LongTensor [B, N] of this level, or a per-level list (``codes[level]`` is used).
            level: which codebook and decoder to use.
            chunk_samples: decode at most this many output samples (plus context) at a time; None: one pass.
            progress: receives a ``"decode level L"`` stage counted in chunks.

        Returns:
            Float tensor [B, N * hop_lengths[level]], not clipped (outputs can exceed [-1, 1]).
        """
        self._check_levels([level])
        if not isinstance(codes, torch.Tensor):
            codes = codes[level]
        if codes.dim() != 2:
            raise ConfigError(f"Codes must be [B, N]; got shape {tuple(codes.shape)}.")
        codebook = self.bottleneck[level]
        codes = codes.to(codebook.k.device)
        if (
            codes.numel()
            and not codes.is_meta
            and (codes.min() < 0 or codes.max() >= self.config.codebook_size)
        ):
            raise ConfigError(
                f"Codes must lie in [0, {self.config.codebook_size}); got {codes.min()}..{codes.max()}."
            )
        if codes.shape[1] == 0:
            return torch.zeros(codes.shape[0], 0, device=codes.device)
        stage = f"decode level {level}"
        stream = self.level_decoder(level, chunk_samples=chunk_samples, progress=progress, stage=stage)
        n_spans = len(_chunk_spans(codes.shape[1], stream.spans.chunk, stream.spans.context))
        progress(StageStarted(stage, n_spans, "chunk"))
        pieces = [stream.push(codes), stream.finish()]
        progress(StageFinished(stage))
        return torch.cat(pieces, dim=1)

    # -- training ------------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> VQVAEOutput:
        """Encode, quantise (updating codebooks in training mode) and decode every level independently."""
        x = _as_batch(x)
        recons, quantized = [], []
        for level in range(self.levels):
            q = self.bottleneck[level](self.encoders[level](x))
            quantized.append(q)
            recons.append(self.decoders[level](q.x_q)[:, 0])
        return VQVAEOutput(recons=recons, quantized=quantized)


def _aligned(chunk: int | None, align: int) -> int | None:
    return None if chunk is None else max(align, chunk // align * align)


def _chunk_spans(total: int, chunk: int | None, context: int) -> list[tuple[int, int, int, int]]:
    """(start, end, lo, hi) per chunk: keep [start, end), compute on [lo, hi) = [start, end) +- context."""
    if chunk is None or total <= chunk:
        return [(0, total, 0, total)]
    return [
        (start, min(start + chunk, total), max(0, start - context), min(total, start + chunk + context))
        for start in range(0, total, chunk)
    ]


class _SpanStream:
    """Cuts a sequence that arrives in pieces into the spans of ``_chunk_spans``, before its length is known.

    A span is emitted as soon as its right context has arrived; the rest when the stream ends. Only one
    chunk plus context on each side is held, so a long input costs no more memory than a short one.
    """

    def __init__(self, chunk: int | None, context: int) -> None:
        self.chunk, self.context = chunk, context
        self._buffer: torch.Tensor | None = None  # (B, n): the sequence from index `_buffer_start` on
        self._buffer_start = 0
        self._next = 0  # start of the next span to emit
        self.total = 0
        self.batch = 1

    def push(self, piece: torch.Tensor) -> list[tuple[int, int, int, torch.Tensor]]:
        """Adds ``piece`` [B, n]; returns (start, end, lo, window = sequence[lo:hi]) of each span now complete."""
        self._buffer = piece if self._buffer is None else torch.cat([self._buffer, piece], dim=1)
        self.total += piece.shape[1]
        self.batch = piece.shape[0]
        spans = []
        if self.chunk is None:
            return spans
        while self._next + self.chunk + self.context <= self.total:
            spans.append(self._span(self._next, self._next + self.chunk))
        return spans

    def finish(self) -> list[tuple[int, int, int, torch.Tensor]]:
        """The spans left once the sequence has ended."""
        spans = []
        while self._next < self.total:
            end = self.total if self.chunk is None else min(self._next + self.chunk, self.total)
            spans.append(self._span(self._next, end))
        return spans

    def _span(self, start: int, end: int) -> tuple[int, int, int, torch.Tensor]:
        assert self._buffer is not None
        lo, hi = max(0, start - self.context), min(self.total, end + self.context)
        window = self._buffer[:, lo - self._buffer_start : hi - self._buffer_start]
        self._next = end
        keep_from = max(0, end - self.context)  # the next span's left context
        self._buffer = self._buffer[:, keep_from - self._buffer_start :]
        self._buffer_start = keep_from
        return start, end, lo, window


class LevelEncoder:
    """Streaming encoder of one VQ-VAE level (build it with :meth:`VQVAE.level_encoder`)."""

    def __init__(
        self, vqvae: VQVAE, level: int, chunk: int | None, progress: ProgressCallback, stage: str
    ) -> None:
        self.level, self.hop = level, vqvae.hop_lengths[level]
        self._encoder, self._codebook = vqvae.encoders[level], vqvae.bottleneck[level]
        self.spans = _SpanStream(chunk, vqvae.encoder_context(level))
        self._progress, self._stage = progress, stage

    @torch.no_grad()
    def push(self, audio: torch.Tensor) -> torch.Tensor:
        """Adds audio [B, n]; returns the codes [B, k] that are now final (k may be 0)."""
        return self._encode(self.spans.push(audio.float().to(self._codebook.k.device)))

    @torch.no_grad()
    def finish(self) -> torch.Tensor:
        """The remaining codes. Raises InvalidAudio if the whole input was shorter than one code."""
        if self.spans.total < self.hop:
            raise InvalidAudio(
                f"Audio of {self.spans.total} samples is shorter than one level-{self.level} code "
                f"({self.hop} samples)."
            )
        return self._encode(self.spans.finish())

    def _encode(self, spans: list) -> torch.Tensor:
        pieces = [torch.zeros(self.spans.batch, 0, dtype=torch.long, device=self._codebook.k.device)]
        for start, end, lo, window in spans:
            codes = self._codebook.encode(self._encoder(window.unsqueeze(1)))
            first = (start - lo) // self.hop
            pieces.append(codes[:, first : first + end // self.hop - start // self.hop])
            self._progress(Advanced(self._stage))
        return torch.cat(pieces, dim=1)


class LevelDecoder:
    """Streaming decoder of one VQ-VAE level (build it with :meth:`VQVAE.level_decoder`)."""

    def __init__(
        self, vqvae: VQVAE, level: int, chunk: int | None, progress: ProgressCallback, stage: str
    ) -> None:
        self.hop, self._codebook_size = vqvae.hop_lengths[level], vqvae.config.codebook_size
        self._decoder, self._codebook = vqvae.decoders[level], vqvae.bottleneck[level]
        self.spans = _SpanStream(chunk, vqvae.decoder_context(level))
        self._progress, self._stage = progress, stage

    @torch.no_grad()
    def push(self, codes: torch.Tensor) -> torch.Tensor:
        """Adds codes [B, k]; returns the audio [B, m * hop] that is now final (m may be 0)."""
        codes = codes.to(self._codebook.k.device)
        if codes.numel() and not codes.is_meta and (codes.min() < 0 or codes.max() >= self._codebook_size):
            raise ConfigError(
                f"Codes must lie in [0, {self._codebook_size}); got {codes.min()}..{codes.max()}."
            )
        return self._decode(self.spans.push(codes))

    @torch.no_grad()
    def finish(self) -> torch.Tensor:
        """The remaining audio."""
        return self._decode(self.spans.finish())

    def _decode(self, spans: list) -> torch.Tensor:
        pieces = [torch.zeros(self.spans.batch, 0, device=self._codebook.k.device)]
        for start, end, lo, window in spans:
            audio = self._decoder(self._codebook.dequantise(window))  # (B, 1, (hi - lo) * hop)
            pieces.append(audio[:, 0, (start - lo) * self.hop : (end - lo) * self.hop])
            self._progress(Advanced(self._stage))
        return torch.cat(pieces, dim=1)
