"""The sampling cascade: top level first, then each upsampler, decoding every level to audio (spec 6.1).

All state lives in a :class:`~jukebox_cli.engine.runs.Run` folder: codes are saved after every window and
each level's audio as soon as the level is done, so an interrupted run resumes from its last finished window
and gives the codes an uninterrupted run would have given.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from jukebox_cli.engine import audio as audio_io
from jukebox_cli.engine.bundle import Bundle
from jukebox_cli.engine.errors import ConfigError, DeviceError, InvalidAudio
from jukebox_cli.engine.labels import Labeller
from jukebox_cli.engine.prior import Prior
from jukebox_cli.engine.progress import (
    Advanced,
    LevelDone,
    ProgressCallback,
    StageFinished,
    StageStarted,
    noop,
)
from jukebox_cli.engine.runs import Run
from jukebox_cli.engine.sampling import SamplingSettings, sample_level
from jukebox_cli.engine.windows import Window, plan_level, window_advance

# The released settings (spec 6.5): hop fraction per level, top level first.
DEFAULT_HOP_FRACTIONS = {2: 0.125, 1: 0.5, 0: 0.5}


@dataclass(frozen=True)
class SampleMeta:
    """What one sample is conditioned on."""

    artist: str = "unknown"
    genre: str = "unknown"
    lyrics: str = ""


@dataclass(frozen=True)
class CascadeRequest:
    """Everything that determines the codes of a run (stored in ``run.json``; a resume must match)."""

    model: str
    samples: tuple[SampleMeta, ...]
    sample_length: int  # audio samples to generate at the model's rate
    total_length: int  # the whole song's length in samples (conditions timing and lyric windows)
    levels: tuple[int, ...]  # levels to sample, top first
    temperature: dict[int, float]
    top_k: int = 0
    top_p: float = 0.0
    seed: int = 0
    chunk_size: int = 32
    max_batch_size: dict[int, int] = field(default_factory=lambda: {2: 16, 1: 16, 0: 16})
    hop_fraction: dict[int, float] = field(default_factory=lambda: dict(DEFAULT_HOP_FRACTIONS))
    dtype: str = "auto"
    allow_unknown: bool = False
    prompt: dict | None = None  # description of the prompt (file, seconds) or source run, for the record

    def settings(self) -> dict:
        """JSON-friendly form (level keys become strings in JSON; they are compared after a round trip)."""
        data = asdict(self)
        data["samples"] = [asdict(s) for s in self.samples]
        for key in ("temperature", "max_batch_size", "hop_fraction"):
            data[key] = {str(level): value for level, value in sorted(data[key].items(), reverse=True)}
        data["levels"] = list(self.levels)
        return data

    @classmethod
    def from_settings(cls, data: dict) -> CascadeRequest:
        """The inverse of :meth:`settings` (after a JSON round trip)."""
        per_level = {key: {int(level): value for level, value in data[key].items()}
                     for key in ("temperature", "max_batch_size", "hop_fraction")}  # fmt: skip
        return cls(**{**data, **per_level, "samples": tuple(SampleMeta(**m) for m in data["samples"]),
                      "levels": tuple(data["levels"])})  # fmt: skip


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on CUDA GPUs that support it (else float16), float16 on MPS, float32 on the CPU."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    table = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
             "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}  # fmt: skip
    if name not in table:
        raise ConfigError(f"Unknown dtype {name!r}; use auto, fp32, fp16 or bf16.")
    return table[name]


# -- labels -----------------------------------------------------------------------------------------------


@dataclass
class _SampleLabels:
    artist: int
    genres: list[int]
    tokens: list[int]


def encode_metadata(
    labeller: Labeller, samples: Sequence[SampleMeta], *, allow_unknown: bool
) -> tuple[list[_SampleLabels], list[str]]:
    """Ids for every sample under one prior's label set, and warnings about dropped lyric characters."""
    encoded, warnings = [], []
    for meta in samples:
        tokens = labeller.tokenize(meta.lyrics) if labeller.n_tokens else None
        if tokens is not None and tokens.dropped:
            warnings.append(f"lyrics characters not in the vocabulary were dropped: {tokens.dropped!r}")
        encoded.append(
            _SampleLabels(
                artist=labeller.artist_id(meta.artist, allow_unknown=allow_unknown),
                genres=labeller.genre_ids(meta.genre, allow_unknown=allow_unknown),
                tokens=list(tokens.ids) if tokens is not None else [],
            )
        )
    return encoded, sorted(set(warnings))


def _labels_for(labeller: Labeller, encoded: list[_SampleLabels], prior, total_length: int, device):
    c = prior.config

    def labels(window: Window) -> torch.Tensor:
        offset = window.start * c.hop_length
        rows = [
            labeller.label_vector(
                e.artist,
                e.genres,
                e.tokens,
                total_length=total_length,
                offset=offset,
                length=c.window_samples,
            )  # fmt: skip
            for e in encoded
        ]
        return torch.tensor(rows, dtype=torch.long, device=device)

    return labels


# -- planning ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LevelPlanInfo:
    level: int
    total_codes: int
    existing_codes: int
    windows: int
    new_tokens: int
    cache_bytes_per_sample: int
    weight_bytes: int


def plan_cascade(bundle: Bundle, request: CascadeRequest, existing: dict[int, int] | None = None,
                 dtype: torch.dtype = torch.float32) -> list[LevelPlanInfo]:  # fmt: skip
    """Tokens, windows and memory per level, before anything runs (``--dry-run``)."""
    validate_request(bundle, request)
    existing = existing or {}
    plans = []
    for level in request.levels:
        prior = bundle.skeleton(level)
        c = prior.config
        total = request.sample_length // c.hop_length
        windows = plan_level(
            total, existing.get(level, 0), c.n_ctx, window_advance(request.hop_fraction[level], c.n_ctx)
        )
        elem = torch.tensor([], dtype=dtype).element_size()
        cache = sum(
            2 * b.attn.cache_capacity() * b.attn.n_state * elem for b in prior.prior.transformer._attn_mods
        )
        weights = sum(p.numel() * p.element_size() for p in prior.parameters())
        plans.append(LevelPlanInfo(level, total, existing.get(level, 0), len(windows),
                                   sum(w.n_new for w in windows), cache, weights))  # fmt: skip
    return plans


def validate_request(bundle: Bundle, request: CascadeRequest) -> None:
    """Fail early, before anything is sampled, on settings the models cannot honour."""
    top_hop = bundle.vqvae.hop_lengths[-1]
    if request.sample_length < top_hop:
        raise ConfigError(f"The duration is shorter than one top-level code ({top_hop} samples).")
    for level in request.levels:
        c = bundle.prior_configs.get(level)
        if c is None:
            raise ConfigError(f"This model has no prior for level {level}.")
        if c.is_upsampler and request.sample_length < c.window_samples:
            raise ConfigError(
                f"The level-{level} upsampler needs at least {c.window_samples / bundle.sample_rate:.2f} s of "
                f"audio for one window; ask for a longer --duration."
            )
        if c.include_timing:
            sr = c.sample_rate
            if not c.min_duration * sr <= request.total_length < c.max_duration * sr:
                raise ConfigError(
                    f"The song's total duration must be between {c.min_duration} s and {c.max_duration} s for "
                    f"this model's top prior (got {request.total_length / sr:.2f} s; see --total-duration)."
                )
    if request.total_length < request.sample_length:
        raise ConfigError("--total-duration must be at least --duration.")


# -- running ----------------------------------------------------------------------------------------------


def write_level_audio(run: Run, bundle: Bundle, level: int, codes: torch.Tensor, *, subtype: str = "PCM_16",
                      chunk_samples: int = 2**19, progress: ProgressCallback = noop) -> list:  # fmt: skip
    """Decode a level's codes with that level's decoder and write ``level_L/item_i.wav``; returns reports."""
    reports = []
    for index in range(codes.shape[0]):
        audio = bundle.vqvae.decode(
            codes[index : index + 1], level, chunk_samples=chunk_samples, progress=progress
        )
        reports.append(audio_io.save_audio(run.audio_path(level, index), audio[0].cpu(), bundle.sample_rate,
                                           subtype=subtype, overwrite=True))  # fmt: skip
    return reports


def run_cascade(
    bundle: Bundle,
    run: Run,
    request: CascadeRequest,
    *,
    device: torch.device,
    initial_codes: dict[int, torch.Tensor] | None = None,
    progress: ProgressCallback = noop,
    alignment: bool = True,
) -> dict[int, torch.Tensor]:
    """Sample every requested level into ``run`` (resuming whatever it already holds).

    Args:
        bundle: the model (priors on the CPU; each moves to ``device`` only while its level is sampled).
        run: the run folder; its saved codes take precedence over ``initial_codes``.
        request: the settings (already validated, see :func:`validate_request`).
        device: where to sample.
        initial_codes: level -> [N, K] codes to continue from (a prompt, or the top level for upsampling).
        progress: ``"levels"`` stage, per-level window and token stages, ``LevelDone(level, codes)``.
        alignment: for a lyrics top prior, write each sample's lyric alignment beside its top-level audio
            (``item_N.alignment.json`` and ``.png``, see :func:`write_alignments`).

    Returns:
        level -> [N, T_level] codes of every level this run holds.
    """
    validate_request(bundle, request)
    dtype = resolve_dtype(request.dtype, device)
    n_samples = len(request.samples)
    codes = {level: prompt.to(device) for level, prompt in (initial_codes or {}).items()}
    for level in range(
        bundle.vqvae.levels
    ):  # what the run holds wins (upper levels included, for upsamplers)
        saved = run.load_codes(level)[0]
        if saved is not None:
            codes[level] = saved.to(device)
    bundle.vqvae.to(device)
    progress(StageStarted("levels", len(request.levels), "level"))
    for level in request.levels:
        _, windows_done, finished = run.load_codes(level)
        current = codes.get(level, torch.zeros(n_samples, 0, dtype=torch.long, device=device))
        if current.shape[0] != n_samples:
            raise ConfigError(f"Level {level} holds codes for {current.shape[0]} samples, not {n_samples}.")
        config = bundle.prior_configs[level]
        total = request.sample_length // config.hop_length
        if not finished:
            labeller = bundle.labellers[level]
            encoded, _ = encode_metadata(labeller, request.samples, allow_unknown=request.allow_unknown)
            settings = SamplingSettings(
                temperature=request.temperature[level], top_k=request.top_k, top_p=request.top_p,
                hop_fraction=request.hop_fraction[level], chunk_size=request.chunk_size,
                max_batch_size=request.max_batch_size[level],
            )  # fmt: skip
            upper = codes.get(level + 1) if config.is_upsampler else None
            done = [windows_done]

            def saver(level_codes: torch.Tensor, count: int, lv: int = level, done: list = done) -> None:
                run.save_codes(lv, level_codes, windows_done=count)
                done[0] = count

            # Half-precision sampling on an accelerator loads the Conv1D weights in that dtype directly.
            linear_dtype = dtype if device.type != "cpu" and dtype != torch.float32 else None
            prior = None
            try:
                prior = bundle.load_prior(level, device, linear_dtype)
                current = sample_level(
                    prior, current[:, :total], total,
                    _labels_for(labeller, encoded, prior, request.total_length, device),
                    upper_codes=upper, settings=settings, seed=request.seed, dtype=dtype,
                    first_window=windows_done, on_window=saver,
                    progress=progress,
                )  # fmt: skip
                if alignment and _missing_alignments(run, bundle, level, request):  # while the prior is here
                    write_alignments(run, bundle, level, current, request, prior=prior, progress=progress)
            except torch.OutOfMemoryError as err:
                raise DeviceError(
                    f"Out of memory while sampling level {level}; lower --samples or --max-batch-size."
                ) from err
            finally:
                if prior is not None:  # only the level being sampled occupies the accelerator
                    bundle.release_prior(prior)
                del prior
            run.save_codes(level, current, windows_done=done[0], finished=True)
        codes[level] = current
        written = all(run.audio_path(level, i).exists() for i in range(n_samples))
        if not (finished and written):  # a resumed run keeps the audio of levels it had finished
            write_level_audio(run, bundle, level, current, progress=progress)
        # A run stopped before its alignment, or one that asks for it later, gets it from the saved codes.
        if alignment and _missing_alignments(run, bundle, level, request):
            write_alignments(run, bundle, level, current, request, device=device, progress=progress)
        run.update(levels_done=sorted({*run.state.get("levels_done", []), level}, reverse=True))
        progress(LevelDone(level, current))
        progress(Advanced("levels"))
    progress(StageFinished("levels"))
    return codes


# -- lyric alignment -----------------------------------------------------------------------------------------


def _aligned_samples(bundle: Bundle, level: int, request: CascadeRequest) -> list[int]:
    """The samples that get a lyric alignment at this level: those with lyrics, under a lyrics top prior."""
    c = bundle.prior_configs[level]
    if c.is_upsampler or not c.has_lyrics:
        return []
    labeller = bundle.labellers[level]
    return [i for i, meta in enumerate(request.samples) if labeller.tokenize(meta.lyrics).ids]


def _missing_alignments(run: Run, bundle: Bundle, level: int, request: CascadeRequest) -> bool:
    return any(
        not run.alignment_path(level, i, "json").exists() for i in _aligned_samples(bundle, level, request)
    )


def write_alignments(
    run: Run,
    bundle: Bundle,
    level: int,
    codes: torch.Tensor,
    request: CascadeRequest,
    *,
    prior: Prior | None = None,
    device: torch.device | str = "cpu",
    progress: ProgressCallback = noop,
) -> list[Path]:
    """Write ``item_N.alignment.json`` and ``item_N.alignment.png`` for each sample with lyrics (spec 6.8).

    Args:
        run: the run folder.
        bundle: the model; its ``level`` prior must be a lyrics top prior.
        level: the top level.
        codes: [N, T] the level's sampled codes.
        request: the run's settings (labels, song length and window hop are those of sampling).
        prior: the level's prior if already loaded; otherwise it is loaded on ``device`` and released.
        device: where to load the prior.
        progress: a ``"lyric alignment"`` stage, one step per window.

    Returns:
        The files written.
    """
    from jukebox_cli.engine.alignment import alignment_starts, song_alignment, write_alignment
    from jukebox_cli.engine.plots import plot_alignment, save_figure

    samples = _aligned_samples(bundle, level, request)
    if not samples:
        return []
    loaded = prior is None
    if loaded:
        prior = bundle.load_prior(level, device)
    try:
        c = prior.config
        target = next(prior.parameters()).device
        labeller = bundle.labellers[level]
        chosen = [request.samples[i] for i in samples]
        encoded, _ = encode_metadata(labeller, chosen, allow_unknown=request.allow_unknown)
        labels_for = _labels_for(labeller, encoded, prior, request.total_length, target)

        def window_labels(start: int) -> tuple[torch.Tensor, list[list[int]]]:
            offset = start * c.hop_length
            indices = [labeller.lyric_window(e.tokens, request.total_length, offset, c.window_samples)[1]
                       for e in encoded]  # fmt: skip
            return labels_for(Window(start, start + c.n_ctx, 0, c.n_ctx)), indices

        hop = window_advance(request.hop_fraction[level], c.n_ctx)
        stage = "lyric alignment"
        progress(StageStarted(stage, len(alignment_starts(codes.shape[1], c.n_ctx, hop)), "window"))
        matrices = song_alignment(prior, codes[samples], window_labels, [len(e.tokens) for e in encoded], hop,
                                  on_window=lambda: progress(Advanced(stage)))  # fmt: skip
        progress(StageFinished(stage))
    finally:
        if loaded:
            bundle.release_prior(prior)
    seconds_per_code = c.hop_length / bundle.sample_rate
    written = []
    for index, meta, matrix in zip(samples, chosen, matrices, strict=True):
        lyrics = labeller.tokenize(meta.lyrics).cleaned
        fig = plot_alignment(matrix, lyrics, seconds_per_code, title=f"lyric alignment, sample {index}")
        written.append(save_figure(fig, run.alignment_path(level, index, "png"), overwrite=True))
        # The JSON last: its presence marks the sample done for a resumed run.
        write_alignment(run.alignment_path(level, index, "json"), matrix, lyrics, seconds_per_code)
        written.append(run.alignment_path(level, index, "json"))
    return written


def encode_prompt(
    bundle: Bundle, path, seconds: float, n_samples: int, levels: Sequence[int]
) -> dict[int, torch.Tensor]:
    """Codes of an audio prompt at every requested level (spec 6.1 "primed"), tiled over the samples.

    Raises:
        InvalidAudio: the file is shorter than the prompt, or the prompt shorter than one top-level code.
    """
    sr = bundle.sample_rate
    top_hop = bundle.vqvae.hop_lengths[-1]
    length = int(seconds * sr) // top_hop * top_hop
    if length < top_hop:
        raise InvalidAudio(
            f"A prompt of {seconds} s is shorter than one top-level code ({top_hop / sr * 1000:.1f} ms)."
        )
    samples = audio_io.load_audio(path, sr)
    if samples.shape[0] < length:
        raise InvalidAudio(
            f"{path} is {samples.shape[0] / sr:.2f} s long, shorter than the {seconds} s prompt."
        )
    x = torch.from_numpy(samples[:length]).unsqueeze(0)
    return {level: bundle.vqvae.encode_level(x, level).repeat(n_samples, 1) for level in levels}
