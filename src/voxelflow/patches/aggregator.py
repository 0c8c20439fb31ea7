"""``PatchAggregator``: blend a model's patch outputs back into whole volumes.

For every output the aggregator keeps a weighted sum (``C`` channels, float32 by
default) and the sum of the weights (one channel), on the device asked for,
and returns their quotient. So any positive window blends a constant volume
into the same constant (TorchIO 2.0's Hann mode divides by a clamped window
sum instead and does not).

Modes:

* ``"crop"``: each patch contributes its centre only: ``overlap // 2`` voxels
  are trimmed on each side that faces another patch (the rest of the overlap
  after), none on a side at the border of the (padded) grid. When the trimmed
  margin covers a fully convolutional network's receptive field the result
  equals a whole-volume forward pass. Where the last, flush patch makes
  centres overlap, they are averaged.
* ``"average"``: every patch with weight 1.
* ``"hann"`` and ``"gaussian"``: separable windows
  (:mod:`voxelflow.patches.windows`), strictly positive, built once per patch
  size; or a user's own ``window=``.

A batch is added in one of two ways, chosen per batch by a measured rule:

* **per patch**: one fused slice-add of sums (``addcmul_``) and one of weights
  per patch, into views of the accumulators (contiguous runs, no index
  tensors, no temporary the size of the volume). Python's cost is a few
  microseconds per patch.
* **whole batch**: the flat voxel indices of all ``B`` patches at once (an
  int64 offset template per patch size, built once from per-axis aranges and
  broadcasting, plus ``B`` base offsets), then one ``index_add_`` of
  ``output * window`` reshaped to ``(C, B·P)`` into the flattened sums and one
  of the window into the flattened one-channel weights. Used when every patch
  of the batch lands whole (not ``"crop"``, no patch cut by the border) and
  the patch has at most :data:`VECTORISED_MAX_VOXELS` voxels.

Why the threshold: a scatter through an index tensor moves 8 index bytes per
voxel and gives up the contiguous inner loop, so it only pays where Python's
per-patch overhead dominates, i.e. small patches. Measured on this project's
CPU (torch 2.13, one thread, accumulator 128×128×96, ms per batch, per patch →
whole batch; ``torch.Tensor.index_put_(accumulate=True)`` was slower than
``index_add_`` in every case and is not used):

=========  ===  =====================  ===================
patch      B    1 channel              4 channels
=========  ===  =====================  ===================
8³         4    0.045 → 0.029 (1.5×)   0.050 → 0.037 (1.4×)
8³         64   0.70 → 0.15 (4.8×)     0.87 → 0.30 (2.9×)
10³        4    0.047 → 0.034 (1.4×)   0.056 → 0.054 (1.0×)
12³        4    0.048 → 0.045 (1.1×)   0.062 → 0.073 (0.9×)
16³        4    0.049 → 0.073 (0.7×)   0.077 → 0.141 (0.6×)
32³        4    0.10 → 0.37 (0.3×)     0.23 → 1.89 (0.1×)
64³        4    0.40 → 3.29 (0.1×)     1.85 → 9.19 (0.2×)
=========  ===  =====================  ===================

So patches of up to 1024 voxels (10³) take the whole-batch path and the usual
64³ patches keep the per-patch one, which is already memory-bound. No GPU was
available when this was measured; the same rule applies on every device (on
CUDA the whole-batch path adds with atomics, so under
``torch.use_deterministic_algorithms(True)`` the per-patch path is used).
Both paths give the same sums (each voxel receives the patches in batch order
either way on the CPU): bit for bit where window × output is exact (``"average"``,
dyadic windows), otherwise to a few ulps, since the per-patch ``addcmul_`` rounds
a fused multiply-add once where the whole-batch path rounds the product, then
the sum.

Outputs smaller than the input (``output_shape``, an integer factor per axis),
several named outputs, and accumulation on disk into a ``.nii.zarr``
(:mod:`voxelflow.patches.disk`) are supported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from voxelflow._errors import (
    VoxelflowKeyError,
    VoxelflowRuntimeError,
    VoxelflowTypeError,
    VoxelflowValueError,
    check_choice,
    did_you_mean,
)
from voxelflow.batch import SubjectsBatch
from voxelflow.image import Image, LabelMap, ScalarImage
from voxelflow.patches.disk import DEFAULT_CHUNK, DiskAccumulator, ZarrVolume, label_dtype
from voxelflow.patches.grid import grid_padding
from voxelflow.patches.location import PatchLocation
from voxelflow.patches.sampler import TypeTriplet, describe, to_triplet
from voxelflow.patches.windows import UserWindow, user_window, window_3d

OverlapMode = Literal["crop", "average", "hann", "gaussian"]
OVERLAP_MODES: tuple[str, ...] = ("crop", "average", "hann", "gaussian")
ACCUMULATOR_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
DEFAULT_KEY = "output"
VECTORISED_MAX_VOXELS = 1024
"""Largest patch (in voxels of the output) added as a whole batch by ``index_add_``; larger
patches are added patch by patch (see the module's documentation for the measurements)."""

Box = tuple[slice, slice, slice]
Placement = tuple[Box, Box]  # (destination in the output, source in the patch)
Locations = Sequence[PatchLocation] | SubjectsBatch | torch.Tensor | np.ndarray


class _Output:
    """The sums and weights of one named output (in memory, or on disk)."""

    def __init__(
        self,
        name: str,
        shape: TypeTriplet,
        factor: TypeTriplet,
        channels: int,
        dtype: torch.dtype,
        device: torch.device,
        disk: DiskAccumulator | None,
    ) -> None:
        self.name = name
        self.shape = shape
        self.factor = factor
        self.channels = channels
        self.disk = disk
        self.values: torch.Tensor | None = None
        self.weights: torch.Tensor | None = None
        if disk is None:
            weight_dtype = torch.float64 if dtype == torch.float64 else torch.float32
            # normal tensors even under torch.inference_mode(), so that batches can be added
            # in and out of it
            with torch.inference_mode(False):
                self.values = torch.zeros((channels, *shape), dtype=dtype, device=device)
                self.weights = torch.zeros(shape, dtype=weight_dtype, device=device)
        self.patches = 0


class PatchAggregator:
    """Blend patch outputs into volumes: ``add_batch`` for every batch, then ``get_output``.

    Args:
        spatial_shape: ``(I, J, K)`` of the volume the patches come from.
        overlap_mode: ``"crop"`` (default), ``"average"``, ``"hann"`` or
            ``"gaussian"``; see the module's documentation. Ignored when
            ``window`` is given.
        patch_overlap: the sampler's overlap (an int or three ints). ``"crop"``
            trims by it; locations of a padded
            :class:`~voxelflow.GridSampler` may stick out of the volume by the
            padding it implies, and are cropped to the volume.
        output_shape: the spatial shape of the output when the model's output is
            smaller than its input, e.g. ``(128, 128, 88)`` for a stride-2
            encoder on ``(256, 256, 176)``; a mapping gives one per named
            output. Each axis must shrink by an integer factor.
        window: your own blending window: a tensor of the output patch's
            spatial shape, or ``window(size) -> tensor``; strictly positive.
        dtype: dtype of the sums (``torch.float32``; ``torch.float16`` halves
            the memory). Weights are float32 (float64 with float64 sums).
        device: where to accumulate; ``None`` means the device of the first
            batch (the model's). ``"cpu"`` keeps a GPU free for the model.
        affine: 4×4 affine of the input volume, for :meth:`get_image` and
            :meth:`save` (the input image's, via :meth:`from_sampler`).
        on_disk: accumulate into this ``.nii.zarr`` instead of memory (a
            mapping gives one path per named output). Memory stays at a few
            slabs of chunks (see :attr:`memory_bound`); patches must come in
            grid order.
        chunks: chunk size (an int or three ints) of the on-disk output.
        argmax: on disk only, write the argmax over channels (a label map).

    Example:
        >>> import torch, voxelflow as tio
        >>> from voxelflow.loader import SubjectsLoader
        >>> subject = tio.Subject(t1=tio.ScalarImage(torch.rand(1, 24, 24, 16)))
        >>> sampler = tio.GridSampler(subject, patch_size=(12, 12, 16), patch_overlap=(4, 4, 0))
        >>> aggregator = tio.PatchAggregator(subject.spatial_shape, "hann", patch_overlap=(4, 4, 0))
        >>> for batch in SubjectsLoader(sampler, batch_size=4):
        ...     aggregator.add_batch(batch.t1.data * 2, batch.metadata["patch_location"])
        >>> torch.allclose(aggregator.get_output(), subject.t1.data * 2)
        True
    """

    def __init__(
        self,
        spatial_shape: Sequence[int],
        overlap_mode: OverlapMode | None = None,
        patch_overlap: int | Sequence[int] = 0,
        output_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
        *,
        window: UserWindow | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        affine: np.ndarray | None = None,
        on_disk: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]] | None = None,
        chunks: int | Sequence[int] = DEFAULT_CHUNK,
        argmax: bool = False,
    ) -> None:
        self.spatial_shape = to_triplet(spatial_shape, "spatial_shape")
        if any(n <= 0 for n in self.spatial_shape):
            raise VoxelflowValueError(f"spatial_shape must be positive, got {self.spatial_shape}")
        if window is not None and overlap_mode not in (None, "average", "hann", "gaussian"):
            raise VoxelflowValueError(
                f"window= replaces the blending window and cannot be combined with "
                f"overlap_mode={overlap_mode!r}; leave overlap_mode out"
            )
        if window is None:
            self.overlap_mode = check_choice("overlap_mode", overlap_mode or "crop", OVERLAP_MODES)
        else:
            self.overlap_mode = "window"
        self.window = window
        self.patch_overlap = to_triplet(patch_overlap, "patch_overlap")
        if any(o < 0 for o in self.patch_overlap):
            raise VoxelflowValueError(
                f"patch_overlap must be non-negative, got {self.patch_overlap}"
            )
        self._output_shapes = self._parse_output_shapes(output_shape)
        if dtype not in ACCUMULATOR_DTYPES:
            raise VoxelflowValueError(
                f"dtype={dtype} cannot accumulate; use one of "
                f"{', '.join(str(d) for d in ACCUMULATOR_DTYPES)}"
            )
        self.dtype = dtype
        self.device = None if device is None else torch.device(device)
        self.affine = None if affine is None else np.asarray(affine, dtype=np.float64)
        if on_disk is not None and self.device is not None and self.device.type != "cpu":
            raise VoxelflowValueError(
                "on_disk= accumulates on the CPU; leave device= out or pass device='cpu'"
            )
        if on_disk is not None and dtype not in (torch.float32, torch.float16):
            raise VoxelflowValueError(f"on_disk= stores float32 or float16, got dtype={dtype}")
        self.on_disk = on_disk
        if on_disk is not None:
            for path in on_disk.values() if isinstance(on_disk, Mapping) else (on_disk,):
                if not os.fspath(path).endswith(".nii.zarr"):
                    raise VoxelflowValueError(
                        f"{os.fspath(path)}: on-disk aggregation writes NIfTI-Zarr; name the "
                        "output *.nii.zarr"
                    )
        if argmax and on_disk is None:
            raise VoxelflowValueError(
                "argmax= applies to on-disk outputs; in memory use get_image(key, argmax=True)"
            )
        self.argmax = argmax
        self.chunks = to_triplet(chunks, "chunks")
        self._outputs: dict[str, _Output] = {}
        self._windows: dict[tuple[int, int, int], torch.Tensor] = {}
        self._offset_templates: dict[tuple[Any, ...], torch.Tensor] = {}
        self._vectorised_max_voxels = VECTORISED_MAX_VOXELS

    @classmethod
    def from_sampler(cls, sampler: Any, **kwargs: Any) -> PatchAggregator:
        """An aggregator for a :class:`~voxelflow.GridSampler`: its spatial shape, overlap,
        and the affine of its subject's first image.

        Example:
            >>> import torch, voxelflow as tio
            >>> subject = tio.Subject(t1=tio.ScalarImage(torch.rand(1, 16, 16, 16)))
            >>> sampler = tio.GridSampler(subject, 8, 2, padding_mode="edge")
            >>> tio.PatchAggregator.from_sampler(sampler, overlap_mode="average").spatial_shape
            (16, 16, 16)
        """
        if sampler.subject is None:
            raise VoxelflowValueError("from_sampler needs a GridSampler built with a subject")
        kwargs.setdefault("patch_overlap", sampler.patch_overlap)
        if "affine" not in kwargs:
            images = list(sampler.subject.images.values())
            kwargs["affine"] = images[0].affine if images else None
        return cls(sampler.spatial_shape, **kwargs)

    # ------------------------------------------------------------------ options
    def _parse_output_shapes(self, output_shape: Any) -> dict[str | None, TypeTriplet]:
        if output_shape is None:
            return {}
        items: dict[str | None, Any]
        if isinstance(output_shape, Mapping):
            items = {str(k): v for k, v in output_shape.items()}
        else:
            items = {None: output_shape}
        shapes: dict[str | None, TypeTriplet] = {}
        for key, value in items.items():
            shape = to_triplet(value, "output_shape")
            if any(o <= 0 or s % o for s, o in zip(self.spatial_shape, shape, strict=True)):
                raise VoxelflowValueError(
                    f"output_shape {describe(shape)} must divide spatial_shape "
                    f"{describe(self.spatial_shape)} by a whole factor along every axis "
                    "(e.g. (128, 128, 88) for (256, 256, 176))"
                )
            shapes[key] = shape
        return shapes

    def _factor(self, name: str) -> TypeTriplet:
        shape = self._output_shapes.get(name, self._output_shapes.get(None, self.spatial_shape))
        return tuple(s // o for s, o in zip(self.spatial_shape, shape, strict=True))  # type: ignore[return-value]

    # ------------------------------------------------------------------ adding
    def add_batch(
        self,
        outputs: torch.Tensor | Mapping[str, torch.Tensor],
        locations: Locations,
    ) -> None:
        """Add the model's outputs for one batch of patches.

        Args:
            outputs: a ``(B, C, I, J, K)`` tensor, or named tensors (one per output).
            locations: the batch's :class:`~voxelflow.PatchLocation` list, the
                :class:`~voxelflow.SubjectsBatch` itself, or a ``(B, 6)`` array of
                ``(i0, j0, k0, i1, j1, k1)`` (TorchIO's form).
        """
        named = self._as_named(outputs)
        places = self._as_locations(locations)
        plans = {}
        for name, tensor in named.items():  # validate everything before adding anything
            if tensor.shape[0] != len(places):
                raise VoxelflowValueError(
                    f"PatchAggregator: output {name!r} has {tensor.shape[0]} patches but "
                    f"{len(places)} locations were given; pass the locations of this batch"
                )
            existing = self._outputs.get(name)
            if existing is not None and existing.channels != tensor.shape[1]:
                raise VoxelflowValueError(
                    f"PatchAggregator: output {name!r} had {existing.channels} channels, this "
                    f"batch has {tensor.shape[1]}; a model must return the same channels for "
                    "every patch"
                )
            plans[name] = self._plan(name, tensor, places)
        if self.on_disk is not None and not isinstance(self.on_disk, Mapping):
            if len({*self._outputs, *named}) > 1:
                raise VoxelflowValueError(
                    f"on_disk={os.fspath(self.on_disk)!r} names one file but the model has "
                    f"several outputs ({', '.join(named)}); pass a mapping {{name: path.nii.zarr}}"
                )
        elif self.on_disk is not None:
            for name in named:
                self._disk_path(name)
        for name, tensor in named.items():
            self._add(self._get_or_create(name, tensor), tensor, plans[name])

    def _as_named(self, outputs: Any) -> dict[str, torch.Tensor]:
        if isinstance(outputs, torch.Tensor):
            named = {DEFAULT_KEY: outputs}
        elif isinstance(outputs, Mapping):
            named = dict(outputs)
        else:
            raise VoxelflowTypeError(
                "add_batch: outputs must be a (B, C, I, J, K) tensor or a dict of them, got "
                f"{type(outputs).__name__}"
            )
        if not named:
            raise VoxelflowValueError("add_batch: the dict of outputs is empty")
        for name, tensor in named.items():
            if not isinstance(name, str):
                raise VoxelflowTypeError(f"add_batch: output names must be strings, got {name!r}")
            if not isinstance(tensor, torch.Tensor) or tensor.ndim != 5:
                shape = (
                    tuple(tensor.shape)
                    if isinstance(tensor, torch.Tensor)
                    else type(tensor).__name__
                )
                raise VoxelflowValueError(
                    f"add_batch: output {name!r} must be a (B, C, I, J, K) tensor, got {shape}"
                )
            if not (tensor.is_floating_point() or tensor.is_complex()):
                named[name] = tensor.float()
        return named

    @staticmethod
    def _as_locations(locations: Any) -> list[PatchLocation]:
        if isinstance(locations, SubjectsBatch):
            if "patch_location" not in locations.metadata:
                raise VoxelflowValueError(
                    "add_batch: this batch has no 'patch_location'; batch patches from a sampler"
                )
            locations = locations.metadata["patch_location"]
        if isinstance(locations, torch.Tensor | np.ndarray):
            array = np.asarray(
                locations.cpu() if isinstance(locations, torch.Tensor) else locations
            )
            if array.ndim != 2 or array.shape[1] != 6:
                raise VoxelflowValueError(
                    f"add_batch: a locations array must be (B, 6) (i0, j0, k0, i1, j1, k1), got {array.shape}"
                )
            return [
                PatchLocation(tuple(row[:3]), tuple(row[3:] - row[:3])) for row in array.astype(int)
            ]
        if isinstance(locations, PatchLocation):
            locations = [locations]
        result = list(locations)
        for location in result:
            if not isinstance(location, PatchLocation):
                raise VoxelflowTypeError(
                    f"add_batch: locations must be PatchLocation objects, got {type(location).__name__}; "
                    "pass batch.metadata['patch_location'] or the batch itself"
                )
        return result

    def _get_or_create(self, name: str, tensor: torch.Tensor) -> _Output:
        if name in self._outputs:
            return self._outputs[name]
        channels = int(tensor.shape[1])
        factor = self._factor(name)
        shape = tuple(s // f for s, f in zip(self.spatial_shape, factor, strict=True))
        device = self.device or (tensor.device if self.on_disk is None else torch.device("cpu"))
        disk = None
        if self.on_disk is not None:
            disk = DiskAccumulator(
                self._disk_path(name),
                shape,
                channels,
                self.dtype,
                self.output_affine(factor),
                max_patch_k=int(tensor.shape[-1]),
                chunks=self.chunks,
                argmax=self.argmax,
            )
        output = _Output(name, shape, factor, channels, self.dtype, device, disk)  # type: ignore[arg-type]
        self._outputs[name] = output
        return output

    def _disk_path(self, name: str) -> str:
        assert self.on_disk is not None
        if isinstance(self.on_disk, Mapping):
            if name not in self.on_disk:
                raise VoxelflowKeyError(
                    f"on_disk has no path for output {name!r}; paths given for: "
                    f"{', '.join(self.on_disk)}." + did_you_mean(name, tuple(self.on_disk))
                )
            return os.fspath(self.on_disk[name])
        return os.fspath(self.on_disk)

    def _plan(
        self, name: str, tensor: torch.Tensor, locations: list[PatchLocation]
    ) -> list[Placement]:
        """Where each patch goes: destination box in the output, source box in the patch."""
        patch_out = tuple(int(n) for n in tensor.shape[2:])
        factor = self._factor(name)
        shape = tuple(s // f for s, f in zip(self.spatial_shape, factor, strict=True))
        return [self._place(name, shape, factor, location, patch_out) for location in locations]

    def _place(
        self,
        name: str,
        shape: tuple[int, ...],
        factor: TypeTriplet,
        location: PatchLocation,
        patch_out: tuple[int, ...],
    ) -> Placement:
        size, index, fin = location.size, location.index_ini, location.index_fin
        expected = tuple(s // f for s, f in zip(size, factor, strict=True))
        if any(s % f for s, f in zip(size, factor, strict=True)) or expected != patch_out:
            hint = (
                f"the output is downsampled by {describe(factor)}, so expected {describe(expected)}"
                if any(f > 1 for f in factor)
                else "pass output_shape= when the model's output is smaller than its input"
            )
            raise VoxelflowValueError(
                f"PatchAggregator: output {name!r} patches are {describe(patch_out)} "
                f"for input patches of {describe(size)} at {location.index}; {hint}"
            )
        padding = grid_padding(self.spatial_shape, size, self.patch_overlap)
        for axis in range(3):
            before, after = padding[axis]
            n = self.spatial_shape[axis]
            if index[axis] < -before or fin[axis] > n + after or fin[axis] <= 0 or index[axis] >= n:
                raise VoxelflowValueError(
                    f"PatchAggregator: location {index}..{fin} lies outside the volume "
                    f"{describe(self.spatial_shape)} along axis {'IJK'[axis]}; only a padded "
                    f"GridSampler may stick out, by at most {before} before and {after} after "
                    "(its overlap); check spatial_shape and patch_overlap match the sampler"
                )
        if any(i % f for i, f in zip(index, factor, strict=True)):
            raise VoxelflowValueError(
                f"PatchAggregator: location {index} is not a multiple of the downsampling "
                f"factor {describe(factor)}; use a patch size, overlap and padding that are"
            )
        dst, src = [], []
        for axis in range(3):
            f, n_out = factor[axis], shape[axis]
            start, stop = index[axis] // f, fin[axis] // f
            lo, hi = start, stop
            if self.overlap_mode == "crop":
                overlap = self.patch_overlap[axis]
                if index[axis] > 0:
                    lo += (overlap // 2) // f
                if fin[axis] < self.spatial_shape[axis]:
                    hi -= (overlap - overlap // 2) // f
            lo, hi = max(lo, 0), min(hi, n_out)
            dst.append(slice(lo, hi))
            src.append(slice(lo - start, hi - start))
        return tuple(dst), tuple(src)  # type: ignore[return-value]

    def _window(self, size: tuple[int, int, int], device: torch.device) -> torch.Tensor | None:
        if self.overlap_mode in ("crop", "average"):
            return None
        key = size
        window = self._windows.get(key)
        if window is None or window.device != device:
            dtype = torch.float64 if self.dtype == torch.float64 else torch.float32
            if self.window is not None:
                window = user_window(self.window, size, dtype=dtype, device=device)
            else:
                window = window_3d(self.overlap_mode, size, dtype=dtype, device=device)
            self._windows[key] = window
        return window

    def _add(self, output: _Output, tensor: torch.Tensor, plan: list[Placement]) -> None:
        device = torch.device("cpu") if output.disk is not None else output.values.device  # type: ignore[union-attr]
        data = tensor.detach().to(device=device, dtype=self.dtype, non_blocking=True)
        window = self._window(tuple(int(n) for n in tensor.shape[2:]), device)  # type: ignore[arg-type]
        everything = slice(None)
        if output.disk is not None:
            disk = output.disk
            for patch, (dst, src) in zip(data, plan, strict=True):
                disk.advance(dst[2].start)
                values = patch[(everything, *src)]
                if window is None:
                    disk.add(dst, values, 1.0)
                else:
                    weight = window[src]
                    disk.add(dst, values * weight.to(values.dtype), weight)
            output.patches += len(plan)
            return
        values, weights = output.values, output.weights
        assert values is not None and weights is not None
        if self._whole_batch(plan, data):
            self._add_whole_batch(values, weights, data, window, plan)
            output.patches += len(plan)
            return
        for patch, (dst, src) in zip(data, plan, strict=True):
            target = values[(everything, *dst)]
            if window is None:
                target.add_(patch[(everything, *src)])
                weights[dst].add_(1.0)
            else:
                weight = window[src]
                target.addcmul_(patch[(everything, *src)], weight.to(target.dtype))
                weights[dst].add_(weight)
        output.patches += len(plan)

    def _whole_batch(self, plan: list[Placement], data: torch.Tensor) -> bool:
        """Whether this batch takes the whole-batch ``index_add_`` path (see the module doc)."""
        patch_out = data.shape[2:]
        if self.overlap_mode == "crop" or len(plan) < 2:
            return False
        if patch_out.numel() > self._vectorised_max_voxels:
            return False
        if data.device.type != "cpu" and torch.are_deterministic_algorithms_enabled():
            return False
        return all(
            d.stop - d.start == n for dst, _ in plan for d, n in zip(dst, patch_out, strict=True)
        )

    def _offsets(
        self, patch_out: tuple[int, ...], shape: tuple[int, ...], device: torch.device
    ) -> torch.Tensor:
        """Flat offsets (int64) of a patch's voxels in a volume of ``shape``, from its corner."""
        key = (patch_out, shape, device)
        template = self._offset_templates.get(key)
        if template is None:
            _, j, k = shape
            i_axis, j_axis, k_axis = (
                torch.arange(n, dtype=torch.int64, device=device) for n in patch_out
            )
            template = (
                i_axis.view(-1, 1, 1) * (j * k) + j_axis.view(1, -1, 1) * k + k_axis
            ).reshape(-1)
            self._offset_templates[key] = template
        return template

    def _add_whole_batch(
        self,
        values: torch.Tensor,
        weights: torch.Tensor,
        data: torch.Tensor,
        window: torch.Tensor | None,
        plan: list[Placement],
    ) -> None:
        """One ``index_add_`` of sums and one of weights for all the patches of a batch."""
        batch, channels = int(data.shape[0]), int(data.shape[1])
        patch_out = tuple(int(n) for n in data.shape[2:])
        shape = tuple(int(n) for n in weights.shape)
        _, j, k = shape
        device = values.device
        bases = torch.tensor(
            [(dst[0].start * j + dst[1].start) * k + dst[2].start for dst, _ in plan],
            dtype=torch.int64,
        ).to(device, non_blocking=True)
        index = (bases[:, None] + self._offsets(patch_out, shape, device)).reshape(-1)
        if window is None:
            contribution = data
            weight = torch.ones((), dtype=weights.dtype, device=device).expand(index.numel())
        else:
            contribution = data * window.to(values.dtype)
            weight = window.reshape(1, -1).expand(batch, -1).reshape(-1)
        # (B, C, P) -> (C, B·P): a view for one channel, one copy otherwise
        source = contribution.reshape(batch, channels, -1).transpose(0, 1).reshape(channels, -1)
        values.view(channels, -1).index_add_(1, index, source)
        weights.view(-1).index_add_(0, index, weight)

    # ------------------------------------------------------------------ results
    @property
    def keys(self) -> list[str]:
        """Names of the outputs added so far (``"output"`` for a plain tensor)."""
        return list(self._outputs)

    def _resolve(self, key: str | None) -> _Output:
        if not self._outputs:
            raise VoxelflowRuntimeError(
                "PatchAggregator: nothing was added yet; call add_batch(outputs, locations) "
                "for every batch of the grid before get_output"
            )
        if key is None:
            if len(self._outputs) > 1:
                raise VoxelflowKeyError(
                    f"PatchAggregator holds several outputs ({', '.join(self._outputs)}); "
                    "pass get_output(key)"
                )
            return next(iter(self._outputs.values()))
        if key not in self._outputs:
            raise VoxelflowKeyError(
                f"PatchAggregator has no output {key!r}; outputs: {', '.join(self._outputs)}."
                + did_you_mean(key, tuple(self._outputs))
            )
        return self._outputs[key]

    def get_output(
        self, key: str | None = None, *, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """The blended ``(C, I, J, K)`` output (on ``device``, default where it accumulated).

        Raises if a voxel was covered by no patch (a batch was not added).
        """
        output = self._resolve(key)
        if output.disk is not None:
            raise VoxelflowValueError(
                f"output {output.name!r} is accumulated on disk ({output.disk.path}); call "
                "finish() and get_image(), which reads it lazily"
            )
        values, weights = output.values, output.weights
        assert values is not None and weights is not None
        empty = int((weights == 0).sum())
        if empty:
            raise VoxelflowValueError(
                f"PatchAggregator: {empty} voxels of output {output.name!r} were covered by no "
                f"patch ({output.patches} patches added); add every batch of the grid"
            )
        result = torch.div(values, weights).to(self.dtype)
        return result if device is None else result.to(device)

    def output_affine(self, factor: Sequence[int] = (1, 1, 1)) -> np.ndarray:
        """The input's affine for an output downsampled by ``factor`` (each output voxel at
        the centre of the block of input voxels it summarises)."""
        affine = np.eye(4) if self.affine is None else self.affine
        scale = np.eye(4)
        scale[:3, :3] = np.diag(np.asarray(factor, dtype=np.float64))
        scale[:3, 3] = (np.asarray(factor, dtype=np.float64) - 1) / 2
        return affine @ scale

    def get_image(
        self,
        key: str | None = None,
        *,
        argmax: bool = False,
        affine: np.ndarray | None = None,
    ) -> Image:
        """The output as an :class:`~voxelflow.Image` with the input's affine (scaled for a
        downsampled output): a :class:`~voxelflow.ScalarImage`, or with ``argmax`` the
        :class:`~voxelflow.LabelMap` of the most likely channel. An on-disk output is
        finished and read lazily."""
        output = self._resolve(key)
        if affine is not None:
            self.affine = np.asarray(affine, dtype=np.float64)
        image_affine = self.output_affine(output.factor)
        if output.disk is not None:
            if argmax and not self.argmax:
                raise VoxelflowValueError(
                    "this on-disk output holds channels; pass argmax=True to the aggregator "
                    "to write labels"
                )
            self.finish(output.name)
            return _open_disk_output(output.disk.path, image_affine, label=self.argmax)
        data = self.get_output(output.name)
        if argmax:
            labels = data.argmax(0, keepdim=True).to(label_dtype(output.channels))
            return LabelMap(labels.cpu(), affine=image_affine)
        return ScalarImage(data.cpu(), affine=image_affine)

    def save(
        self,
        path: str | os.PathLike[str],
        key: str | None = None,
        *,
        argmax: bool = False,
        **options: Any,
    ) -> None:
        """Write the output to ``path`` (any format :meth:`Image.save` writes)."""
        self.get_image(key, argmax=argmax).save(path, **options)

    # ------------------------------------------------------------------ on disk
    def finish(self, key: str | None = None) -> None:
        """Write what remains of on-disk outputs (all, or ``key``) and move them into place."""
        names = list(self._outputs) if key is None else [self._resolve(key).name]
        for name in names:
            disk = self._outputs[name].disk
            if disk is not None:
                disk.finish()

    def abort(self) -> None:
        """Drop partial on-disk outputs."""
        for output in self._outputs.values():
            if output.disk is not None:
                output.disk.abort()

    def __enter__(self) -> PatchAggregator:
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        if error is None:
            self.finish()
        else:
            self.abort()

    @property
    def memory_bound(self) -> int:
        """Bytes held by the accumulators: sums and weights in memory, or the open slabs on disk."""
        total = 0
        for output in self._outputs.values():
            if output.disk is not None:
                total += output.disk.memory_bound
            else:
                assert output.values is not None and output.weights is not None
                total += output.values.nbytes + output.weights.nbytes
        return total

    def __repr__(self) -> str:
        return (
            f"PatchAggregator(spatial_shape={self.spatial_shape}, overlap_mode={self.overlap_mode!r}, "
            f"patch_overlap={self.patch_overlap}, outputs={self.keys})"
        )


def _open_disk_output(path: str, affine: np.ndarray, *, label: bool) -> Image:
    """A lazy image over a finished on-disk output: through a registered NIfTI-Zarr backend
    when there is one, else straight from its zarr array."""
    from voxelflow.backends import backends

    image_class = LabelMap if label else ScalarImage
    for registration in backends():
        if registration.name != "simpleitk" and registration.matcher(path):
            return image_class(path)

    def reader(source: str) -> tuple[ZarrVolume, np.ndarray]:
        import zarr

        return ZarrVolume(zarr.open_group(source, mode="r")["0"]), affine

    return image_class(path, reader=reader)


__all__ = ["OVERLAP_MODES", "VECTORISED_MAX_VOXELS", "OverlapMode", "PatchAggregator"]
