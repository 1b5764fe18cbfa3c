"""The generation API: ``generate``, ``continue`` and ``upsample`` as any front end calls them.

The CLI, a notebook and a web page all go through these functions::

    from jukebox_cli.engine import load_bundle, prepare_generate

    model = load_bundle("demo")                  # load once, generate many times
    job = prepare_generate(model, genre="rock", duration=10, output="runs/rock")
    print(job.plan())                            # codes, windows, new tokens and memory per level
    result = job.run()                           # samples (or resumes) the run folder
    print(result.files)                          # level_2/item_0.wav, ..., level_0/item_0.wav

A ``prepare_*`` function reads and checks everything (labels, durations, prompts) before any sampling, and
returns a :class:`GenerationJob`; nothing is written until :meth:`GenerationJob.run`. ``generate``,
``continue_from`` and ``upsample`` do both steps at once.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from warnings import warn

import torch

from jukebox_cli.engine.audio import io as audio_io
from jukebox_cli.engine.devices import resolve_device
from jukebox_cli.engine.dtypes import cpu_computes_bf16, working_dtype
from jukebox_cli.engine.errors import ConfigError, LabelError, NetworkError
from jukebox_cli.engine.locks import hold_folder
from jukebox_cli.engine.models.labels import Labeller
from jukebox_cli.engine.models.presets import prior_config
from jukebox_cli.engine.progress import ProgressCallback, noop
from jukebox_cli.engine.ranks import SINGLE, Ranks
from jukebox_cli.engine.sampling.cascade import (
    audio_output,
    has_level_audio,
    run_cascade,
    silent_takes,
    write_level_audio,
)
from jukebox_cli.engine.sampling.conditioning import encode_metadata
from jukebox_cli.engine.sampling.estimate import LevelEstimate, estimate_cascade
from jukebox_cli.engine.sampling.plan import LevelPlan, plan_cascade
from jukebox_cli.engine.sampling.prompt import audio_prompt_start, check_codes, encode_prompt, run_prompt
from jukebox_cli.engine.sampling.request import (
    CascadeRequest,
    PerLevel,
    SampleMeta,
    bound_lyrics,
    build_request,
    check_levels,
    check_number,
    describe_setting,
    validate_request,
)
from jukebox_cli.engine.sampling.runs import Run
from jukebox_cli.engine.sampling.windows import seconds_for
from jukebox_cli.engine.weights.bundle import Bundle
from jukebox_cli.engine.weights.loading import load_bundle
from jukebox_cli.engine.weights.registry import MODELS
from jukebox_cli.engine.weights.released import download_blocker
from jukebox_cli.engine.weights.resolve import ADAPTER_MARK, model_identity, split_adapters, with_adapter_spec
from jukebox_cli.engine.weights.shipped import DEMO

#: Seconds of an audio file kept as the prompt when none is given.
DEFAULT_PROMPT_SECONDS = 5.0
#: ``--compile`` choices: on = the compiled step on the CPU, the captured one (CUDA graph) on GPUs.
COMPILE_CHOICES = ("auto", "on", "off")
ModelArg = str | Path | Bundle


@dataclass
class GenerationResult:
    """What a finished run holds."""

    run: Path
    model: str
    pretrained: bool
    sample_rate: int
    seconds: float
    codes: dict[int, torch.Tensor]
    files: list[Path]
    alignments: list[Path]
    warnings: list[str] = field(default_factory=list)  # takes whose top level fell silent (try another seed)

    def to_dict(self) -> dict:
        """JSON-friendly summary (the CLI's ``--json``)."""
        return {
            "run": str(self.run),
            "model": self.model,
            "pretrained": self.pretrained,
            "sample_rate": self.sample_rate,
            "seconds": self.seconds,
            "codes": {str(level): list(c.shape) for level, c in self.codes.items()},
            "files": [str(p) for p in self.files],
            "alignments": [str(p) for p in self.alignments],
            "warnings": self.warnings,
        }


# Priors this wide spend a decode step streaming weights, which bf16 halves (2.6x the reference at width 1024
# on an AVX512-BF16 CPU, against 1.1x in float32; bench/README.md).
_BF16_TIP_WIDTH = 1024


@dataclass
class GenerationJob:
    """A checked request against a loaded model, and where its run folder goes; nothing written yet.

    Attributes:
        bundle: the model.
        request: the validated settings (what ``run.json`` records).
        output: the run folder.
        initial_codes: level -> [N, K] codes the run starts from (a prompt; kept verbatim).
        given_levels: level -> [N, T] codes taken as finished levels (the top level, for ``upsample``).
        warnings: things the user should know before sampling (dropped lyric characters, ignored lyrics).
    """

    bundle: Bundle
    request: CascadeRequest
    output: Path
    initial_codes: dict[int, torch.Tensor] = field(default_factory=dict)
    given_levels: dict[int, torch.Tensor] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """Facts about the outcome worth telling the user afterwards."""
        if self.bundle.pretrained:
            return []
        return [f"{self.bundle.name} has untrained random weights: expect noise, not music."]

    def tips(self, device: str | torch.device = "auto") -> list[str]:
        """Settings that would make this job faster on ``device`` without changing what it is."""
        torch_device = _device(device)
        wide = any(self.bundle.prior_configs[level].width >= _BF16_TIP_WIDTH for level in self.request.levels)
        if torch_device.type == "cpu" and self.request.dtype == "auto" and wide and cpu_computes_bf16():
            return ["this CPU computes bf16 natively: --dtype bf16 samples wide priors about twice as fast "
                    "(its float rounding differs from float32's, so the codes differ)"]  # fmt: skip
        return []

    @property
    def resumes(self) -> bool:
        """Whether :meth:`run` will continue a run already in the output folder (same settings)."""
        return Run.would_resume(self.output, self.request.settings())

    def check(self, *, force: bool = False) -> None:
        """Refuse now, in a moment, what :meth:`run` would refuse before sampling: the output folder in use by
        another process, holding something else or a run with other settings (without ``force``), or a
        released model that is not downloaded and cannot be. Writes nothing (a front end calls it before the
        plan and its time probe).

        Raises:
            OutputInUse, OutputExistsError, ConfigError: as :meth:`run`.
            NetworkError: the model's weights are not here and cannot be downloaded now.
        """
        with hold_folder(self.output, "run folder"):
            Run.check_start(self.output, self.request.settings(), force=force, describe=self._describe)
        if self.bundle.pending and self.bundle.released is not None:
            reason = download_blocker(self.bundle.released)
            if reason is not None:
                raise NetworkError(
                    f"{self.bundle.name} is not downloaded (about {self.bundle.download_bytes / 1e9:.1f} GB) "
                    f"and {reason}: run `jukebox models download {self.bundle.released}` where there is one."
                )

    def _describe(self, key: str, new: object, saved: object) -> str:
        """One setting that differs from the run's, as its option and values (for the refusal)."""
        return describe_setting(key, new, saved, sample_rate=self.bundle.sample_rate)

    @property
    def download_note(self) -> str | None:
        """What :meth:`run` downloads first, if the model is not in the cache yet."""
        if not self.bundle.pending:
            return None
        return (
            f"{self.bundle.name} is not in the cache yet: the run first downloads about "
            f"{self.bundle.download_bytes / 1e9:.1f} GB"
        )

    def plan(self, device: str | torch.device = "auto", processes: int = 1) -> list[LevelPlan]:
        """Codes, windows, new tokens and memory per level (the working dtype on ``device`` sizes the cache).

        A run folder this job resumes counts its saved codes as existing. ``processes``: how many share the
        takes (each batch holds at most the largest share)."""
        existing = {level: codes.shape[1] for level, codes in self.initial_codes.items()}
        if self.resumes:
            run = Run.open(self.output)
            for level in self.request.levels:
                with contextlib.suppress(ConfigError):  # unreadable codes: refused by run(), or started over
                    info = run.codes_info(level)
                    if info is not None:
                        existing[level] = max(existing.get(level, 0), info[1])
        torch_device = _device(device)
        return plan_cascade(self.bundle, self.request, existing, working_dtype(self.request.dtype, torch_device),
                            torch_device, processes)  # fmt: skip

    def estimate(
        self,
        device: str | torch.device = "auto",
        compile: str = "auto",
        plans: list[LevelPlan] | None = None,
        processes: int = 1,
    ) -> list[LevelEstimate]:
        """Expected time per level on ``device``, from a probe of a slice of each prior (seconds per level).

        Needs no weights: the probe builds one block of each attention type with random values. ``plans``:
        this job's :meth:`plan` on the same device, if already made; ``processes``: how many share the takes
        (the time is that of the largest share).
        """
        torch_device = _device(device)
        dtype = working_dtype(self.request.dtype, torch_device)
        return estimate_cascade(self.bundle, self.request, plans or self.plan(torch_device, processes),
                                device=torch_device, decode=decode_mode(compile, torch_device), dtype=dtype,
                                processes=processes)  # fmt: skip

    def run(
        self,
        *,
        device: str | torch.device = "auto",
        progress: ProgressCallback = noop,
        force: bool = False,
        alignment: bool = True,
        compile: str = "auto",
        audio_format: str | None = None,
        subtype: str | None = None,
        ranks: Ranks = SINGLE,
    ) -> GenerationResult:
        """Sample into the run folder, resuming whatever it already holds; returns what it holds at the end.

        Args:
            device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (or a torch device).
            progress: levels, windows and tokens as events (see ``progress.py``).
            force: replace an existing run folder made with other settings instead of refusing.
            alignment: lyrics models: write each sample's lyric alignment beside its top-level audio.
            compile: ``auto`` (compile where it is known to be faster: always on CUDA, long levels on the
                CPU), ``on`` or ``off`` (the eager step, the reference). The codes are the same either way up
                to float rounding.
            audio_format, subtype: ``wav`` or ``flac``; ``PCM_16``, ``PCM_24`` or ``FLOAT`` (WAV only). Default:
                what the run was last written as, else 16-bit WAV. Recorded in the run's state, not its
                settings (they do not change the codes); a different choice on resume rewrites finished levels.
            ranks: several processes sampling this run together (``ranks.joined`` under torchrun): each
                samples its share of the samples on ``ranks.device`` (``device`` is then ignored), rank 0 alone
                holds and writes the folder, and an error on any rank stops them all. The codes are those of
                one process. Rank 0's result lists the files; the others' hold the codes only.

        Raises:
            OutputExistsError: the folder holds a run with other settings (and ``force`` is off).
            OutputInUse: another process is writing the folder.
            DeviceError: an unavailable device, or out of memory.
            ConfigError: several processes and fewer samples than processes, or a model not downloaded yet.
            ProcessStopped: ranks other than 0, when any rank failed (rank 0 raises that rank's error).
        """
        with ranks.together():
            torch_device = ranks.device if ranks.world > 1 else _device(device)
            decode = decode_mode(compile, torch_device)
            audio_output(None, audio_format, subtype)  # a format it cannot write fails before any sampling
            self.check_processes(ranks)
            # A released model is downloaded now, not when planned.
            self.bundle = self.bundle.fetched(progress)
            if not ranks.main:
                return self._run(torch_device, decode, progress, force=force, alignment=alignment,
                                 audio_format=audio_format, subtype=subtype, ranks=ranks)  # fmt: skip
            # Held from the first look at the folder to the last file: two processes would mix their windows.
            with hold_folder(self.output, "run folder"):
                return self._run(torch_device, decode, progress, force=force, alignment=alignment,
                                 audio_format=audio_format, subtype=subtype, ranks=ranks)  # fmt: skip

    def check_processes(self, ranks: Ranks) -> None:
        """Refuse what several processes cannot do: more processes than samples, a download on every rank.

        Raises:
            ConfigError: either.
        """
        if ranks.world == 1:
            return
        n_samples = len(self.request.samples)
        if n_samples < ranks.world:
            raise ConfigError(
                f"{ranks.world} processes share {n_samples} take(s): each process samples whole takes, so start "
                f"at most {n_samples} (--nproc-per-node), or ask for more takes (--samples)."
            )
        if self.bundle.pending:
            raise ConfigError(
                f"{self.bundle.name} is not downloaded yet: run `jukebox models download "
                f"{self.bundle.released or self.bundle.name}` once before sampling with several processes."
            )

    def _run(
        self,
        torch_device: torch.device,
        decode: str,
        progress: ProgressCallback,
        *,
        force: bool,
        alignment: bool,
        audio_format: str | None,
        subtype: str | None,
        ranks: Ranks,
    ) -> GenerationResult:
        run, audio = (
            self._open(torch_device, force, audio_format, subtype, ranks) if ranks.main else (None, None)
        )
        codes = run_cascade(self.bundle, run, self.request, device=torch_device,
                            initial_codes=self.initial_codes or None, progress=progress,
                            alignment=alignment, decode=decode, audio=audio, ranks=ranks)  # fmt: skip
        top = self.bundle.top_level
        if run is None:
            return GenerationResult(
                run=self.output, model=self.bundle.name, pretrained=self.bundle.pretrained,
                sample_rate=self.bundle.sample_rate, seconds=self.request.sample_length / self.bundle.sample_rate,
                codes=codes, files=[], alignments=[],
            )  # fmt: skip
        return GenerationResult(
            run=self.output,
            model=self.bundle.name,
            pretrained=self.bundle.pretrained,
            sample_rate=self.bundle.sample_rate,
            seconds=self.request.sample_length / self.bundle.sample_rate,
            codes=codes,
            files=[  # top level first, takes in order (item_10 after item_9)
                path
                for level in self.request.levels
                for take in range(len(self.request.samples))
                if (path := run.audio_path(level, take, audio["format"])).exists()
            ],
            alignments=sorted(run.level_dir(top).glob("item_*.alignment.json")),
            warnings=silent_takes(run),
        )

    def _open(self, torch_device: torch.device, force: bool, audio_format: str | None, subtype: str | None,
              ranks: Ranks) -> tuple[Run, dict]:  # fmt: skip
        """Create or resume the run folder with its starting codes (rank 0); returns it and its audio format."""
        run, _ = Run.create_or_resume(
            self.output, self.request.settings(), force=force, describe=self._describe
        )
        audio = audio_output(run.state.get("audio"), audio_format, subtype)
        run.update(device=str(torch_device), processes=ranks.world, model=self.bundle.describe(), audio=audio)
        for level, codes in self.given_levels.items():  # finished as they are
            if run.load_codes(level)[0] is None:
                run.save_codes(level, codes, windows_done=0, finished=True)
            if not has_level_audio(run, level, codes.shape[0], audio):
                write_level_audio(run, self.bundle, level, codes, audio=audio)
        for level, codes in self.initial_codes.items():  # the starting point stays in the run, for resumes
            if run.load_codes(level)[0] is None:
                run.save_codes(level, codes, windows_done=0)
        return run, audio


def _device(device: str | torch.device) -> torch.device:
    return resolve_device(device) if isinstance(device, str) else device


def decode_mode(compile: str, device: torch.device) -> str:
    """The decode mode (``SamplingSettings.decode``) a ``--compile`` choice means on ``device``.

    Raises:
        ConfigError: another choice.
    """
    if compile not in COMPILE_CHOICES:
        raise ConfigError(f"--compile must be one of {', '.join(COMPILE_CHOICES)}; got {compile!r}.")
    if compile == "on":
        return "graph" if device.type == "cuda" else "compiled"
    return "eager" if compile == "off" else "auto"


# -- preparing ------------------------------------------------------------------------------------------------


def _bundle(model: ModelArg, cache_dir: str | Path | None, progress: ProgressCallback) -> Bundle:
    if isinstance(model, Bundle):
        return model
    # A released model not in the cache stays pending until the job runs: planning needs no download.
    return load_bundle(model, cache_dir=cache_dir, download=True, defer=True, progress=progress)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _check_labels(bundle: Bundle, request: CascadeRequest) -> list[str]:
    """Fail on unknown labels before any sampling; warnings about the lyrics."""
    warnings = []
    for level in request.levels:
        try:
            _, dropped = encode_metadata(
                bundle.labellers[level], request.samples, allow_unknown=request.allow_unknown
            )
        except LabelError as err:
            text = str(err).replace("--model MODEL", f"--model {bundle.spec}").rstrip(".")
            raise LabelError(f"{bundle.name}: {text}.{_released_hint(bundle, request)}") from None
        warnings += [f"level {level}: {w}" for w in dropped]
    lyrics = any(s.lyrics for s in request.samples)
    if lyrics and not bundle.prior_configs[bundle.top_level].n_tokens:
        warnings.append(f"{bundle.name} has no lyrics conditioning; the lyrics are ignored.")
    return warnings


def _released_hint(bundle: Bundle, request: CascadeRequest) -> str:
    """Where another released model knows every artist and genre asked for: a hint that names it."""
    for name in MODELS:  # the smallest first
        if name == bundle.name:
            continue
        top = prior_config(name)
        labeller = Labeller(top.label_set, top.max_genres, 0)
        try:
            encode_metadata(labeller, [replace(m, lyrics="") for m in request.samples], allow_unknown=False)
        except LabelError:
            continue
        return f" {name} knows it: add --model {name}."
    return ""


def _job(bundle: Bundle, request: CascadeRequest, output: Path, **parts) -> GenerationJob:
    request, cut = bound_lyrics(bundle, request)
    return GenerationJob(
        bundle, request, Path(output), warnings=cut + _check_labels(bundle, request), **parts
    )


def prepare_generate(
    model: ModelArg = DEMO,
    *,
    artist: str = "unknown",
    genre: str = "unknown",
    lyrics: str = "",
    duration: float = 10.0,
    total_duration: float | None = None,
    samples: int = 1,
    levels: Sequence[int] | str | None = None,
    temperature: PerLevel = 0.99,
    top_k: int = 0,
    top_p: float = 0.0,
    seed: int = 0,
    prime: str | Path | None = None,
    prompt_seconds: float = DEFAULT_PROMPT_SECONDS,
    dtype: str = "auto",
    max_batch_size: PerLevel = "auto",
    chunk_size: int = 32,
    allow_unknown: bool = False,
    output: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: ProgressCallback = noop,
) -> GenerationJob:
    """A new song: sample the top level from nothing (or from the start of ``prime``), then upsample.

    Args:
        model: a ``--model`` value (``demo``, ``1b_lyrics``, a folder, ...) or a loaded :class:`Bundle`.
        artist, genre, lyrics: what every sample is conditioned on.
        duration: seconds to generate; ``total_duration``: the whole song's length (default: the duration,
            raised to the model's shortest song).
        samples: how many takes, sampled together.
        levels: the levels to sample, top first (default: all).
        temperature, max_batch_size: one value, or one per sampled level (top first); ``max_batch_size``
            may be ``auto`` (as many samples per prior call as free memory holds; it never changes the draws).
        top_k, top_p: filters (0: off); ``seed``: the same seed and settings give the same codes, and each
            sample's draws depend only on the seed and its index, not on how many samples run.
        prime: an audio file whose first ``prompt_seconds`` the samples continue.
        dtype: ``auto`` (bf16/fp16 on GPUs, fp32 on the CPU), ``fp32``, ``fp16`` or ``bf16``.
        chunk_size: known codes pushed through the prior at once when priming.
        allow_unknown: map an unknown artist or genre to id 0 instead of failing.
        output: the run folder (default: ``runs/<model>-<genre>-seed<seed>``).
        cache_dir: the model cache; ``progress``: download events while loading the model.

    Raises:
        ConfigError, LabelError, InvalidAudio, CheckpointError: before anything is sampled or written.
    """
    if prime is not None:
        check_number("--prompt-seconds", prompt_seconds, 0.0)
        audio_io.audio_info(prime)  # a bad prompt fails before the model loads
        if prompt_seconds >= duration:
            raise ConfigError(
                f"--prompt-seconds ({prompt_seconds}) must be shorter than --duration ({duration})."
            )
    bundle = _bundle(model, cache_dir, progress)
    spec = bundle.spec
    request = build_request(
        bundle, model=spec, samples=[SampleMeta(artist, genre, lyrics)] * samples, duration=duration,
        total_duration=total_duration, levels=levels, temperature=temperature, top_k=top_k, top_p=top_p,
        seed=seed, dtype=dtype, max_batch_size=max_batch_size, chunk_size=chunk_size,
        allow_unknown=allow_unknown,
        prompt={"file": str(prime), "seconds": prompt_seconds} if prime is not None else None,
    )  # fmt: skip
    initial = {}
    if prime is not None:
        initial = encode_prompt(bundle, prime, prompt_seconds, samples, request.levels)
    output = output or Path("runs") / f"{_slug(Path(spec).name)}-{_slug(genre)}-seed{seed}"
    return _job(bundle, request, output, initial_codes=initial)


def prepare_continue(
    source: str | Path,
    *,
    model: ModelArg | None = None,
    prompt_seconds: float | None = None,
    prompt_start: float | None = None,
    duration: float = 10.0,
    total_duration: float | None = None,
    artist: str | None = None,
    genre: str | None = None,
    lyrics: str | None = None,
    samples: int = 1,
    takes: Sequence[int] | None = None,
    levels: Sequence[int] | str | None = None,
    temperature: PerLevel = 0.99,
    top_k: int = 0,
    top_p: float = 0.0,
    seed: int = 0,
    dtype: str = "auto",
    max_batch_size: PerLevel = "auto",
    chunk_size: int = 32,
    allow_unknown: bool = False,
    output: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: ProgressCallback = noop,
) -> GenerationJob:
    """Continue a song up to ``duration``: keep the prompt's codes verbatim and sample what follows.

    Args:
        source: an audio file (encoded with the model's VQ-VAE; ``model`` defaults to ``demo``) or a run
            folder (its codes are reused, all of them or the first ``prompt_seconds``; ``model`` defaults to
            the run's, and each take keeps its own artist, genre and lyrics unless given here).
        prompt_seconds: seconds of the source to keep (default: 5 s of audio, or all of a run).
        prompt_start: audio files: where in the file the prompt starts, in seconds (default: the last
            ``prompt_seconds`` of the file, so the continuation follows the song's end).
        duration: the length of the result, prompt included.
        samples: takes to sample from an audio prompt (a run keeps its own number of takes).
        takes: a run: which of its takes to continue (default: all), in this order; the new run's take i
            continues ``takes[i]``.
        Others: as for :func:`prepare_generate`.

    Raises:
        ConfigError, LabelError, InvalidAudio, CheckpointError: before anything is sampled or written.
    """
    source = Path(source)
    if prompt_seconds is not None:
        check_number("--prompt-seconds", prompt_seconds, 0.0)
    check_number("--duration", duration, 0.0)
    if source.is_dir() and prompt_start is not None:
        raise ConfigError(
            "--prompt-start chooses where an audio prompt starts; a run is continued from its end."
        )
    if not source.is_dir() and takes is not None:
        raise ConfigError(
            "--takes chooses takes of a run to continue; an audio file has none (use --samples)."
        )
    if source.is_dir():
        source_run = Run.open(source)
        recorded = source_run.settings
        given = model.spec if isinstance(model, Bundle) else model
        if given is not None and model_identity(given) != model_identity(recorded["model"]):
            raise ConfigError(f"{source} was made with model {recorded['model']!r}, not {str(given)!r}.")
        bundle = _bundle(recorded["model"] if model is None else model, cache_dir, progress)
        top = bundle.top_level
        levels = check_levels(tuple(range(top, -1, -1)) if levels is None else levels, top)
        initial = run_prompt(bundle, source_run, levels, prompt_seconds)
        metas = [SampleMeta(artist or m["artist"], genre or m["genre"], lyrics or m["lyrics"])
                 for m in recorded["samples"]]  # fmt: skip
        prompt = {"run": str(source), "seconds": prompt_seconds}
        if takes is not None:  # recorded only when chosen: a run that continues every take keeps its settings
            rows = _chosen_takes(source, takes, len(metas))
            initial = {level: codes[rows] for level, codes in initial.items()}
            metas = [metas[r] for r in rows]
            prompt["takes"] = rows
    else:
        audio_io.audio_info(source)  # a bad file fails before the model loads
        seconds = DEFAULT_PROMPT_SECONDS if prompt_seconds is None else prompt_seconds
        if seconds >= duration:
            raise ConfigError(f"The prompt ({seconds} s) must be shorter than --duration ({duration} s).")
        start = audio_prompt_start(source, seconds, prompt_start)
        bundle = _bundle(DEMO if model is None else model, cache_dir, progress)
        metas = [SampleMeta(artist or "unknown", genre or "unknown", lyrics or "")] * samples
        prompt = {"file": str(source), "seconds": seconds, "start": round(start, 6)}
        initial = None
    request = build_request(
        bundle, model=bundle.spec, samples=metas, duration=duration, total_duration=total_duration,
        levels=levels, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, dtype=dtype,
        max_batch_size=max_batch_size, chunk_size=chunk_size, allow_unknown=allow_unknown, prompt=prompt,
    )  # fmt: skip
    if initial is None:
        bundle = bundle.fetched(progress)  # encoding the prompt needs the VQ-VAE's weights
        initial = encode_prompt(
            bundle, source, prompt["seconds"], len(metas), request.levels, prompt["start"]
        )
    initial = {level: codes for level, codes in initial.items() if level in request.levels}
    top_samples = initial[bundle.top_level].shape[1] * bundle.vqvae.hop_lengths[-1]
    if top_samples >= request.sample_length:
        raise ConfigError(
            f"The prompt is already {top_samples / bundle.sample_rate:.2f} s long; ask for a longer --duration."
        )
    output = output or Path("runs") / f"{_slug(source.stem)}-continued-seed{seed}"
    return _job(bundle, request, output, initial_codes=initial)


def _chosen_takes(run_dir: Path, takes: Sequence[int], count: int) -> list[int]:
    """``takes`` as a list, checked against a run of ``count`` takes.

    Raises:
        ConfigError: none chosen, or a take the run does not have.
    """
    rows = list(takes)
    bad = [r for r in rows if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r < count]
    if bad or not rows:
        chosen = ", ".join(map(str, bad)) if bad else "none"
        raise ConfigError(f"{run_dir} has takes 0..{count - 1}; chosen take(s) {chosen} do not exist.")
    return rows


def prepare_upsample(
    run_dir: str | Path,
    *,
    takes: Sequence[int] | None = None,
    model: Bundle | None = None,
    temperature: PerLevel = 0.99,
    top_k: int = 0,
    top_p: float = 0.0,
    seed: int = 0,
    dtype: str = "auto",
    max_batch_size: PerLevel = "auto",
    chunk_size: int = 32,
    output: str | Path | None = None,
    cache_dir: str | Path | None = None,
    progress: ProgressCallback = noop,
    samples: Sequence[int] | None = None,
) -> GenerationJob:
    """Upsample chosen top-level takes of a run (every level below the top) into a new run folder.

    Args:
        run_dir: a run whose top level is finished.
        takes: which takes, by their number in the run (default: all).
        model: the run's model, if already loaded (default: loaded from the run's record).
        output: the new run folder (default: ``<run_dir>-upsampled``).
        samples: the old name of ``takes`` (deprecated: ``samples`` is a count everywhere else).
        Others: as for :func:`prepare_generate`.

    Raises:
        ConfigError: no finished top level, or takes that do not exist.
    """
    if samples is not None:
        if takes is not None:
            raise ConfigError("Give takes alone (samples is its old name).")
        warn("prepare_upsample(samples=) is now takes=", DeprecationWarning, stacklevel=2)
        takes = samples
    run_dir = Path(run_dir)
    source = Run.open(run_dir)
    recorded = source.settings
    bundle = model if model is not None else _bundle(recorded["model"], cache_dir, progress)
    top = bundle.top_level
    codes, _, finished = source.load_codes(top)
    if codes is None or not finished:
        raise ConfigError(f"{run_dir} has no finished top-level (level {top}) codes to upsample.")
    check_codes(bundle, source, top, codes)
    rows = list(range(codes.shape[0])) if takes is None else _chosen_takes(run_dir, takes, codes.shape[0])
    # Upsampled with adapters (`upsample --adapter`): the new run records them, so that it resumes with them.
    spec = bundle.spec if ADAPTER_MARK in bundle.spec else recorded["model"]
    request = build_request(
        bundle, model=spec, samples=[SampleMeta(**recorded["samples"][r]) for r in rows],
        duration=seconds_for(codes.shape[1] * bundle.vqvae.hop_lengths[top], bundle.sample_rate),
        total_duration=seconds_for(recorded["total_length"], bundle.sample_rate), first_level=top - 1,
        temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, dtype=dtype,
        max_batch_size=max_batch_size, chunk_size=chunk_size, allow_unknown=recorded["allow_unknown"],
        prompt={"run": str(run_dir), "samples": rows},
    )  # fmt: skip
    selected = codes[rows]
    output = output or run_dir.with_name(f"{run_dir.name}-upsampled")
    return _job(bundle, request, output, initial_codes={top: selected}, given_levels={top: selected})


# prepare_generate's options -> the key of CascadeRequest.settings() each one decides.
_SETTING_OF = {
    "artist": "samples", "genre": "samples", "lyrics": "samples", "samples": "samples", "model": "model",
    "duration": "sample_length", "total_duration": "total_length", "levels": "levels",
    "temperature": "temperature", "top_k": "top_k", "top_p": "top_p", "seed": "seed", "dtype": "dtype",
    "max_batch_size": "max_batch_size", "chunk_size": "chunk_size", "allow_unknown": "allow_unknown",
    "prime": "prompt", "prompt_seconds": "prompt", "adapters": "model",
}  # fmt: skip


def _asked_settings(bundle: Bundle, saved: CascadeRequest, asked: dict) -> dict:
    """The settings ``asked`` (prepare_generate's options) would give, for the keys they decide only: the
    run's own values stand in for the rest, so an option left out never counts as a difference."""
    unknown = sorted(set(asked) - set(_SETTING_OF))
    if unknown:
        raise ConfigError(f"prepare_resume cannot compare {', '.join(unknown)} with a run's settings.")
    rate = bundle.sample_rate
    labels = {k: asked[k] for k in ("artist", "genre", "lyrics") if k in asked}
    samples = [replace(meta, **labels) for meta in saved.samples]
    if asked.get("samples", len(samples)) != len(samples):
        samples = [samples[0]] * asked["samples"]
    prompt = saved.prompt
    if "prime" in asked or (prompt and "file" in prompt and "prompt_seconds" in asked):
        prime = asked.get("prime", (prompt or {}).get("file"))
        seconds = asked.get("prompt_seconds", (prompt or {}).get("seconds", DEFAULT_PROMPT_SECONDS))
        prompt = {"file": str(prime), "seconds": seconds} if prime is not None else None
    lengths = {"duration", "total_duration"} & set(asked)
    request = build_request(
        bundle, model=_asked_model(saved.model, asked), samples=samples,
        duration=asked.get("duration", seconds_for(saved.sample_length, rate)),
        # a --duration alone gets the song length a new run would (the run's may be shorter than it)
        total_duration=asked.get("total_duration"),
        levels=asked.get("levels", saved.levels), temperature=asked.get("temperature", saved.temperature),
        top_k=asked.get("top_k", saved.top_k), top_p=asked.get("top_p", saved.top_p),
        seed=asked.get("seed", saved.seed), dtype=asked.get("dtype", saved.dtype),
        max_batch_size=asked.get("max_batch_size", saved.max_batch_size),
        chunk_size=asked.get("chunk_size", saved.chunk_size),
        allow_unknown=asked.get("allow_unknown", saved.allow_unknown), prompt=prompt,
    )  # fmt: skip
    if not lengths:  # the run's own song length, which need not be a whole number of top-level codes
        request = replace(request, total_length=saved.total_length)
    settings = request.settings()
    return {key: settings[key] for key in {_SETTING_OF[option] for option in asked}}


def _asked_model(saved: str, asked: dict) -> str:
    """The ``--model`` value a resume asks for: ``model`` (its base when ``adapters`` are asked apart) with
    ``adapters`` (default: the run's own), spelt as the run spells it when both name the same model."""
    if "model" not in asked and "adapters" not in asked:
        return saved
    base, named = split_adapters(asked.get("model", saved))
    if "adapters" in asked:  # after those --model names, as loading them would
        adapters = [*(named if "model" in asked else []), *(str(a) for a in asked["adapters"] or ())]
    elif not named:  # --model alone names the base: the run keeps its adapters
        adapters = split_adapters(saved)[1]
    else:
        adapters = named
    model = with_adapter_spec(base, adapters)
    return saved if model_identity(model) == model_identity(saved) else model


def prepare_resume(
    run_dir: str | Path,
    *,
    model: Bundle | None = None,
    asked: dict | None = None,
    cache_dir: str | Path | None = None,
    progress: ProgressCallback = noop,
) -> GenerationJob:
    """Continue an interrupted run folder with its own settings (its prompt codes were saved in it).

    Args:
        asked: options of :func:`prepare_generate` the user gave with the resume (``genre``, ``duration``,
            ..., and ``adapters``: --adapter's paths): any that differs from the run's is refused, as a new
            run with other settings would be. A model is compared by what it names (`model_identity`).

    Raises:
        RunNotResumable: an ``asked`` option differs from the run's setting.
        ConfigError: the run's settings cannot be honoured by its model.
    """
    run = Run.open(run_dir)
    request = CascadeRequest.from_settings(run.settings)
    bundle = model if model is not None else _bundle(request.model, cache_dir, progress)
    try:  # a hand-edited run.json is checked like new settings, but no option of this command can fix it
        validate_request(bundle, request, options=False)
    except ConfigError as err:
        raise ConfigError(
            f"{run_dir}: its run.json asks for settings its model {request.model!r} cannot honour: "
            f"{str(err).rstrip('.')}. Was run.json edited (its model, its lengths)? Restore it, or start a new "
            "run with `jukebox generate` and another -o."
        ) from err
    job = _job(bundle, request, Path(run_dir))
    if asked:
        run.check_asked(_asked_settings(bundle, request, asked), describe=job._describe)
    return job


# -- one call -------------------------------------------------------------------------------------------------


def generate(model: ModelArg = DEMO, *, device: str = "auto", progress: ProgressCallback = noop,
             alignment: bool = True, force: bool = False, compile: str = "auto", audio_format: str | None = None,
             subtype: str | None = None, **options) -> GenerationResult:  # fmt: skip
    """:func:`prepare_generate` then :meth:`GenerationJob.run` (options as for ``prepare_generate``)."""
    job = prepare_generate(model, **options)
    return job.run(device=device, progress=progress, alignment=alignment, force=force, compile=compile,
                   audio_format=audio_format, subtype=subtype)  # fmt: skip


def continue_from(source: str | Path, *, device: str = "auto", progress: ProgressCallback = noop,
                  alignment: bool = True, force: bool = False, compile: str = "auto",
                  audio_format: str | None = None, subtype: str | None = None,
                  **options) -> GenerationResult:  # fmt: skip
    """:func:`prepare_continue` then :meth:`GenerationJob.run`."""
    job = prepare_continue(source, **options)
    return job.run(device=device, progress=progress, alignment=alignment, force=force, compile=compile,
                   audio_format=audio_format, subtype=subtype)  # fmt: skip


def upsample(run_dir: str | Path, *, device: str = "auto", progress: ProgressCallback = noop,
             force: bool = False, compile: str = "auto", audio_format: str | None = None,
             subtype: str | None = None, **options) -> GenerationResult:  # fmt: skip
    """:func:`prepare_upsample` then :meth:`GenerationJob.run`."""
    job = prepare_upsample(run_dir, **options)
    return job.run(device=device, progress=progress, force=force, compile=compile, audio_format=audio_format,
                   subtype=subtype)  # fmt: skip
