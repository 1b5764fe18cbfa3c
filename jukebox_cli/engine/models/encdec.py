"""Convolutional encoder and decoder stacks of the VQ-VAE: one independent pair per level.

Module and attribute names mirror the released checkpoints (``level_blocks.b.model.i.1.model.j.model.1``),
so the original layout loads with no key remapping. The Sequential indices 0 and 2 inside a residual block
are the ReLUs, which is why the convolutions sit at indices 1 and 3.

Also used by the upsampler priors' conditioner (`models.prior.Conditioner`), whose residual stacks store
their blocks under ``.blocks.`` instead of ``.model.`` and whose dilations are not reversed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn


def dilations(depth: int, growth_rate: int, cycle: int | None, reverse: bool) -> list[int]:
    """Dilation of each residual block, in checkpoint index order (decoders reverse it: largest first)."""
    values = [growth_rate ** (i if cycle is None else i % cycle) for i in range(depth)]
    return values[::-1] if reverse else values


class ResBlock(nn.Module):
    """``x + scale * conv1x1(relu(conv3_dilated(relu(x))))``; no normalisation layer, as in the original."""

    def __init__(self, channels: int, hidden: int, dilation: int, scale: float = 1.0) -> None:
        super().__init__()
        self.model = nn.Sequential(
            nn.ReLU(),
            nn.Conv1d(channels, hidden, 3, 1, dilation, dilation),
            nn.ReLU(),
            nn.Conv1d(hidden, channels, 1, 1, 0),
        )
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.model(x)


class Resnet(nn.Module):
    """``depth`` residual blocks in sequence. ``blocks_name`` is "model" or "blocks" (conditioner quirk)."""

    def __init__(
        self,
        channels: int,
        depth: int,
        *,
        m_conv: float = 1.0,
        growth_rate: int = 3,
        cycle: int | None = None,
        reverse_dilation: bool = False,
        res_scale: bool = False,
        blocks_name: str = "model",
    ) -> None:
        super().__init__()
        scale = 1.0 / math.sqrt(depth) if res_scale else 1.0
        hidden = int(m_conv * channels)
        blocks = nn.Sequential(
            *(
                ResBlock(channels, hidden, d, scale)
                for d in dilations(depth, growth_rate, cycle, reverse_dilation)
            )
        )
        self.blocks_name = blocks_name
        self.add_module(blocks_name, blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, self.blocks_name)(x)


class EncoderConvBlock(nn.Module):
    """``down_t`` x (strided conv, resnet), then a projection to ``out_channels``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int,
        depth: int,
        down_t: int,
        stride: int,
        **resnet_kwargs,
    ) -> None:
        super().__init__()
        steps: list[nn.Module] = []
        for i in range(down_t):
            steps.append(
                nn.Sequential(
                    nn.Conv1d(in_channels if i == 0 else width, width, 2 * stride, stride, stride // 2),
                    Resnet(width, depth, **resnet_kwargs),
                )
            )
        steps.append(nn.Conv1d(width, out_channels, 3, 1, 1))
        self.model = nn.Sequential(*steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class DecoderConvBlock(nn.Module):
    """A projection, then ``down_t`` x (resnet, transposed conv); the last one outputs ``out_channels``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int,
        depth: int,
        down_t: int,
        stride: int,
        **resnet_kwargs,
    ) -> None:
        super().__init__()
        steps: list[nn.Module] = [nn.Conv1d(in_channels, width, 3, 1, 1)]
        for i in range(down_t):
            steps.append(
                nn.Sequential(
                    Resnet(width, depth, **resnet_kwargs),
                    nn.ConvTranspose1d(
                        width, out_channels if i == down_t - 1 else width, 2 * stride, stride, stride // 2
                    ),
                )
            )
        self.model = nn.Sequential(*steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class Encoder(nn.Module):
    """Encoder of one level: ``len(downs_t)`` conv blocks from raw audio down to that level's latent."""

    def __init__(
        self,
        in_channels: int,
        emb_width: int,
        downs_t: Sequence[int],
        strides_t: Sequence[int],
        width: int,
        depth: int,
        **resnet_kwargs,
    ) -> None:
        super().__init__()
        self.level_blocks = nn.ModuleList(
            EncoderConvBlock(
                in_channels if b == 0 else emb_width, emb_width, width, depth, down_t, stride, **resnet_kwargs
            )
            for b, (down_t, stride) in enumerate(zip(downs_t, strides_t, strict=True))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Audio [B, C, T] -> latent [B, emb_width, T // hop]."""
        for block in self.level_blocks:
            x = block(x)
        return x

    def convolutions(self) -> Iterable[nn.Module]:
        """Every conv layer in the order it is applied (for receptive-field arithmetic)."""
        return (m for m in self.modules() if isinstance(m, nn.Conv1d | nn.ConvTranspose1d))


class Decoder(nn.Module):
    """Decoder of one level: its conv blocks from the top one down, then a conv to ``out_channels``."""

    def __init__(
        self,
        out_channels: int,
        emb_width: int,
        downs_t: Sequence[int],
        strides_t: Sequence[int],
        width: int,
        depth: int,
        **resnet_kwargs,
    ) -> None:
        super().__init__()
        self.level_blocks = nn.ModuleList(
            DecoderConvBlock(emb_width, emb_width, width, depth, down_t, stride, **resnet_kwargs)
            for down_t, stride in zip(downs_t, strides_t, strict=True)
        )
        self.out = nn.Conv1d(emb_width, out_channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Latent [B, emb_width, N] -> audio [B, out_channels, N * hop]."""
        for block in reversed(self.level_blocks):
            x = block(x)
        return self.out(x)

    def convolutions(self) -> Iterable[nn.Module]:
        """Every conv layer in the order it is applied (for receptive-field arithmetic)."""
        for block in reversed(self.level_blocks):
            yield from (m for m in block.modules() if isinstance(m, nn.Conv1d | nn.ConvTranspose1d))
        yield self.out


def receptive_reach(convolutions: Iterable[nn.Module], input_step: float = 1.0) -> float:
    """How far (in audio samples) an output can see on either side of its own position.

    Walks the layers in application order, tracking the spacing of the current sequence in samples
    (``input_step`` for the input: 1 for audio, the hop for codes). The bound is conservative, so chunks
    padded by at least this much on both sides compute exactly what an unchunked pass computes.
    """
    step = input_step
    reach = 0.0
    for conv in convolutions:
        (kernel,), (stride,), (padding,), (dilation,) = (
            conv.kernel_size,
            conv.stride,
            conv.padding,
            conv.dilation,
        )
        if isinstance(conv, nn.ConvTranspose1d):
            reach += (math.ceil(max(kernel - 1 - padding, padding) / stride) + 1) * step
            step /= stride
        else:
            extent = dilation * (kernel - 1)
            reach += max(padding, extent - padding) * step
            step *= stride
    return reach
