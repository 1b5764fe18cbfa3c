"""Where a continuation starts: codes of an audio prompt, or of an earlier run, at every sampled level."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from jukebox_cli.engine.audio import io as audio_io
from jukebox_cli.engine.errors import ConfigError, InvalidAudio
from jukebox_cli.engine.sampling.runs import Run
from jukebox_cli.engine.weights.bundle import Bundle


def audio_prompt_start(path: str | Path, seconds: float, start: float | None) -> float:
    """Where in the file an audio prompt of ``seconds`` begins: at ``start``, or (None) so that it ends where
    the song ends, since a continuation usually follows the whole song.

    Raises:
        InvalidAudio: the file is shorter than the prompt.
        ConfigError: ``start`` leaves too little audio after it.
    """
    length = audio_io.audio_info(path).duration
    if length < seconds:
        raise InvalidAudio(f"{path} is {length:.2f} s long, shorter than the {seconds} s prompt.")
    if start is None:
        return max(length - seconds, 0.0)
    if not 0.0 <= start <= length - seconds:
        raise ConfigError(
            f"A {seconds} s prompt starting at {start} s does not fit in {path} ({length:.2f} s long); "
            f"--prompt-start must be between 0 and {length - seconds:.2f}."
        )
    return start


def encode_prompt(
    bundle: Bundle,
    path: str | Path,
    seconds: float,
    n_samples: int,
    levels: Sequence[int],
    start: float = 0.0,
) -> dict[int, torch.Tensor]:
    """Codes of ``seconds`` of an audio file from ``start`` at every requested level, tiled over the samples.

    The prompt is cut to whole top-level codes, so every level's codes cover the same audio.

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
    # Only the prompt is read, and a second more so the resampler's end effects stay past it: a prompt taken
    # from an hour of audio costs the memory of the prompt.
    samples = audio_io.load_audio(path, sr, offset=start, duration=length / sr + 1.0)
    if samples.shape[0] < length:
        raise InvalidAudio(
            f"{path} has {samples.shape[0] / sr:.2f} s of audio from {start:.2f} s, less than the {seconds} s "
            "prompt."
        )
    x = torch.from_numpy(samples[:length]).unsqueeze(0)
    return {level: bundle.vqvae.encode_level(x, level).repeat(n_samples, 1) for level in levels}


def run_prompt(
    bundle: Bundle, run: Run, levels: Sequence[int], seconds: float | None = None
) -> dict[int, torch.Tensor]:
    """The codes an earlier run holds at each of ``levels`` (all of them, or the first ``seconds``).

    Levels the run does not hold are left out; the top level must be there.

    Raises:
        ConfigError: the run has no top-level codes, or codes this model's codebook does not hold.
    """
    codes = {}
    for level in levels:
        saved, _, _ = run.load_codes(level)
        if saved is None:
            continue
        keep = (
            saved.shape[1]
            if seconds is None
            else int(seconds * bundle.sample_rate) // bundle.vqvae.hop_lengths[level]
        )
        check_codes(bundle, run, level, saved)
        codes[level] = saved[:, :keep]
    if bundle.top_level not in codes:
        raise ConfigError(f"{run.path} has no top-level codes to continue.")
    return codes


def check_codes(bundle: Bundle, run: Run, level: int, codes: torch.Tensor) -> None:
    """Fail on saved codes outside the model's codebook: a run.json that names another model than made them.

    Raises:
        ConfigError: codes below 0 or at least the codebook size.
    """
    size = bundle.vqvae.config.codebook_size
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= size):
        raise ConfigError(
            f"{run.path}'s level-{level} codes run up to {int(codes.max())}, but {bundle.name} has {size} codes: "
            f"the run was made with another model than the {run.settings['model']!r} its run.json names."
        )
