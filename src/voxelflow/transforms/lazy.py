"""Lazy, region-computed images: how a transform reads only what a patch needs.

A transform that can compute any region of its output from a bounded region
of its input returns images over a *virtual backend*: an object with the
backend contract (:class:`~voxelflow.backends.BackendProtocol`) whose region
reads compute the region on demand. The whole output is just the region
"everything", computed by the same code, so a patch cut from a lazily
transformed subject equals the same region of the whole transformed volume by
construction, and reading it touches only the input it depends on.

:class:`RegionMapBackend` covers transforms whose output voxel depends on the
input voxel at the same place and, with a ``halo``, on its neighbours
(intensity maps, noise from a counter-based generator, bias fields, blurs,
label maps). Transforms that move voxels (flips, affine and elastic
resampling) compute their footprint in the source themselves and implement the
same contract.

Functions given to a virtual backend must pickle (a module-level function, a
``functools.partial`` of one, or a bound method of a transform): DataLoader
workers receive lazy subjects.

Example:
    >>> import torch, voxelflow as tio
    >>> from voxelflow.transforms.lazy import RegionMapBackend
    >>> image = tio.ScalarImage(torch.arange(24.0).reshape(1, 2, 3, 4))
    >>> doubled = image.lazy_like(RegionMapBackend(image.dataobj, lambda data, region: 2 * data))
    >>> doubled.is_loaded, doubled[:, 1:, 2:, 3:].data.flatten().tolist()
    (False, [46.0])
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from voxelflow._geometry import Triplet
from voxelflow._indexing import Box
from voxelflow._padding import pad_tensor
from voxelflow.backends.base import Backend, BackendProtocol, RegionCost


@dataclass(frozen=True)
class Region:
    """The spatial region of an output being computed, in voxels of the whole volume.

    ``data`` given to a region function covers ``start - halo`` to
    ``stop + halo`` along each axis (padded where that leaves the volume);
    the function returns the values of ``start`` to ``stop``.
    """

    start: Triplet
    stop: Triplet
    halo: Triplet
    volume_shape: Triplet

    @property
    def shape(self) -> Triplet:
        return (
            self.stop[0] - self.start[0],
            self.stop[1] - self.start[1],
            self.stop[2] - self.start[2],
        )

    def indices(self, device: torch.device | None = None) -> tuple[torch.Tensor, ...]:
        """Three int64 index vectors (I, J, K) of the region's voxels in the whole volume."""
        return tuple(
            torch.arange(a, b, dtype=torch.int64, device=device)
            for a, b in zip(self.start, self.stop, strict=True)
        )


RegionFunction = Callable[[torch.Tensor, Region], torch.Tensor]


class RegionMapBackend(Backend):
    """A virtual backend: ``out[region] = function(source[region ± halo], region)``.

    Args:
        source: the input's backend (a file, a tensor, or another virtual backend).
        function: ``function(data, region) -> tensor`` with ``data`` of shape
            ``(C_in, *(region.shape + 2 * halo))`` and a result of shape
            ``(channels, *region.shape)``. It must not modify ``data``.
        dtype: dtype of the output (default: the source's).
        channels: channels of the output (default: the source's).
        halo: voxels of context the function needs on each side, per axis.
        border: how ``data`` is padded where the halo leaves the volume, as
            the whole-volume operation pads it: ``"edge"``, ``"reflect"``,
            ``"symmetric"``, ``"constant"`` or a number.
        affine: the output's affine (default: the source's).
        key: what identifies the function and its parameters, for
            :attr:`cache_key` (``None``: the output has no stable identity).
    """

    def __init__(
        self,
        source: BackendProtocol,
        function: RegionFunction,
        *,
        dtype: torch.dtype | None = None,
        channels: int | None = None,
        halo: int | Triplet = 0,
        border: str | float = "edge",
        affine: np.ndarray | None = None,
        key: Hashable | None = None,
    ) -> None:
        self.source = source
        self.function = function
        self.dtype = source.dtype if dtype is None else dtype
        self.halo: Triplet = (halo, halo, halo) if isinstance(halo, int) else tuple(halo)  # type: ignore[assignment]
        self.border = border
        c, i, j, k = source.shape
        self.shape = (c if channels is None else int(channels), i, j, k)
        self.affine = np.asarray(source.affine if affine is None else affine, dtype=np.float64)
        self.path = None  # computed, not stored: never mistaken for the source file
        self._key = key

    # ------------------------------------------------------------ contract
    @property
    def region_cost(self) -> RegionCost:
        return getattr(self.source, "region_cost", "proportional")  # type: ignore[no-any-return]

    @property
    def cache_key(self) -> Hashable | None:
        source_key = getattr(self.source, "cache_key", None)
        if self._key is None or source_key is None:
            return None
        return ("map", source_key, self._key)

    def release(self) -> None:
        release = getattr(self.source, "release", None)
        if release is not None:
            release()

    def describe(self) -> dict[str, Any]:
        return {"format": "computed on demand", "from": repr(self.source)}

    def read(self, box: Box | None = None) -> torch.Tensor:
        box = self._full_box() if box is None else box
        out = torch.empty(tuple(len(range(s.start, s.stop, s.step)) for s in box), dtype=self.dtype)
        self.read_into(box, out)
        return out

    def read_into(self, box: Box, out: torch.Tensor) -> None:
        """Compute ``box`` of the output into ``out`` (reads only the footprint of the source)."""
        spatial = box[1:]
        start = tuple(s.start for s in spatial)
        stop = tuple(s.stop for s in spatial)
        region = Region(start, stop, self.halo, self.shape[1:])  # type: ignore[arg-type]
        data = self._read_with_halo(region)
        result = self.function(data, region)
        expected = (self.shape[0], *region.shape)
        if tuple(result.shape) != expected:
            raise AssertionError(
                f"{self.function!r} returned {tuple(result.shape)} for a region of {expected}"
            )
        steps = tuple(slice(None, None, s.step) for s in spatial)
        out.copy_(result[(box[0], *steps)])

    # ------------------------------------------------------------ helpers
    def _full_box(self) -> Box:
        return tuple(slice(0, n, 1) for n in self.shape)  # type: ignore[return-value]

    def _read_with_halo(self, region: Region) -> torch.Tensor:
        inside, before, after = [], [], []
        for a, b, h, n in zip(
            region.start, region.stop, region.halo, region.volume_shape, strict=True
        ):
            lo, hi = a - h, b + h
            inside.append(slice(max(0, lo), min(n, hi), 1))
            before.append(max(0, -lo))
            after.append(max(0, hi - n))
        channels = slice(0, self.source.shape[0], 1)
        data = self.source.read((channels, *inside))  # type: ignore[arg-type]
        if any(before) or any(after):
            data = _pad_border(data, before, after, self.border)
        return data


def _pad_border(
    data: torch.Tensor, before: list[int], after: list[int], border: str | float
) -> torch.Tensor:
    """Pad like the whole-volume operation; modes that reflect need repeated passes when the
    halo is wider than the data."""
    if isinstance(border, int | float) or border in ("constant", "edge"):
        return pad_tensor(data, before, after, border)
    while any(before) or any(after):
        step_before = [
            min(b, n - (1 if border == "reflect" else 0))
            for b, n in zip(before, data.shape[1:], strict=True)
        ]
        step_after = [
            min(a, n - (1 if border == "reflect" else 0))
            for a, n in zip(after, data.shape[1:], strict=True)
        ]
        if not any(step_before) and not any(step_after):  # a single voxel cannot reflect
            return pad_tensor(data, before, after, "edge")
        data = pad_tensor(data, step_before, step_after, border)
        before = [b - s for b, s in zip(before, step_before, strict=True)]
        after = [a - s for a, s in zip(after, step_after, strict=True)]
    return data
