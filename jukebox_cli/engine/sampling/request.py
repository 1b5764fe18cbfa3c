"""What a sampling run is asked to do: the request, the duration policy, and checking it against a model.

A :class:`CascadeRequest` holds everything that decides the codes of a run (it is stored in ``run.json``,
and a resume must match it exactly). :func:`build_request` makes one from the options a user gives (one value
or one per level, durations in seconds) and validates it once, before any model weights are touched.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.sampling.batching import AUTO, parse_batch_size
from jukebox_cli.engine.sampling.windows import sample_length, window_advance, window_starts
from jukebox_cli.engine.weights.bundle import Bundle

# The released settings: window advance as a fraction of the context, per level.
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
    # Samples per prior call per level: a number or "auto" (batching.py); it does not change the draws.
    max_batch_size: dict[int, int | str] = field(default_factory=lambda: {2: AUTO, 1: AUTO, 0: AUTO})
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


def validate_request(bundle: Bundle, request: CascadeRequest, *, options: bool = True) -> None:
    """Fail early, before anything is sampled, on settings the models cannot honour.

    ``options``: the messages may point at the option to change (False for a saved run, where none can).
    """
    top_hop = bundle.vqvae.hop_lengths[-1]
    if request.sample_length < top_hop:
        what = "--duration" if options else "The duration"
        raise ConfigError(
            f"{what} is shorter than one top-level code ({top_hop / bundle.sample_rate * 1000:.1f} ms)."
        )
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
                    f"this model's top prior (got {request.total_length / sr:.2f} s{'; see --total-duration' if options else ''})."
                )
    if request.total_length < request.sample_length:
        raise ConfigError("--total-duration must be at least --duration.")


# -- from user options ------------------------------------------------------------------------------------------

PerLevel = float | Sequence[float] | Mapping[int, float] | str


def check_levels(levels: Sequence[int] | str, top: int) -> tuple[int, ...]:
    """The levels to sample, top first: ``(2,)``, ``(2, 1)`` or ``(2, 1, 0)`` (``"2,1"`` is read too).

    Raises:
        ConfigError: levels that do not run from the top level down without gaps.
    """
    text = levels if isinstance(levels, str) else ",".join(str(level) for level in levels)
    try:
        parsed = tuple(int(p) for p in text.split(",") if p.strip())
    except ValueError:
        raise ConfigError(f"--levels must look like 2, 2,1 or 2,1,0; got {text!r}.") from None
    expected = tuple(range(top, top - len(parsed), -1))
    if not parsed or parsed != expected or min(parsed) < 0:
        raise ConfigError(
            f"--levels must run from the top level ({top}) down without gaps, e.g. {top},{top - 1}; got {text!r}."
        )
    return parsed


def per_level(value: PerLevel, levels: Sequence[int], name: str) -> dict[int, float]:
    """One value per sampled level from one value, one per level (top first), a mapping, or ``"a,b,c"``.

    Raises:
        ConfigError: a count that matches neither one value nor one per level, or text that is not numbers.
    """
    if isinstance(value, Mapping):
        missing = [level for level in levels if level not in value]
        if missing:
            raise ConfigError(f"--{name} has no value for level(s) {missing}.")
        return _finite({level: float(value[level]) for level in levels}, name, value)
    if isinstance(value, str):
        try:
            values = [float(p) for p in value.split(",")]
        except ValueError:
            raise ConfigError(
                f"--{name} must be a number or a comma-separated list; got {value!r}."
            ) from None
    elif isinstance(value, int | float):
        values = [float(value)]
    else:
        values = [float(v) for v in value]
    if len(values) == 1:
        values = values * len(levels)
    if len(values) != len(levels):
        raise ConfigError(
            f"--{name} needs one value or one per sampled level ({len(levels)}); got {value!r}."
        )
    return _finite(dict(zip(levels, values, strict=True)), name, value)


def _finite(values: dict[int, float], name: str, given: PerLevel) -> dict[int, float]:
    # float() reads "nan" and "inf"; they would reach the sampler (or run.json, which refuses them).
    if not all(math.isfinite(v) for v in values.values()):
        raise ConfigError(f"--{name} must be finite numbers; got {given!r}.")
    return values


def check_number(
    option: str, value: float, minimum: float, maximum: float | None = None, *, above: bool = False
) -> float:
    """``value`` if it is a finite number in range (above ``minimum`` when ``above``), else a ConfigError.

    NaN compares false with everything, so it is named as such rather than reported as out of range.
    """
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"{option} must be a finite number; got {value!r}.")
    low_ok = value > minimum if above else value >= minimum
    if not low_ok or (maximum is not None and value > maximum):
        bound = (f"between {minimum:g} and {maximum:g}" if maximum is not None
                 else f"{'above' if above else 'at least'} {minimum:g}")  # fmt: skip
        raise ConfigError(f"{option} must be {bound}; got {value:g}.")
    return value


def per_level_batch(value: PerLevel, levels: Sequence[int]) -> dict[int, int | str]:
    """``--max-batch-size`` per sampled level: like :func:`per_level`, with ``auto`` allowed for any level."""
    if isinstance(value, Mapping):
        items = [value[level] for level in levels if level in value]
    elif isinstance(value, str):
        items = [part.strip() for part in value.split(",")]
    elif isinstance(value, int | float):
        items = [value]
    else:
        items = list(value)
    if len(items) == 1:
        items = items * len(levels)
    if len(items) != len(levels):
        raise ConfigError(
            f"--max-batch-size needs one value or one per sampled level ({len(levels)}); got {value!r}."
        )
    return {level: parse_batch_size(item) for level, item in zip(levels, items, strict=True)}


def song_lengths(bundle: Bundle, duration: float, total_duration: float | None = None) -> tuple[int, int]:
    """(samples to generate, samples in the whole song) for durations in seconds.

    The generated length is rounded down to whole top-level codes. The song's length (it conditions the top
    prior's timing and lyric windows) defaults to the generated length, raised to the top prior's shortest
    song.
    """
    sr = bundle.sample_rate
    top_hop = bundle.vqvae.hop_lengths[-1]
    length = sample_length(duration, sr, top_hop)
    if total_duration is not None:
        return length, sample_length(total_duration, sr, top_hop)
    top = bundle.prior_configs[bundle.top_level]
    minimum = math.ceil(top.min_duration * sr) if top.min_duration else 0
    return length, max(length, minimum)


def build_request(
    bundle: Bundle,
    *,
    model: str,
    samples: Sequence[SampleMeta],
    duration: float,
    total_duration: float | None = None,
    levels: Sequence[int] | str | None = None,
    temperature: PerLevel = 0.99,
    top_k: int = 0,
    top_p: float = 0.0,
    seed: int = 0,
    dtype: str = "auto",
    max_batch_size: PerLevel = AUTO,
    chunk_size: int = 32,
    allow_unknown: bool = False,
    prompt: dict | None = None,
    first_level: int | None = None,
) -> CascadeRequest:
    """A validated request from user options (see :func:`per_level` for the per-level ones).

    Args:
        bundle: the model (its configs only are read).
        model: the ``--model`` value, recorded so that a resume loads the same model.
        samples: each sample's artist, genre and lyrics.
        duration: seconds to generate (rounded down to whole top-level codes).
        total_duration: the whole song's length in seconds (default: see :func:`song_lengths`).
        levels: the levels to sample, top first (default: all).
        temperature, max_batch_size: one value, one per sampled level, or a level -> value mapping
            (``max_batch_size``: whole numbers or ``auto``).
        top_k, top_p, seed, dtype, chunk_size, allow_unknown: as in :class:`CascadeRequest`.
        prompt: a description of what the run continues, for the record.
        first_level: the highest level sampled (default: the top; upsampling starts one below it).

    Raises:
        ConfigError: settings the model cannot honour (the message says which and why).
    """
    check_number("--duration", duration, 0.0, above=True)
    if total_duration is not None:
        check_number("--total-duration", total_duration, 0.0)
    check_number("--top-p", top_p, 0.0, 1.0)
    check_number("--top-k", top_k, 0)
    top = bundle.top_level if first_level is None else first_level
    chosen = check_levels(tuple(range(top, -1, -1)) if levels is None else levels, top)
    if not samples:
        raise ConfigError("Ask for at least one sample.")
    length, total = song_lengths(bundle, duration, total_duration)
    batches = per_level_batch(max_batch_size, chosen)
    if chunk_size < 1:
        raise ConfigError(f"--chunk-size must be positive; got {chunk_size}.")
    temperatures = per_level(temperature, chosen, "temperature")
    if any(t <= 0 for t in temperatures.values()):
        raise ConfigError(f"--temperature must be positive; got {temperature!r}.")
    request = CascadeRequest(
        model=model, samples=tuple(samples), sample_length=length, total_length=total, levels=chosen,
        temperature=temperatures, top_k=top_k, top_p=top_p, seed=seed,
        chunk_size=chunk_size, max_batch_size=batches, dtype=dtype,
        allow_unknown=allow_unknown, prompt=prompt,
        hop_fraction={level: DEFAULT_HOP_FRACTIONS[level] for level in chosen},
    )  # fmt: skip
    validate_request(bundle, request)
    return request


def lyrics_limit(bundle: Bundle, request: CascadeRequest, level: int) -> tuple[int, int]:
    """(the most lyric characters a lyrics prior is ever shown over the song, its windows over the song).

    Each window shows the prior ``n_tokens`` characters, and the song's length decides how many windows
    cover it (at sampling's window advance): characters beyond ``n_tokens * windows`` are never shown.
    """
    c = bundle.prior_configs[level]
    fraction = request.hop_fraction.get(
        level, DEFAULT_HOP_FRACTIONS.get(level, min(DEFAULT_HOP_FRACTIONS.values()))
    )
    codes = max(math.ceil(request.total_length / c.hop_length), c.n_ctx)
    windows = len(window_starts(codes, c.n_ctx, window_advance(fraction, c.n_ctx)))
    return c.n_tokens * windows, windows


def bound_lyrics(bundle: Bundle, request: CascadeRequest) -> tuple[CascadeRequest, list[str]]:
    """``request`` with each sample's lyrics cut to what its lyrics priors can be shown, and warnings saying so.

    Lyrics beyond that change nothing the model hears but cost memory and time in every window's label
    vectors and in the alignment (a megabyte of lyrics took 20 GB); cut here, they are also what ``run.json``
    records.
    """
    limits = [
        (lyrics_limit(bundle, request, level), level)
        for level, c in bundle.prior_configs.items()
        if c.n_tokens
    ]
    if not limits:
        return request, []
    (limit, windows), level = min(limits)
    labeller = bundle.labellers[level]
    samples, warnings = [], set()
    for meta in request.samples:
        cut = labeller.cut(meta.lyrics, limit)
        if cut != meta.lyrics:
            warnings.add(
                f"lyrics cut to {limit} characters: the model sees at most "
                f"{bundle.prior_configs[level].n_tokens} per window, and {windows} windows cover the "
                f"{request.total_length / bundle.sample_rate:.2f} s song (a longer --total-duration shows more)."
            )
        samples.append(replace(meta, lyrics=cut))
    return replace(request, samples=tuple(samples)), sorted(warnings)


# The option that sets each key of ``CascadeRequest.settings()``, for messages; lengths are shown in seconds.
_OPTIONS = {
    "model": "--model", "sample_length": "--duration", "total_length": "--total-duration", "levels": "--levels",
    "temperature": "--temperature", "top_k": "--top-k", "top_p": "--top-p", "seed": "--seed",
    "chunk_size": "--chunk-size", "max_batch_size": "--max-batch-size", "dtype": "--dtype",
    "allow_unknown": "--allow-unknown", "prompt": "the prompt (--prime, --prompt-seconds)",
    "hop_fraction": "the window advance",
}  # fmt: skip
_SAMPLE_OPTIONS = {"artist": "--artist", "genre": "--genre", "lyrics": "--lyrics"}


def describe_setting(key: str, new: Any, saved: Any, sample_rate: int) -> str:
    """One differing setting of a run as its option and values, e.g. ``--duration: this run has 6.00 s, you
    asked for 5.00 s`` (``key`` is a dotted key of ``CascadeRequest.settings()``)."""
    name, _, level = key.partition(".")
    if name == "samples" and isinstance(new, list) and isinstance(saved, list):
        if len(new) != len(saved):
            return f"--samples: this run has {len(saved)}, you asked for {len(new)}"
        pairs = [(f, n.get(f), s.get(f)) for n, s in zip(new, saved, strict=True) for f in _SAMPLE_OPTIONS]
        field_, new, saved = next(((f, n, s) for f, n, s in pairs if n != s), ("samples", new, saved))
        option = _SAMPLE_OPTIONS.get(field_, "the samples")
    else:
        option = _OPTIONS.get(name, name) + (f" (level {level})" if level else "")
    if name in ("sample_length", "total_length"):
        show = lambda v: f"{v / sample_rate:.2f} s" if isinstance(v, int | float) else json.dumps(v)  # noqa: E731
    else:
        show = lambda v: _short(json.dumps(v))  # noqa: E731
    return f"{option}: this run has {show(saved)}, you asked for {show(new)}"


def _short(text: str, most: int = 40) -> str:
    return text if len(text) <= most else text[: most - 3] + "..."
