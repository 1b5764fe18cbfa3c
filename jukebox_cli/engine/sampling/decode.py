"""Decoders: what runs a prior one token at a time, window after window, in one of four modes.

A decoder belongs to one (prior, batch size, dtype, device). It owns the key/value cache and, for the fast
modes, fixed buffers for everything a step reads (the input token, the position, the window's conditioning),
so the same memory serves every window and every token. Per window, the sampler calls :meth:`Decoder.start`
with the window's conditioning, :meth:`Decoder.prime` with the known tokens (pushed through the Transformer
in chunks, as the original does), then alternates :meth:`Decoder.step` (the next position's logits) and
:meth:`Decoder.advance` (the drawn token becomes the next input). Choosing the token stays with the caller.

Modes (``SamplingSettings.decode``):

    eager     the Transformer's incremental path at Python-int positions: the reference, and the fallback
    static    the fixed-shape step of ``static_step.py``, run op by op
    compiled  that step through torch.compile: on the CPU the whole step as one graph (the least overhead per
              call); on CUDA one graph per attention type, reused by every layer of that type (module
              parameters are graph inputs), so the compile time does not grow with depth
    graph     CUDA only: the compiled step captured once as a CUDA graph, then replayed for every token
    auto      graph on CUDA; on the CPU see :func:`resolve_mode`

All modes give the same logits up to float rounding and, for equal logits, the same tokens.

Use :func:`make_decoder` (or :class:`StaticDecoder` for a combination the modes do not name, such as
``compile=False, graph=True``) and pass the decoder to ``sampling.sample_window(..., decoder=...)`` for every
window with that batch size: a decoder made per call compiles and captures again each time.
"""

from __future__ import annotations

import logging
import os
import shutil
import types
from collections.abc import Callable

import torch

from jukebox_cli.engine.errors import ConfigError
from jukebox_cli.engine.models.packed import PackedWeights
from jukebox_cli.engine.models.prior import Prior
from jukebox_cli.engine.models.static_step import block_step, decode_step, embed_step, head_step
from jukebox_cli.engine.models.transformer import CROSS, KVCache, with_linear_dtype

log = logging.getLogger(__name__)

MODES = ("auto", "eager", "static", "compiled", "graph")
_HALF = (torch.bfloat16, torch.float16)
# Wider priors spend so long per step that a packed copy of their weights (packed.py) is not worth it.
_PACK_MAX_WIDTH = 512

# CPU measurements behind ``auto`` (one thread, fp32, idle 2-core Xeon with AVX-512, upsampler layout; ms per
# decode step of eager / static / compiled after warm-up; the compile's first step, with an empty Inductor
# cache, on a busier machine):
#   width 64, depth 4, n_ctx 256, batch 1:     0.64 / 0.59 / 0.11 ms, 15 s
#   width 128, depth 4, n_ctx 256, batch 2:    0.78 / 0.73 / 0.22 ms, 10 s
#   width 256, depth 8, n_ctx 512, batch 1:    1.62 / 1.58 / 0.54 ms, 17 s
#   width 256, depth 8, n_ctx 512, batch 4:    1.82 / 1.78 / 0.64 ms, 23 s
#   width 1024, depth 16, n_ctx 1024, batch 1: 18.4 / 18.3 / 13.4 ms, 37 s
# Compiled is the fastest per step at every size, static is eager's speed (the same kernels), so the choice
# is eager or compiled: a compile pays for itself after 7,000 (width 1024) to 28,000 (width 64) steps, so
# auto compiles when a level will run at least 20,000.
_CPU_COMPILE_MIN_STEPS = 20_000


def resolve_mode(mode: str, device: torch.device, *, steps: int | None = None) -> str:
    """The decode mode that ``mode`` means on ``device`` (``auto`` resolved).

    Args:
        mode: one of :data:`MODES`.
        device: where the prior runs.
        steps: how many decode steps (tokens per sequence, summed over windows and batch pieces) will run
            with this mode; None: unknown, taken as few.

    Raises:
        ConfigError: an unknown mode, or ``graph`` without CUDA.
    """
    if mode not in MODES:
        raise ConfigError(f"Unknown decode mode {mode!r}; use one of {', '.join(MODES)}.")
    if mode == "graph" and device.type != "cuda":
        raise ConfigError(f"decode mode 'graph' captures CUDA graphs and needs a CUDA device, not {device}.")
    if mode != "auto":
        return mode
    if device.type == "cuda":
        return "graph"
    if device.type == "cpu" and steps is not None and steps >= _CPU_COMPILE_MIN_STEPS and _cpp_compiler():
        return "compiled"
    return "eager"


def _cpp_compiler() -> bool:
    """Whether torch.compile can build CPU kernels here (it needs a C++ compiler)."""
    return any(shutil.which(name) for name in filter(None, (os.environ.get("CXX"), "c++", "g++", "clang++")))


def _own_copy(fn: Callable, name: str) -> Callable:
    """``fn`` with a code object of its own.

    torch.compile keeps compiled graphs per code object; giving each decoder its own copy keeps its graphs
    to itself, so decoders for other priors, batch sizes or dtypes never count against its recompile limit.
    """
    return types.FunctionType(fn.__code__.replace(co_name=name), fn.__globals__, name, fn.__defaults__,
                              fn.__closure__)  # fmt: skip


def _compile(fn: Callable, name: str, device: torch.device, dtype: torch.dtype) -> Callable:
    # A decoder always calls its step with the same buffers and modules, so Dynamo's guards (which re-check
    # every tensor's shape, dtype and device and every module attribute on each call, tens of microseconds for
    # a whole prior) could only ever pass: skip them.
    options: dict = {"guard_filter_fn": torch.compiler.skip_all_guards_unsafe}
    # Inductor's C++ toolchain lookup warns "No CUDA runtime is found" on any machine with a CUDA build of
    # torch and no GPU; it is harmless there and would land in the middle of the progress bars.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    if device.type == "cpu":
        options["cpp_wrapper"] = True  # the kernels are called from C++, not one Python call each
        # A decode step's fused kernels are tiny; an OpenMP region each (Inductor's default with several
        # threads) made a step 8x slower on a shared 2-core machine. Matrix products still use torch's threads.
        options["cpp.threads"] = 1
        if dtype in _HALF:
            # Compute a LayerNorm or activation output once before the dot products that read it (by default
            # Inductor recomputes such a small expression inside each of them, once per output), and round
            # intermediate results to the working dtype where eager does, so the tokens stay close to eager's.
            options |= {"realize_cpu_opcount_threshold": 8, "emulate_precision_casts": True}
    return torch.compile(_own_copy(fn, name), dynamic=False, fullgraph=True, options=options)


def prepare(prior: Prior, dtype: torch.dtype, device: torch.device | str, mode: str) -> Prior:
    """``prior`` with its Conv1D weights resident as a decoder in ``mode`` on ``device`` uses them.

    In ``dtype``; and, for a compiled CPU step in half precision, stored output-major (see
    ``static_step.linear``). ``prior`` itself when it already is; otherwise a copy that shares every other
    tensor with it (see ``transformer.with_linear_dtype``).
    """
    out_major = torch.device(device).type == "cpu" and mode == "compiled" and dtype in _HALF
    return with_linear_dtype(prior, dtype, out_major=out_major)


def prime_cache(prior: Prior, cache: KVCache, tokens: torch.Tensor, x_cond: torch.Tensor, y_cond: torch.Tensor | None,
                encoder_kv: torch.Tensor | None, dtype: torch.dtype, chunk_size: int) -> None:  # fmt: skip
    """Push the known positions [0, K) of a window (``tokens`` [B, K]) through the Transformer in chunks,
    filling ``cache`` (the outputs are not needed)."""
    core = prior.prior
    for start in range(0, tokens.shape[1], chunk_size):
        n = min(chunk_size, tokens.shape[1] - start)
        # Position t's input is token t - 1; position 0 gets the start vector (its placeholder is ignored).
        prev = (
            torch.cat([tokens[:, :1], tokens[:, : n - 1]], dim=1)
            if start == 0
            else tokens[:, start - 1 : start + n - 1]
        )
        core.step(prev, _rows(x_cond, start, n), y_cond, cache, encoder_kv, dtype)


def _rows(x_cond: torch.Tensor, start: int, n: int) -> torch.Tensor:
    return x_cond[:, start : start + n] if x_cond.shape[1] > 1 else x_cond


class Decoder:
    """Runs one prior a token at a time for windows of ``batch`` sequences (see the module docstring).

    Args:
        prior: the prior (eval mode). Its Conv1D weights are made resident in ``dtype`` once (a copy when
            they are in another dtype; the caller's prior is not modified).
        batch: sequences per window.
        dtype: the Transformer's working dtype (LayerNorm, softmax and the logits stay float32).
        device: where the prior lives.
    """

    mode = "eager"

    def __init__(self, prior: Prior, batch: int, *, dtype: torch.dtype, device: torch.device | str) -> None:
        self.batch, self.dtype, self.device = batch, dtype, torch.device(device)
        self.prior = prepare(prior, dtype, self.device, self.mode)
        self.core = self.prior.prior
        self.cache = self.core.transformer.new_cache(batch, dtype=dtype, device=self.device)
        self._x_cond = self._y_cond = self._encoder_kv = None
        self._token: torch.Tensor | None = None

    def start(
        self, x_cond: torch.Tensor, y_cond: torch.Tensor | None, encoder_kv: torch.Tensor | None
    ) -> None:
        """Begin a window: x_cond [B, L or 1, W], y_cond [B, 1, W] (or None), encoder_kv [B, n_tokens, W]."""
        if x_cond.shape[0] != self.batch:
            raise ValueError(f"this decoder runs {self.batch} sequences, the window has {x_cond.shape[0]}")
        self.cache.reset()
        self._x_cond, self._y_cond, self._encoder_kv = x_cond, y_cond, encoder_kv

    def prime(self, tokens: torch.Tensor, chunk_size: int) -> None:
        """Feed the window's known tokens [B, K] (K may be 0); the next step is position K."""
        prime_cache(self.prior, self.cache, tokens, self._x_cond, self._y_cond, self._encoder_kv, self.dtype,
                    chunk_size)  # fmt: skip
        self._token = tokens[:, -1] if tokens.shape[1] else tokens.new_zeros(self.batch)

    def step(self) -> torch.Tensor:
        """Float32 logits [B, bins] of the next position (its keys and values enter the cache)."""
        t = self.cache.length
        logits = self.core.step(self._token[:, None], _rows(self._x_cond, t, 1), self._y_cond, self.cache,
                                self._encoder_kv, self.dtype)  # fmt: skip
        return logits[:, -1]

    def advance(self, token: torch.Tensor) -> None:
        """``token`` [B], drawn from the last step's logits, is the input of the next position."""
        self._token = token


class StaticDecoder(Decoder):
    """A decoder that runs the fixed-shape step of ``static_step.py`` over buffers it owns.

    Args:
        compile: run the step through torch.compile.
        graph: capture the step as a CUDA graph on its first call and replay it afterwards (CUDA only).
        scope: what one compiled graph covers: ``"step"`` (every layer, unrolled: the least overhead per
            token, a compile time that grows with depth) or ``"block"`` (one graph per attention type, shared
            by its layers). Default: ``"block"`` on CUDA, ``"step"`` elsewhere.
        Others as :class:`Decoder`.
    """

    def __init__(self, prior: Prior, batch: int, *, dtype: torch.dtype, device: torch.device | str,
                 compile: bool = False, graph: bool = False, scope: str | None = None) -> None:  # fmt: skip
        if graph and torch.device(device).type != "cuda":
            raise ConfigError(f"CUDA graphs need a CUDA device, not {device}.")
        self.mode = "graph" if graph else "compiled" if compile else "static"
        super().__init__(prior, batch, dtype=dtype, device=device)
        core, c, dev = self.core, self.prior.config, self.device
        self.token = torch.zeros(batch, dtype=torch.long, device=dev)
        self.position = torch.zeros(1, dtype=torch.long, device=dev)
        x_len = c.sequence_length
        self.x_cond = torch.zeros(batch, x_len, core.width, device=dev)
        self.first = torch.zeros(batch, core.width, device=dev)
        # x_out's weight laid out [W, bins] once, so the head is a plain h @ w.
        self.head_weight = core.x_out.weight.detach().float().t().contiguous()
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []
        for block, ring in zip(core.transformer._attn_mods, self.cache.layers, strict=True):
            if block.attn.attn_func == CROSS:
                shape = (batch, c.n_tokens, block.attn.n_state)
                self.layers.append((torch.zeros(shape, dtype=dtype, device=dev),
                                    torch.zeros(shape, dtype=dtype, device=dev)))  # fmt: skip
            else:
                self.layers.append((ring.keys, ring.values))
        self._run = self._build(compile, scope or ("block" if dev.type == "cuda" else "step"))
        self._graph: torch.cuda.CUDAGraph | None = None
        self._graph_logits: torch.Tensor | None = None
        self._capture = graph

    def _build(self, compile: bool, scope: str) -> Callable[[], torch.Tensor]:
        """The step as a function of no arguments (it reads and writes this decoder's buffers)."""
        core, dtype, layers = self.core, self.dtype, self.layers
        args = (self.token, self.position, self.x_cond, self.first)
        if scope == "step":
            step = _compile(decode_step, "decode_step", self.device, dtype) if compile else decode_step
            # Packed weights make a compiled call cheaper on a CPU; only a small prior notices (see packed.py).
            pack = compile and self.device.type == "cpu" and core.width <= _PACK_MAX_WIDTH
            weights = PackedWeights(core.transformer) if pack else getattr
            return lambda: step(core, *args, layers, dtype, self.head_weight, weights)
        if scope != "block":
            raise ValueError(f"unknown compile scope {scope!r}")
        embed, head, per_type = embed_step, head_step, {}
        blocks = list(core.transformer._attn_mods)
        for block in blocks:
            kind = block.attn.attn_func
            if kind not in per_type:
                per_type[kind] = (
                    _compile(block_step, f"block_step_{kind}", self.device, dtype) if compile else block_step
                )
        if compile:
            embed, head = (
                _compile(embed_step, "embed_step", self.device, dtype),
                _compile(head_step, "head_step", self.device, dtype),
            )
        position = self.position

        def run() -> torch.Tensor:
            h, row = embed(core, *args, dtype)
            for block, (keys, values) in zip(blocks, layers, strict=True):
                h = per_type[block.attn.attn_func](block, h, position, keys, values)
            return head(core, h, row, self.head_weight)

        return run

    def start(
        self, x_cond: torch.Tensor, y_cond: torch.Tensor | None, encoder_kv: torch.Tensor | None
    ) -> None:
        super().start(x_cond, y_cond, encoder_kv)
        self.x_cond.copy_(x_cond.expand_as(self.x_cond) if x_cond.shape[1] == 1 else x_cond)
        if y_cond is not None:
            self.first.copy_(y_cond.reshape(self.batch, -1))
        else:
            self.first.copy_(self.core.start_token.expand(self.batch, -1))
        # Cross-attention keys and values: computed once per window into fixed buffers, which the chunked
        # priming reads as well (it looks for them in the cache before computing its own).
        for index, block in enumerate(self.core.transformer._attn_mods):
            if block.attn.attn_func == CROSS:
                k, v = block.attn.c_enc_kv(encoder_kv.to(self.dtype)).chunk(2, dim=-1)
                keys, values = self.layers[index]
                keys.copy_(k)
                values.copy_(v)
                self.cache.encoder_kv[index] = (keys, values)

    def prime(self, tokens: torch.Tensor, chunk_size: int) -> None:
        super().prime(tokens, chunk_size)
        self.position.fill_(tokens.shape[1])
        self.token.copy_(self._token)

    def step(self) -> torch.Tensor:
        if not self._capture:
            return self._run()
        if self._graph is None:
            self._record()
        self._graph.replay()
        return self._graph_logits

    def advance(self, token: torch.Tensor) -> None:
        self.token.copy_(token)
        self.position.add_(1)

    def _record(self) -> None:
        """Capture the step as a CUDA graph at the current position.

        The warm-up runs (on a side stream, as graph capture requires) compile the step and let every kernel
        allocate its workspace. Running the step again at the same position and token is harmless: it writes
        the same keys into the same slots and returns the same logits.
        """
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                self._run()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._graph_logits = self._run()
        self._graph = graph


def make_decoder(prior: Prior, batch: int, *, dtype: torch.dtype, device: torch.device | str, mode: str,
                 steps: int | None = None) -> Decoder:  # fmt: skip
    """A decoder for ``prior`` in ``mode`` (``auto`` resolved for ``device`` and ``steps``, see
    :func:`resolve_mode`).

    Raises:
        ConfigError: an unknown mode, or ``graph`` without CUDA.
    """
    device = torch.device(device)
    mode = resolve_mode(mode, device, steps=steps)
    log.debug("decoding %s sequences of level %s in %s mode", batch, prior.level, mode)
    if mode == "eager":
        return Decoder(prior, batch, dtype=dtype, device=device)
    return StaticDecoder(prior, batch, dtype=dtype, device=device, compile=mode in ("compiled", "graph"),
                         graph=mode == "graph")  # fmt: skip
