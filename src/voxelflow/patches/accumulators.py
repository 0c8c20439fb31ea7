"""Accumulators: where the weighted sums of patch outputs live until they are blended.

Every accumulator has the same small interface (:class:`Accumulator`, in the
spirit of MONAI's mergers): ``add(data, window, plan)`` for a batch,
``finalize()`` for the result, ``abort()`` to drop it, and ``memory_bound``.
:class:`MemoryAccumulator` (this module) keeps the whole output in memory;
:class:`~voxelflow.patches.slabs.SlabAccumulator` keeps only the slabs the
grid has not passed yet and hands finished slabs to a sink (memory or a
``.nii.zarr``), optionally reduced (argmax, max) on the way.

:class:`MemoryAccumulator` adds a batch in one of two ways, chosen per batch:

* **per patch**: one fused slice-add of sums (``addcmul_``) and one of weights
  per patch, into views of the accumulators (contiguous runs, no index
  tensors, no temporary the size of the volume);
* **whole batch**: the flat voxel indices of all ``B`` patches at once (an
  int64 offset template per patch size, plus ``B`` base offsets), then one
  ``index_add_`` of sums and one of weights. Used when every patch of the
  batch lands whole and has at most :data:`VECTORISED_MAX_VOXELS` voxels:
  a scatter through an index tensor moves 8 index bytes per voxel, so it
  only pays where Python's per-patch overhead dominates (measurements in
  ``benchmarks/README.md``). On CUDA it adds with atomics, so under
  ``torch.use_deterministic_algorithms(True)`` the per-patch path is used.

Both paths give the same sums: bit for bit where window × output is exact,
otherwise to a few ulps (``addcmul_`` rounds a fused multiply-add once).

**Low precision.** With float16 or bfloat16 outputs and a blending window, a
sum of ``value × weight`` would underflow where the weights are small (float16
stops at 6e-8; window corners reach 4e-11), so those outputs are kept as a
running weighted mean instead, ``m ← m + w / (W + w) · (x − m)`` with the
summed weights ``W`` in float32, computed per patch in float32: the same
blend, with nothing that can underflow.
"""

from __future__ import annotations

from typing import Protocol

import torch

from voxelflow._errors import VoxelflowRuntimeError, VoxelflowValueError
from voxelflow.patches.placement import Placement

VECTORISED_MAX_VOXELS = 1024
"""Largest patch (in voxels of the output) added as a whole batch by ``index_add_``."""


class Accumulator(Protocol):
    """What the aggregator asks of an accumulator (one per named output)."""

    channels: int
    patches: int
    device: torch.device

    @property
    def name(self) -> str:
        """The output's name, or its path on disk (for messages)."""

    def add(self, data: torch.Tensor, window: torch.Tensor | None, plan: list[Placement]) -> None:
        """Add ``data`` ``(B, C, ...)``; patch ``b`` goes where ``plan[b]`` says, times ``window``."""

    @property
    def memory_bound(self) -> int:
        """Bytes the accumulator holds at most."""

    def abort(self) -> None:
        """Drop everything (and any partial output)."""


LOW_PRECISION = (torch.float16, torch.bfloat16)


def weight_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of the summed weights (and of windows) for outputs of ``dtype``."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def add_running_mean(
    mean: torch.Tensor, weights: torch.Tensor, values: torch.Tensor, weight: torch.Tensor
) -> None:
    """``mean ← mean + weight / (weights + weight) · (values − mean)`` and ``weights += weight``,
    in place (``mean`` of any dtype, computed in float32)."""
    weights.add_(weight)
    ratio = (weight / weights).to(torch.float32)
    current = mean.to(torch.float32)
    current.addcmul_(values.to(torch.float32) - current, ratio)
    mean.copy_(current)


class MemoryAccumulator:
    """Sums (``C`` channels, ``dtype``) and one channel of weights of a whole output.

    Example:
        >>> import torch
        >>> from voxelflow.patches.accumulators import MemoryAccumulator
        >>> acc = MemoryAccumulator((4, 4, 4), 1, torch.float32, torch.device("cpu"))
        >>> box = (slice(0, 4),) * 3
        >>> acc.add(torch.full((2, 1, 4, 4, 4), 3.0), None, [(box, box), (box, box)])
        >>> float(acc.finalize().mean()), acc.patches
        (3.0, 2)
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        channels: int,
        dtype: torch.dtype,
        device: torch.device,
        *,
        name: str = "output",
        vectorised_max_voxels: int = VECTORISED_MAX_VOXELS,
    ) -> None:
        self.name = name
        self.shape = tuple(int(n) for n in shape)
        self.channels = int(channels)
        self.dtype = dtype
        self.device = device
        self.vectorised_max_voxels = vectorised_max_voxels
        # normal tensors even under torch.inference_mode(), so that batches can be added
        # in and out of it
        with torch.inference_mode(False):
            self.values = torch.zeros((channels, *self.shape), dtype=dtype, device=device)
            self.weights = torch.zeros(self.shape, dtype=weight_dtype(dtype), device=device)
        self.patches = 0
        self.result: torch.Tensor | None = None
        self._running_mean = False  # the values are means already (low precision, windowed)
        self._offset_templates: dict[tuple[object, ...], torch.Tensor] = {}

    @property
    def memory_bound(self) -> int:
        """Bytes of the sums and the weights (the most this accumulator holds)."""
        voxels = self.values[0].numel() if self.values.numel() else 0
        itemsize = torch.empty((), dtype=weight_dtype(self.dtype)).element_size()
        return self.values.nbytes + voxels * itemsize

    def add(self, data: torch.Tensor, window: torch.Tensor | None, plan: list[Placement]) -> None:
        if self.result is not None:
            raise VoxelflowRuntimeError(
                f"PatchAggregator: output {self.name!r} was already blended (get_output) "
                f"from {self.patches} patches; adding more would count patches twice. Call "
                "reset() to start a new volume, or add every batch before get_output"
            )
        values, weights = self.values, self.weights
        everything = slice(None)
        if window is not None and self.dtype in LOW_PRECISION:
            self._running_mean = True
            for patch, (dst, src) in zip(data, plan, strict=True):
                add_running_mean(
                    values[(everything, *dst)], weights[dst], patch[(everything, *src)], window[src]
                )
        elif self._whole_batch(plan, data):
            self._add_whole_batch(data, window, plan)
        else:
            for patch, (dst, src) in zip(data, plan, strict=True):
                target = values[(everything, *dst)]
                if window is None:
                    target.add_(patch[(everything, *src)])
                    weights[dst].add_(1.0)
                else:
                    weight = window[src]
                    target.addcmul_(patch[(everything, *src)], weight.to(target.dtype))
                    weights[dst].add_(weight)
        self.patches += len(plan)

    def _whole_batch(self, plan: list[Placement], data: torch.Tensor) -> bool:
        """Whether this batch takes the whole-batch ``index_add_`` path."""
        patch_out = data.shape[2:]
        if len(plan) < 2 or patch_out.numel() > self.vectorised_max_voxels:
            return False
        if data.device.type != "cpu" and torch.are_deterministic_algorithms_enabled():
            return False
        return all(
            d.stop - d.start == n for dst, _ in plan for d, n in zip(dst, patch_out, strict=True)
        )

    def _offsets(self, patch_out: tuple[int, ...]) -> torch.Tensor:
        """Flat offsets (int64) of a patch's voxels in the output, from its corner."""
        template = self._offset_templates.get(patch_out)
        if template is None:
            _, j, k = self.shape
            i_axis, j_axis, k_axis = (
                torch.arange(n, dtype=torch.int64, device=self.device) for n in patch_out
            )
            template = (
                i_axis.view(-1, 1, 1) * (j * k) + j_axis.view(1, -1, 1) * k + k_axis
            ).reshape(-1)
            self._offset_templates[patch_out] = template
        return template

    def _add_whole_batch(
        self, data: torch.Tensor, window: torch.Tensor | None, plan: list[Placement]
    ) -> None:
        """One ``index_add_`` of sums and one of weights for all the patches of a batch."""
        values, weights = self.values, self.weights
        batch, channels = int(data.shape[0]), int(data.shape[1])
        patch_out = tuple(int(n) for n in data.shape[2:])
        _, j, k = self.shape
        bases = torch.tensor(
            [(dst[0].start * j + dst[1].start) * k + dst[2].start for dst, _ in plan],
            dtype=torch.int64,
        ).to(self.device, non_blocking=True)
        index = (bases[:, None] + self._offsets(patch_out)).reshape(-1)
        if window is None:
            contribution = data
            weight = torch.ones((), dtype=weights.dtype, device=self.device).expand(index.numel())
        else:
            contribution = data * window.to(values.dtype)
            weight = window.reshape(1, -1).expand(batch, -1).reshape(-1)
        # (B, C, P) -> (C, B·P): a view for one channel, one copy otherwise
        source = contribution.reshape(batch, channels, -1).transpose(0, 1).reshape(channels, -1)
        values.view(channels, -1).index_add_(1, index, source)
        weights.view(-1).index_add_(0, index, weight)

    def finalize(self) -> torch.Tensor:
        """The blended ``(C, I, J, K)`` output (raises if a voxel was covered by no patch).

        The sums are divided by the weights in place, slab by slab (no temporary
        the size of the output), and the weights are dropped; later calls return
        the same tensor, and :meth:`add` refuses more patches.
        """
        if self.result is not None:
            return self.result
        weights = self.weights
        empty = int((weights == 0).sum())
        if empty:
            raise VoxelflowValueError(
                f"PatchAggregator: {empty} voxels of output {self.name!r} were covered by no "
                f"patch ({self.patches} patches added); add every batch of the grid"
            )
        values = self.values
        if not self._running_mean:
            step = max(1, (1 << 22) // max(1, weights[0].numel()))  # ~4 M voxels at a time
            for start in range(0, weights.shape[0], step):
                part = slice(start, start + step)
                values[:, part].div_(weights[part].to(values.dtype))
        self.result = values
        self.weights = torch.empty(0, device=self.device)
        return values

    def abort(self) -> None:
        self.values = self.weights = torch.empty(0)
        self.result = None
