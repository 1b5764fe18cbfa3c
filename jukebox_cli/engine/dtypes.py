"""The one table of floating-point dtype names, and the working dtype a device samples in."""

from __future__ import annotations

import torch

from jukebox_cli.engine.errors import ConfigError

#: Accepted names (the short one first, as written in files and run records).
DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def parse_dtype(name: str) -> torch.dtype:
    """The dtype called ``name`` (``fp32``, ``fp16``, ``bf16`` or their long forms).

    Raises:
        ConfigError: another name.
    """
    if name not in DTYPES:
        raise ConfigError(f"Unknown dtype {name!r}; use fp32, fp16 or bf16.")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """The short name of ``dtype`` (``fp32``, ``fp16``, ``bf16``)."""
    return next(name for name, value in DTYPES.items() if value == dtype)


def working_dtype(name: str, device: torch.device) -> torch.dtype:
    """The Transformer's working dtype for ``name`` on ``device``.

    ``auto`` is bfloat16 on CUDA GPUs that support it (else float16), float16 on MPS, float32 on the CPU.

    Raises:
        ConfigError: an unknown name.
    """
    if name != "auto":
        try:
            return parse_dtype(name)
        except ConfigError:
            raise ConfigError(f"Unknown dtype {name!r}; use auto, fp32, fp16 or bf16.") from None
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float16 if device.type == "mps" else torch.float32


def cpu_computes_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX), where a bf16 decode step streams
    half the bytes of a float32 one and is the faster choice for wide priors (Linux only; False elsewhere)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False
