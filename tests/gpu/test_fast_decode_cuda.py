"""The fast decode modes that compile nothing pick the same greedy tokens as the eager path on CUDA, for every
tiny prior layout, in bf16 and fp32 (see ``_decode_check.py`` for what "the same" allows).

Modes: ``static`` (the fixed-shape step, op by op) and ``static-graph`` (that step captured as a CUDA graph,
uncompiled). ``graph`` (compiled, then captured) is in ``test_compiled_cuda.py``, apart because its compile
time is long. Each test keeps one decoder for two windows, as ``sample_level`` does.
"""

from __future__ import annotations

import pytest

from tests.gpu._decode_check import DTYPES, NEEDS_DEVICE, PRESETS, check_mode

pytestmark = [pytest.mark.gpu, NEEDS_DEVICE]


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("mode", ["static", "static-graph"])
@pytest.mark.parametrize("preset", PRESETS)
def test_fast_decode_matches_eager(preset: str, mode: str, dtype_name: str) -> None:
    check_mode(preset, mode, dtype_name)
