"""Priors: the top-level prior and the upsamplers, one class configured by flags.

Module names mirror the released checkpoints: ``conditioner_blocks.0`` (upsamplers), ``y_emb`` (labels),
``prime_prior``/``prime_state_proj``/``prime_state_ln``/``prime_x_out`` (the 5b_lyrics lyric encoder) and
``prior`` (the autoregressive core, whose ``x_out`` is tied to ``x_emb`` unless ``merged_decoder``).

Two lyric designs: 1b_lyrics puts the lyric tokens in the same sequence as the music (``single_enc_dec``,
vocabulary n_vocab + codebook_size, music ids shifted by n_vocab); 5b_lyrics encodes the lyrics separately and
reads them through cross-attention layers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from jukebox_cli.engine.configs import DictConfig
from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.models.encdec import DecoderConvBlock
from jukebox_cli.engine.models.transformer import Conv1D, KVCache, LayerNorm, Transformer, attention_pattern

# -- embeddings --------------------------------------------------------------------------------------


class SimpleEmbedding(nn.Module):
    """An embedding table stored as ``.emb`` (the original's key layout)."""

    def __init__(self, bins: int, width: int, init_scale: float) -> None:
        super().__init__()
        self.emb = nn.Embedding(bins, width)
        nn.init.normal_(self.emb.weight, std=0.01 * init_scale)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.emb(ids)


class RangeEmbedding(nn.Module):
    """Embeds positions in [pos_min, pos_max) by binning them into ``bins`` buckets.

    With ``n_time`` > 1 it interpolates ``n_time`` positions from start to end (end excluded). All arithmetic
    is float32 so the bins match the original's at their edges.
    """

    def __init__(self, n_time: int, bins: int, pos_range: tuple[float, float], width: int, init_scale: float,
                 clamp: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.n_time, self.bins, self.clamp = n_time, bins, clamp
        self.pos_min, self.pos_max = pos_range
        self.emb = nn.Embedding(bins, width)
        nn.init.normal_(self.emb.weight, std=0.01 * init_scale)

    def forward(self, start: torch.Tensor, end: torch.Tensor | None = None) -> torch.Tensor:
        """start/end [N, 1] float -> [N, n_time, width]."""
        if self.n_time == 1:
            position = start.float()
        else:
            steps = (
                torch.arange(self.n_time, dtype=torch.float32, device=start.device).view(1, -1) / self.n_time
            )
            position = start.float() + (end.float() - start.float()) * steps  # (N, n_time)
        if self.clamp:
            position = position.clamp(self.pos_min, self.pos_max)
        normalised = (position - self.pos_min) / (self.pos_max - self.pos_min)
        return self.emb((self.bins * normalised).floor().long().detach())


class LabelConditioner(nn.Module):
    """Artist + genre start vector (``y_cond``) and, for the top level, timing embeddings (``y_pos``)."""

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        width, scale = config.width, config.init_scale
        self.bow_genre_emb = SimpleEmbedding(config.n_genres, width, scale)
        self.artist_emb = SimpleEmbedding(config.n_artists, width, scale)
        self.include_timing = config.include_timing
        if self.include_timing:
            sr = config.sample_rate
            self.total_length_range = (config.min_duration * sr, config.max_duration * sr)
            self.total_length_emb = RangeEmbedding(1, config.t_bins, self.total_length_range, width, scale)
            self.absolute_pos_emb = RangeEmbedding(config.n_ctx, config.t_bins, (0.0, config.max_duration * sr),
                                                   width, scale)  # fmt: skip
            self.relative_pos_emb = RangeEmbedding(
                config.n_ctx, config.t_bins, (0.0, 1.0), width, scale, clamp=True
            )

    def check(self, labels: torch.Tensor) -> None:
        """Raise a clear ConfigError where the original would fail an assertion: a timing value outside the
        range its embedding bins."""
        if not self.include_timing:
            return
        total, offset, length = labels[:, 0].double(), labels[:, 1].double(), labels[:, 2].double()
        lo, hi = self.total_length_range
        if bool(((total < lo) | (total >= hi)).any()):
            raise ConfigError(
                f"The song's total length must be at least {lo:.0f} and below {hi:.0f} samples for this model "
                f"(got {int(total.min())}..{int(total.max())})."
            )
        if bool(((offset < 0) | (offset >= total)).any()):
            raise ConfigError("A window starts at or after the song's total length.")
        if bool((offset + length > self.absolute_pos_emb.pos_max).any()):
            raise ConfigError("A window ends after the model's maximum duration.")

    def forward(self, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """labels [N, 4 + G] -> y_cond [N, 1, W], y_pos [N, n_ctx, W] (None for upsamplers)."""
        total, offset, length = labels[:, 0:1], labels[:, 1:2], labels[:, 2:3]
        artist, genres = labels[:, 3:4], labels[:, 4:]
        artist_emb = self.artist_emb(artist)  # (N, 1, W)
        # -1 pads the genre slots; an unknown genre is id 0, a real embedding, so it is *not* masked.
        mask = (genres >= 0).float().unsqueeze(2)
        genre_emb = (self.bow_genre_emb(genres.clamp(min=0)) * mask).sum(dim=1, keepdim=True)  # (N, 1, W)
        start = genre_emb + artist_emb
        if not self.include_timing:
            return start, None
        total, begin, end = total.float(), offset.float(), (offset + length).float()
        y_pos = (
            self.total_length_emb(total)
            + self.absolute_pos_emb(begin, end)
            + self.relative_pos_emb(begin / total, end / total)
        )
        return start, y_pos


class PositionEmbedding(nn.Module):
    def __init__(self, length: int, width: int, init_scale: float) -> None:
        super().__init__()
        self.pos_emb = nn.Parameter(torch.randn(length, width) * 0.01 * init_scale)

    def forward(self) -> torch.Tensor:
        return self.pos_emb


class Conditioner(nn.Module):
    """Upsampler conditioning: embed the upper level's codes and upsample them x4 with a conv stack."""

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        cond = config.conditioner
        self.x_emb = nn.Embedding(config.codebook_size, config.width)
        nn.init.normal_(self.x_emb.weight, std=0.02 * config.init_scale)
        self.cond = DecoderConvBlock(
            config.width, config.width, cond.width, cond.depth, cond.down_t, cond.stride,
            m_conv=cond.m_conv, growth_rate=cond.dilation_growth_rate, cycle=cond.dilation_cycle,
            res_scale=cond.res_scale, blocks_name="blocks",
        )  # fmt: skip
        self.ln = LayerNorm(config.width)

    def forward(self, upper_codes: torch.Tensor) -> torch.Tensor:
        """[N, n_ctx / upsampling] codes of the level above -> x_cond [N, n_ctx, W]."""
        x = self.x_emb(upper_codes).permute(0, 2, 1)  # (N, W, T_upper)
        x = self.cond(x).permute(0, 2, 1)  # (N, n_ctx, W)
        return self.ln(x)


class AutoregressiveCore(nn.Module):
    """Token embedding, position table, Transformer and output head over one sequence."""

    def __init__(
        self,
        *,
        bins: int,
        width: int,
        length: int,
        depth: int,
        heads: int,
        attn_funcs: list[int],
        blocks: int | None,
        init_scale: float,
        m_attn: float,
        m_mlp: float,
        prime_len: int | None,
        merged_decoder: bool,
        has_start_token: bool,
        only_encode: bool,
    ) -> None:
        super().__init__()
        self.width, self.length, self.bins = width, length, bins
        self.add_cond_after_transformer = not merged_decoder
        self.only_encode = only_encode
        if has_start_token:
            self.start_token = nn.Parameter(torch.randn(1, width) * 0.01 * init_scale)
        self.x_emb = nn.Embedding(bins, width)
        nn.init.normal_(self.x_emb.weight, std=0.02 * init_scale)
        self.pos_emb = PositionEmbedding(length, width, init_scale)
        self.transformer = Transformer(
            width, length, depth, heads, attn_funcs, blocks=blocks, m_attn=m_attn, m_mlp=m_mlp,
            init_scale=init_scale, prime_len=prime_len,
        )  # fmt: skip
        if not only_encode:
            self.x_out = nn.Linear(width, bins, bias=False)
            if not merged_decoder:
                self.x_out.weight = self.x_emb.weight  # tied output head (upsamplers, 1b_lyrics)

    def embed(self, prev_tokens: torch.Tensor, start: int, x_cond: torch.Tensor, y_cond: torch.Tensor | None,
              dtype: torch.dtype = torch.float32) -> torch.Tensor:  # fmt: skip
        """Input vectors of positions [start, start + n): prev_tokens [N, n] are the tokens at positions
        start - 1 .. start + n - 2 (the first is ignored when start == 0: the start vector goes there)."""
        h = self.x_emb(prev_tokens)  # (N, n, W)
        if start == 0:
            first = (
                y_cond.view(-1, self.width) if y_cond is not None else self.start_token.expand(h.shape[0], -1)
            )
            h = torch.cat([first.unsqueeze(1).to(h.dtype), h[:, 1:]], dim=1)
        n = h.shape[1]
        return (h + self.pos_emb()[start : start + n] + x_cond).to(dtype)

    def head(self, h: torch.Tensor, x_cond: torch.Tensor) -> torch.Tensor:
        """Transformer output -> float32 logits (or the encoder's activations)."""
        h = h.float()
        if self.add_cond_after_transformer:
            h = h + x_cond
        return h if self.only_encode else self.x_out(h)

    def forward(
        self,
        tokens: torch.Tensor,
        x_cond: torch.Tensor | None = None,
        y_cond: torch.Tensor | None = None,
        encoder_kv: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Teacher-forced pass: tokens [N, L] -> logits [N, L, bins] (position t predicts token t)."""
        batch = tokens.shape[0]
        if x_cond is None:
            x_cond = torch.zeros(batch, 1, self.width, device=tokens.device)
        prev = F.pad(tokens[:, :-1], (1, 0))  # (N, L): position t sees token t - 1
        h = self.embed(prev, 0, x_cond, y_cond, dtype)
        h = self.transformer(h, encoder_kv=encoder_kv)
        return self.head(h, x_cond)

    def step(
        self,
        prev_tokens: torch.Tensor,
        x_cond: torch.Tensor,
        y_cond: torch.Tensor | None,
        cache: KVCache,
        encoder_kv: torch.Tensor | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Incremental pass over the next n positions (n = prev_tokens.shape[1]) -> logits [N, n, bins]."""
        h = self.embed(prev_tokens, cache.length, x_cond, y_cond, dtype)
        h = self.transformer(h, encoder_kv=encoder_kv, cache=cache)
        return self.head(h, x_cond)


# -- configuration -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConditionerConfig:
    """The upsamplers' conv stack over the upper level's codes."""

    width: int = 1024
    depth: int = 16
    down_t: int = 2  # downs_t of the level above: the x4 upsampling
    stride: int = 2
    m_conv: float = 1.0
    dilation_growth_rate: int = 3
    dilation_cycle: int | None = 8
    res_scale: bool = False  # True only for the level-1 upsampler (residuals scaled by 1/sqrt(16))

    @property
    def upsampling(self) -> int:
        return self.stride**self.down_t


@dataclass(frozen=True)
class LyricEncoderConfig:
    """The 5b_lyrics lyric encoder (``prime_*`` hparams)."""

    width: int = 1280
    depth: int = 18
    heads: int = 4
    attn_order: int = 2
    blocks: int = 32
    init_scale: float = 0.7
    attn_pattern: tuple[int, ...] | None = None


@dataclass(frozen=True)
class PriorConfig(DictConfig):
    """Hyperparameters of one prior (original names in comments; released values in ``presets.py``)."""

    config_name = "prior config"

    level: int
    n_ctx: int  # music positions per window
    width: int  # prior_width
    depth: int  # prior_depth
    heads: int
    attn_order: int
    blocks: int
    init_scale: float
    hop_length: int  # audio samples per code at this level (raw_to_tokens)
    sample_rate: int = 44100
    codebook_size: int = 2048  # bins / l_bins
    m_attn: float = 0.25
    m_mlp: float = 1.0
    merged_decoder: bool = False  # True: untied output head and no x_cond after the Transformer
    attn_pattern: tuple[int, ...] | None = (
        None  # explicit attn_func per layer (tiny presets), else attn_order
    )
    # labels
    label_set: str = "v2"
    n_genres: int = 120  # y_bins[0]
    n_artists: int = 4111  # y_bins[1]
    max_genres: int = 5  # max_bow_genre_size
    labels: dict | None = None  # label_set "custom": the tables themselves (labels.LabelSet.to_dict())
    t_bins: int = 128
    min_duration: float | None = None  # seconds
    max_duration: float | None = None
    # lyrics
    n_tokens: int = 0  # lyric characters visible to one window (0: no lyrics)
    n_vocab: int = 80
    single_enc_dec: bool = False  # 1b_lyrics: lyrics in the same sequence as the music
    lyric_encoder: LyricEncoderConfig | None = None  # 5b_lyrics: separate encoder + cross attention
    prime_loss_fraction: float = 0.0
    # upsamplers
    conditioner: ConditionerConfig | None = None
    # storage and analysis
    fp16_params: bool = False  # the released 5B priors keep Conv1D weights in half precision
    alignment_layer: int | None = None
    alignment_head: int | None = None

    def __post_init__(self) -> None:
        for name in ("attn_pattern",):
            value = getattr(self, name)
            if value is not None and not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if isinstance(self.conditioner, dict):
            object.__setattr__(self, "conditioner", ConditionerConfig(**self.conditioner))
        if isinstance(self.lyric_encoder, dict):
            object.__setattr__(self, "lyric_encoder", LyricEncoderConfig(**self.lyric_encoder))
        if self.n_ctx % self.blocks and self.n_tokens == 0:
            raise ConfigError(f"Prior config: n_ctx {self.n_ctx} is not divisible into {self.blocks} blocks.")
        if self.include_timing and (self.min_duration is None or self.max_duration is None):
            raise ConfigError(
                "A top-level prior needs min_duration and max_duration for its timing embedding."
            )
        if self.single_enc_dec and self.lyric_encoder is not None:
            raise ConfigError(
                "A prior has either in-sequence lyrics (single_enc_dec) or a lyric encoder, not both."
            )
        if (self.single_enc_dec or self.lyric_encoder is not None) and self.n_tokens <= 0:
            raise ConfigError("A lyrics prior needs n_tokens > 0.")
        if (self.label_set == "custom") != (self.labels is not None):
            raise ConfigError('A prior has label tables (labels) exactly when its label_set is "custom".')

    @property
    def is_upsampler(self) -> bool:
        return self.conditioner is not None

    @property
    def include_timing(self) -> bool:
        return not self.is_upsampler

    @property
    def has_lyrics(self) -> bool:
        return self.n_tokens > 0

    @property
    def sequence_length(self) -> int:
        """Transformer positions: the music window, plus the lyrics for the 1b design."""
        return self.n_ctx + (self.n_tokens if self.single_enc_dec else 0)

    @property
    def window_samples(self) -> int:
        """Audio samples one window covers (the prior's ``sample_length``)."""
        return self.n_ctx * self.hop_length

    @property
    def label_length(self) -> int:
        return 4 + self.max_genres + self.n_tokens

    def attn_funcs(self) -> list[int]:
        return (
            list(self.attn_pattern) if self.attn_pattern else attention_pattern(self.attn_order, self.depth)
        )


@dataclass
class PriorOutput:
    """Training losses (bits per token) and metrics."""

    loss: torch.Tensor
    gen_loss: torch.Tensor
    prime_loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


# -- the prior ---------------------------------------------------------------------------------------


class Prior(nn.Module):
    """A top-level prior or an upsampler."""

    def __init__(self, config: PriorConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        if c.is_upsampler:
            self.conditioner_blocks = nn.ModuleList([Conditioner(c)])
        self.y_emb = LabelConditioner(c)
        if c.lyric_encoder is not None:
            enc = c.lyric_encoder
            funcs = (
                list(enc.attn_pattern) if enc.attn_pattern else attention_pattern(enc.attn_order, enc.depth)
            )
            self.prime_prior = AutoregressiveCore(
                bins=c.n_vocab, width=enc.width, length=c.n_tokens, depth=enc.depth, heads=enc.heads,
                attn_funcs=funcs, blocks=enc.blocks, init_scale=enc.init_scale, m_attn=c.m_attn, m_mlp=c.m_mlp,
                prime_len=None, merged_decoder=False, has_start_token=True, only_encode=True,
            )  # fmt: skip
            self.prime_state_proj = Conv1D(enc.width, c.width, init_scale=enc.init_scale)
            self.prime_state_ln = LayerNorm(c.width)
            self.prime_x_out = nn.Linear(c.width, c.n_vocab, bias=False)
            nn.init.normal_(self.prime_x_out.weight, std=0.02 * c.init_scale)
        self.prior = AutoregressiveCore(
            bins=c.codebook_size + (c.n_vocab if c.single_enc_dec else 0),
            width=c.width, length=c.sequence_length, depth=c.depth, heads=c.heads, attn_funcs=c.attn_funcs(),
            blocks=c.blocks, init_scale=c.init_scale, m_attn=c.m_attn, m_mlp=c.m_mlp,
            prime_len=c.n_tokens if c.single_enc_dec else None, merged_decoder=c.merged_decoder,
            has_start_token=False, only_encode=False,
        )  # fmt: skip

    @property
    def level(self) -> int:
        return self.config.level

    # - conditioning ----------------------------------------------------------------------------------

    def conditioning(
        self, labels: torch.Tensor, upper_codes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(x_cond [N, L or 1, W], y_cond [N, 1, W], lyric tokens [N, n_tokens] or None) for one window.

        Args:
            labels: [N, label_length] label vectors (``labels.Labeller.label_vector``) for this window.
            upper_codes: upsamplers only: [N, n_ctx / 4] codes of the level above for this window.
        """
        c = self.config
        if labels.shape[1] != c.label_length:
            raise ConfigError(
                f"This prior takes {c.label_length} label entries per sample, got {labels.shape[1]}."
            )
        self.y_emb.check(labels)
        y_cond, y_pos = self.y_emb(labels[:, : 4 + c.max_genres])
        lyrics = labels[:, 4 + c.max_genres :] if c.has_lyrics else None
        if c.is_upsampler:
            if upper_codes is None:
                raise ConfigError("An upsampler needs the codes of the level above.")
            x_cond = self.conditioner_blocks[0](upper_codes)
        else:
            x_cond = y_pos
            if c.single_enc_dec:  # no timing signal on the lyric positions
                x_cond = torch.cat([torch.zeros_like(x_cond[:, : c.n_tokens]), x_cond], dim=1)
        return x_cond, y_cond, lyrics

    def encode_lyrics(self, lyrics: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """5b_lyrics: lyric tokens [N, n_tokens] -> encoder_kv [N, n_tokens, W]."""
        acts = self.prime_prior(lyrics, dtype=dtype)
        return self.prime_state_ln(self.prime_state_proj(acts))

    # - training ---------------------------------------------------------------------------------------

    def forward(
        self, codes: torch.Tensor, labels: torch.Tensor, upper_codes: torch.Tensor | None = None
    ) -> PriorOutput:
        """Teacher-forced losses in bits per token for one window of codes [N, n_ctx]."""
        logits, targets, encoder_kv = self._teacher_forced(codes, labels, upper_codes)
        c = self.config
        ln2 = math.log(2.0)

        def bits(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return F.cross_entropy(scores.reshape(-1, scores.shape[-1]), target.reshape(-1)) / ln2

        if c.single_enc_dec:  # one sequence: the lyric positions first, then the music
            prime = bits(logits[:, : c.n_tokens], targets[:, : c.n_tokens])
            gen = bits(logits[:, c.n_tokens :], targets[:, c.n_tokens :])
        else:
            gen = bits(logits, targets)
            prime = logits.new_zeros(())
            if encoder_kv is not None:  # 5b_lyrics: the lyric encoder also learns to predict the lyrics
                prime = bits(self.prime_x_out(encoder_kv.float()), labels[:, 4 + c.max_genres :])
        n_prime = c.n_tokens if c.has_lyrics else 0
        total = n_prime + c.n_ctx
        loss = c.prime_loss_fraction * prime * n_prime / total + gen * c.n_ctx / total
        return PriorOutput(loss=loss, gen_loss=gen, prime_loss=prime, metrics={"bpd": gen.detach()})

    def logits(
        self, codes: torch.Tensor, labels: torch.Tensor, upper_codes: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Teacher-forced logits over the music positions [N, n_ctx, codebook_size] (1b: over the whole
        merged sequence, music ids shifted by n_vocab)."""
        return self._teacher_forced(codes, labels, upper_codes)[0]

    def _teacher_forced(self, codes, labels, upper_codes):
        """(logits, target tokens, encoder_kv or None) of one window."""
        c = self.config
        x_cond, y_cond, lyrics = self.conditioning(labels, upper_codes)
        encoder_kv = self.encode_lyrics(lyrics) if c.lyric_encoder is not None else None
        tokens = torch.cat([lyrics, codes + c.n_vocab], dim=1) if c.single_enc_dec else codes
        return self.prior(tokens, x_cond, y_cond, encoder_kv), tokens, encoder_kv
