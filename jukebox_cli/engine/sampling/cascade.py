"""The sampling cascade: the top level first, then each upsampler, decoding every level to audio.

Each upsampler is conditioned on the codes of the level above it, so levels run in order, top down. All
state lives in a :class:`~jukebox_cli.engine.sampling.runs.Run` folder: codes are saved after every window and
each level's audio as soon as the level is done, so an interrupted run resumes from its last finished window
and gives the codes an uninterrupted run would have given.
"""

from __future__ import annotations

import torch

from jukebox_cli.engine.audio import io as audio_io
from jukebox_cli.engine.devices import free_memory
from jukebox_cli.engine.dtypes import working_dtype
from jukebox_cli.engine.errors import ConfigError, DeviceError
from jukebox_cli.engine.progress import (
    Advanced,
    LevelDone,
    ProgressCallback,
    StageFinished,
    StageStarted,
    noop,
)
from jukebox_cli.engine.sampling.alignment import missing_alignments, write_alignments
from jukebox_cli.engine.sampling.batching import batch_size, bytes_per_sample
from jukebox_cli.engine.sampling.conditioning import encode_metadata, labels_for
from jukebox_cli.engine.sampling.level import SamplingSettings, sample_level
from jukebox_cli.engine.sampling.plan import cache_bytes
from jukebox_cli.engine.sampling.request import CascadeRequest
from jukebox_cli.engine.sampling.runs import Run
from jukebox_cli.engine.weights.bundle import Bundle

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
    decode: str = "auto",
) -> dict[int, torch.Tensor]:
    """Sample every requested level into ``run`` (resuming whatever it already holds).

    Args:
        bundle: the model (priors on the CPU; each moves to ``device`` only while its level is sampled).
        run: the run folder; its saved codes take precedence over ``initial_codes``.
        request: the settings, validated against this model (``request.build_request`` does it).
        device: where to sample.
        initial_codes: level -> [N, K] codes to continue from (a prompt, or the top level for upsampling).
        progress: ``"levels"`` stage, per-level window and token stages, ``LevelDone(level, codes)``.
        alignment: for a lyrics top prior, write each sample's lyric alignment beside its top-level audio
            (``item_N.alignment.json`` and ``.png``, see ``alignment.write_alignments``).
        decode: how each token is computed (``SamplingSettings.decode``: ``auto``, ``eager``, ``static``,
            ``compiled``, ``graph``); it does not change the codes beyond float rounding, so it is not part
            of the request.

    Returns:
        level -> [N, T_level] codes of every level this run holds.
    """
    dtype = working_dtype(request.dtype, device)
    n_samples = len(request.samples)
    codes = {level: prompt.to(device) for level, prompt in (initial_codes or {}).items()}
    for level in range(bundle.vqvae.levels):  # what the run holds wins (upper levels too, for upsamplers)
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
            upper = codes.get(level + 1) if config.is_upsampler else None
            done = [windows_done]

            def saver(level_codes: torch.Tensor, count: int, lv: int = level, done: list = done) -> None:
                run.save_codes(lv, level_codes, windows_done=count)
                done[0] = count

            # The Conv1D weights are read straight into the working dtype: the decoders use them resident in it,
            # so a float16-stored 5B prior sampled in float32 is never held twice.
            linear_dtype = dtype
            prior = None
            try:
                prior = bundle.load_prior(level, device, linear_dtype)
                batch = batch_size(
                    request.max_batch_size[level],
                    n_samples,
                    device=device,
                    free_bytes=free_memory(device),
                    per_sample=bytes_per_sample(config, cache_bytes(prior, dtype), dtype, request.chunk_size),
                )
                run.update(batch_sizes={**run.state.get("batch_sizes", {}), str(level): batch})
                settings = SamplingSettings(
                    temperature=request.temperature[level], top_k=request.top_k, top_p=request.top_p,
                    hop_fraction=request.hop_fraction[level], chunk_size=request.chunk_size,
                    max_batch_size=batch, decode=decode,
                )  # fmt: skip
                current = sample_level(
                    prior, current[:, :total], total,
                    labels_for(labeller, encoded, config, request.total_length, device),
                    upper_codes=upper, settings=settings, seed=request.seed, dtype=dtype,
                    first_window=windows_done, on_window=saver,
                    progress=progress,
                )  # fmt: skip
                if alignment and missing_alignments(run, bundle, level, request):  # while the prior is here
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
        if alignment and missing_alignments(run, bundle, level, request):
            write_alignments(run, bundle, level, current, request, device=device, progress=progress)
        run.update(levels_done=sorted({*run.state.get("levels_done", []), level}, reverse=True))
        progress(LevelDone(level, current))
        progress(Advanced("levels"))
    progress(StageFinished("levels"))
    return codes
