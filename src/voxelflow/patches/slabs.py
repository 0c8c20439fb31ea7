"""Streaming accumulation: only the slabs the grid has not passed yet are held.

Patches come in grid order, ``k`` the slowest index, so ``k`` never decreases
(:mod:`voxelflow.patches.grid`). :class:`SlabAccumulator` keeps the output as
slabs along ``k``; when a patch starts at ``k``, every slab that ends at or
before ``k`` can receive nothing more: it is divided by its summed weights,
optionally reduced over channels (``"argmax"``: a label map; ``"max"``: the
largest channel value), handed to a *sink*, and dropped. Memory stays at the
slabs in flight (about one patch deep across the whole ``I × J`` plane), plus
what the sink keeps, whatever the number of channels and the volume's depth.

Sinks: :class:`MemorySink` fills one tensor of the (reduced) output;
:class:`ZarrSink` writes each slab into a ``.nii.zarr`` under a temporary name
beside the target, renamed into place only when everything was written
(:func:`voxelflow._atomic.atomic_target`), so an interrupted run never leaves
a store that looks complete.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
from collections.abc import Sequence
from typing import Literal, Protocol

import numpy as np
import torch

from voxelflow._atomic import atomic_target
from voxelflow._errors import VoxelflowRuntimeError, VoxelflowValueError, check_choice
from voxelflow.patches._zarr_store import create_nifti_zarr
from voxelflow.patches.accumulators import weight_dtype
from voxelflow.patches.placement import Placement

Reduce = Literal["argmax", "max"]
REDUCTIONS: tuple[str, ...] = ("argmax", "max")


def label_dtype(num_classes: int) -> torch.dtype:
    """The smallest integer dtype that holds ``num_classes`` labels."""
    return torch.uint8 if num_classes <= 256 else torch.int16


def parse_reduce(reduce: str | None) -> str | None:
    """``None`` (keep every channel), ``"argmax"`` or ``"max"``."""
    return None if reduce is None else check_choice("reduce", reduce, REDUCTIONS)


def reduced_channels(channels: int, reduce: str | None) -> int:
    return channels if reduce is None else 1


def reduced_dtype(channels: int, dtype: torch.dtype, reduce: str | None) -> torch.dtype:
    """The dtype of what a reduction gives: labels for argmax, ``dtype`` otherwise."""
    return label_dtype(channels) if reduce == "argmax" else dtype


class Sink(Protocol):
    """Where finished slabs ``(C, I, J, k1 - k0)`` go."""

    name: str

    def write(self, k0: int, k1: int, slab: torch.Tensor) -> None: ...

    def finalize(self) -> None: ...

    def abort(self) -> None: ...

    @property
    def memory_bound(self) -> int: ...


class MemorySink:
    """Finished slabs copied into one ``(C, I, J, K)`` tensor (:attr:`result`)."""

    def __init__(
        self,
        shape: Sequence[int],
        channels: int,
        dtype: torch.dtype,
        *,
        name: str = "output",
        device: torch.device | str | None = None,
    ) -> None:
        self.name = name
        with torch.inference_mode(False):
            self.result = torch.empty((channels, *shape), dtype=dtype, device=device)

    def write(self, k0: int, k1: int, slab: torch.Tensor) -> None:
        self.result[..., k0:k1] = slab

    def finalize(self) -> None:
        return None

    def abort(self) -> None:
        self.result = torch.empty(0)

    @property
    def memory_bound(self) -> int:
        return self.result.nbytes


class ZarrSink:
    """Finished slabs written into a NIfTI-Zarr store, published atomically on :meth:`finalize`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        shape: Sequence[int],
        channels: int,
        dtype: torch.dtype,
        affine: np.ndarray,
        *,
        chunks: Sequence[int],
        label: bool,
    ) -> None:
        self.path = self.name = os.fspath(path)
        self.channels = channels
        self._stack = contextlib.ExitStack()
        self._tmp = self._stack.enter_context(atomic_target(self.path))
        try:
            self._array = create_nifti_zarr(
                self._tmp, shape, channels, dtype, affine, chunks=chunks, label=label
            )
        except OSError as error:
            self.abort(error)
            raise _write_error(self.path, error) from error
        except BaseException as error:
            self.abort(error)
            raise

    def write(self, k0: int, k1: int, slab: torch.Tensor) -> None:
        # (C, I, J, k) -> (C, k, J, I): the zarr order
        slab = slab.cpu()
        try:
            if self.channels == 1:
                self._array[k0:k1] = np.ascontiguousarray(slab[0].numpy().transpose())
            else:
                self._array[:, k0:k1] = np.ascontiguousarray(slab.numpy().transpose(0, 3, 2, 1))
        except OSError as error:
            raise _write_error(self.path, error) from error

    def finalize(self) -> None:
        try:
            self._stack.close()
        except OSError as error:
            raise _write_error(self.path, error) from error

    def abort(self, error: BaseException | None = None) -> None:
        error = error or VoxelflowRuntimeError("aborted")
        self._stack.__exit__(type(error), error, error.__traceback__)

    @property
    def memory_bound(self) -> int:
        return 0


def _write_error(path: str, error: OSError) -> VoxelflowRuntimeError:
    """The output, what went wrong, and the fix, for a failed write (disk full, no access)."""
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno == errno.ENOSPC:
        fix = "free space on that disk, or write the output to a disk with room"
    elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = "write the output to a folder you can write to"
    else:
        fix = "check the disk, or write the output elsewhere"
    return VoxelflowRuntimeError(
        f"{path}: writing the output failed ({reason}); nothing was kept at {path}; {fix}"
    )


class SlabAccumulator:
    """Weighted sums in slabs along ``k``, finished (normalised, reduced) as the grid passes.

    Args:
        shape: ``(I, J, K)`` of the output.
        channels: channels of the model's output.
        dtype: dtype of the sums and of the output.
        sink: where finished slabs go.
        slab: thickness of a slab along ``k`` (a chunk of the on-disk output).
        max_patch_k: the largest extent of a patch along ``k`` (output voxels).
        reduce: ``None``, ``"argmax"`` or ``"max"`` over channels.
        device: where the slabs are (the sink's device for a memory sink).

    Example:
        >>> import torch
        >>> from voxelflow.patches.slabs import MemorySink, SlabAccumulator
        >>> sink = MemorySink((4, 4, 8), 1, torch.uint8)
        >>> acc = SlabAccumulator((4, 4, 8), 3, torch.float32, sink, slab=4, max_patch_k=4,
        ...                       reduce="argmax")
        >>> scores = torch.zeros(2, 3, 4, 4, 4)
        >>> scores[0, 1], scores[1, 2] = 1.0, 1.0  # class 1 in k < 4, class 2 after
        >>> whole = (slice(0, 4), slice(0, 4), slice(0, 4))
        >>> plan = [((slice(0, 4), slice(0, 4), slice(k, k + 4)), whole) for k in (0, 4)]
        >>> acc.add(scores, None, plan)
        >>> acc.finalize()
        >>> sink.result[0, 0, 0].tolist()
        [1, 1, 1, 1, 2, 2, 2, 2]
    """

    def __init__(
        self,
        shape: Sequence[int],
        channels: int,
        dtype: torch.dtype,
        sink: Sink,
        *,
        slab: int,
        max_patch_k: int,
        reduce: str | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.channels = int(channels)
        self.dtype = dtype
        self.sink = sink
        self.reduce = parse_reduce(reduce)
        # slabs are small: sum in float32 even for float16 outputs (no underflow)
        self.sum_dtype = weight_dtype(dtype)
        self.slab = max(1, min(int(slab), self.shape[2]))
        self.max_patch_k = int(max_patch_k)
        self.num_slabs = math.ceil(self.shape[2] / self.slab)
        self.patches = 0
        self.finished = False
        self._slabs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._flushed = 0  # slabs [0, _flushed) are finished
        self._peak_slabs = 0
        # every channel kept, in the sums' dtype, in memory: sum straight into the output
        # (the sums of an open slab are a view of it; finishing divides in place)
        self._direct: torch.Tensor | None = None
        if (
            isinstance(sink, MemorySink)
            and self.reduce is None
            and sink.result.dtype == self.sum_dtype
            and sink.result.device == self.device
        ):
            self._direct = sink.result

    @property
    def name(self) -> str:
        return self.sink.name

    # ------------------------------------------------------------------ memory
    @property
    def slab_bytes(self) -> int:
        """Bytes of one open slab: sums (``C`` channels, unless summed into the output)
        and weights (one channel)."""
        i, j, _ = self.shape
        value_size = (
            0 if self._direct is not None else torch.empty((), dtype=self.sum_dtype).element_size()
        )
        weight_size = torch.empty((), dtype=weight_dtype(self.dtype)).element_size()
        return i * j * self.slab * (self.channels * value_size + weight_size)

    @property
    def max_open_slabs(self) -> int:
        """Slabs open at once: those a patch of ``max_patch_k`` can span, plus one."""
        return min(self.num_slabs, math.ceil(self.max_patch_k / self.slab) + 1)

    @property
    def memory_bound(self) -> int:
        """Bytes held at most: the open slabs, one slab's normalised float32 copy and its
        reordered copy while it is finished, and the sink's own memory."""
        i, j, _ = self.shape
        flush = 0 if self._direct is not None else 2 * i * j * self.slab * self.channels * 4
        return self.max_open_slabs * self.slab_bytes + flush + self.sink.memory_bound

    @property
    def peak_open_slabs(self) -> int:
        """The most slabs that were open at once so far."""
        return self._peak_slabs

    # ------------------------------------------------------------------ adding
    def add(self, data: torch.Tensor, window: torch.Tensor | None, plan: list[Placement]) -> None:
        everything = slice(None)
        for patch, (dst, src) in zip(data, plan, strict=True):
            self.advance(dst[2].start)
            values = patch[(everything, *src)].to(self.sum_dtype)
            self._add_box(dst, values, None if window is None else window[src])
        self.patches += len(plan)

    def advance(self, k: int) -> None:
        """No patch added from now on starts before ``k``: finish every slab that ends by then."""
        done = min(k // self.slab, self.num_slabs)
        while self._flushed < done:
            self._flush(self._flushed)
            self._flushed += 1

    def _add_box(
        self, box: tuple[slice, slice, slice], data: torch.Tensor, weight: torch.Tensor | None
    ) -> None:
        """Add ``data`` (``(C, …box)``) times ``weight`` (box-shaped; ``None`` means 1)."""
        if self.finished:
            raise VoxelflowRuntimeError(
                f"{self.name}: the output is already written; start a new aggregator"
            )
        bi, bj, bk = box
        if bk.start < self._flushed * self.slab:
            raise VoxelflowValueError(
                f"{self.name}: a patch reaches k={bk.start}, but slabs before k="
                f"{self._flushed * self.slab} are already written. Streaming aggregation "
                "needs patches in grid order (k never decreasing): iterate a GridSampler in "
                "order (no shuffle, no random subset)"
            )
        first, last = bk.start // self.slab, (bk.stop - 1) // self.slab
        for s in range(first, last + 1):
            values, weights = self._open(s)
            z0, z1 = max(bk.start, s * self.slab), min(bk.stop, (s + 1) * self.slab)
            src = slice(z0 - bk.start, z1 - bk.start)
            dst = slice(z0 - s * self.slab, z1 - s * self.slab)
            if weight is None:
                values[:, bi, bj, dst].add_(data[..., src])
                weights[bi, bj, dst].add_(1.0)
            else:
                piece = weight[..., src]
                values[:, bi, bj, dst].addcmul_(data[..., src], piece.to(values.dtype))
                weights[bi, bj, dst].add_(piece)

    def _open(self, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        if s not in self._slabs:
            i, j, k = self.shape
            depth = min(self.slab, k - s * self.slab)
            with torch.inference_mode(False):  # normal tensors: updatable in and out of it
                if self._direct is not None:
                    values = self._direct[..., s * self.slab : s * self.slab + depth]
                    values.zero_()
                else:
                    values = torch.zeros(
                        (self.channels, i, j, depth), dtype=self.sum_dtype, device=self.device
                    )
                weights = torch.zeros(
                    (i, j, depth), dtype=weight_dtype(self.dtype), device=self.device
                )
                self._slabs[s] = (values, weights)
            self._peak_slabs = max(self._peak_slabs, len(self._slabs))
        return self._slabs[s]

    def _flush(self, s: int) -> None:
        k0 = s * self.slab
        if s not in self._slabs:
            k1 = min(k0 + self.slab, self.shape[2])
            raise VoxelflowValueError(
                f"{self.name}: no patch covered k={k0}..{k1} before the output moved past it; "
                "streaming aggregation needs every patch of the grid, in grid order (k never "
                "decreasing): iterate a GridSampler in order, without shuffling"
            )
        values, weights = self._slabs.pop(s)
        k1 = k0 + weights.shape[2]
        empty = int((weights == 0).sum())
        if empty:
            raise VoxelflowValueError(
                f"{self.name}: {empty} voxels in k={k0}..{k1} were covered by no patch; add "
                "every patch of the grid (in grid order)"
            )
        normalised = values.div_(weights.to(values.dtype))
        if self._direct is not None:
            return  # divided in place, inside the output
        if self.reduce == "argmax":
            out = normalised.argmax(0, keepdim=True).to(label_dtype(self.channels))
        elif self.reduce == "max":
            out = normalised.amax(0, keepdim=True).to(self.dtype)
        else:
            out = normalised.to(self.dtype)
        del normalised
        try:
            self.sink.write(k0, k1, out)
        except BaseException as error:  # the output cannot be completed: drop the partial now
            self._abort(error)
            raise

    # ------------------------------------------------------------------ ending
    def finalize(self) -> None:
        """Finish the remaining slabs and publish the sink."""
        if self.finished:
            return
        try:
            self.advance(self.shape[2] + self.slab)
            self.sink.finalize()
        except BaseException as error:
            self._abort(error)
            raise
        self.finished = True

    def abort(self) -> None:
        """Drop the partial output (nothing is left at a sink's path)."""
        self._abort(None)

    def _abort(self, error: BaseException | None) -> None:
        if self.finished:
            return
        self._slabs.clear()
        if isinstance(self.sink, ZarrSink):
            self.sink.abort(error)
        else:
            self.sink.abort()
        self.finished = True


def zarr_slab_accumulator(
    path: str | os.PathLike[str],
    shape: Sequence[int],
    channels: int,
    dtype: torch.dtype,
    affine: np.ndarray,
    *,
    max_patch_k: int,
    chunks: Sequence[int],
    reduce: str | None = None,
) -> SlabAccumulator:
    """A :class:`SlabAccumulator` into a new ``.nii.zarr`` at ``path`` (slabs of whole chunks)."""
    chunk = tuple(min(int(c), int(n)) for c, n in zip(chunks, shape, strict=True))
    sink = ZarrSink(
        path,
        shape,
        reduced_channels(channels, reduce),
        reduced_dtype(channels, dtype, reduce),
        affine,
        chunks=chunk,
        label=reduce == "argmax",
    )
    return SlabAccumulator(
        shape, channels, dtype, sink, slab=chunk[2], max_patch_k=max_patch_k, reduce=reduce
    )


def memory_slab_accumulator(
    shape: Sequence[int],
    channels: int,
    dtype: torch.dtype,
    *,
    max_patch_k: int,
    reduce: str | None,
    name: str = "output",
    slab: int | None = None,
    device: torch.device | str | None = None,
) -> SlabAccumulator:
    """A :class:`SlabAccumulator` whose (reduced) output stays in memory.

    Slabs are a quarter of a patch deep by default (at least 8 voxels), so the
    sums in flight span about 1.5 patches along ``k``. Without a reduction (and
    with float32/float64 outputs) the sums are the output itself: only the
    weights of the open slabs are extra.
    """
    depth = slab if slab is not None else max(8, max_patch_k // 4)
    sink = MemorySink(
        shape,
        reduced_channels(channels, reduce),
        reduced_dtype(channels, dtype, reduce),
        name=name,
        device=device,
    )
    return SlabAccumulator(
        shape,
        channels,
        dtype,
        sink,
        slab=depth,
        max_patch_k=max_patch_k,
        reduce=reduce,
        device=device,
    )


__all__ = [
    "REDUCTIONS",
    "label_dtype",
    "MemorySink",
    "Reduce",
    "SlabAccumulator",
    "ZarrSink",
    "memory_slab_accumulator",
    "parse_reduce",
    "zarr_slab_accumulator",
]
