"""Choosing the device a model runs on."""

from __future__ import annotations

import os

import torch

from jukebox_cli.engine.errors import DeviceError


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> cuda if available, else mps, else cpu; otherwise validate the named device.

    Raises:
        DeviceError: an unknown device string, or one that is not available here.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise DeviceError(f"Unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps.") from err
    # torch accepts any CPU index and ignores it, so cpu:7 would run on the CPU while claiming otherwise.
    if device.type == "cpu" and device.index not in (None, 0):
        raise DeviceError(f"Device {name!r} does not exist: the CPU is one device, cpu (or cpu:0).")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"Device {name!r} requested but CUDA is not available on this machine.")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise DeviceError(
            f"Device {name!r} does not exist ({torch.cuda.device_count()} CUDA device(s) here)."
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError("Device 'mps' requested but Apple's Metal backend is not available here.")
    return device


def device_description(device: torch.device) -> str:
    """A short human name: ``cpu (2 threads)``, ``cuda:0 (NVIDIA H200)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


def busy_cpu() -> tuple[float, int] | None:
    """(the 1-minute load average, the cores this process may use) when other work keeps at least half of
    those cores busy; None when they are mostly idle or the OS does not say (Windows).

    A time probe runs for a moment and may land between the other work's bursts, while a long run shares
    the cores throughout: a plan made on busy cores is only a lower bound. The load counts this process too,
    which has been loading the model (about one core) before it asks.
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return (load, cores) if load - 1.0 >= cores / 2 else None


def free_memory(device: torch.device) -> int:
    """Bytes that new tensors on ``device`` can still take: free memory on a GPU (what the driver reports,
    plus what torch's allocator holds unused), available RAM on the CPU and on Apple's unified memory."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return _available_ram()


def _available_ram() -> int:
    try:  # Linux: MemAvailable counts the page cache the kernel would give back, MemFree does not
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
