"""A Transformer's Conv1D and LayerNorm tensors packed into one flat tensor per dtype, read back as views.

A compiled function receives every tensor it reads as an input, and on a CPU each input costs about a
microsecond per call (Python to C++ conversion, bookkeeping): twelve per layer add up to a fifth of a small
prior's decode step. Reading the weights from one flat tensor at fixed offsets instead makes them one or two
inputs. The static decode step reads parameters through a ``weights(module, name)`` callable, which is
``getattr`` by default and a :class:`PackedWeights` when a decoder packs.
"""

from __future__ import annotations

import torch
from torch import nn

from jukebox_cli.engine.models.transformer import Conv1D, LayerNorm

_PACKED = {Conv1D: ("w", "b"), LayerNorm: ("weight", "bias")}


class PackedWeights:
    """Copies of every Conv1D and LayerNorm tensor of ``model``, one flat tensor per dtype.

    Each tensor keeps its layout: a weight stored output-major (a transposed view) is packed as its storage
    and read back as the same transposed view. The copies do not follow later changes to ``model``.

    Call with (module, parameter name) for the tensor, a view into the packed storage.
    """

    def __init__(self, model: nn.Module) -> None:
        pieces: dict[torch.dtype, list[torch.Tensor]] = {}
        sizes: dict[torch.dtype, int] = {}
        self._slots: dict[tuple[int, str], tuple[torch.dtype, int, tuple[int, ...], tuple[int, ...]]] = {}
        for module in model.modules():
            for name in _PACKED.get(type(module), ()):
                tensor = getattr(module, name).detach()
                # The elements in storage order: a transposed 2-D view is packed as the rows it views.
                stored = tensor if tensor.is_contiguous() else tensor.t()
                if not stored.is_contiguous():
                    raise ValueError(
                        f"cannot pack a {tuple(tensor.shape)} tensor with strides {tensor.stride()}"
                    )
                offset = sizes.get(tensor.dtype, 0)
                pieces.setdefault(tensor.dtype, []).append(stored.reshape(-1))
                sizes[tensor.dtype] = offset + tensor.numel()
                self._slots[id(module), name] = (tensor.dtype, offset, tuple(tensor.shape), tensor.stride())
        self.flats = {dtype: torch.cat(parts) for dtype, parts in pieces.items()}

    def __call__(self, module: nn.Module, name: str) -> torch.Tensor:
        dtype, offset, shape, stride = self._slots[id(module), name]
        return self.flats[dtype].as_strided(shape, stride, offset)
