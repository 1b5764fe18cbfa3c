"""Training and fine-tuning: data, a model-agnostic loop, logging, and one task per model kind.

- ``data.py``: audio folders decoded once into a cache, deterministic random chunks, metadata, held-out split.
- ``loop.py``: the loop (AdamW, clipping, mixed precision, accumulation, non-finite steps skipped, evaluation,
  export); ``optim.py``: the LR schedule and the weight EMA; ``checkpoint.py``: atomic, exactly resumable
  checkpoints; ``distributed.py``: torchrun / DDP helpers.
- ``logging.py``: TensorBoard / Weights & Biases / no logger; ``report.py``: curves to a PNG.
- ``vqvae.py``, ``prior.py``: what is trained (losses, metrics, evaluation, media, export to the native layout);
  ``setup.py``: from command-line choices (preset or ``--from``, data) to a task.
"""
