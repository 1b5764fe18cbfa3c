"""The dependency floors in pyproject.toml are the versions the code needs."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_huggingface_hub_floor_has_the_download_hooks_we_pass() -> None:
    import huggingface_hub
    from huggingface_hub import hf_hub_download
    from huggingface_hub.file_download import http_get

    floor = re.search(r'"huggingface-hub>=([\d.]+)"', (ROOT / "pyproject.toml").read_text()).group(1)
    # tqdm_class reached hf_hub_download and http_get in 1.1.0 (1.0.1 rejects it: checked by hand against
    # both wheels); the floor must not fall below it.
    assert tuple(int(p) for p in floor.split(".")) >= (1, 1)
    installed = tuple(int(p) for p in re.findall(r"\d+", huggingface_hub.__version__)[:2])
    assert installed >= (1, 1)
    assert "tqdm_class" in inspect.signature(hf_hub_download).parameters
    assert {"resume_size", "expected_size", "displayed_filename", "tqdm_class"} <= set(
        inspect.signature(http_get).parameters
    )
