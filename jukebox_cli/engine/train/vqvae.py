"""Training the VQ-VAE: the original's losses and metrics (see `audio.metrics`) over chunks of a corpus.

Every level is its own encoder/decoder pair, trained together: the loss sums, over the levels, the sample-wise
reconstruction mix (L2 + 0.02 Linf for the released recipe), the spectral terms and the commitment term,
each normalised by the corpus' "bandwidth" statistics so the weights mean the same on any data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from jukebox_cli.engine.audio import metrics as M
from jukebox_cli.engine.checkpoints.folder import VQVAE_FILE
from jukebox_cli.engine.checkpoints.native import save_native
from jukebox_cli.engine.models.vqvae import VQVAE
from jukebox_cli.engine.train.data import AudioCorpus
from jukebox_cli.engine.train.distributed import unwrap
from jukebox_cli.engine.train.logging import Audio, chromagram_image

# Bottleneck statistics averaged over levels in the logs, as the original does; restarts are summed.
_CODEBOOK_METRICS = ("fit", "pn", "entropy", "used_curr", "usage", "dk")


def corpus_bandwidth(corpus: AudioCorpus, *, seconds: float = 60.0, seed: int = 0) -> dict[str, float]:
    """The loss normalisers over about ``seconds`` of training chunks (600 s in the original)."""
    per_batch = 8
    n_batches = max(1, round(seconds * corpus.sample_rate / (corpus.sample_length * per_batch)))
    batches = (
        # A seed of its own, so these chunks are not the first training batches.
        torch.stack([c.audio for c in corpus.sample_batch("train", per_batch, seed=seed + 104_729, step=i)])
        for i in range(n_batches)
    )  # fmt: skip
    values = M.bandwidth(batches)
    # Silence would give zero normalisers; keep them finite and positive.
    return {k: max(v, 1e-8) for k, v in values.items()}


@dataclass
class VQVAETask:
    """What ``train`` needs to train a VQ-VAE (see ``loop.Task``)."""

    model: VQVAE
    corpus: AudioCorpus
    batch_size: int
    seed: int = 0
    bandwidth: dict[str, float] = field(default_factory=dict)
    eval_size: int = 8
    source: str | None = None  # the model it was fine-tuned from

    def __post_init__(self) -> None:
        if not self.bandwidth:
            self.bandwidth = corpus_bandwidth(self.corpus, seed=self.seed)

    def config(self) -> dict:
        config = {
            "kind": "vqvae",
            "model": self.model.config.to_dict(),
            "data": self.corpus.fingerprint(),
            "from": self.source,
        }
        if self.corpus.min_level_db is not None:  # only when set, so that older runs still resume
            config["min_level_db"] = self.corpus.min_level_db
        if self.corpus.trim_edges_db is not None:
            config["trim_edges_db"] = self.corpus.trim_edges_db
        return config

    def notes(self, world: int = 1) -> list[str]:
        """Advice about these settings, shown before training starts (see :func:`codebook_notes`)."""
        return codebook_notes(self.model, self.batch_size * world, self.corpus.sample_length)

    def train_batch(self, step: int, micro: int, rank: int, world: int) -> torch.Tensor:
        chunks = self.corpus.sample_batch(
            "train", self.batch_size, seed=self.seed * 1000 + micro, step=step, rank=rank
        )
        return torch.stack([c.audio for c in chunks])  # (B, T)

    def loss(self, model: VQVAE, batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        x = batch.to(next(model.parameters()).device, torch.float32)
        return vqvae_loss(model, x, self.bandwidth)

    @torch.no_grad()
    def evaluate(self, model: VQVAE, step: int) -> dict[str, float]:
        chunks = self.corpus.eval_chunks(self.eval_size)
        if not chunks:
            return {}
        totals: dict[str, float] = {}
        for start in range(0, len(chunks), self.batch_size):
            x = torch.stack([c.audio for c in chunks[start : start + self.batch_size]])
            loss, values = self.loss(model, x)
            for key, value in {"loss": float(loss), **values}.items():
                totals[key] = totals.get(key, 0.0) + value * x.shape[0]
        return {k: v / len(chunks) for k, v in totals.items() if not k.startswith(("used_curr", "dk"))}

    @torch.no_grad()
    def media(self, model: VQVAE, step: int) -> dict:

        chunks = self.corpus.eval_chunks(1)
        if not chunks:
            return {}
        x = chunks[0].audio[None].to(next(model.parameters()).device)
        out = model(x)
        sr = model.sample_rate
        items = {
            "input": Audio(x[0].cpu(), sr),
            "input_chroma": chromagram_image(x[0].cpu(), sr, title="input"),
        }
        for level, recon in enumerate(out.recons):
            items[f"recon_l{level + 1}"] = Audio(recon[0].clamp(-1, 1).cpu(), sr)
            items[f"recon_l{level + 1}_chroma"] = chromagram_image(recon[0].cpu(), sr, title=f"level {level}")
        return items

    def export(self, model: VQVAE, folder: Path) -> None:

        save_native(model, Path(folder) / VQVAE_FILE)


def codebook_notes(model: VQVAE, batch_size: int, sample_length: int) -> list[str]:
    """Levels whose codebook entries cannot stay alive: too few codes per update for the revival threshold.

    An entry counts as dead, and restarts at a random encoder output, when its EMA count of uses per update
    falls below ``revival_threshold``. With ``batch_size`` chunks of ``sample_length`` samples (over all
    processes: counts are summed across ranks), a level with hop h yields ``batch_size * sample_length / h``
    codes per update; spread over its entries, fewer than the threshold each means most entries restart every
    step, whatever they learned (the released recipe's batches were far larger).
    """
    c = model.config
    notes = []
    for level, hop in enumerate(model.hop_lengths):
        codes = batch_size * (sample_length // hop)
        per_entry = codes / c.codebook_size
        if per_entry < c.revival_threshold:
            suggestion = float(f"{per_entry / 4:.1g}")
            notes.append(
                f"level {level}: {codes} codes per step for {c.codebook_size} codebook entries ({per_entry:.2g} "
                f"uses each on average) is below the revival threshold {c.revival_threshold:g}, so most entries "
                f"restart at random encoder outputs every step. A larger --batch-size or --chunk-seconds, or "
                f"--revival-threshold {suggestion:g}, lets them settle."
            )
    return notes


def _scalar(value: torch.Tensor | float) -> float:
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def vqvae_loss(
    model: VQVAE, x: torch.Tensor, bandwidth: dict[str, float]
) -> tuple[torch.Tensor, dict[str, float]]:
    """The total training loss for audio ``x`` [B, T], and every logged metric (plain floats).

    ``model`` may be wrapped in DistributedDataParallel: it is called as given (gradients synchronise).
    """

    c = unwrap(model).config
    out = model(x)
    logs: dict[str, float] = {}
    recons, spectral, multispectral = [], [], []
    for level, x_l in enumerate(out.recons):
        tag = f"_l{level + 1}"
        recons.append(M.lmix_loss(x, x_l, l1=c.lmix_l1, l2=c.lmix_l2, linf=c.lmix_linf, k=c.linf_k,
                                  bandwidth_l1=bandwidth["l1"], bandwidth_l2=bandwidth["l2"]))  # fmt: skip
        spectral.append(M.spectral_loss(x, x_l, bandwidth_spec=bandwidth["spec"]))
        multispectral.append(M.multispectral_loss(x, x_l, bandwidth_spec=bandwidth["spec"]))
        with torch.no_grad():
            logs["recons_loss" + tag] = _scalar(recons[-1])
            logs["spectral_loss" + tag] = _scalar(spectral[-1])
            logs["multispectral_loss" + tag] = _scalar(multispectral[-1])
            logs["spectral_convergence" + tag] = _scalar(M.spectral_convergence(x, x_l).mean())
            q = out.quantized[level]
            for key in ("usage", "entropy"):
                if key in q.metrics:
                    logs[key + tag] = _scalar(q.metrics[key])
    commit = out.commit_loss
    loss = (
        torch.stack(recons).sum()
        + c.spectral * torch.stack(spectral).sum()
        + c.multispectral * torch.stack(multispectral).sum()
        + c.commit * commit
    )
    with torch.no_grad():
        x0 = out.recons[0]
        logs.update(
            recons_loss=_scalar(torch.stack(recons).sum()),
            spectral_loss=_scalar(torch.stack(spectral).sum()),
            multispectral_loss=_scalar(torch.stack(multispectral).sum()),
            commit_loss=_scalar(commit),
            spectral_convergence=logs["spectral_convergence_l1"],
            l1_loss=_scalar(M.l1_loss(x, x0)),
            l2_loss=_scalar(M.l2_loss(x, x0)),
            linf_loss=_scalar(M.linf_loss(x, x0, k=c.linf_k)),
        )
        for key in _CODEBOOK_METRICS:
            values = [_scalar(q.metrics[key]) for q in out.quantized if key in q.metrics]
            if values:
                logs[key] = sum(values) / len(values)
        restarts = [_scalar(q.metrics["restarts"]) for q in out.quantized if "restarts" in q.metrics]
        if restarts:
            logs["restarts"] = sum(restarts)
    return loss, logs
