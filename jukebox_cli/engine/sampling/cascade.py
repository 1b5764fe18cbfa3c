"""The sampling cascade: the top level first, then each upsampler, decoding every level to audio.

Each upsampler is conditioned on the codes of the level above it, so levels run in order, top down. All
state lives in a :class:`~jukebox_cli.engine.sampling.runs.Run` folder: codes are saved after every window and
each level's audio as soon as the level is done, so an interrupted run resumes from its last finished window
and gives the codes an uninterrupted run would have given.
"""

from __future__ import annotations

import torch

from jukebox_cli.engine.audio import io as audio_io
from jukebox_cli.engine.audio.quality import check_collapse
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
from jukebox_cli.engine.ranks import SINGLE, Ranks
from jukebox_cli.engine.sampling.alignment import missing_alignments, write_alignments
from jukebox_cli.engine.sampling.batching import batch_size, bytes_per_sample
from jukebox_cli.engine.sampling.conditioning import encode_metadata, labels_for
from jukebox_cli.engine.sampling.level import SamplingSettings, level_decode, sample_level
from jukebox_cli.engine.sampling.plan import cache_bytes
from jukebox_cli.engine.sampling.prewarm import Prewarm
from jukebox_cli.engine.sampling.request import CascadeRequest
from jukebox_cli.engine.sampling.runs import Run
from jukebox_cli.engine.weights.bundle import Bundle

# -- running ----------------------------------------------------------------------------------------------


#: What a run's audio is written as unless asked otherwise (and what runs made before the choice existed hold).
DEFAULT_AUDIO = {"format": "wav", "subtype": audio_io.DEFAULT_SUBTYPE}
AUDIO_FORMATS = tuple(ext.lstrip(".") for ext in audio_io.SUPPORTED_WRITE_FORMATS)


def audio_output(saved: dict | None, audio_format: str | None = None, subtype: str | None = None) -> dict:
    """The ``{"format", "subtype"}`` a run writes its audio as: what is asked, else what ``saved`` holds.

    A resume may change either (they do not change the codes). A subtype is inherited only with its format:
    a WAV run's ``FLOAT`` means nothing to FLAC.

    Raises:
        ConfigError: a format or subtype that cannot be written (FLAC has no float samples).
    """
    saved = saved or DEFAULT_AUDIO
    fmt = (audio_format or saved["format"]).lower()
    if subtype is None:
        subtype = saved["subtype"] if fmt == saved["format"] else audio_io.DEFAULT_SUBTYPE
    major = audio_io.SUPPORTED_WRITE_FORMATS.get(f".{fmt}")
    if major is None:
        raise ConfigError(f"Run audio is written as {' or '.join(AUDIO_FORMATS)}, not {fmt!r}.")
    subtype = subtype.upper()
    if subtype not in audio_io.SUPPORTED_SUBTYPES[major]:
        allowed = ", ".join(audio_io.SUPPORTED_SUBTYPES[major])
        raise ConfigError(f"{fmt} audio cannot be {subtype} (it can be {allowed}); choose another bit depth.")
    return {"format": fmt, "subtype": subtype}


def write_level_audio(run: Run, bundle: Bundle, level: int, codes: torch.Tensor, *, audio: dict | None = None,
                      chunk_samples: int = 2**19, progress: ProgressCallback = noop) -> list:  # fmt: skip
    """Decode a level's codes with that level's decoder and write ``level_L/item_i.<format>``; returns reports.

    ``audio``: ``{"format", "subtype"}`` (``audio_output``); recorded per level in the run's state, so a
    resume knows whether a finished level's files are already in the format it asks for.
    """
    audio = audio or DEFAULT_AUDIO
    reports, checks = [], []
    for index in range(codes.shape[0]):
        decoded = bundle.vqvae.decode(
            codes[index : index + 1], level, chunk_samples=chunk_samples, progress=progress
        )
        reports.append(audio_io.save_audio(run.audio_path(level, index, audio["format"]), decoded[0].cpu(),
                                           bundle.sample_rate, subtype=audio["subtype"], overwrite=True))  # fmt: skip
        if level == bundle.top_level:
            checks.append(check_collapse(codes[index].cpu().numpy(), decoded[0].float().cpu().numpy()))
    run.update(level_audio={**run.state.get("level_audio", {}), str(level): audio})
    if checks:  # the upsamplers render a collapsed top level faithfully: the whole take stays near silent
        run.update(top_level_checks=[c.to_dict() for c in checks])
    return reports


def silent_takes(run: Run) -> list[str]:
    """One line per take whose top level collapsed to near silence or to one repeated code (see
    ``audio/quality.py``): small priors fall into it now and then, and another seed usually escapes it.

    A take made from another run's take (``continue --takes``, ``upsample --takes``) is named by both numbers;
    an upsampled take's top level was not sampled here, so the advice is to choose another take.
    """
    prompt = run.settings.get("prompt") or {}
    source = prompt.get("run")
    upsampled = source is not None and "samples" in prompt  # the top level was taken as it is
    rows = prompt.get("samples") if upsampled else prompt.get("takes")
    lines = []
    for index, check in enumerate(run.state.get("top_level_checks", [])):
        if check["collapsed"]:
            name = f"take {index}"
            if source is not None and isinstance(rows, list) and index < len(rows) and rows[index] != index:
                name += f" (take {rows[index]} of {source})"
            advice = f"choose another take of {source} to upsample" if upsampled else "try another --seed"
            lines.append(
                f"{name}: its top level is near silent or stuck (median level "
                f"{check['median_level_db']:.0f} dBFS; code {check['dominant_code']} makes up "
                f"{check['dominant_share']:.0%} of it); {advice}"
            )
    return lines


def has_level_audio(run: Run, level: int, n_samples: int, audio: dict) -> bool:
    """Whether ``level``'s audio is in the run as ``audio`` asks (runs older than the record hold 16-bit WAV)."""
    written = run.state.get("level_audio", {}).get(str(level), DEFAULT_AUDIO)
    return written == audio and all(
        run.audio_path(level, i, audio["format"]).exists() for i in range(n_samples)
    )


def run_cascade(
    bundle: Bundle,
    run: Run | None,
    request: CascadeRequest,
    *,
    device: torch.device,
    initial_codes: dict[int, torch.Tensor] | None = None,
    progress: ProgressCallback = noop,
    alignment: bool = True,
    decode: str = "auto",
    audio: dict | None = None,
    ranks: Ranks = SINGLE,
) -> dict[int, torch.Tensor]:
    """Sample every requested level into ``run`` (resuming whatever it already holds).

    Args:
        bundle: the model (priors on the CPU; each moves to ``device`` only while its level is sampled).
        run: the run folder; its saved codes take precedence over ``initial_codes``. None on ranks other than 0,
            which neither read nor write it.
        request: the settings, validated against this model (``request.build_request`` does it).
        device: where to sample.
        initial_codes: level -> [N, K] codes to continue from (a prompt, or the top level for upsampling).
        progress: ``"levels"`` stage, per-level window and token stages, ``LevelDone(level, codes)``.
        alignment: for a lyrics top prior, write each sample's lyric alignment beside its top-level audio
            (``item_N.alignment.json`` and ``.png``, see ``alignment.write_alignments``).
        decode: how each token is computed (``SamplingSettings.decode``: ``auto``, ``eager``, ``static``,
            ``compiled``, ``graph``); it does not change the codes beyond float rounding, so it is not part
            of the request.
        audio: ``{"format", "subtype"}`` of the audio files (``audio_output``; default 16-bit WAV); not part of
            the request either: a resume may change it, and rewrites finished levels' audio to match.
        ranks: several processes (torchrun): each samples its share of the samples (``Ranks.share``) with
            their own random streams; after every window the new codes are exchanged, and rank 0 saves them
            and writes the audio. Every rank returns every sample's codes.

    Returns:
        level -> [N, T_level] codes of every level this run holds.
    """
    dtype = working_dtype(request.dtype, device)
    n_samples = len(request.samples)
    codes = {level: prompt.to(device) for level, prompt in (initial_codes or {}).items()}
    levels = range(bundle.vqvae.levels)
    # Rank 0 reads the folder it has just created, resumed or cleared (--force), and tells the others: read by
    # them, it could still be changing.
    saved = ranks.from_main({level: run.load_codes(level) for level in levels} if ranks.main else None)
    for level in levels:  # what the run holds wins (upper levels too, for upsamplers)
        if saved[level][0] is not None:
            codes[level] = saved[level][0].to(device)
    if ranks.main:
        bundle.vqvae.to(device)
    progress(StageStarted("levels", len(request.levels), "level"))
    with Prewarm(progress) as prewarm:
        if device.type == "cpu" and ranks.world == 1:
            _start_compiles(prewarm, bundle, request, codes, saved, decode, dtype)
        for level in request.levels:
            _, windows_done, finished = saved[level]
            current = codes.get(level, torch.zeros(n_samples, 0, dtype=torch.long, device=device))
            if current.shape[0] != n_samples:
                raise ConfigError(
                    f"Level {level} holds codes for {current.shape[0]} samples, not {n_samples}."
                )
            config = bundle.prior_configs[level]
            total = request.sample_length // config.hop_length
            if not finished:
                prewarm.wait(level)
                current = _sample_level(bundle, run, request, level, current[:, :total], windows_done,
                                        codes.get(level + 1) if config.is_upsampler else None,
                                        device=device, dtype=dtype, decode=decode, progress=progress,
                                        alignment=alignment, ranks=ranks)  # fmt: skip
            codes[level] = current
            if ranks.main:
                _finish_level(
                    bundle, run, request, level, current, finished, audio, alignment, device, progress
                )
            progress(LevelDone(level, current))
            progress(Advanced("levels"))
    progress(StageFinished("levels"))
    return codes


def _start_compiles(prewarm: Prewarm, bundle: Bundle, request: CascadeRequest, codes: dict[int, torch.Tensor],
                    saved: dict, decode: str, dtype: torch.dtype) -> None:  # fmt: skip
    """Compile the steps of the levels that will run compiled, after the first level left to sample, in
    worker processes (`prewarm`): the first level has nothing to overlap its compile with."""
    left = [level for level in request.levels if not saved[level][2]]
    n_samples, cpu = len(request.samples), torch.device("cpu")
    for level in left[1:]:
        config = bundle.prior_configs[level]
        total = request.sample_length // config.hop_length
        existing = min(total, codes[level].shape[1]) if level in codes else 0
        # The batch the level will choose when its memory allows every sample at once (a CPU's usual case):
        # per-sample memory taken as nothing.
        batch = batch_size(request.max_batch_size[level], n_samples, per_sample=0, free_bytes=free_memory(cpu),
                           device=cpu)  # fmt: skip
        mode, batches = level_decode(config, existing, total, n_samples, _settings(request, level, batch, decode),
                                     cpu)  # fmt: skip
        if mode == "compiled":
            prewarm.start(level, config, batches, dtype)


def _settings(request: CascadeRequest, level: int, batch: int, decode: str) -> SamplingSettings:
    return SamplingSettings(
        temperature=request.temperature[level], top_k=request.top_k, top_p=request.top_p,
        hop_fraction=request.hop_fraction[level], chunk_size=request.chunk_size, max_batch_size=batch,
        decode=decode,
    )  # fmt: skip


def _sample_level(bundle: Bundle, run: Run | None, request: CascadeRequest, level: int, current: torch.Tensor,
                  windows_done: int, upper: torch.Tensor | None, *, device: torch.device, dtype: torch.dtype,
                  decode: str, progress: ProgressCallback, alignment: bool, ranks: Ranks) -> torch.Tensor:  # fmt: skip
    """Sample the rest of one level; returns [N, total] codes of every sample (this rank's share included)."""
    config = bundle.prior_configs[level]
    total = request.sample_length // config.hop_length
    labeller = bundle.labellers[level]
    encoded, _ = encode_metadata(labeller, request.samples, allow_unknown=request.allow_unknown)
    share = ranks.share(len(request.samples))
    labels = labels_for(labeller, encoded, config, request.total_length, device)
    state = {"codes": current, "windows": windows_done}  # every sample's codes, as exchanged

    def saver(own: torch.Tensor, count: int) -> None:
        # Only the window's new codes travel; every rank appends them, so each holds the whole level.
        new = ranks.exchange(own[:, state["codes"].shape[1] :].cpu())
        state["codes"] = torch.cat([state["codes"], torch.cat(new, dim=0).to(device)], dim=1)
        state["windows"] = count
        if run is not None:
            run.save_codes(level, state["codes"], windows_done=count)

    prior = None
    try:
        # The Conv1D weights are read straight into the working dtype: the decoders use them resident in it,
        # so a float16-stored 5B prior sampled in float32 is never held twice.
        prior = bundle.load_prior(level, device, dtype)
        own = current[share]
        batch = batch_size(
            request.max_batch_size[level],
            own.shape[0],
            device=device,
            free_bytes=free_memory(device),
            per_sample=bytes_per_sample(config, cache_bytes(prior, dtype), dtype, request.chunk_size),
        )
        if run is not None:
            run.update(batch_sizes={**run.state.get("batch_sizes", {}), str(level): batch})
        sample_level(
            prior, own, total, lambda window: labels(window)[share],
            upper_codes=None if upper is None else upper[share], settings=_settings(request, level, batch, decode),
            seed=request.seed,
            dtype=dtype, first_window=windows_done, on_window=saver, progress=progress,
            first_sample=share.start,
        )  # fmt: skip
        if run is not None and alignment and missing_alignments(run, bundle, level, request):
            # while the prior is here
            write_alignments(run, bundle, level, state["codes"], request, prior=prior, progress=progress)
    except torch.OutOfMemoryError as err:
        raise DeviceError(
            f"Out of memory while sampling level {level}; lower --samples or --max-batch-size."
        ) from err
    finally:
        if prior is not None:  # only the level being sampled occupies the accelerator
            bundle.release_prior(prior)
        del prior
    if run is not None:
        run.save_codes(level, state["codes"], windows_done=state["windows"], finished=True)
    return state["codes"]


def _finish_level(bundle: Bundle, run: Run, request: CascadeRequest, level: int, current: torch.Tensor,
                  finished: bool, audio: dict | None, alignment: bool, device: torch.device,
                  progress: ProgressCallback) -> None:  # fmt: skip
    """A sampled level's audio, alignment and record (rank 0)."""
    audio = audio or DEFAULT_AUDIO
    if not (
        finished and has_level_audio(run, level, current.shape[0], audio)
    ):  # a resume keeps finished audio
        write_level_audio(run, bundle, level, current, audio=audio, progress=progress)
    # A run stopped before its alignment, or one that asks for it later, gets it from the saved codes.
    if alignment and missing_alignments(run, bundle, level, request):
        write_alignments(run, bundle, level, current, request, device=device, progress=progress)
    run.update(levels_done=sorted({*run.state.get("levels_done", []), level}, reverse=True))
