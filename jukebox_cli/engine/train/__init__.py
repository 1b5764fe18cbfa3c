"""Training and fine-tuning (spec section 9): data, a model-agnostic loop, logging, and one task per model kind.

- ``data.py``: audio folders decoded once into a cache, deterministic random chunks, metadata, held-out split.
- ``loop.py``: the loop (AdamW, warmup + decay, clipping, weight EMA, mixed precision, accumulation,
  non-finite steps skipped), atomic resumable checkpoints; ``distributed.py``: torchrun / DDP helpers.
- ``logging.py``: TensorBoard / Weights & Biases / no logger; ``report.py``: curves to a PNG.
- ``vqvae.py``, ``prior.py``: what is trained (losses, metrics, evaluation, export to the native layout).
"""
