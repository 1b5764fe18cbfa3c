"""The ``graph`` decode mode (torch.compile, then a CUDA graph: what ``auto`` picks on CUDA) picks the same
greedy tokens as the eager path, for every tiny prior layout, in bf16 and fp32.

Apart from ``test_fast_decode_cuda.py`` because every test compiles (seconds to tens of seconds each): the GPU
suite runs these with the CLI tests, after its main measurements.
"""

from __future__ import annotations

import pytest

from tests.gpu._decode_check import DTYPES, NEEDS_DEVICE, PRESETS, check_mode

pytestmark = [pytest.mark.gpu, NEEDS_DEVICE]


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("preset", PRESETS)
def test_graph_decode_matches_eager(preset: str, dtype_name: str) -> None:
    check_mode(preset, "graph", dtype_name)
